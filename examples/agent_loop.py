"""A node agent's loop in miniature: read egressgateway resources, compile for this node, show what to apply.

Run from the repository root, on the example dump or on your own cluster's::

    python examples/agent_loop.py --node node-a examples/cluster/resources.json
    kubectl get egresspolicies,egressclusterpolicies,egressgateways,egresstunnels,egressclusterinfos,\\
        egressendpointslices,egressclusterendpointslices -A -o json > dump.json
    python examples/agent_loop.py --node "$(hostname)" --iterations 3 --interval 10 dump.json

It never runs a command and never touches the node: it prints what a real
agent would apply. The first iteration is a full install (``ipset restore``,
``iptables-restore``, ``ip6tables-restore``, ``ip -batch``); every later one
prints only the change since the previous iteration, from the incremental
compiler, or nothing when nothing changed. A real agent differs in the ways
marked "REAL AGENT" below.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import egress_rules as er
from egress_rules.adapters import load_resource_text
from egress_rules.compiler.incremental import NodeCompiler
from egress_rules.plan import render_plan


def run(dump: Path, node: str, iterations: int, interval: float) -> None:
    compiler: NodeCompiler | None = None
    for iteration in range(1, iterations + 1):
        # REAL AGENT: watch the seven resource kinds through the API server instead of re-reading a file.
        # Marks the allocator assigned (an upstream mark that does not fit the layout) must not move: feed
        # every node's mark back in. The NodeCompiler keeps them, and this node's routing tables, itself.
        previous_marks = dict(compiler.ruleset.node_marks) if compiler else {}
        loaded = load_resource_text(dump.read_text(), node_marks=previous_marks, source=str(dump))
        item = loaded.compile_input
        for warning in loaded.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"### iteration {iteration}: node {node}, {len(item.state.policies)} policies, "
              f"{len(loaded.skipped)} skipped")
        if compiler is None:
            compiler = NodeCompiler(item.state, node, item.config, marks=item.mark_allocator(),
                                    tables=item.table_allocator(node))
            # REAL AGENT: on start the node may already hold rules (a restart): instead of a full install,
            # read it (see 'egress-rules collect') and apply egress_rules.plan.plan(compiler.ruleset, observed).
            outputs = er.render_all(compiler.ruleset)
        else:
            # REAL AGENT: an endpoint slice event can use compiler.update_endpoints(), which costs time in
            # proportion to the one policy, not the cluster; and now and then, reconcile against the node.
            update = compiler.update(item.state)
            outputs = render_plan(update.plan, item.config)
        for warning in compiler.ruleset.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if not outputs:
            print("# nothing to apply")
        for output in outputs:
            print(f"# ==> {output.name} (apply with: {output.command})\n{output.text}")
        if iteration < iterations:
            time.sleep(interval)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("dump", type=Path, help="kubectl get ... -o json (or -o yaml, with PyYAML) output")
    parser.add_argument("--node", required=True, help="the node this agent runs on (its EgressTunnel name)")
    parser.add_argument("--iterations", type=int, default=1, help="how many times to read and compile (default 1)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between iterations (default 5)")
    args = parser.parse_args(argv)
    try:
        run(args.dump, args.node, args.iterations, args.interval)
    except (er.EgressRulesError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
