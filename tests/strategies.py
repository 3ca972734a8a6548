"""Hypothesis strategies for random, valid cluster states.

Clusters are small (a few nodes and policies) but dense in what matters:
overlapping sources and destinations, equal priorities, dual-stack and
single-family policies, node-IP policies, empty destSubnets, endpoints with
and without a known node, nodes without an IPv6 tunnel address.
"""

from __future__ import annotations

from hypothesis import strategies as st

from egress_rules.model.cluster import ClusterCIDRs, ClusterState, EgressIP, Endpoint, Node, Policy

CLUSTER = ClusterCIDRs(
    pod=("10.244.0.0/16", "fd00:244::/32"),
    service=("10.96.0.0/12", "fd00:96::/108"),
    node=("192.0.2.0/28", "2001:db8:1::/124"),
)
DESTINATIONS_V4 = ("203.0.113.0/24", "203.0.113.10/32", "203.0.113.20/32", "198.51.100.0/24", "0.0.0.0/0",
                   "10.244.1.0/24", "203.0.113.0/25")
DESTINATIONS_V6 = ("2001:db8:ff::/64", "2001:db8:ff::10/128", "2001:db8:ff::20/128", "::/0", "2001:db8:ff::/65")


@st.composite
def nodes(draw: st.DrawFn, min_size: int = 1, max_size: int = 4) -> tuple[Node, ...]:
    count = draw(st.integers(min_size, max_size))
    result = []
    for i in range(count):
        has_v6 = draw(st.booleans()) or i == 0
        result.append(Node(f"node-{i}", tunnel_ipv4=f"172.31.0.{i + 1}",
                           tunnel_ipv6=f"fd11::{i + 1:x}" if has_v6 else None))
    return tuple(result)


@st.composite
def endpoints(draw: st.DrawFn, node_list: tuple[Node, ...]) -> Endpoint:
    index = draw(st.integers(0, len(node_list) - 1))
    host = draw(st.integers(10, 13))
    family = draw(st.sampled_from((4, 6)))
    cidr = f"10.244.{index + 1}.{host}" if family == 4 else f"fd00:244:{index + 1}::{host:x}"
    if draw(st.integers(0, 9)) == 0:
        cidr = f"10.244.{index + 1}.0/24" if family == 4 else f"fd00:244:{index + 1}::/64"
    node = None if draw(st.integers(0, 5)) == 0 else node_list[index].name
    return Endpoint(cidr, node)


@st.composite
def egress_ips(draw: st.DrawFn, gateway: Node, index: int) -> EgressIP:
    choice = draw(st.sampled_from(("v4", "v6", "dual", "node-ip", "none")))
    has_v6 = gateway.tunnel_ipv6 is not None
    if choice == "node-ip":
        return EgressIP(use_node_ip=True)
    if choice == "none":
        return EgressIP()
    if choice == "v4" or not has_v6:
        return EgressIP(ipv4=f"192.0.2.{50 + index}")
    if choice == "v6":
        return EgressIP(ipv6=f"2001:db8:1::{0x50 + index:x}")
    return EgressIP(ipv4=f"192.0.2.{50 + index}", ipv6=f"2001:db8:1::{0x50 + index:x}")


@st.composite
def cluster_states(draw: st.DrawFn, max_nodes: int = 4, max_policies: int = 6) -> ClusterState:
    node_list = draw(nodes(max_size=max_nodes))
    count = draw(st.integers(0, max_policies))
    keys = draw(st.lists(st.tuples(st.sampled_from((None, "default", "team-x")),
                                   st.sampled_from(("web", "api", "db", "batch", "ops", "x1", "x2"))),
                         min_size=count, max_size=count, unique=True))
    policies = []
    for index, (namespace, name) in enumerate(keys):
        gateway = draw(st.sampled_from(node_list))
        destinations = draw(st.lists(st.sampled_from(DESTINATIONS_V4 + DESTINATIONS_V6), max_size=4))
        policies.append(Policy(
            namespace=namespace, name=name, priority=draw(st.sampled_from((100, 100, 200, 1000))),
            gateway_node=gateway.name, egress_ip=draw(egress_ips(gateway, index)),
            sources=draw(st.lists(endpoints(node_list), max_size=5)),
            destinations=destinations,
        ))
    return ClusterState(policies=policies, nodes=node_list, cluster=CLUSTER)
