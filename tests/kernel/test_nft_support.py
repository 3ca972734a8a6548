"""Helpers the nftables kernel tests share (this module holds no tests).

It owns driving a namespace on the nftables datapath the way a user would:
applying a full render or a rendered plan (``nft -j -f``, ``ip -4/-6
-batch``, the conntrack commands), reading the node back (``nft -j list
ruleset``, ``ip -j rule``/``route``) into an ObservedState, converging a
node through the planner, and putting a cluster state on the topology with
nft in place of iptables and ipset.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from egress_rules.backends import NFT_APPLY_ORDER, render_all
from egress_rules.backends.base import Output
from egress_rules.compiler import compile
from egress_rules.model.cluster import ClusterState
from egress_rules.model.config import Config
from egress_rules.model.ruleset import RuleSet
from egress_rules.observed import ObservedState
from egress_rules.plan import Plan, plan, render_plan
from tests.fakes.nft import observe_nft_dumps

from .cluster import eip_placement, place_eips
from .netns import CommandError
from .netns import run as ns_run
from .topology import NODE_ROLES, NodeRole, Topology

#: The dump keys of :func:`tests.fakes.nft.observe_nft_dumps` and the real command behind each.
NFT_DUMP_COMMANDS = {
    "nft -j list ruleset": ("nft", "-j", "list", "ruleset"),
    "ip -4 -j rule": ("ip", "-4", "-j", "rule"),
    "ip -6 -j rule": ("ip", "-6", "-j", "rule"),
    "ip -4 -j route": ("ip", "-4", "-j", "route", "show", "table", "all"),
    "ip -6 -j route": ("ip", "-6", "-j", "route", "show", "table", "all"),
}


def apply_nft_outputs(ns: str, outputs: Iterable[Output], *, conntrack: bool = True) -> int:
    """Apply nft-datapath outputs (full render or plan) in ``ns`` in order; returns conntrack entries deleted."""
    deleted = 0
    for output in outputs:
        command = output.command
        if command.startswith("nft -j -f"):
            ns_run(ns, "nft", "-j", "-f", "-", input=output.text)
        elif command.startswith(("ip -4 -batch", "ip -6 -batch")):
            ns_run(ns, "ip", command.split()[1], "-batch", "-", input=output.text)
        elif output.name == "conntrack.commands":
            if not conntrack:
                continue
            for line in output.text.splitlines():
                argv = shlex.split(line)
                proc = ns_run(ns, *argv, check=False)
                if proc.returncode not in (0, 1):  # 1: nothing matched
                    raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
                words = proc.stderr.split()
                deleted += int(words[words.index("flow") - 1]) if "flow" in words else 0
        else:
            raise ValueError(f"not an nft-datapath output: {output.name} ({command})")
    return deleted


def nft_dumps(ns: str) -> dict[str, str]:
    return {key: ns_run(ns, *argv).stdout for key, argv in NFT_DUMP_COMMANDS.items()}


def observe_nft_node(ns: str, config: Config) -> ObservedState:
    return observe_nft_dumps(nft_dumps(ns), config)


def converge_nft_node(ns: str, desired: RuleSet, *, conntrack: bool = True) -> Plan:
    """Observe ``ns`` with the real tools, plan, apply the rendered plan; returns the plan."""
    current = plan(desired, observe_nft_node(ns, desired.config))
    apply_nft_outputs(ns, render_plan(current, desired.config), conntrack=conntrack)
    return current


def nft_rulesets(state: ClusterState) -> dict[NodeRole, RuleSet]:
    return {node: compile(state, node) for node in NODE_ROLES}


def apply_nft_state(topo: Topology, state: ClusterState) -> dict[NodeRole, RuleSet]:
    """Place the EIPs and apply every node's full nft render (nft + ip batches) on clean nodes."""
    place_eips(topo, eip_placement(state))
    compiled = nft_rulesets(state)
    for node, ruleset in compiled.items():
        apply_nft_outputs(topo.ns(node), render_all(ruleset, NFT_APPLY_ORDER))
    return compiled


def converge_nft_state(topo: Topology, state: ClusterState, *, conntrack: bool = True) -> dict[NodeRole, Plan]:
    """Move the EIPs, then converge every node through the planner."""
    place_eips(topo, eip_placement(state))
    return {node: converge_nft_node(topo.ns(node), ruleset, conntrack=conntrack)
            for node, ruleset in nft_rulesets(state).items()}
