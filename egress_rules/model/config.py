"""The compiler's configuration: names, marks, routing-table range, switches.

Defaults are the seed design's (chain names, keep mark ``0x12000000``, node-mark
prefix ``0x26`` with a 16-bit node value, tables from 3000, 100 of them), with
the seed's arithmetic bugs fixed: the node mark is a 32-bit value laid out as
``0x26VVVV00`` (prefix in bits 24-31, value in bits 8-23), and table ids are
32-bit with the kernel's reserved ids never used. Everything is validated on
construction, so a ``Config`` that exists is usable.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from egress_rules.errors import ConfigError, MarkConflictError, MarkLayoutError
from egress_rules.model.names import (
    validate_chain_name,
    validate_chain_prefix,
    validate_ifname,
    validate_marker,
    validate_nft_name,
    validate_set_prefix,
)

MARK_BITS = 32
MARK_MAX = (1 << MARK_BITS) - 1

# Routing table ids the kernel gives a meaning: unspec, default, main, local.
RESERVED_TABLES = frozenset({0, 253, 254, 255})
TABLE_ID_MAX = 0xFFFFFFFF

# Room a hashed name needs after its prefix (see ``names.owned_name``).
SET_NAME_ROOM = 5 + 8 + 4          # "src4-" + digest + check
GATEWAY_CHAIN_ROOM = 8             # the node mark in hex


_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _int_in(lo: int, hi: int, what: str) -> _Validator:
    def check(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if type(value) is not int or not lo <= value <= hi:
            raise ConfigError(f"config.{what or attribute.name}", f"{value!r} is not an integer in {lo}..{hi}")
    return check


@attrs.frozen
class MarkLayout:
    """Where the node mark lives in the 32-bit packet mark.

    A node mark is ``prefix << prefix_shift | value << value_shift``. The prefix
    field identifies "a node mark" (any node); the value field says which node.
    The default gives ``0x26VVVV00`` and 2^16 node values.
    """

    prefix: int = attrs.field(default=0x26, validator=_int_in(1, MARK_MAX, "mark_layout.prefix"))
    prefix_shift: int = attrs.field(default=24, validator=_int_in(0, 31, "mark_layout.prefix_shift"))
    prefix_bits: int = attrs.field(default=8, validator=_int_in(1, 32, "mark_layout.prefix_bits"))
    value_shift: int = attrs.field(default=8, validator=_int_in(0, 31, "mark_layout.value_shift"))
    value_bits: int = attrs.field(default=16, validator=_int_in(1, 31, "mark_layout.value_bits"))

    def __attrs_post_init__(self) -> None:
        subject = "config.mark_layout"
        if self.prefix_shift + self.prefix_bits > MARK_BITS:
            top = self.prefix_shift + self.prefix_bits - 1
            raise MarkLayoutError(subject, f"prefix field (bits {self.prefix_shift}..{top}) does not fit in 32 bits")
        if self.value_shift + self.value_bits > MARK_BITS:
            top = self.value_shift + self.value_bits - 1
            raise MarkLayoutError(subject, f"value field (bits {self.value_shift}..{top}) does not fit in 32 bits")
        if self.prefix >= 1 << self.prefix_bits:
            raise MarkLayoutError(subject, f"prefix {self.prefix:#x} does not fit in {self.prefix_bits} bits")
        if self.prefix_mask & self.value_mask:
            raise MarkLayoutError(subject, f"prefix field {self.prefix_mask:#010x} and value field "
                                  f"{self.value_mask:#010x} overlap")

    @property
    def prefix_mask(self) -> int:
        return ((1 << self.prefix_bits) - 1) << self.prefix_shift

    @property
    def value_mask(self) -> int:
        return ((1 << self.value_bits) - 1) << self.value_shift

    @property
    def owned_mask(self) -> int:
        """Every bit this library writes; other bits of the packet mark are left alone."""
        return self.prefix_mask | self.value_mask

    @property
    def prefix_value(self) -> int:
        """The prefix in place: what ``mark & prefix_mask`` equals for every node mark."""
        return self.prefix << self.prefix_shift

    @property
    def capacity(self) -> int:
        return 1 << self.value_bits

    def mark_for(self, value: int) -> int:
        if not 0 <= value < self.capacity:
            raise MarkLayoutError("config.mark_layout", f"node value {value} does not fit in {self.value_bits} bits")
        return self.prefix_value | (value << self.value_shift)

    def value_of(self, mark: int) -> int | None:
        """The node value of ``mark``, or ``None`` if ``mark`` is not a node mark of this layout."""
        if mark & ~self.owned_mask & MARK_MAX or mark & self.prefix_mask != self.prefix_value or mark > MARK_MAX:
            return None
        return (mark & self.value_mask) >> self.value_shift


class MarkUser(enum.Enum):
    """Other software known to use packet-mark bits; the value is the bits it uses."""

    KUBE_PROXY = 0x0000C000   # 0x4000 masquerade, 0x8000 drop
    CALICO = 0xFFFF0000       # Felix's default iptablesMarkMask
    CILIUM = 0x00000F00       # Cilium's MARK_MAGIC_* field

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


@attrs.frozen
class MarkConflict:
    """Our mark bits overlap bits that ``user`` also writes or matches."""

    user: str
    user_bits: int
    overlap: int

    def __str__(self) -> str:
        return f"{self.user} uses {self.user_bits:#010x}; overlap {self.overlap:#010x}"


@attrs.frozen
class TableRange:
    """Routing tables this library may allocate: ``start`` up to, not including, ``start + count``.

    ``count`` is therefore the maximum number of gateway nodes a node can route
    to (the seed writes the range as [s, s+n] but calls n that maximum; we
    keep the count meaning). Reserved ids 0, 253, 254, 255 inside the range are skipped.
    """

    start: int = attrs.field(default=3000, validator=_int_in(1, TABLE_ID_MAX, "tables.start"))
    count: int = attrs.field(default=100, validator=_int_in(1, TABLE_ID_MAX, "tables.count"))

    def __attrs_post_init__(self) -> None:
        if self.start + self.count - 1 > TABLE_ID_MAX:
            last = self.start + self.count - 1
            raise ConfigError("config.tables", f"range {self.start}..{last} exceeds {TABLE_ID_MAX}")
        if self.capacity == 0:
            raise ConfigError("config.tables", f"range {self.start}..{self.end - 1} holds only reserved table ids")

    @property
    def end(self) -> int:
        """One past the last table of the range."""
        return self.start + self.count

    @property
    def capacity(self) -> int:
        return self.count - sum(1 for t in RESERVED_TABLES if self.start <= t < self.end)

    def __contains__(self, table: object) -> bool:
        return isinstance(table, int) and self.start <= table < self.end and table not in RESERVED_TABLES


def _chain_name(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    validate_chain_name(value, f"config.chains.{attribute.name}")


@attrs.frozen
class ChainNames:
    """The iptables chain names (the seed's) and the prefix of per-gateway chains."""

    reset_mark: str = attrs.field(default="EGRESSGATEWAY-RESET-MARK", validator=_chain_name)
    mark_request: str = attrs.field(default="EGRESSGATEWAY-MARK-REQUEST", validator=_chain_name)
    no_snat: str = attrs.field(default="EGRESSGATEWAY-NO-SNAT", validator=_chain_name)
    snat_eip: str = attrs.field(default="EGRESSGATEWAY-SNAT-EIP", validator=_chain_name)
    gateway_prefix: str = attrs.field(
        default="EGRESSGATEWAY-TO-",
        validator=lambda _i, _a, v: validate_chain_prefix(v, "config.chains.gateway_prefix", GATEWAY_CHAIN_ROOM))

    def __attrs_post_init__(self) -> None:
        fixed = [self.reset_mark, self.mark_request, self.no_snat, self.snat_eip]
        if len(set(fixed)) != len(fixed):
            raise ConfigError("config.chains", "chain names must be distinct")
        for name in fixed:
            if name.startswith(self.gateway_prefix):
                raise ConfigError("config.chains", f"{name!r} starts with the gateway chain prefix "
                                  f"{self.gateway_prefix!r}")

    def gateway_chain(self, node_mark: int) -> str:
        """The chain that marks packets for the gateway node whose mark is ``node_mark``."""
        return f"{self.gateway_prefix}{node_mark:08X}"


def _bool(_inst: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if type(value) is not bool:
        raise ConfigError(f"config.{attribute.name}", f"{value!r} is not a boolean")


def _mark_users(values: Iterable[MarkUser]) -> frozenset[MarkUser]:
    return frozenset(values)


@attrs.frozen
class Config:
    """Everything the compiler needs besides the cluster state. Defaults follow the seed."""

    chains: ChainNames = attrs.field(factory=ChainNames)
    keep_mark: int = attrs.field(default=0x12000000, validator=_int_in(1, MARK_MAX, "keep_mark"))
    mark_layout: MarkLayout = attrs.field(factory=MarkLayout)
    tables: TableRange = attrs.field(factory=TableRange)
    # Below main (32766); the kernel evaluates rules in ascending priority.
    ip_rule_priority: int = attrs.field(default=99, validator=_int_in(1, 32765, "ip_rule_priority"))
    # Ownership marker of our ip rules and routes (``protocol``/``proto``); 0-4 have kernel meanings.
    route_protocol: int = attrs.field(default=230, validator=_int_in(5, 255, "route_protocol"))
    tunnel_device: str = attrs.field(
        default="egress.vxlan", validator=lambda _i, _a, v: validate_ifname(v, "config.tunnel_device"))
    weave_no_snat: bool = attrs.field(default=False, validator=_bool)
    ipv4: bool = attrs.field(default=True, validator=_bool)
    ipv6: bool = attrs.field(default=True, validator=_bool)
    set_prefix: str = attrs.field(
        default="egress-", validator=lambda _i, _a, v: validate_set_prefix(v, "config.set_prefix", SET_NAME_ROOM))
    # Written at the start of every rule comment; decides what the planner may touch.
    owner: str = attrs.field(default="egress-rules", validator=lambda _i, _a, v: validate_marker(v, "config.owner"))
    other_mark_users: frozenset[MarkUser] = attrs.field(default=frozenset(), converter=_mark_users)
    reserved_mark_bits: int = attrs.field(default=0, validator=_int_in(0, MARK_MAX, "reserved_mark_bits"))
    # The nftables table (one per family) the nft backend owns entirely.
    nft_table: str = attrs.field(
        default="egress_rules", validator=lambda _i, _a, v: validate_nft_name(v, "config.nft_table"))
    # ipset's default maxelem; larger sets get a larger maxelem, up to this bound.
    ipset_maxelem_limit: int = attrs.field(default=1 << 24, validator=_int_in(65536, 1 << 28, "ipset_maxelem_limit"))

    def __attrs_post_init__(self) -> None:
        layout = self.mark_layout
        if self.keep_mark & ~layout.owned_mask:
            raise MarkLayoutError("config.keep_mark", f"{self.keep_mark:#010x} has bits outside the owned mask "
                                  f"{layout.owned_mask:#010x}")
        if self.keep_mark & layout.prefix_mask == layout.prefix_value:
            raise MarkLayoutError("config.keep_mark", f"{self.keep_mark:#010x} carries the node-mark prefix "
                                  f"{layout.prefix_value:#010x} and would be taken for a node mark")
        if not (self.ipv4 or self.ipv6):
            raise ConfigError("config", "at least one of ipv4 and ipv6 must be enabled")
        for user in self.other_mark_users:
            if not isinstance(user, MarkUser):
                raise ConfigError("config.other_mark_users", f"{user!r} is not a known mark user")
        conflicts = self.mark_conflicts()
        if conflicts:
            raise MarkConflictError("config.mark_layout", "mark bits overlap other software: "
                                    + "; ".join(str(c) for c in conflicts))

    def mark_conflicts(self, users: frozenset[MarkUser] | None = None) -> tuple[MarkConflict, ...]:
        """Overlaps between our mark bits and other software's (``users`` or the configured ones)."""
        owned = self.mark_layout.owned_mask
        found = [MarkConflict(u.label, u.value, owned & u.value)
                 for u in sorted(self.other_mark_users if users is None else users, key=lambda u: u.name)
                 if owned & u.value]
        if self.reserved_mark_bits & owned:
            found.append(MarkConflict("reserved_mark_bits", self.reserved_mark_bits, self.reserved_mark_bits & owned))
        return tuple(found)


DEFAULT_CONFIG = Config()
