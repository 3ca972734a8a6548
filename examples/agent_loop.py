"""A node agent's loop in miniature: read egressgateway resources, compile for this node, show what to apply.

Run from the repository root, on the example dump or on your own cluster's::

    python examples/agent_loop.py --node node-a examples/cluster/resources.json
    kubectl get egresspolicies,egressclusterpolicies,egressgateways,egresstunnels,egressclusterinfos,\\
        egressendpointslices,egressclusterendpointslices -A -o json > dump.json
    python examples/agent_loop.py --node "$(hostname)" --iterations 3 --interval 10 dump.json

It never runs a command and never touches the node: it prints the text a real
agent would feed to ``ipset restore``, ``iptables-restore``, ``ip6tables-restore``
and ``ip -batch``. A real agent differs in three ways, marked "REAL AGENT" below.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import egress_rules as er
from egress_rules.adapters import load_resource_text


def run(dump: Path, node: str, iterations: int, interval: float) -> None:
    node_marks: dict[str, int] = {}
    applied: tuple[er.Output, ...] = ()
    for iteration in range(1, iterations + 1):
        # REAL AGENT: watch the seven resource kinds through the API server instead of re-reading a file.
        loaded = load_resource_text(dump.read_text(), node_marks=node_marks, source=str(dump))
        item = loaded.compile_input
        ruleset = er.compile(item.state, node, item.config, marks=item.mark_allocator(),
                             tables=item.table_allocator(node))
        # Marks the allocator assigned (an upstream mark that does not fit the layout, or none given) must not
        # move between compiles: feed every node's mark back in as an existing assignment.
        node_marks = dict(ruleset.node_marks)
        # REAL AGENT: keep RuleSet.routing_tables the same way, per node (CompileInput.routing_tables).
        for warning in (*loaded.warnings, *ruleset.warnings):
            print(f"warning: {warning}", file=sys.stderr)

        outputs = er.render_all(ruleset)
        print(f"### iteration {iteration}: node {node}, {len(item.state.policies)} policies, "
              f"{len(loaded.skipped)} skipped")
        if outputs == applied:
            print("# unchanged since the last iteration: nothing to apply")
        else:
            # REAL AGENT: do not re-apply full renders. egress_rules.plan.plan(ruleset, observed) turns them into
            # the smallest change set for what the node has now (read with iptables-save, ipset save and
            # ip -j rule/route into egress_rules.observed); reading the node is what this example leaves out.
            for output in outputs:
                print(f"# ==> {output.name} (apply with: {output.command})\n{output.text}")
            applied = outputs
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
