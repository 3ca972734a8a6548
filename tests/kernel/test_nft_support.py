"""Helpers the nftables kernel tests share (this module holds no tests).

It owns driving a namespace on the nftables datapath the way a user would:
applying a full render or a rendered plan (``nft -j -f``, ``ip -4/-6
-batch``, the conntrack commands), reading the node back (``nft -j list
ruleset``, ``ip -j rule``/``route``) into an ObservedState, converging a
node through the planner, and putting a cluster state on the topology with
nft in place of iptables and ipset.
"""

from __future__ import annotations

from collections.abc import Iterable

from egress_rules.backends import NFT_APPLY_ORDER
from egress_rules.backends.base import Output
from egress_rules.model.cluster import ClusterState
from egress_rules.model.config import Config
from egress_rules.model.ruleset import RuleSet
from egress_rules.observed import ObservedState
from egress_rules.plan import Plan, plan, render_plan
from tests.fakes.nft import observe_nft_dumps

from .cluster import apply_state, eip_placement, place_eips, rulesets
from .kernel_node import DUMP_COMMANDS, apply_outputs
from .netns import run as ns_run
from .topology import SAVE_COMMANDS, NodeRole, Topology

#: The dump keys of :func:`tests.fakes.nft.observe_nft_dumps` and the real command behind each.
NFT_DUMP_COMMANDS = {
    "nft -j list ruleset": SAVE_COMMANDS["nft"],
    **{key: DUMP_COMMANDS[key] for key in ("ip -4 -j rule", "ip -6 -j rule", "ip -4 -j route", "ip -6 -j route")},
}
_NFT_DATAPATH_COMMANDS = ("nft -j -f", "ip -4 -batch", "ip -6 -batch")


def apply_nft_outputs(ns: str, outputs: Iterable[Output], *, conntrack: bool = True) -> int:
    """Apply nft-datapath outputs (full render or plan) in ``ns`` in order; returns conntrack entries deleted."""
    outputs = tuple(outputs)
    for output in outputs:
        if output.name != "conntrack.commands" and not output.command.startswith(_NFT_DATAPATH_COMMANDS):
            raise ValueError(f"not an nft-datapath output: {output.name} ({output.command})")
    return sum(result.deleted for result in apply_outputs(ns, outputs, conntrack=conntrack))


def nft_dumps(ns: str) -> dict[str, str]:
    return {key: ns_run(ns, *argv).stdout for key, argv in NFT_DUMP_COMMANDS.items()}


def observe_nft_node(ns: str, config: Config) -> ObservedState:
    return observe_nft_dumps(nft_dumps(ns), config)


def converge_nft_node(ns: str, desired: RuleSet, *, conntrack: bool = True) -> Plan:
    """Observe ``ns`` with the real tools, plan, apply the rendered plan; returns the plan."""
    current = plan(desired, observe_nft_node(ns, desired.config))
    apply_nft_outputs(ns, render_plan(current, desired.config), conntrack=conntrack)
    return current


def apply_nft_state(topo: Topology, state: ClusterState) -> dict[NodeRole, RuleSet]:
    """Place the EIPs and apply every node's full nft render (nft + ip batches) on clean nodes."""
    return apply_state(topo, state, formats=NFT_APPLY_ORDER)


def converge_nft_state(topo: Topology, state: ClusterState, *, conntrack: bool = True) -> dict[NodeRole, Plan]:
    """Move the EIPs, then converge every node through the planner."""
    place_eips(topo, eip_placement(state))
    return {node: converge_nft_node(topo.ns(node), ruleset, conntrack=conntrack)
            for node, ruleset in rulesets(state).items()}
