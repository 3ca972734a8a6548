"""A plan: the typed operations that turn what a node has into what it should have.

Operations are data; :mod:`egress_rules.plan.render` writes them for the tools.
Positions in iptables operations are 1-based and valid at the moment the
operation runs (``iptables-restore`` applies a table block's lines in order).
nftables operations name rules by handle (stable while the batch runs) and
always act on our own table of their family.
"""

from __future__ import annotations

import enum

import attrs

from egress_rules.model.addresses import Cidr, Family
from egress_rules.model.ruleset import IPRule, IPSet, NetfilterTable, Route, Rule
from egress_rules.observed.nft import NftHook

# ---------------------------------------------------------------- iptables


@attrs.frozen
class CreateChain:
    chain: str


@attrs.frozen
class AppendRule:
    chain: str
    rule: Rule


@attrs.frozen
class InsertRule:
    chain: str
    position: int
    rule: Rule


@attrs.frozen
class ReplaceRule:
    chain: str
    position: int
    rule: Rule


@attrs.frozen
class DeleteRule:
    chain: str
    position: int


@attrs.frozen
class FlushChain:
    chain: str


@attrs.frozen
class DeleteChain:
    chain: str


TableOp = CreateChain | AppendRule | InsertRule | ReplaceRule | DeleteRule | FlushChain | DeleteChain


@attrs.frozen
class TableDelta:
    """Operations on one iptables table, applied in order and committed atomically."""

    table: NetfilterTable
    ops: tuple[TableOp, ...]


@attrs.frozen
class IptablesDelta:
    family: Family
    tables: tuple[TableDelta, ...]


# ---------------------------------------------------------------- ipset


@attrs.frozen
class CreateSet:
    """Create a set that does not exist yet and fill it (it is not referenced yet, so no swap is needed)."""

    ipset: IPSet


@attrs.frozen
class ReplaceSet:
    """Fill a scratch set and swap it in: for sets whose type, family or size limit must change."""

    ipset: IPSet


@attrs.frozen
class AddMembers:
    name: str
    members: tuple[Cidr, ...]


@attrs.frozen
class DeleteMembers:
    name: str
    members: tuple[Cidr, ...]


@attrs.frozen
class DestroySet:
    name: str


SetOp = CreateSet | ReplaceSet | AddMembers | DeleteMembers | DestroySet

# ---------------------------------------------------------------- nftables (one atomic batch)


@attrs.frozen
class AddNftTable:
    """``add table``: creates our table of ``family``; does nothing if it exists."""

    family: Family


@attrs.frozen
class DeleteNftTable:
    family: Family


@attrs.frozen
class AddNftSet:
    """Create a set with its members (collapsed prefixes)."""

    family: Family
    ipset: IPSet


@attrs.frozen
class DeleteNftSet:
    family: Family
    name: str


@attrs.frozen
class AddNftElements:
    family: Family
    set_name: str
    members: tuple[Cidr, ...]


@attrs.frozen
class DeleteNftElements:
    """Delete stored elements, each given as the prefixes of its interval (nft deletes whole elements only)."""

    family: Family
    set_name: str
    elements: tuple[tuple[Cidr, ...], ...]


@attrs.frozen
class AddNftChain:
    """A regular chain (``hook=None``) or a base chain."""

    family: Family
    name: str
    hook: NftHook | None


@attrs.frozen
class FlushNftChain:
    family: Family
    name: str


@attrs.frozen
class DeleteNftChain:
    family: Family
    name: str


@attrs.frozen
class AppendNftRule:
    """Add ``rule`` at the end of ``chain``; ``nat``: the chain is reachable from a nat hook."""

    family: Family
    chain: str
    rule: Rule
    nat: bool


@attrs.frozen
class InsertNftRule:
    """Add ``rule`` right before the rule with handle ``before``."""

    family: Family
    chain: str
    before: int
    rule: Rule
    nat: bool


@attrs.frozen
class ReplaceNftRule:
    family: Family
    chain: str
    handle: int
    rule: Rule
    nat: bool


@attrs.frozen
class DeleteNftRule:
    family: Family
    chain: str
    handle: int


@attrs.frozen
class DeleteNftObject:
    """Delete a named object of another kind (``counter``, ``map``, ...) that has no place in our table."""

    family: Family
    kind: str
    name: str


NftOp = (AddNftTable | DeleteNftTable | AddNftSet | DeleteNftSet | AddNftElements | DeleteNftElements | AddNftChain
         | FlushNftChain | DeleteNftChain | AppendNftRule | InsertNftRule | ReplaceNftRule | DeleteNftRule
         | DeleteNftObject)

# ---------------------------------------------------------------- iproute


@attrs.frozen
class AddIPRule:
    rule: IPRule


@attrs.frozen
class DeleteIPRule:
    """Delete our rule with these selectors.

    ``selectors`` are the other keys ``ip -j rule`` printed (JSON values), so
    that the delete names this rule and no other: the kernel deletes the first
    rule matching the selectors a delete gives.
    """

    family: Family
    priority: int
    mark: int | None
    mask: int | None
    table: int | None
    protocol: int
    selectors: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class ReplaceRoute:
    route: Route


@attrs.frozen
class DeleteRoute:
    family: Family
    table: int
    destination: Cidr
    protocol: int


RouteOp = AddIPRule | DeleteIPRule | ReplaceRoute | DeleteRoute


@attrs.frozen
class RouteDelta:
    family: Family
    ops: tuple[RouteOp, ...]


# ---------------------------------------------------------------- conntrack and drift


@attrs.frozen(order=True)
class ConntrackFlush:
    """Delete conntrack entries whose original direction goes from ``source`` to ``destination`` (any if None).

    Such flows were decided by a rule that changed: without the flush they keep
    their old NAT binding (or none, and leak the pod's own address).
    """

    family: Family
    source: Cidr
    destination: Cidr | None

    def argv(self) -> tuple[str, ...]:
        args = ["conntrack", "-D", "-f", "ipv4" if self.family is Family.IPV4 else "ipv6"]
        args += _address_args("-s", "--mask-src", self.source)
        if self.destination is not None:
            args += _address_args("-d", "--mask-dst", self.destination)
        return tuple(args)


def _address_args(flag: str, mask_flag: str, cidr: Cidr) -> list[str]:
    if cidr.is_host:
        return [flag, cidr.address]
    mask = Cidr(cidr.family, ((1 << cidr.family.bits) - 1) ^ cidr.hostmask, cidr.family.bits)
    return [flag, cidr.address, mask_flag, mask.address]


class DriftKind(enum.Enum):
    MISSING = "missing"
    EXTRA = "extra"
    MODIFIED = "modified"
    MISORDERED = "misordered"
    DUPLICATE = "duplicate"


@attrs.frozen(order=True)
class Drift:
    """One difference between the node and the desired state, and why it matters."""

    kind: DriftKind = attrs.field(order=lambda k: k.value)
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.subject}: {self.detail}"


@attrs.frozen
class Plan:
    """Everything to do on one node. Apply order: ``sets_before``, ``routing``, ``iptables`` or ``nft``,
    ``routing_after``, ``sets_after``, then ``conntrack``.

    Routes and rules for gateways come before the packet filter starts marking
    for them, and leave after it stops, so a marked packet always finds its
    route. ``nft`` is one atomic ``nft -j -f`` batch; it is only used on the
    nftables datapath, where the ipset and iptables parts stay empty.
    """

    node: str
    sets_before: tuple[SetOp, ...]
    iptables: tuple[IptablesDelta, ...]
    routing: tuple[RouteDelta, ...]
    sets_after: tuple[SetOp, ...]
    conntrack: tuple[ConntrackFlush, ...]
    drift: tuple[Drift, ...]
    notes: tuple[str, ...] = ()
    nft: tuple[NftOp, ...] = ()
    routing_after: tuple[RouteDelta, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not (self.sets_before or self.sets_after or self.conntrack or self.nft
                    or any(t.ops for d in self.iptables for t in d.tables)
                    or any(d.ops for d in (*self.routing, *self.routing_after)))
