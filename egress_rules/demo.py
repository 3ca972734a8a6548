"""The built-in demo cluster: three dual-stack nodes and four policies.

Addresses are those of the kernel test topology (``tests/kernel/topology.py``),
so the demo's output can be applied to it as is. Every documentation address
range is RFC 5737 / RFC 3849.
"""

from __future__ import annotations

from egress_rules.model.cluster import ClusterCIDRs, ClusterState, EgressIP, Endpoint, Node, Policy

DEMO_NODE = "node-a"


def demo_state() -> ClusterState:
    """Three nodes; ``node-b`` and ``node-c`` are gateways, ``node-c`` for one policy and not another."""
    nodes = (
        Node("node-a", tunnel_ipv4="172.31.0.1", tunnel_ipv6="fd11::1"),
        Node("node-b", tunnel_ipv4="172.31.0.2", tunnel_ipv6="fd11::2"),
        Node("node-c", tunnel_ipv4="172.31.0.3", tunnel_ipv6="fd11::3"),
    )
    cluster = ClusterCIDRs(
        pod=("10.244.0.0/16", "fd00:244::/32"),
        service=("10.96.0.0/12", "fd00:96::/108"),
        node=("192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8:1::1", "2001:db8:1::2", "2001:db8:1::3"),
    )
    pod_a = [Endpoint("10.244.1.10", "node-a"), Endpoint("fd00:244:1::10", "node-a")]
    pod_c = [Endpoint("10.244.3.10", "node-c"), Endpoint("fd00:244:3::10", "node-c")]
    policies = (
        Policy(
            namespace="default", name="web", priority=100, gateway_node="node-b",
            sources=[*pod_a, *pod_c],
            destinations=["203.0.113.10/32", "2001:db8:ff::10/128"],
            egress_ip=EgressIP(ipv4="192.0.2.50", ipv6="2001:db8:1::50"),
        ),
        Policy(
            namespace="default", name="batch", priority=200, gateway_node="node-c",
            sources=[Endpoint("10.244.1.11", "node-a"), Endpoint("fd00:244:1::11", "node-a")],
            destinations=[],
            egress_ip=EgressIP(ipv4="192.0.2.51"),
        ),
        Policy(
            name="ops", priority=300, gateway_node="node-b",
            sources=[Endpoint("10.244.3.0/24"), Endpoint("fd00:244:3::/64")],
            destinations=["203.0.113.20/32", "2001:db8:ff::20/128"],
            egress_ip=EgressIP(use_node_ip=True),
        ),
        Policy(
            namespace="team-x", name="override", priority=50, gateway_node="node-c",
            sources=[Endpoint("10.244.1.10", "node-a")],
            destinations=["203.0.113.20/32"],
            egress_ip=EgressIP(ipv4="192.0.2.52"),
        ),
    )
    return ClusterState(policies=policies, nodes=nodes, cluster=cluster)
