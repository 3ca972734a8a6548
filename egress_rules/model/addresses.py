"""IP addresses and CIDRs as validated integers.

This module owns parsing, formatting and collapsing of addresses. Addresses are
held as ``(family, int)`` rather than as ``ipaddress``/``netaddr`` objects: a
cluster has hundreds of thousands of endpoint addresses and the compiler only
needs to compare, sort and merge them. Each distinct string is parsed once
(``socket.inet_pton`` is strict: no leading zeros, no short forms, no zone ids)
and cached.
"""

from __future__ import annotations

import enum
import functools
import operator
import socket
from collections.abc import Iterable

import attrs

from egress_rules.errors import FamilyMismatchError, InvalidAddressError


class Family(enum.IntEnum):
    """An IP family; the value is the IP version."""

    IPV4 = 4
    IPV6 = 6

    @property
    def bits(self) -> int:
        return _BITS[self]

    @property
    def label(self) -> str:
        return "IPv4" if self is Family.IPV4 else "IPv6"

    @property
    def suffix(self) -> str:
        """The short tag used in kernel object names: ``v4`` or ``v6``."""
        return "v4" if self is Family.IPV4 else "v6"


_AF = {Family.IPV4: socket.AF_INET, Family.IPV6: socket.AF_INET6}
_BITS = {Family.IPV4: 32, Family.IPV6: 128}
_BYTES = {Family.IPV4: 4, Family.IPV6: 16}


def _format_int(family: Family, value: int) -> str:
    return socket.inet_ntop(_AF[family], value.to_bytes(_BYTES[family], "big"))


@attrs.frozen(order=True, slots=True)
class IPAddress:
    """One IP address. Ordered by family, then numerically."""

    family: Family
    value: int

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.value < (1 << self.family.bits):
            raise InvalidAddressError(f"address {self.value}", f"out of range for {self.family.label}")

    def __str__(self) -> str:
        return _format_int(self.family, self.value)

    def as_cidr(self) -> Cidr:
        return Cidr(self.family, self.value, self.family.bits)

    @classmethod
    def trusted(cls, family: Family, value: int) -> IPAddress:
        """Construct without re-validating: for values this module has just checked."""
        address = object.__new__(cls)
        object.__setattr__(address, "family", family)
        object.__setattr__(address, "value", value)
        return address


@attrs.frozen(order=False, slots=True)
class Cidr:
    """A network prefix with its host bits cleared. Ordered by family, network, length.

    The comparisons are written out: attrs' generic ones cost microseconds, and
    plans sort hundreds of thousands of prefixes.
    """

    family: Family
    network: int
    prefixlen: int
    # The canonical text, computed once: rendering formats every member of every set.
    _text: str | None = attrs.field(default=None, init=False, eq=False, order=False, hash=False, repr=False)

    def __attrs_post_init__(self) -> None:
        bits = self.family.bits
        if not 0 <= self.prefixlen <= bits:
            raise InvalidAddressError(f"prefix length {self.prefixlen}", f"not in 0..{bits}")
        if not 0 <= self.network < (1 << bits):
            raise InvalidAddressError(f"network {self.network}", f"out of range for {self.family.label}")
        if self.network & self.hostmask:
            raise InvalidAddressError(str(self), "host bits are set")

    def sort_key(self) -> tuple[int, int, int]:
        return (self.family, self.network, self.prefixlen)

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Cidr):
            return NotImplemented
        return (self.family, self.network, self.prefixlen) < (other.family, other.network, other.prefixlen)

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Cidr):
            return NotImplemented
        return (self.family, self.network, self.prefixlen) <= (other.family, other.network, other.prefixlen)

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Cidr):
            return NotImplemented
        return (self.family, self.network, self.prefixlen) > (other.family, other.network, other.prefixlen)

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Cidr):
            return NotImplemented
        return (self.family, self.network, self.prefixlen) >= (other.family, other.network, other.prefixlen)

    @classmethod
    def trusted(cls, family: Family, network: int, prefixlen: int, text: str | None = None) -> Cidr:
        """Construct without re-validating: for values this module has just checked.

        ``text``, if given, must be the canonical :meth:`host_str` of the result.
        """
        cidr = object.__new__(cls)
        object.__setattr__(cidr, "family", family)
        object.__setattr__(cidr, "network", network)
        object.__setattr__(cidr, "prefixlen", prefixlen)
        object.__setattr__(cidr, "_text", text)
        return cidr

    @property
    def hostmask(self) -> int:
        return (1 << (_BITS[self.family] - self.prefixlen)) - 1

    @property
    def last(self) -> int:
        """The highest address in the prefix, as an integer."""
        return self.network | ((1 << (_BITS[self.family] - self.prefixlen)) - 1)

    @property
    def is_host(self) -> bool:
        return self.prefixlen == _BITS[self.family]

    @property
    def address(self) -> str:
        """The network address as text, without the length."""
        return _format_int(self.family, self.network)

    def contains(self, value: int) -> bool:
        """Whether an address (an integer of the same family) lies in this prefix."""
        return self.network <= value <= self.last

    def covers(self, other: Cidr) -> bool:
        return self.family == other.family and self.network <= other.network and other.last <= self.last

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    def host_str(self) -> str:
        """Text as ipset and iptables-save print it: a host prefix without ``/32`` or ``/128``."""
        text = self._text
        if text is None:
            text = self.address if self.is_host else f"{self.address}/{self.prefixlen}"
            object.__setattr__(self, "_text", text)
        return text


def _parse_int(text: str) -> tuple[Family, int]:
    family = Family.IPV6 if ":" in text else Family.IPV4
    try:
        packed = socket.inet_pton(_AF[family], text)
    except (OSError, ValueError):
        raise InvalidAddressError(repr(text), f"not a valid {family.label} address") from None
    return family, int.from_bytes(packed, "big")


def parse_address(text: str) -> IPAddress:
    """Parse one IP address; raise :class:`InvalidAddressError` if it is not one."""
    if not isinstance(text, str):
        raise InvalidAddressError(repr(text), "an address must be a string")
    return _parse_address(text)


def parse_cidr(text: str) -> Cidr:
    """Parse ``ADDR`` or ``ADDR/LEN``; host bits are cleared (``10.1.2.3/8`` is ``10.0.0.0/8``).

    A bare address is a host prefix. The length must be decimal digits only.
    """
    if not isinstance(text, str):
        raise InvalidAddressError(repr(text), "a CIDR must be a string")
    return _parse_cidr(text)


@functools.lru_cache(maxsize=1 << 18)
def _parse_address(text: str) -> IPAddress:
    family, value = _parse_int(text)
    return IPAddress.trusted(family, value)


@functools.lru_cache(maxsize=1 << 18)
def _parse_cidr(text: str) -> Cidr:
    addr, sep, length = text.partition("/")
    family, value = _parse_int(addr)
    if not sep:
        # inet_pton accepts only canonical dotted quads, so IPv4 input text is already canonical.
        return Cidr.trusted(family, value, _BITS[family], addr if family is Family.IPV4 else None)
    if not length.isascii() or not length.isdigit() or len(length) > 3 or (len(length) > 1 and length[0] == "0"):
        raise InvalidAddressError(repr(text), "prefix length must be a decimal number without leading zeros")
    prefixlen = int(length)
    bits = _BITS[family]
    if prefixlen > bits:
        raise InvalidAddressError(repr(text), f"prefix length {prefixlen} exceeds {bits}")
    hostmask = (1 << (bits - prefixlen)) - 1
    return Cidr.trusted(family, value & ~hostmask, prefixlen)


def require_family(address: IPAddress | Cidr, family: Family, subject: str) -> None:
    """Raise :class:`FamilyMismatchError` unless ``address`` is of ``family``."""
    if address.family is not family:
        raise FamilyMismatchError(subject, f"{address} is {address.family.label}, expected {family.label}")


def _range_to_cidrs(family: Family, start: int, end: int) -> Iterable[Cidr]:
    """The minimal list of prefixes covering the inclusive range ``start..end``."""
    bits = _BITS[family]
    while start <= end:
        # Largest block aligned at ``start``: its size is the lowest set bit of start.
        size = (start & -start) if start else 1 << bits
        while size > end - start + 1:
            size >>= 1
        length = bits - size.bit_length() + 1
        yield Cidr.trusted(family, start, length)
        start += size


_NETWORK_THEN_LENGTH = operator.attrgetter("network", "prefixlen")
# Host masks by family and prefix length, so the hot loop below does no shifting.
_HOSTMASKS = {family: tuple((1 << (bits - n)) - 1 for n in range(bits + 1)) for family, bits in _BITS.items()}


def collapse(cidrs: Iterable[Cidr]) -> tuple[Cidr, ...]:
    """Merge overlapping and adjacent prefixes into the fewest prefixes; sorted.

    Works on one family or both; families never merge with each other. Prefixes
    that merge with nothing are kept as the same objects (the common case for
    pod IPs), so collapsing costs little more than sorting.
    """
    by_family: dict[Family, list[Cidr]] = {}
    for cidr in cidrs:
        by_family.setdefault(cidr.family, []).append(cidr)
    result: list[Cidr] = []
    for family in sorted(by_family):
        masks = _HOSTMASKS[family]
        items = sorted(by_family[family], key=_NETWORK_THEN_LENGTH)
        previous_end = -2
        for cidr in items:
            if cidr.network <= previous_end + 1:
                result.extend(_merge_sorted(family, items, masks))
                break
            previous_end = cidr.network | masks[cidr.prefixlen]
        else:
            result.extend(items)
    return tuple(result)


def _merge_sorted(family: Family, items: list[Cidr], masks: tuple[int, ...]) -> list[Cidr]:
    result: list[Cidr] = []
    run: list[Cidr] = []
    run_start = run_end = -2
    for cidr in items:
        start = cidr.network
        end = start | masks[cidr.prefixlen]
        if start <= run_end + 1:
            run.append(cidr)
            run_end = max(run_end, end)
            continue
        if run:
            result.extend(run if len(run) == 1 else _range_to_cidrs(family, run_start, run_end))
        run, run_start, run_end = [cidr], start, end
    result.extend(run if len(run) == 1 else _range_to_cidrs(family, run_start, run_end))
    return result


def split_zero_prefix(cidrs: Iterable[Cidr]) -> tuple[Cidr, ...]:
    """Replace ``0.0.0.0/0`` and ``::/0`` by their two halves (``hash:net`` rejects /0)."""
    result: list[Cidr] = []
    for cidr in cidrs:
        if cidr.prefixlen == 0:
            half = 1 << (cidr.family.bits - 1)
            result.append(Cidr(cidr.family, 0, 1))
            result.append(Cidr(cidr.family, half, 1))
        else:
            result.append(cidr)
    return tuple(result)
