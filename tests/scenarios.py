"""Named cluster scenarios shared by the golden, tracer and kernel tests.

Addresses follow the kernel topology: nodes node-a/b/c with tunnel addresses
172.31.0.1-3 and fd11::1-3, pods 10.244.N.10 / fd00:244:N::10 on node N, the
external host's test destinations 203.0.113.10 and .20 (2001:db8:ff::10, ::20),
EIPs in 192.0.2.0/24 and 2001:db8:1::/64.
"""

from __future__ import annotations

from collections.abc import Callable

from egress_rules.demo import demo_state
from egress_rules.model.cluster import ClusterCIDRs, ClusterState, EgressIP, Endpoint, Node, Policy

NODES = (
    Node("node-a", tunnel_ipv4="172.31.0.1", tunnel_ipv6="fd11::1"),
    Node("node-b", tunnel_ipv4="172.31.0.2", tunnel_ipv6="fd11::2"),
    Node("node-c", tunnel_ipv4="172.31.0.3", tunnel_ipv6="fd11::3"),
)
CLUSTER = ClusterCIDRs(
    pod=("10.244.0.0/16", "fd00:244::/32"),
    service=("10.96.0.0/12", "fd00:96::/108"),
    node=("192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8:1::1", "2001:db8:1::2", "2001:db8:1::3"),
    extra=("172.31.0.0/16", "fd11::/112"),
)


def pod(node: str, index: int = 10, family: int = 4) -> Endpoint:
    n = "abc".index(node[-1]) + 1
    # The topology's IPv6 pods reuse the IPv4 host number as text: 10.244.1.10 and fd00:244:1::10.
    return Endpoint(f"10.244.{n}.{index}" if family == 4 else f"fd00:244:{n}::{index}", node)


def one_policy() -> ClusterState:
    return ClusterState(nodes=NODES, cluster=CLUSTER, policies=[
        Policy(namespace="default", name="web", gateway_node="node-b", sources=[pod("node-a")],
               destinations=["203.0.113.10/32"], egress_ip=EgressIP(ipv4="192.0.2.50")),
    ])


def dual_stack() -> ClusterState:
    return ClusterState(nodes=NODES, cluster=CLUSTER, policies=[
        Policy(namespace="default", name="web", gateway_node="node-b",
               sources=[pod("node-a"), pod("node-a", family=6), pod("node-b"), pod("node-b", family=6)],
               destinations=["203.0.113.10/32", "2001:db8:ff::10/128"],
               egress_ip=EgressIP(ipv4="192.0.2.50", ipv6="2001:db8:1::50")),
    ])


def empty_destinations() -> ClusterState:
    return ClusterState(nodes=NODES, cluster=CLUSTER, policies=[
        Policy(namespace="default", name="everything", gateway_node="node-b",
               sources=[pod("node-a"), pod("node-a", family=6)],
               egress_ip=EgressIP(ipv4="192.0.2.50", ipv6="2001:db8:1::50")),
    ])


def node_ip() -> ClusterState:
    return ClusterState(nodes=NODES, cluster=CLUSTER, policies=[
        Policy(name="ops", gateway_node="node-b", sources=[pod("node-a"), pod("node-a", family=6)],
               destinations=["203.0.113.10/32", "2001:db8:ff::10/128"], egress_ip=EgressIP(use_node_ip=True)),
    ])


def mixed_roles() -> ClusterState:
    """node-b is the gateway for ``web`` and not for ``api`` (whose gateway is node-c)."""
    return ClusterState(nodes=NODES, cluster=CLUSTER, policies=[
        Policy(namespace="default", name="web", gateway_node="node-b", sources=[pod("node-a"), pod("node-b")],
               destinations=["203.0.113.10/32"], egress_ip=EgressIP(ipv4="192.0.2.50")),
        Policy(namespace="default", name="api", gateway_node="node-c", sources=[pod("node-a"), pod("node-b")],
               destinations=["203.0.113.20/32"], egress_ip=EgressIP(ipv4="192.0.2.60")),
    ])


def overlapping() -> ClusterState:
    """Two policies cover the same pod and destination; ``first`` wins by priority."""
    return ClusterState(nodes=NODES, cluster=CLUSTER, policies=[
        Policy(namespace="default", name="second", priority=200, gateway_node="node-b",
               sources=[pod("node-a")], destinations=["203.0.113.0/24"], egress_ip=EgressIP(ipv4="192.0.2.50")),
        Policy(namespace="default", name="first", priority=100, gateway_node="node-c",
               sources=[pod("node-a")], destinations=["203.0.113.10/32"], egress_ip=EgressIP(ipv4="192.0.2.60")),
    ])


def hundred_policies() -> ClusterState:
    policies = []
    for i in range(100):
        gateway = ("node-b", "node-c")[i % 2]
        policies.append(Policy(
            namespace=f"ns-{i % 7}", name=f"policy-{i:03d}", priority=1000 + i % 13, gateway_node=gateway,
            sources=[Endpoint(f"10.244.{1 + i % 3}.{20 + i}", ("node-a", "node-b", "node-c")[i % 3]),
                     Endpoint(f"10.244.{1 + (i + 1) % 3}.{20 + i}", ("node-a", "node-b", "node-c")[(i + 1) % 3])],
            destinations=[f"198.51.{i}.0/24", f"203.0.113.{i}/32"],
            egress_ip=EgressIP(ipv4=f"192.0.2.{100 + i}"),
        ))
    return ClusterState(nodes=NODES, cluster=CLUSTER, policies=policies)


SCENARIOS: dict[str, Callable[[], ClusterState]] = {
    "one-policy": one_policy,
    "dual-stack": dual_stack,
    "empty-destinations": empty_destinations,
    "node-ip": node_ip,
    "mixed-roles": mixed_roles,
    "overlapping": overlapping,
    "hundred-policies": hundred_policies,
    "demo": demo_state,
}
