"""Putting a cluster state onto the simulated cluster: EIPs on gateways, rules on every node.

This module owns the glue between :mod:`tests.scenarios` (cluster states) and
:class:`~tests.kernel.topology.Topology` (namespaces): which EIP lives on which
node's uplink, applying each node's full render, and converging every node
with the planner (observe with the real tools, plan, apply, conntrack).
"""

from __future__ import annotations

import ipaddress
import json

from egress_rules.backends import APPLY_ORDER, render_all
from egress_rules.backends.base import Output
from egress_rules.compiler import compile
from egress_rules.model.cluster import ClusterState
from egress_rules.model.ruleset import RuleSet
from egress_rules.plan import Plan

from .kernel_node import ConntrackResult, Variant, apply_outputs, converge_node
from .topology import NODE_ROLES, UNDERLAY_DEVICE, NodeRole, Topology

__all__ = ["Converged", "apply_state", "converge_state", "eip_placement", "place_eips", "rulesets"]


def eip_placement(state: ClusterState) -> set[tuple[NodeRole, str]]:
    """``(gateway node, EIP)`` for every explicit EIP of every policy (node-IP policies have none)."""
    placed: set[tuple[NodeRole, str]] = set()
    for policy in state.policies:
        gateway = policy.gateway_node
        if gateway not in NODE_ROLES:
            raise ValueError(f"{policy.subject}: gateway {gateway} is not a topology node")
        for address in (policy.egress_ip.ipv4, policy.egress_ip.ipv6):
            if address is not None:
                placed.add((gateway, str(address)))
    return placed


def _eips_on(topo: Topology, node: NodeRole) -> set[str]:
    """Host addresses (/32, /128) on the node's uplink: EIPs (the node's own address is a /24 or /64)."""
    found = set()
    for link in json.loads(topo.ip(node, "-j", "addr", "show", "dev", UNDERLAY_DEVICE).stdout):
        for info in link.get("addr_info", []):
            network = ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
            if network.prefixlen == network.max_prefixlen:
                found.add(str(network.network_address))
    return found


def place_eips(topo: Topology, wanted: set[tuple[NodeRole, str]]) -> None:
    """Make exactly ``wanted`` the EIPs on the nodes' uplinks.

    A moved EIP is removed from its old node first, and ext forgets its MAC
    (the stand-in for the gratuitous ARP / unsolicited NA an EIP agent sends).
    """
    have = {(node, address) for node in NODE_ROLES for address in _eips_on(topo, node)}
    for node, address in sorted(have - wanted):
        topo.del_eip(node, address)
    for node, address in sorted(wanted - have):
        topo.add_eip(node, address)
    for _, address in sorted(have ^ wanted):
        topo.ip("ext", "neigh", "flush", "to", address, check=False)


def rulesets(state: ClusterState) -> dict[NodeRole, RuleSet]:
    return {node: compile(state, node) for node in NODE_ROLES}


def apply_state(topo: Topology, state: ClusterState, *, variant: Variant = "nft",
                formats: tuple[str, ...] = APPLY_ORDER) -> dict[NodeRole, RuleSet]:
    """Place the EIPs and apply every node's full render of ``formats`` (a first install on clean nodes)."""
    place_eips(topo, eip_placement(state))
    compiled = rulesets(state)
    for node, ruleset in compiled.items():
        apply_outputs(topo.ns(node), render_all(ruleset, formats), variant=variant)
    return compiled


class Converged:
    """What :func:`converge_state` did on each node."""

    def __init__(self) -> None:
        self.plans: dict[NodeRole, Plan] = {}
        self.outputs: dict[NodeRole, tuple[Output, ...]] = {}
        self.conntrack: dict[NodeRole, list[ConntrackResult]] = {}

    @property
    def all_empty(self) -> bool:
        return all(p.is_empty for p in self.plans.values())


def converge_state(topo: Topology, state: ClusterState, *, conntrack: bool = True) -> Converged:
    """Move the EIPs, then on every node: observe, plan, apply the plan (and its conntrack commands)."""
    place_eips(topo, eip_placement(state))
    done = Converged()
    for node, ruleset in rulesets(state).items():
        plan, outputs, results = converge_node(topo.ns(node), ruleset, conntrack=conntrack)
        done.plans[node], done.outputs[node], done.conntrack[node] = plan, outputs, results
    return done
