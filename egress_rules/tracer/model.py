"""The tracer's data: packets, node environments, and what a trace found.

A :class:`NodeEnvironment` is the part of a node that is not in its RuleSet:
interfaces and their addresses, the main routing table, and the CNI's
masquerade rule. A :class:`NodeTrace` records one packet's way through one
node; a :class:`ClusterTrace` chains node traces across the tunnel and the
underlay. Everything here is frozen data; :mod:`.node` and :mod:`.cluster`
compute it and :mod:`.render` prints it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from egress_rules.errors import TraceError
from egress_rules.model.addresses import Cidr, Family, IPAddress, parse_address, parse_cidr
from egress_rules.model.cluster import ClusterCIDRs, PolicyKey
from egress_rules.model.config import MARK_MAX
from egress_rules.model.ruleset import (
    BuiltinChain,
    CtDirection,
    IPRule,
    NetfilterTable,
    Provenance,
    Route,
    Rule,
)

PROTOCOLS = ("udp", "tcp", "icmp")
MAIN_TABLE = 254
LOCAL_TABLE = 255


def _address(value: IPAddress | str) -> IPAddress:
    return value if isinstance(value, IPAddress) else parse_address(value)


def _optional_address(value: IPAddress | str | None) -> IPAddress | None:
    return None if value is None else _address(value)


def _addresses(values: Iterable[IPAddress | str]) -> tuple[IPAddress, ...]:
    if isinstance(values, str):
        raise TraceError(repr(values), "expected a list of addresses, got a single string")
    return tuple(_address(v) for v in values)


def _interfaces(values: Iterable[Interface]) -> tuple[Interface, ...]:
    result = tuple(values)
    for item in result:
        if not isinstance(item, Interface):
            raise TraceError(repr(item), "interfaces must be Interface objects")
    return result


def _routes(values: Iterable[MainRoute]) -> tuple[MainRoute, ...]:
    result = tuple(values)
    for item in result:
        if not isinstance(item, MainRoute):
            raise TraceError(repr(item), "main routes must be MainRoute objects")
    return result


def _cidr(value: Cidr | str) -> Cidr:
    return value if isinstance(value, Cidr) else parse_cidr(value)


def _cidrs(values: Iterable[Cidr | str]) -> tuple[Cidr, ...]:
    if isinstance(values, str):
        raise TraceError(repr(values), "expected a list of CIDRs, got a single string")
    return tuple(_cidr(v) for v in values)


# ---------------------------------------------------------------- input


@attrs.frozen
class Packet:
    """One packet as a node sees it.

    ``in_interface`` is the device it arrives on (a pod's veth or bridge, the
    tunnel device, the uplink), or ``None`` for a packet the node itself sends.
    ``ct_direction`` ORIGINAL stands for the first packet of a new connection
    (the only packet the nat table sees); REPLY for a packet of the answer.
    ``ct_mark`` is the mark kept with the packet's conntrack entry (0 for a new
    connection; the keep mark for a flow an earlier packet sent into the tunnel).
    """

    src: IPAddress = attrs.field(converter=_address)
    dst: IPAddress = attrs.field(converter=_address)
    protocol: str = "udp"
    sport: int | None = None
    dport: int | None = None
    in_interface: str | None = None
    mark: int = 0
    ct_direction: CtDirection = CtDirection.ORIGINAL
    ct_mark: int = 0

    def __attrs_post_init__(self) -> None:
        if self.src.family is not self.dst.family:
            raise TraceError("packet", f"source {self.src} and destination {self.dst} are of different families")
        if self.protocol not in PROTOCOLS:
            raise TraceError("packet", f"protocol {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        for name, port in (("sport", self.sport), ("dport", self.dport)):
            if port is None:
                continue
            if self.protocol == "icmp":
                raise TraceError("packet", f"{name}: icmp has no ports")
            if type(port) is not int or not 0 <= port <= 0xFFFF:
                raise TraceError("packet", f"{name} {port!r} is not an integer in 0..65535")
        for name, mark in (("mark", self.mark), ("ct_mark", self.ct_mark)):
            if type(mark) is not int or not 0 <= mark <= MARK_MAX:
                raise TraceError("packet", f"{name} {mark!r} is not a 32-bit unsigned integer")
        if not isinstance(self.ct_direction, CtDirection):
            raise TraceError("packet", f"ct_direction {self.ct_direction!r} is not a CtDirection")

    @property
    def family(self) -> Family:
        return self.src.family

    def describe(self) -> str:
        ports = "".join(f" {name} {port}" for name, port in (("sport", self.sport), ("dport", self.dport))
                        if port is not None)
        return f"{self.protocol} {self.src} -> {self.dst}{ports}"


@attrs.frozen
class Interface:
    """A device and its addresses; the first address of a family is its primary (what MASQUERADE picks)."""

    name: str
    addresses: tuple[IPAddress, ...] = attrs.field(default=(), converter=_addresses)

    def primary(self, family: Family) -> IPAddress | None:
        return next((a for a in self.addresses if a.family is family), None)


@attrs.frozen
class MainRoute:
    """A route of the main table: ``destination [via via] dev device``; no ``via`` means on-link."""

    destination: Cidr = attrs.field(converter=_cidr)
    device: str
    via: IPAddress | None = attrs.field(default=None, converter=_optional_address)

    def __attrs_post_init__(self) -> None:
        if self.via is not None and self.via.family is not self.destination.family:
            raise TraceError(f"route {self.destination}", f"next hop {self.via} is of another family")

    def describe(self) -> str:
        via = f" via {self.via}" if self.via is not None else ""
        return f"{self.destination}{via} dev {self.device}"


@attrs.frozen
class CniMasquerade:
    """The CNI's ``-s SOURCES ! -d EXEMPT [-o OUT] -j MASQUERADE``, appended after our nat POSTROUTING hooks.

    ``same_backend`` says whether it lives in the same iptables backend as our
    rules (then it is a later rule of the same nat POSTROUTING chain, and our
    ``ACCEPT`` skips it), or in another one (iptables-legacy next to
    iptables-nft: a separate base chain on the same hook, modelled as running
    after ours, which our ``ACCEPT`` does not stop; only a NAT binding made by
    our chain does).
    """

    sources: tuple[Cidr, ...] = attrs.field(converter=_cidrs)
    exempt_destinations: tuple[Cidr, ...] = attrs.field(default=(), converter=_cidrs)
    out_interface: str | None = None
    same_backend: bool = True

    @classmethod
    def for_cluster(cls, cluster: ClusterCIDRs, *, same_backend: bool = True,
                    out_interface: str | None = None) -> CniMasquerade:
        """Masquerade the pod CIDRs except towards pods, as bridge-style CNIs do (``! -d <pod CIDR>``).

        Traffic from a pod to a node or service address is masqueraded too.
        """
        return cls(sources=cluster.pod, exempt_destinations=cluster.pod, out_interface=out_interface,
                   same_backend=same_backend)

    def miss(self, packet: Packet, out_device: str) -> str | None:
        """Why this rule does not match ``packet`` leaving by ``out_device``; ``None`` when it matches."""
        if self.out_interface is not None and out_device != self.out_interface:
            return f"out device {out_device} is not {self.out_interface}"
        if not any(c.family is packet.family and c.contains(packet.src.value) for c in self.sources):
            return f"src {packet.src} is not in the masqueraded sources"
        exempt = next((c for c in self.exempt_destinations
                       if c.family is packet.family and c.contains(packet.dst.value)), None)
        if exempt is not None:
            return f"dst {packet.dst} is in the exempt destination {exempt}"
        return None

    def describe(self) -> str:
        out = f" -o {self.out_interface}" if self.out_interface else ""
        return f"CNI masquerade{out}" + ("" if self.same_backend else ", other iptables backend")


@attrs.frozen
class NodeEnvironment:
    """What a node has besides our rules.

    ``tunnel_device`` ``None`` means the RuleSet's ``config.tunnel_device``.
    ``tunnel_local`` is the vxlan's local (outer source) address; ``None``
    means the uplink's primary IPv4 address, else its IPv6 one.
    ``cni_masquerade`` ``None`` means no masquerade rule besides ours.
    """

    node: str
    uplink: str
    interfaces: tuple[Interface, ...] = attrs.field(converter=_interfaces)
    main_routes: tuple[MainRoute, ...] = attrs.field(converter=_routes)
    tunnel_device: str | None = None
    tunnel_local: IPAddress | None = attrs.field(default=None, converter=_optional_address)
    cni_masquerade: CniMasquerade | None = None

    def __attrs_post_init__(self) -> None:
        names = [i.name for i in self.interfaces]
        if len(set(names)) != len(names):
            raise TraceError(f"environment of {self.node}", "interface names are not unique")
        if self.uplink not in names:
            raise TraceError(f"environment of {self.node}", f"uplink {self.uplink} is not among its interfaces")
        if self.tunnel_local is not None and self.tunnel_local not in self.local_addresses():
            raise TraceError(f"environment of {self.node}", f"tunnel_local {self.tunnel_local} is not a local address")
        if self.outer_source is None:
            raise TraceError(f"environment of {self.node}", f"uplink {self.uplink} has no address")

    def interface(self, name: str) -> Interface | None:
        return next((i for i in self.interfaces if i.name == name), None)

    def uplink_address(self, family: Family) -> IPAddress | None:
        uplink = self.interface(self.uplink)
        assert uplink is not None, "checked on construction"
        return uplink.primary(family)

    def local_addresses(self, family: Family | None = None) -> tuple[IPAddress, ...]:
        """Every address of every interface (the local routing table), optionally of one family."""
        return tuple(a for i in self.interfaces for a in i.addresses if family is None or a.family is family)

    def device_addresses(self, device: str) -> tuple[IPAddress, ...]:
        interface = self.interface(device)
        return () if interface is None else interface.addresses

    @property
    def outer_source(self) -> IPAddress | None:
        """The source address of the tunnel's outer packets."""
        if self.tunnel_local is not None:
            return self.tunnel_local
        return self.uplink_address(Family.IPV4) or self.uplink_address(Family.IPV6)


# ---------------------------------------------------------------- a node trace


@attrs.frozen
class Hook:
    """A built-in chain of a table; ``other_backend`` for the CNI's chain in another iptables backend."""

    table: NetfilterTable
    chain: BuiltinChain
    other_backend: bool = False

    @property
    def label(self) -> str:
        return f"{self.table.value} {self.chain.value}" + (" (other backend)" if self.other_backend else "")


class Outcome(enum.Enum):
    """What one step did."""

    NO_MATCH = "no match"
    JUMP = "jump"
    GOTO = "goto"
    RETURN = "return"
    CHAIN_END = "end of chain"
    POLICY = "policy ACCEPT"
    ACCEPT = "accept"
    MARK = "mark"
    SNAT = "snat"
    MASQUERADE = "masquerade"
    NOT_REACHED = "not reached"
    NAT_SKIPPED = "nat skipped"
    DROP = "drop"


@attrs.frozen
class Step:
    """One rule evaluated (or one chain event) in a built-in chain's traversal.

    ``position`` is the rule's 1-based position in ``chain``; ``None`` for
    chain events (end of chain, policy, nat skipped). ``rule`` is ``None`` for
    events and for the modelled CNI rule (then ``foreign`` describes it).
    """

    hook: Hook
    chain: str
    position: int | None
    outcome: Outcome
    mark_before: int
    mark_after: int
    detail: str = ""
    rule: Rule | None = None
    foreign: str | None = None

    @property
    def provenance(self) -> Provenance | None:
        return None if self.rule is None else self.rule.provenance


class RouteKind(enum.Enum):
    LOCAL = "local"
    POLICY = "policy table"
    MAIN = "main table"
    UNREACHABLE = "unreachable"


@attrs.frozen
class IPRuleCheck:
    """One of our ip rules as the routing decision considered it."""

    rule: IPRule
    matched: bool
    detail: str


@attrs.frozen
class RoutingDecision:
    """The route lookup: local addresses, our ip rules by priority, then main.

    ``checks`` are the ip rules considered; ``at_step`` is the number of steps
    recorded before the lookup (where it sits among them).
    """

    dst: IPAddress
    mark: int
    checks: tuple[IPRuleCheck, ...]
    kind: RouteKind
    ip_rule: IPRule | None = None
    table: int | None = None
    route: Route | MainRoute | None = None
    device: str | None = None
    next_hop: IPAddress | None = None
    at_step: int = 0


class Disposition(enum.Enum):
    FORWARDED = "forwarded"
    DELIVERED = "delivered locally"
    DROPPED = "dropped"


@attrs.frozen
class Verdict:
    disposition: Disposition
    device: str | None = None
    next_hop: IPAddress | None = None
    reason: str = ""


class PathKind(enum.Enum):
    FORWARD = "forward"
    OUTPUT = "output"


@attrs.frozen
class Translation:
    """A source NAT: the address the packet got and the step that did it."""

    address: IPAddress
    step: Step


@attrs.frozen
class NodeTrace:
    """One packet through one node.

    ``routing`` holds every route lookup made (two when mangle OUTPUT changed
    the mark of a locally generated packet); ``packet_out`` is the packet as it
    leaves (source after NAT, final mark), ``None`` when dropped.
    """

    node: str
    path: PathKind
    packet: Packet
    steps: tuple[Step, ...]
    routing: tuple[RoutingDecision, ...]
    translation: Translation | None
    verdict: Verdict
    packet_out: Packet | None

    @property
    def route(self) -> RoutingDecision | None:
        """The routing decision that holds (the last one)."""
        return self.routing[-1] if self.routing else None


# ---------------------------------------------------------------- a cluster trace


@attrs.frozen
class Hop:
    """The packet on one node.

    ``next_node`` is the node it goes to over the tunnel or the underlay, if any;
    ``encapsulation`` the tunnel's outer packet on this node when it left into the tunnel.
    """

    node: str
    trace: NodeTrace
    encapsulation: NodeTrace | None = None
    next_node: str | None = None


class ClusterOutcome(enum.Enum):
    LEFT_CLUSTER = "left the cluster"
    DELIVERED = "delivered"
    DROPPED = "dropped"


class SourceKind(enum.Enum):
    """Where the source address the destination sees comes from."""

    EIP = "EIP"
    GATEWAY_NODE_IP = "gateway node address"
    CNI_MASQUERADE = "CNI masquerade"
    UNCHANGED = "unchanged"


@attrs.frozen
class ClusterTrace:
    """A packet from its first node to where it leaves the cluster, is delivered, or is dropped.

    ``final_source`` is the source the destination sees (``None`` when
    dropped); ``translation`` the NAT that produced it and ``nat_node`` where.
    ``destination_in_cluster`` comes from the last node's cluster-CIDR set.
    """

    source_node: str
    packet: Packet
    hops: tuple[Hop, ...]
    outcome: ClusterOutcome
    reason: str
    final_source: IPAddress | None
    source_kind: SourceKind | None
    translation: Translation | None
    nat_node: str | None
    destination_in_cluster: bool

    @property
    def policy(self) -> PolicyKey | None:
        """The policy whose rule translated the source, if one did."""
        if self.translation is None or self.translation.step.rule is None:
            return None
        return self.translation.step.rule.provenance.policy

    @property
    def leak(self) -> bool:
        """The pod's own address left the cluster towards a destination outside the cluster CIDRs."""
        return (self.outcome is ClusterOutcome.LEFT_CLUSTER and self.source_kind is SourceKind.UNCHANGED
                and not self.destination_in_cluster)
