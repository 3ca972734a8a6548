"""Following a packet across nodes: into the egress tunnel, over the underlay, out of the cluster.

Each node is traced with :func:`~egress_rules.tracer.node.trace`. A packet
routed into the tunnel device goes to the node that owns the route's next hop
on that device; before it arrives there, its vxlan outer packet (this node's
underlay address to the peer's, UDP) is routed on this node's output path with
the inner packet's current mark, which is where a mark that still selects one
of our ip rules sends it back into the tunnel (the vxlan driver drops it as a
circular route). The inner packet arrives on the peer's tunnel device with mark
0: the mark does not cross the wire. A packet leaving on the uplink towards an
address of another node's uplink continues on that node; towards anything else
it has left the cluster. The tunnel and underlay address maps come from the
environments, since the RuleSets do not hold the cluster's nodes.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from egress_rules.errors import TraceError
from egress_rules.model.addresses import IPAddress
from egress_rules.model.ruleset import Masquerade, Role, RuleSet, Snat
from egress_rules.tracer.model import (
    ClusterOutcome,
    ClusterTrace,
    Disposition,
    Hop,
    NodeEnvironment,
    NodeTrace,
    Packet,
    SourceKind,
    Translation,
)
from egress_rules.tracer.node import trace

DEFAULT_MAX_HOPS = 8


def trace_cluster(rulesets: Mapping[str, RuleSet], envs: Mapping[str, NodeEnvironment], source_node: str,
                  packet: Packet, *, max_hops: int = DEFAULT_MAX_HOPS) -> ClusterTrace:
    """Trace ``packet`` from ``source_node`` until it leaves the cluster, is delivered or dropped.

    ``rulesets`` and ``envs`` are keyed by node name and must cover every node
    the packet reaches. More than ``max_hops`` node visits is reported as a
    forwarding loop.
    """
    if max_hops < 1:
        raise TraceError("max_hops", f"{max_hops} is not at least 1")
    for name, ruleset in rulesets.items():
        if ruleset.node != name:
            raise TraceError(f"rulesets[{name!r}]", f"is the RuleSet of node {ruleset.node}")
    for name, env in envs.items():
        if env.node != name:
            raise TraceError(f"envs[{name!r}]", f"describes node {env.node}")
    tunnel_owner = _owners({n: e.device_addresses(_tunnel_device(n, rulesets, envs)) for n, e in envs.items()
                            if n in rulesets}, "tunnel")
    uplink_owner = _owners({n: e.device_addresses(e.uplink) for n, e in envs.items()}, "uplink")

    walk = _Walk(source_node, packet, rulesets)
    node, current = source_node, packet
    while True:
        if len(walk.hops) >= max_hops:
            return walk.end(ClusterOutcome.DROPPED, f"more than {max_hops} node visits: a forwarding loop")
        ruleset, env = _node(node, rulesets, envs)
        inner = trace(ruleset, current, env)
        verdict = inner.verdict
        if verdict.disposition is Disposition.DROPPED:
            walk.add(Hop(node, inner))
            return walk.end(ClusterOutcome.DROPPED, f"dropped on {node}: {verdict.reason}")
        out = inner.packet_out
        assert out is not None, "a packet that is not dropped leaves"
        if verdict.disposition is Disposition.DELIVERED:
            walk.add(Hop(node, inner))
            return walk.end(ClusterOutcome.DELIVERED, f"delivered to {node} itself")
        tunnel = _tunnel_device(node, rulesets, envs)
        if verdict.device == tunnel:
            peer = tunnel_owner.get(verdict.next_hop) if verdict.next_hop is not None else None
            if peer is None or peer == node:
                walk.add(Hop(node, inner))
                return walk.end(ClusterOutcome.DROPPED, f"dropped on {node}: no other node owns the tunnel next hop "
                                f"{verdict.next_hop}")
            peer_env = _node(peer, rulesets, envs)[1]
            outer = trace(ruleset, _outer(env, peer_env, out.mark), env, encapsulated=True)
            walk.add(Hop(node, inner, outer, peer))
            if outer.verdict.disposition is Disposition.DROPPED:
                return walk.end(ClusterOutcome.DROPPED, f"dropped on {node}: {outer.verdict.reason}")
            if outer.verdict.disposition is Disposition.DELIVERED:
                raise TraceError(f"environment of {node}", f"the tunnel's outer packet to {peer} is delivered locally")
            # Each node has its own conntrack entry: a new connection there, with no marks.
            node, current = peer, attrs.evolve(out, in_interface=_tunnel_device(peer, rulesets, envs), mark=0,
                                               ct_mark=0)
            continue
        if verdict.device == env.uplink:
            neighbour = uplink_owner.get(verdict.next_hop) if verdict.next_hop is not None else None
            if neighbour is None or neighbour == node:
                walk.add(Hop(node, inner))
                return walk.end(ClusterOutcome.LEFT_CLUSTER, f"left {node} on {env.uplink} towards "
                                f"{verdict.next_hop}")
            walk.add(Hop(node, inner, next_node=neighbour))
            node, current = neighbour, attrs.evolve(out, in_interface=_node(neighbour, rulesets, envs)[1].uplink,
                                                    mark=0, ct_mark=0)
            continue
        walk.add(Hop(node, inner))
        return walk.end(ClusterOutcome.DELIVERED, f"left {node} on {verdict.device}: delivered to what is attached "
                        "there")


def _node(name: str, rulesets: Mapping[str, RuleSet],
          envs: Mapping[str, NodeEnvironment]) -> tuple[RuleSet, NodeEnvironment]:
    if name not in rulesets or name not in envs:
        raise TraceError(f"node {name}", "the packet reaches it, but it has no RuleSet or no environment")
    return rulesets[name], envs[name]


def _tunnel_device(name: str, rulesets: Mapping[str, RuleSet], envs: Mapping[str, NodeEnvironment]) -> str:
    ruleset, env = _node(name, rulesets, envs)
    return env.tunnel_device or ruleset.config.tunnel_device


def _owners(addresses: Mapping[str, tuple[IPAddress, ...]], what: str) -> dict[IPAddress, str]:
    owner: dict[IPAddress, str] = {}
    for node, items in sorted(addresses.items()):
        for address in items:
            if owner.setdefault(address, node) != node:
                raise TraceError(f"node {node}", f"{what} address {address} is also node {owner[address]}'s")
    return owner


def _outer(env: NodeEnvironment, peer: NodeEnvironment, mark: int) -> Packet:
    src, dst = env.outer_source, peer.outer_source
    assert src is not None and dst is not None, "checked when the environments were built"
    if src.family is not dst.family:
        raise TraceError(f"node {env.node}", f"tunnels over {src.family.label} but {peer.node} over "
                         f"{dst.family.label}")
    return Packet(src=src, dst=dst, protocol="udp", mark=mark)


class _Walk:
    """The hops so far, and how to turn them into a ClusterTrace."""

    def __init__(self, source_node: str, packet: Packet, rulesets: Mapping[str, RuleSet]) -> None:
        self.source_node = source_node
        self.packet = packet
        self.rulesets = rulesets
        self.hops: list[Hop] = []

    def add(self, hop: Hop) -> None:
        self.hops.append(hop)

    def end(self, outcome: ClusterOutcome, reason: str) -> ClusterTrace:
        translation: Translation | None = None
        nat_node: str | None = None
        for hop in self.hops:
            if hop.trace.translation is not None:
                translation, nat_node = hop.trace.translation, hop.node
        last: NodeTrace | None = self.hops[-1].trace if self.hops else None
        final = None if outcome is ClusterOutcome.DROPPED or last is None or last.packet_out is None \
            else last.packet_out.src
        kind = None if final is None else _source_kind(translation)
        last_node = self.hops[-1].node if self.hops else self.source_node
        return ClusterTrace(source_node=self.source_node, packet=self.packet, hops=tuple(self.hops), outcome=outcome,
                            reason=reason, final_source=final, source_kind=kind,
                            translation=translation if final is not None else None,
                            nat_node=nat_node if final is not None else None,
                            destination_in_cluster=self._in_cluster(last_node))

    def _in_cluster(self, node: str) -> bool:
        ruleset = self.rulesets.get(node)
        rules = None if ruleset is None else ruleset.family(self.packet.family)
        if rules is None:
            return False
        dst = self.packet.dst.value
        return any(m.contains(dst) for s in rules.sets if s.provenance.role is Role.CLUSTER_CIDRS for m in s.members)


def _source_kind(translation: Translation | None) -> SourceKind:
    if translation is None:
        return SourceKind.UNCHANGED
    rule = translation.step.rule
    if rule is None:
        return SourceKind.CNI_MASQUERADE
    if isinstance(rule.action, Snat):
        return SourceKind.EIP
    assert isinstance(rule.action, Masquerade), "only SNAT and MASQUERADE translate"
    return SourceKind.GATEWAY_NODE_IP
