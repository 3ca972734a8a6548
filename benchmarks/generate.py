"""Synthetic clusters for the benchmarks: P policies x 50 endpoints x 5 destination CIDRs on 1000 nodes.

The measured gateway node serves every policy (so its sets hold all 55·P
entries); each endpoint is a distinct pod IP on a node chosen round-robin, so
a non-gateway node holds few of each policy's pods. Pod IPs and destination
prefixes are spaced so that none are adjacent: nothing collapses, as in a real
cluster where a policy's pods are scattered. The dual-stack variant gives every
policy an IPv6 EIP and IPv6 pods and destinations too.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

from egress_rules.model.cluster import ClusterState
from egress_rules.model.schema import load_input

NODES = 1000
GATEWAYS = 1  # the measured gateway node serves every policy (the "55·P entries")
ENDPOINTS = 50
DESTINATIONS = 5
GATEWAY_NODE = "node-0000"
OTHER_NODE = "node-0999"


def _pod6(n: int) -> str:
    """The n-th pod's IPv6 address, spaced like the IPv4 ones (every other address)."""
    value = 2 * n
    return f"fd00:244::{value >> 16:x}:{value & 0xFFFF:x}"


def node_name(index: int) -> str:
    return f"node-{index:04d}"


def state_dict(policies: int, dual_stack: bool = False, endpoints: int = ENDPOINTS) -> dict[str, Any]:
    """The scenario in the library's JSON input schema (what a node agent would load)."""
    pods = itertools.count()
    nodes = [{"name": node_name(i), "tunnel_ipv4": str(ipaddress.IPv4Address("172.16.0.0") + i + 1),
              **({"tunnel_ipv6": f"fd11::{i + 1:x}"} if dual_stack else {})} for i in range(NODES)]
    items = []
    for p in range(policies):
        sources = []
        for _ in range(endpoints):
            n = next(pods)
            node = node_name(n % NODES)
            sources.append({"cidr": str(ipaddress.IPv4Address("10.0.0.0") + 2 * n), "node": node})
            if dual_stack:
                sources.append({"cidr": _pod6(n), "node": node})
        destinations = [str(ipaddress.IPv4Network(((198 << 24) + (p * DESTINATIONS + d) * 512, 24)))
                        for d in range(DESTINATIONS)]
        if dual_stack:
            destinations += [f"2001:db8:{p:x}:{2 * d:x}::/64" for d in range(DESTINATIONS)]
        eip = {"ipv4": str(ipaddress.IPv4Address("100.64.0.0") + p)}
        if dual_stack:
            eip["ipv6"] = f"2001:db8:ffff::{p:x}"
        items.append({"namespace": f"ns-{p % 100}", "name": f"policy-{p:05d}", "priority": 1000 + p % 7,
                      "gateway_node": node_name(p % GATEWAYS), "egress_ip": eip, "sources": sources,
                      "destinations": destinations})
    cluster = {"pod": ["10.0.0.0/8"] + (["fd00:244::/32"] if dual_stack else []),
               "service": ["10.96.0.0/12"] + (["fd00:96::/108"] if dual_stack else [])}
    return {"cluster": cluster, "nodes": nodes, "policies": items}


def state(policies: int, dual_stack: bool = False, endpoints: int = ENDPOINTS) -> ClusterState:
    """The same scenario as model objects (through the library's own input loader)."""
    return load_input(state_dict(policies, dual_stack, endpoints)).state
