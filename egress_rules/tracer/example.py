"""An example environment: the nodes of a ClusterState laid out like the kernel test topology.

This is a documented example for the demo, the tests and trying the tracer
out, not a model of any real cluster: the tracer itself takes whatever
:class:`NodeEnvironment` it is given. The n-th node of ``state.nodes``
(counting from 1, at most 99 of them) gets:

* uplink ``eth0`` with 192.0.2.n and 2001:db8:1::n (n in hex), plus the EIPs
  of the policies it is the gateway of (after its own addresses, so they are
  never what MASQUERADE picks); a default route via 192.0.2.100 /
  2001:db8:1::100 on it, and the uplink subnets on-link;
* pods on the bridge ``cni0`` in 10.244.n.0/24 and fd00:244:n::/64, with
  routes to the other nodes' pod CIDRs via their uplink addresses (a host-gw
  CNI);
* the tunnel device with the node's tunnel addresses from the ClusterState and
  their /16 and /112 on-link; outer packets leave from the IPv4 uplink address;
* the CNI masquerade of :meth:`CniMasquerade.for_cluster`.
"""

from __future__ import annotations

from egress_rules.errors import TraceError
from egress_rules.model.addresses import Cidr, Family, IPAddress, parse_address, parse_cidr
from egress_rules.model.cluster import ClusterState, Node
from egress_rules.model.config import DEFAULT_CONFIG, Config
from egress_rules.tracer.model import CniMasquerade, Interface, MainRoute, NodeEnvironment

UPLINK = "eth0"
POD_BRIDGE = "cni0"
ROUTER = {Family.IPV4: parse_address("192.0.2.100"), Family.IPV6: parse_address("2001:db8:1::100")}
UPLINK_SUBNET = {Family.IPV4: parse_cidr("192.0.2.0/24"), Family.IPV6: parse_cidr("2001:db8:1::/64")}
TUNNEL_PREFIXLEN = {Family.IPV4: 16, Family.IPV6: 112}
MAX_NODES = 99


def uplink_address(index: int, family: Family) -> IPAddress:
    """The uplink address of the ``index``-th node (from 1)."""
    return parse_address(f"192.0.2.{index}" if family is Family.IPV4 else f"2001:db8:1::{index:x}")


def pod_cidr(index: int, family: Family) -> Cidr:
    """The pod CIDR of the ``index``-th node (from 1)."""
    return parse_cidr(f"10.244.{index}.0/24" if family is Family.IPV4 else f"fd00:244:{index:x}::/64")


def pod_gateway(index: int, family: Family) -> IPAddress:
    return parse_address(f"10.244.{index}.1" if family is Family.IPV4 else f"fd00:244:{index:x}::1")


def example_environments(state: ClusterState, config: Config = DEFAULT_CONFIG, *,
                         cni_same_backend: bool = True) -> dict[str, NodeEnvironment]:
    """One environment per node of ``state``; ``cni_same_backend`` places the CNI masquerade with our rules."""
    if len(state.nodes) > MAX_NODES:
        raise TraceError("example environment", f"lays out at most {MAX_NODES} nodes, not {len(state.nodes)}")
    index = {node.name: n for n, node in enumerate(state.nodes, start=1)}
    eips: dict[str, list[IPAddress]] = {}
    for policy in sorted(state.policies, key=lambda p: p.precedence):
        for family in Family:
            address = policy.egress_ip.address(family)
            if address is not None and address not in eips.get(policy.gateway_node, []):
                eips.setdefault(policy.gateway_node, []).append(address)
    masquerade = CniMasquerade.for_cluster(state.cluster, same_backend=cni_same_backend)
    return {node.name: _environment(node, index, eips.get(node.name, []), config, masquerade)
            for node in state.nodes}


def _environment(node: Node, index: dict[str, int], eips: list[IPAddress], config: Config,
                 masquerade: CniMasquerade) -> NodeEnvironment:
    n = index[node.name]
    families = tuple(Family)
    uplink = Interface(UPLINK, (*(uplink_address(n, f) for f in families), *eips))
    bridge = Interface(POD_BRIDGE, tuple(pod_gateway(n, f) for f in families))
    tunnel_addresses = tuple(a for a in (node.tunnel_ipv4, node.tunnel_ipv6) if a is not None)
    tunnel = Interface(config.tunnel_device, tunnel_addresses)
    routes: list[MainRoute] = []
    for family in families:
        routes.append(MainRoute(Cidr(family, 0, 0), UPLINK, ROUTER[family]))
        routes.append(MainRoute(UPLINK_SUBNET[family], UPLINK))
        routes.append(MainRoute(pod_cidr(n, family), POD_BRIDGE))
        for peer, m in index.items():
            if peer != node.name:
                routes.append(MainRoute(pod_cidr(m, family), UPLINK, uplink_address(m, family)))
    for address in tunnel_addresses:
        hostmask = (1 << (address.family.bits - TUNNEL_PREFIXLEN[address.family])) - 1
        routes.append(MainRoute(Cidr(address.family, address.value & ~hostmask, TUNNEL_PREFIXLEN[address.family]),
                                config.tunnel_device))
    return NodeEnvironment(node=node.name, uplink=UPLINK, interfaces=(uplink, bridge, tunnel), main_routes=routes,
                           tunnel_device=config.tunnel_device, cni_masquerade=masquerade)
