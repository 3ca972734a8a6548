"""Helpers for the tracer tests: a whole cluster's RuleSets and environments, and an oracle.

The oracle answers "which source address does the destination see" straight
from the ClusterState, without the compiler or the tracer: the first policy by
precedence whose sources hold the pod and whose destinations hold the
destination (an empty destSubnet meaning outside the cluster CIDRs), in a
family the policy has an egress address in, decides: its EIP, or for a
node-IP policy the gateway's address on the device the gateway sends the
packet out of (MASQUERADE's rule) — unless the pod's node has no tunnel
address of that family and is not the gateway, in which case the flow leaves
the ordinary way. Otherwise the CNI's masquerade does (the node's uplink
address towards anything outside the cluster CIDRs), or nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

from egress_rules.compiler import compile
from egress_rules.model.addresses import Cidr, Family, IPAddress, parse_address
from egress_rules.model.cluster import ClusterState, Policy
from egress_rules.model.config import DEFAULT_CONFIG, Config
from egress_rules.model.ruleset import RuleSet
from egress_rules.tracer import ClusterTrace, NodeEnvironment, Packet, example_environments, trace_cluster
from egress_rules.tracer.example import POD_BRIDGE

Cluster = tuple[dict[str, RuleSet], dict[str, NodeEnvironment]]

# Outside the cluster CIDRs of both the scenarios and the strategies, and not any node's or EIP's address.
OUTSIDE = {
    Family.IPV4: tuple(parse_address(a) for a in ("203.0.113.10", "203.0.113.20", "203.0.113.200", "198.51.100.7")),
    Family.IPV6: tuple(parse_address(a) for a in ("2001:db8:ff::10", "2001:db8:ff::20", "2001:db8:ee::1")),
}


def build(state: ClusterState, config: Config = DEFAULT_CONFIG, *, cni_same_backend: bool = True) -> Cluster:
    rulesets = {node.name: compile(state, node.name, config) for node in state.nodes}
    return rulesets, example_environments(state, config, cni_same_backend=cni_same_backend)


def from_pod(cluster: Cluster, node: str, src: str | IPAddress, dst: str | IPAddress) -> ClusterTrace:
    """The first packet of a UDP flow from a pod on ``node``."""
    rulesets, envs = cluster
    return trace_cluster(rulesets, envs, node, Packet(src, dst, dport=7777, in_interface=POD_BRIDGE))


def contains(cidrs: Iterable[Cidr], address: IPAddress) -> bool:
    return any(c.family is address.family and c.contains(address.value) for c in cidrs)


def host_in(cidr: Cidr) -> IPAddress:
    """A host address inside ``cidr`` (its tenth address when it has one)."""
    return IPAddress(cidr.family, cidr.network + min(10, cidr.hostmask))


def serves(policy: Policy, family: Family, state: ClusterState) -> bool:
    """Whether the policy has an egress address in ``family`` (node IP: where its gateway has a tunnel address)."""
    if policy.egress_ip.use_node_ip:
        gateway = state.node(policy.gateway_node)
        return gateway is not None and gateway.tunnel_ip(family) is not None
    return policy.egress_ip.address(family) is not None


def expected_source(state: ClusterState, envs: dict[str, NodeEnvironment], pod: IPAddress, node: str,
                    dst: IPAddress) -> IPAddress | None:
    """The source address the destination sees for the first packet from ``pod`` on ``node`` to ``dst``.

    ``None`` where the oracle does not know: a policy claims an in-cluster
    destination for a pod whose node cannot tunnel that family. The flow then
    takes the ordinary path, and whether a gateway on that path translates it
    depends on where the destination runs.
    """
    family = pod.family
    in_cluster = contains(state.cluster.all(family), dst)
    for policy in sorted(state.policies, key=lambda p: (p.priority, p.namespace or "", p.name)):
        if not serves(policy, family, state) or not contains((e.cidr for e in policy.sources), pod):
            continue
        if policy.destinations:
            if not contains(policy.destinations, dst):
                continue
        elif in_cluster:
            continue
        local = state.node(node)
        if policy.gateway_node != node and (local is None or local.tunnel_ip(family) is None):
            if in_cluster:
                return None
            break  # the node cannot tunnel this family: the flow leaves the ordinary way
        eip = policy.egress_ip.address(family)
        if eip is not None:
            return eip
        return masquerade_address(envs[policy.gateway_node], dst)
    if contains(state.cluster.pod, pod) and not contains(state.cluster.pod, dst):
        node_address = envs[node].uplink_address(family)
        assert node_address is not None
        return node_address
    return pod


def masquerade_address(env: NodeEnvironment, dst: IPAddress) -> IPAddress:
    """What MASQUERADE on ``env``'s node gives a packet to ``dst``: the address of the device it leaves by.

    The uplink for everything but the node's own pod network (which is reached over the pod bridge).
    """
    routes = [r for r in env.main_routes if r.destination.family is dst.family and r.destination.contains(dst.value)]
    device = max(routes, key=lambda r: r.destination.prefixlen).device
    interface = env.interface(device)
    address = None if interface is None else interface.primary(dst.family)
    assert address is not None, f"{env.node} has no {dst.family.label} address on {device}"
    return address


def pod_placements(state: ClusterState) -> list[tuple[IPAddress, str]]:
    """A pod address for every source endpoint, with every node it may run on.

    A pod runs on the node an endpoint covering it names; endpoints with no
    node leave every node possible. Addresses that endpoints place on two
    different nodes are inconsistent input and left out.
    """
    result: set[tuple[IPAddress, str]] = set()
    for policy in state.policies:
        for endpoint in policy.sources:
            pod = host_in(endpoint.cidr)
            named = {e.node for p in state.policies for e in p.sources
                     if e.node is not None and e.cidr.family is pod.family and e.cidr.contains(pod.value)}
            if len(named) > 1:
                continue
            nodes = named or {n.name for n in state.nodes}
            result.update((pod, n) for n in nodes)
    return sorted(result)


def probe_destinations(state: ClusterState, envs: dict[str, NodeEnvironment], pod: IPAddress,
                       placements: list[tuple[IPAddress, str]] | None = None) -> list[IPAddress]:
    """Destinations worth probing from ``pod``, of its family.

    The destinations of every policy whose sources hold the pod, a host in
    each cluster CIDR, one pod per node, and addresses outside the cluster.
    Never a node's own address, nor one on the tunnel's subnet (only nodes
    live there), nor the pod itself. ``placements`` saves recomputing
    :func:`pod_placements`.
    """
    family = pod.family
    candidates = [*OUTSIDE[family]]
    for policy in state.policies:
        if contains((e.cidr for e in policy.sources), pod):
            candidates += [host_in(c) for c in policy.destinations if c.family is family]
    candidates += [host_in(c) for c in state.cluster.all(family)]
    first_pod: dict[str, IPAddress] = {}
    for other, node in placements if placements is not None else pod_placements(state):
        if other.family is family:
            first_pod.setdefault(node, other)
    candidates += first_pod.values()
    owned = {a for env in envs.values() for a in env.local_addresses()}
    tunnel = [r.destination for env in envs.values() for r in env.main_routes
              if r.device == env.tunnel_device and r.via is None]
    return sorted({a for a in candidates if a != pod and a not in owned and not contains(tunnel, a)})
