"""Parsing ``ipset save`` output.

Owned sets are parsed in full (family, type, maxelem, members as prefixes);
foreign sets keep only their name, type and member count. ``initval`` and
``bucketsize`` are ignored: the kernel picks them.
"""

from __future__ import annotations

import itertools

import attrs

from egress_rules.errors import InvalidAddressError, ParseError
from egress_rules.model.addresses import Cidr, Family, parse_cidr
from egress_rules.observed.ownership import Ownership
from egress_rules.observed.words import split_lines, split_plain

_FAMILIES = {"inet": Family.IPV4, "inet6": Family.IPV6}


@attrs.frozen
class ObservedSet:
    """One set as saved. ``members`` is empty for foreign sets (their entries are not kept)."""

    name: str
    set_type: str
    owned: bool
    family: Family | None
    maxelem: int | None
    options: tuple[str, ...]
    members: frozenset[Cidr]
    member_count: int


def parse_ipset_save(text: str, ownership: Ownership, source: str = "ipset save") -> tuple[ObservedSet, ...]:
    """Parse ``ipset save`` output into sets, in the order they were printed."""
    headers: dict[str, tuple[str, Family | None, int | None, tuple[str, ...]]] = {}
    members: dict[str, set[Cidr]] = {}
    counts: dict[str, int] = {}
    owned: dict[str, bool] = {}  # decided once per set: the check hashes the name
    for number, raw in enumerate(split_lines(text), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = split_plain(line)
        if words[0] == "create":
            if len(words) < 3:
                raise ParseError(source, f"malformed create line {line[:60]!r}", number)
            name, set_type, options = words[1], words[2], tuple(words[3:])
            if name in headers:
                raise ParseError(source, f"set {name} created twice", number)
            family = maxelem = None
            for key, value in itertools.pairwise(options):
                if key == "family":
                    family = _FAMILIES.get(value)
                elif key == "maxelem" and value.isascii() and value.isdigit() and len(value) <= 10:
                    maxelem = int(value)
            headers[name] = (set_type, family, maxelem, options)
            members[name] = set()
            counts[name] = 0
            owned[name] = ownership.owns_set(name)
        elif words[0] == "add":
            if len(words) < 3 or words[1] not in headers:
                raise ParseError(source, f"add to an undeclared set: {line[:60]!r}", number)
            name = words[1]
            counts[name] += 1
            if owned[name]:
                try:
                    cidr = parse_cidr(words[2])
                except InvalidAddressError as error:
                    raise ParseError(source, f"set {name}: bad entry {words[2]!r} ({error.detail})", number) from None
                if headers[name][1] is not None and cidr.family is not headers[name][1]:
                    raise ParseError(source, f"set {name}: entry {words[2]} is not of the set's family", number)
                members[name].add(cidr)
        else:
            raise ParseError(source, f"unexpected line {line[:60]!r}", number)
    return tuple(
        ObservedSet(name, set_type, owned[name], family, maxelem, options,
                    frozenset(members[name]), counts[name])
        for name, (set_type, family, maxelem, options) in headers.items()
    )
