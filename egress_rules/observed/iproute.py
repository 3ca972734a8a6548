"""Parsing ``ip -j rule show`` and ``ip -j route show table all`` (either family).

Rules and routes carrying our ``protocol`` number are ours and parsed in full;
the rest are kept as their JSON objects, never touched.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from egress_rules.errors import InvalidAddressError, ParseError
from egress_rules.model.addresses import Cidr, Family, IPAddress, parse_address, parse_cidr
from egress_rules.observed.ownership import Ownership, protocol_number

TABLE_NAMES = {"default": 253, "main": 254, "local": 255, "unspec": 0}


@attrs.frozen
class ObservedIPRule:
    """An ip rule; ``selectors`` holds every other key ``ip`` printed (sorted), so foreign rules round-trip."""

    family: Family
    priority: int
    mark: int | None
    mask: int | None
    table: int | None
    protocol: int | None
    owned: bool
    selectors: tuple[tuple[str, str], ...]


@attrs.frozen
class ObservedRoute:
    family: Family
    table: int
    destination: Cidr | None
    via: IPAddress | None
    device: str | None
    protocol: int | None
    route_type: str
    owned: bool


def _load(text: str, source: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as error:
        raise ParseError(source, f"not valid JSON: {error.msg}", error.lineno) from None
    except (RecursionError, ValueError) as error:  # nesting, or a number of more than 4300 digits
        raise ParseError(source, f"not valid JSON: {error}") from None
    if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
        raise ParseError(source, "expected a JSON list of objects")
    return data


def _table(value: object) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        # isascii: '²'.isdigit() holds but int('²') fails; 10 digits hold any 32-bit table id.
        if value.isascii() and value.isdigit():
            return int(value) if len(value) <= 10 else None
        return TABLE_NAMES.get(value)
    return None


def _hex(value: object, source: str, index: int) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value), 0)
    except ValueError:
        raise ParseError(source, f"entry {index}: bad number {value!r}") from None


def parse_ip_rules(text: str, family: Family, ownership: Ownership,
                   source: str = "ip -j rule") -> tuple[ObservedIPRule, ...]:
    rules = []
    for index, item in enumerate(_load(text, source)):
        if "priority" not in item:
            raise ParseError(source, f"entry {index}: no priority")
        priority = item["priority"]
        if not isinstance(priority, int):
            raise ParseError(source, f"entry {index}: priority {priority!r} is not an integer")
        mark = _hex(item.get("fwmark"), source, index)
        mask = _hex(item.get("fwmask"), source, index)
        if mark is not None and mask is None:
            mask = 0xFFFFFFFF
        other = tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in item.items()
                             if k not in ("priority", "fwmark", "fwmask", "table", "protocol")))
        protocol = item.get("protocol")
        rules.append(ObservedIPRule(family, priority, mark, mask, _table(item.get("table")),
                                    protocol_number(protocol), ownership.owns_protocol(protocol), other))
    return tuple(rules)


def _family_of(item: dict[str, Any]) -> Family | None:
    for key in ("dst", "gateway", "prefsrc"):
        value = item.get(key)
        if isinstance(value, str) and value != "default":
            return Family.IPV6 if ":" in value else Family.IPV4
    return None


def parse_ip_routes(text: str, family: Family, ownership: Ownership,
                    source: str = "ip -j route show table all") -> tuple[ObservedRoute, ...]:
    """Routes of one family. ``ip route show table all`` mixes families: read it with ``ip -4``/``ip -6``."""
    routes = []
    for index, item in enumerate(_load(text, source)):
        dst = item.get("dst")
        if not isinstance(dst, str):
            raise ParseError(source, f"entry {index}: no destination")
        if _family_of(item) not in (None, family):
            raise ParseError(source, f"entry {index} ({dst}) is not {family.label}; read routes with "
                             f"'ip -{family.value} -j route show table all'")
        owned = ownership.owns_protocol(item.get("protocol"))
        destination: Cidr | None
        if dst == "default":
            destination = Cidr(family, 0, 0)
        else:
            try:
                destination = parse_cidr(dst)
            except InvalidAddressError:
                if owned:
                    raise ParseError(source, f"entry {index}: bad destination {dst!r}") from None
                destination = None  # multicast and other forms we never write
        via = None
        if isinstance(item.get("gateway"), str):
            try:
                via = parse_address(item["gateway"])
            except InvalidAddressError:
                raise ParseError(source, f"entry {index}: bad gateway {item['gateway']!r}") from None
        table = _table(item.get("table", "main"))
        if table is None:
            raise ParseError(source, f"entry {index}: unknown table {item.get('table')!r}")
        device = item.get("dev")
        routes.append(ObservedRoute(family, table, destination, via, device if isinstance(device, str) else None,
                                    protocol_number(item.get("protocol")), str(item.get("type", "unicast")), owned))
    return tuple(routes)
