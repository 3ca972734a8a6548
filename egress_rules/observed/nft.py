"""Parsing ``nft -j list ruleset`` (or ``nft -j list table ...``) output.

Our tables (family ``ip``/``ip6``, named ``config.nft_table``) are kept in full
and typed: sets with their stored elements, base and regular chains, and rules
in order with their handles, each parsed back into a
:class:`~egress_rules.model.ruleset.RuleBody` so the planner can compare it
with the desired rule. Every other table (iptables-nft's, whose rules hold
``xt`` expressions nft cannot re-read, and other software's) is foreign and
kept only as names.

The list output is not the input the backend writes (checked against
nftables 1.0.6 in a namespace, see ``tests/data/observed/capture-nft.sh``):

* ``mark & M == V`` with a mask of contiguous high bits is printed as
  ``mark == {"prefix": {"addr": V, "len": L}}``, with an all-ones mask as
  ``mark == V``; other masks keep the ``&``;
* the mark mangle ``(mark & K) | V`` is printed with ``K | V`` as the mask,
  ``mark | V`` when that is all ones, and ``mark & K`` when ``V`` is 0 (all
  mean the same);
* ``{"counter": null}`` becomes ``{"counter": {"packets": N, "bytes": N}}``;
* set elements: a /32 or /128 is a plain string, other prefixes
  ``{"prefix": ...}``, an interval that is no prefix ``{"range": [a, b]}``,
  an element with a comment or timeout ``{"elem": {"val": ...}}``; elements
  are sorted, and adjacent elements stay separate (no merging without
  ``auto-merge``).

A rule is read as what it does: the identity NAT binding ``snat to ip saddr``
that the backend writes for an ``Accept`` in a chain reachable from a nat base
chain reads back as ``Accept`` there, and a plain ``accept`` in such a chain
reads as nothing we write (``body=None``: it does not stop a later
masquerade). Counters are ignored: they do not change what a rule does.
Anything else we do not write also gives ``body=None``, so the planner
replaces the rule. Truncated or garbled JSON raises
:class:`~egress_rules.errors.ParseError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import attrs

from egress_rules.errors import InvalidAddressError, ParseError
from egress_rules.model.addresses import Cidr, Family, IPAddress, collapse, parse_address
from egress_rules.model.ruleset import (
    Accept,
    Action,
    ConnmarkMatch,
    ConntrackDirectionMatch,
    CtDirection,
    Direction,
    Drop,
    Goto,
    Jump,
    MarkMatch,
    Masquerade,
    Match,
    OutInterfaceMatch,
    Return,
    RuleBody,
    SetConnmark,
    SetMark,
    SetMatch,
    Snat,
)
from egress_rules.observed.ownership import Ownership

MARK_ALL = 0xFFFFFFFF
_FAMILIES = {"ip": Family.IPV4, "ip6": Family.IPV6}
_MARK = {"meta": {"key": "mark"}}
# Named stateful objects a table can hold besides sets and chains.
OBJECT_KINDS = ("map", "counter", "quota", "limit", "ct helper", "ct timeout", "ct expectation", "synproxy",
                "secmark", "flowtable")


@attrs.frozen
class NftHook:
    """What makes a chain a base chain: its type, hook, integer priority and policy."""

    chain_type: str
    hook: str
    priority: int
    policy: str


@attrs.frozen
class NftRule:
    """One rule of ours: its handle, its body if it is a form we write, and its JSON for messages."""

    handle: int
    body: RuleBody | None
    text: str


@attrs.frozen
class NftChain:
    name: str
    handle: int
    hook: NftHook | None
    rules: tuple[NftRule, ...]


@attrs.frozen
class NftSet:
    """A set of our table. ``elements`` holds each stored interval as the prefixes that cover it exactly.

    Elements are only read for address sets (``ipv4_addr``/``ipv6_addr``); a
    set of another type keeps its type and no elements.
    """

    name: str
    handle: int
    set_type: str
    flags: tuple[str, ...]
    elements: tuple[tuple[Cidr, ...], ...]

    @property
    def members(self) -> tuple[Cidr, ...]:
        """Everything the set matches, as collapsed prefixes (comparable with a desired set's members)."""
        return collapse(c for element in self.elements for c in element)


@attrs.frozen
class NftTable:
    """One of our tables, typed. ``objects`` are other named objects in it, as ``(kind, name)``."""

    family: Family
    name: str
    handle: int
    sets: tuple[NftSet, ...]
    chains: tuple[NftChain, ...]
    objects: tuple[tuple[str, str], ...] = ()

    def set(self, name: str) -> NftSet | None:
        for item in self.sets:
            if item.name == name:
                return item
        return None

    def chain(self, name: str) -> NftChain | None:
        for item in self.chains:
            if item.name == name:
                return item
        return None


@attrs.frozen
class ForeignNftTable:
    """A table that is not ours: names only, never touched."""

    family: str
    name: str
    chains: tuple[str, ...]
    sets: tuple[str, ...]
    rule_count: int


@attrs.frozen
class NftRuleset:
    """A parsed listing: our tables by family, the foreign tables, and the nft version that printed it."""

    tables: tuple[NftTable, ...]
    foreign: tuple[ForeignNftTable, ...]
    version: str | None = None

    def table(self, family: Family) -> NftTable | None:
        for table in self.tables:
            if table.family is family:
                return table
        return None


# ---------------------------------------------------------------- values


def _int(value: object) -> int | None:
    """An integer as nft prints it (a JSON number) or as input may write it (``"0x..."``/decimal string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MARK_ALL else None
    if isinstance(value, str):
        try:
            number = int(value, 0)
        except ValueError:
            return None
        return number if 0 <= number <= MARK_ALL else None
    return None


def _high_mask(length: int) -> int:
    return (MARK_ALL << (32 - length)) & MARK_ALL


def interval_prefixes(family: Family, first: int, last: int) -> tuple[Cidr, ...]:
    """The fewest prefixes covering exactly ``first..last``."""
    bits = family.bits
    result = []
    while first <= last:
        size = (first & -first) if first else 1 << bits
        while size > last - first + 1:
            size >>= 1
        result.append(Cidr(family, first, bits - size.bit_length() + 1))
        first += size
    return tuple(result)


def _address(value: object, family: Family) -> IPAddress | None:
    if not isinstance(value, str):
        return None
    try:
        address = parse_address(value)
    except InvalidAddressError:
        return None
    return address if address.family is family else None


def _element(value: object, family: Family) -> tuple[Cidr, ...] | None:
    """One listed element as the prefixes of its interval; ``None`` if it is no address element."""
    if isinstance(value, dict) and set(value) == {"elem"} and isinstance(value["elem"], dict):
        return _element(value["elem"].get("val"), family)
    if isinstance(value, str):
        address = _address(value, family)
        return None if address is None else (address.as_cidr(),)
    if isinstance(value, dict) and set(value) == {"prefix"} and isinstance(value["prefix"], dict):
        address = _address(value["prefix"].get("addr"), family)
        length = value["prefix"].get("len")
        if address is None or not isinstance(length, int) or isinstance(length, bool) \
                or not 0 <= length <= family.bits:
            return None
        hostmask = (1 << (family.bits - length)) - 1
        return (Cidr(family, address.value & ~hostmask, length),)
    if isinstance(value, dict) and set(value) == {"range"} and isinstance(value["range"], list) \
            and len(value["range"]) == 2:
        first, last = (_address(v, family) for v in value["range"])
        if first is None or last is None or first.value > last.value:
            return None
        return interval_prefixes(family, first.value, last.value)
    return None


# ---------------------------------------------------------------- rules


_CT_MARK = {"ct": {"key": "mark"}}
_OIFNAME = {"meta": {"key": "oifname"}}


def _mark_match(key: object, left: object, right: object) -> tuple[int, int] | None:
    """(value, mask) of ``key & mask == value`` in the forms nft prints (``key`` is the packet or ct mark)."""
    if left == key:
        if isinstance(right, dict) and set(right) == {"prefix"} and isinstance(right["prefix"], dict):
            addr, length = _int(right["prefix"].get("addr")), right["prefix"].get("len")
            if addr is None or not isinstance(length, int) or not 0 <= length <= 32:
                return None
            return addr, _high_mask(length)
        number = _int(right)
        return None if number is None else (number, MARK_ALL)
    mask = _key_and(key, left)
    number = _int(right)
    return None if mask is None or number is None else (number, mask)


def _match(value: object, protocol: str) -> Match | None:
    if not isinstance(value, dict) or set(value) != {"op", "left", "right"} or value["op"] not in ("==", "!="):
        return None
    negate = value["op"] == "!="
    left, right = value["left"], value["right"]
    for key, kind in ((_MARK, MarkMatch), (_CT_MARK, ConnmarkMatch)):
        parsed = _mark_match(key, left, right)
        if parsed is not None:
            return kind(parsed[0], parsed[1], negate)
    if isinstance(left, dict) and set(left) == {"payload"} and isinstance(right, str) and right.startswith("@"):
        payload = left["payload"]
        if isinstance(payload, dict) and payload.get("protocol") == protocol \
                and payload.get("field") in ("saddr", "daddr") and len(payload) == 2:
            direction = Direction.SRC if payload["field"] == "saddr" else Direction.DST
            return SetMatch(right[1:], direction, negate)
        return None
    if left == {"ct": {"key": "direction"}} and right in ("original", "reply") and not negate:
        return ConntrackDirectionMatch(CtDirection(str(right).upper()))
    if left == _OIFNAME and isinstance(right, str):
        return OutInterfaceMatch(right, negate)
    return None


def _key_and(key: object, value: object) -> int | None:
    """``K`` of ``key & K``; ``None`` for any other expression."""
    if isinstance(value, dict) and set(value) == {"&"} and isinstance(value["&"], list) and len(value["&"]) == 2 \
            and value["&"][0] == key:
        return _int(value["&"][1])
    return None


def _set_mark(key: object, value: object) -> tuple[int, int] | None:
    """(value, mask) of ``key = (key & ~mask) | value`` from any of the forms nft prints a mark mangle in."""
    keep: int | None
    number: int | None
    if value == key:
        keep, number = MARK_ALL, 0
    elif isinstance(value, dict) and set(value) == {"|"} and isinstance(value["|"], list) and len(value["|"]) == 2:
        inner, number = value["|"]
        keep = MARK_ALL if inner == key else _key_and(key, inner)
        number = _int(number)
    elif isinstance(value, dict) and set(value) == {"&"}:
        keep, number = _key_and(key, value), 0
    else:
        keep, number = 0, _int(value)  # a plain value overwrites every bit
    if keep is None or number is None:
        return None
    # nft prints (mark & K) | V with K | V as the mask: the bits V sets are not kept either way.
    return number, (~keep | number) & MARK_ALL


def _action(kind: str, value: object, protocol: str, nat: bool) -> Action | None:
    if kind == "accept" and value is None:
        return None if nat else Accept()
    if kind == "drop" and value is None:
        return Drop()
    if kind == "return" and value is None:
        return Return()
    if kind in ("jump", "goto") and isinstance(value, dict) and set(value) == {"target"} \
            and isinstance(value["target"], str):
        return Jump(value["target"]) if kind == "jump" else Goto(value["target"])
    if kind == "mangle" and isinstance(value, dict) and set(value) == {"key", "value"}:
        for key, setter in ((_MARK, SetMark), (_CT_MARK, SetConnmark)):
            if value["key"] == key:
                parsed = _set_mark(key, value["value"])
                return None if parsed is None else setter(parsed[0], parsed[1])
        return None
    if kind == "snat" and isinstance(value, dict) and set(value) == {"addr"}:
        addr = value["addr"]
        if addr == {"payload": {"protocol": protocol, "field": "saddr"}}:
            return Accept() if nat else None
        address = _address(addr, _FAMILIES[protocol])
        return None if address is None else Snat(address)
    if kind == "masquerade" and value is None:
        return Masquerade()
    return None


def rule_body(expr: object, comment: str, protocol: str, nat: bool) -> RuleBody | None:
    """The body of a listed rule in table family ``protocol``, if it is a form we write.

    ``nat``: the rule's chain is reachable from a nat base chain, where an
    ``Accept`` is written as the identity binding ``snat to ip saddr``.
    """
    if not isinstance(expr, list):
        return None
    matches: list[Match] = []
    action: Action | None = None
    for statement in expr:
        if not isinstance(statement, dict) or len(statement) != 1 or action is not None:
            return None
        [(kind, value)] = statement.items()
        if kind == "counter":
            continue
        if kind == "match":
            match = _match(value, protocol)
            if match is None:
                return None
            matches.append(match)
            continue
        action = _action(kind, value, protocol, nat)
        if action is None:
            return None
    if action is None:
        return None
    return RuleBody(tuple(matches), action, comment)


def _targets(expr: object) -> Iterable[str]:
    if isinstance(expr, list):
        for statement in expr:
            if isinstance(statement, dict):
                for kind in ("jump", "goto"):
                    target = statement.get(kind)
                    if isinstance(target, dict) and isinstance(target.get("target"), str):
                        yield target["target"]


def nat_reachable(base: dict[str, str], jumps: dict[str, list[str]]) -> set[str]:
    """Chains reachable from a nat base chain: ``base`` maps base chain names to their types."""
    reached = {name for name, chain_type in base.items() if chain_type == "nat"}
    pending = list(reached)
    while pending:
        for target in jumps.get(pending.pop(), ()):
            if target not in reached:
                reached.add(target)
                pending.append(target)
    return reached


# ---------------------------------------------------------------- listing


def _load(text: str, source: str) -> tuple[list[dict[str, Any]], str | None]:
    if not text.strip():
        raise ParseError(source, "empty output (nft prints at least its metainfo): truncated?")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ParseError(source, f"not valid JSON (truncated?): {error.msg}", error.lineno) from None
    except (RecursionError, ValueError) as error:  # nesting, or a number of more than 4300 digits
        raise ParseError(source, f"not valid JSON: {error}") from None
    if not isinstance(data, dict) or set(data) != {"nftables"} or not isinstance(data["nftables"], list):
        raise ParseError(source, 'expected {"nftables": [...]}')
    items = data["nftables"]
    version = None
    for index, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1 or not isinstance(next(iter(item.values())), dict):
            raise ParseError(source, f"item {index}: expected one object kind with an object, got {str(item)[:80]}")
        if "metainfo" in item:
            schema = item["metainfo"].get("json_schema_version")
            if schema != 1:
                raise ParseError(source, f"unsupported json_schema_version {schema!r} (this parser reads 1)")
            version = item["metainfo"].get("version")
    return items, version if isinstance(version, str) else None


def _need(body: dict[str, Any], key: str, kind: type, source: str, index: int) -> Any:
    value = body.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ParseError(source, f"item {index}: {key!r} missing or not a {kind.__name__}: {str(body)[:80]}")
    return value


@attrs.define
class _Building:
    """An owned table while its items are read."""

    family: Family
    name: str
    handle: int
    sets: dict[str, NftSet] = attrs.field(factory=dict)
    chains: dict[str, tuple[int, NftHook | None]] = attrs.field(factory=dict)
    rules: dict[str, list[tuple[int, Any, str]]] = attrs.field(factory=dict)
    objects: list[tuple[str, str]] = attrs.field(factory=list)
    handles: set[int] = attrs.field(factory=set)  # of rules: the planner names rules by handle


@attrs.define
class _Foreign:
    family: str
    name: str
    chains: list[str] = attrs.field(factory=list)
    sets: list[str] = attrs.field(factory=list)
    rules: int = 0


def _hook(body: dict[str, Any], source: str, index: int) -> NftHook | None:
    if "hook" not in body:
        return None
    priority = body.get("prio")
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise ParseError(source, f"item {index}: base chain {body.get('name')!r} has no integer prio")
    return NftHook(str(body.get("type", "filter")), str(body["hook"]), priority, str(body.get("policy", "accept")))


def _set(body: dict[str, Any], family: Family, source: str, index: int) -> NftSet:
    name = _need(body, "name", str, source, index)
    set_type = body.get("type")
    flags = body.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise ParseError(source, f"item {index}: set {name}: flags must be a list of words")
    elements: list[tuple[Cidr, ...]] = []
    if set_type == ("ipv4_addr" if family is Family.IPV4 else "ipv6_addr"):
        raw = body.get("elem", [])
        if not isinstance(raw, list):
            raise ParseError(source, f"item {index}: set {name}: elem must be a list")
        for value in raw:
            element = _element(value, family)
            if element is None:
                raise ParseError(source, f"item {index}: set {name}: bad element {json.dumps(value)[:80]}")
            elements.append(element)
    return NftSet(name, _need(body, "handle", int, source, index), str(set_type), tuple(flags),
                  tuple(sorted(elements)))


def parse_nft_list(text: str, ownership: Ownership, source: str = "nft -j list ruleset") -> NftRuleset:
    """Parse ``nft -j list ruleset`` output; raises :class:`ParseError` on garbled or truncated input.

    ``nft -j list table ip NAME`` output parses too, but only a full listing
    tells the planner that a table it does not show is absent.
    """
    items, version = _load(text, source)
    ours: dict[Family, _Building] = {}
    foreign: dict[tuple[str, str], _Foreign] = {}
    owned_name = ownership.config.nft_table
    for index, item in enumerate(items):
        [(kind, body)] = item.items()
        if kind == "metainfo":
            continue
        family_word = _need(body, "family", str, source, index)
        family = _FAMILIES.get(family_word)
        if kind == "table":
            name = _need(body, "name", str, source, index)
            handle = _need(body, "handle", int, source, index)
            if family is not None and name == owned_name:
                if family in ours:
                    raise ParseError(source, f"item {index}: table {family_word} {name} listed twice")
                ours[family] = _Building(family, name, handle)
            else:
                if (family_word, name) in foreign:
                    raise ParseError(source, f"item {index}: table {family_word} {name} listed twice")
                foreign[(family_word, name)] = _Foreign(family_word, name)
            continue
        table_name = _need(body, "table", str, source, index)
        if family is not None and table_name == owned_name:
            if family not in ours:
                raise ParseError(source, f"item {index}: {kind} of table {family_word} {table_name} before the table")
            _owned_item(ours[family], kind, body, source, index)
            continue
        other = foreign.get((family_word, table_name))
        if other is None:
            raise ParseError(source, f"item {index}: {kind} of table {family_word} {table_name} before the table")
        if kind == "chain":
            other.chains.append(str(body.get("name")))
        elif kind in ("set", "map"):
            other.sets.append(str(body.get("name")))
        elif kind == "rule":
            other.rules += 1
    return NftRuleset(
        tables=tuple(_finish(t) for t in ours.values()),
        foreign=tuple(ForeignNftTable(f.family, f.name, tuple(f.chains), tuple(f.sets), f.rules)
                      for f in foreign.values()),
        version=version,
    )


def _owned_item(table: _Building, kind: str, body: dict[str, Any], source: str, index: int) -> None:
    if kind == "set":
        item = _set(body, table.family, source, index)
        if item.name in table.sets:
            raise ParseError(source, f"item {index}: set {item.name} listed twice")
        table.sets[item.name] = item
    elif kind == "chain":
        name = _need(body, "name", str, source, index)
        if name in table.chains:
            raise ParseError(source, f"item {index}: chain {name} listed twice")
        table.chains[name] = (_need(body, "handle", int, source, index), _hook(body, source, index))
        table.rules[name] = []
    elif kind == "rule":
        chain = _need(body, "chain", str, source, index)
        if chain not in table.chains:
            raise ParseError(source, f"item {index}: rule of chain {chain}, which is not listed before it")
        expr = _need(body, "expr", list, source, index)
        comment = body.get("comment", "")
        if not isinstance(comment, str):
            raise ParseError(source, f"item {index}: comment is not a string")
        handle = _need(body, "handle", int, source, index)
        if handle in table.handles:
            raise ParseError(source, f"item {index}: rule handle {handle} listed twice in table {table.name}")
        table.handles.add(handle)
        table.rules[chain].append((handle, expr, comment))
    elif kind in OBJECT_KINDS:
        table.objects.append((kind, _need(body, "name", str, source, index)))
    elif kind != "element":
        raise ParseError(source, f"item {index}: unexpected {kind!r} in our table {table.name}")


def _finish(table: _Building) -> NftTable:
    protocol = "ip" if table.family is Family.IPV4 else "ip6"
    base = {name: hook.chain_type for name, (_, hook) in table.chains.items() if hook is not None}
    jumps = {name: [t for _, expr, _ in rules for t in _targets(expr)] for name, rules in table.rules.items()}
    nat = nat_reachable(base, jumps)
    chains = []
    for name, (handle, hook) in table.chains.items():
        rules = tuple(
            NftRule(rule_handle, rule_body(expr, comment, protocol, name in nat),
                    json.dumps({"expr": expr, **({"comment": comment} if comment else {})}, sort_keys=True))
            for rule_handle, expr, comment in table.rules[name])
        chains.append(NftChain(name, handle, hook, rules))
    return NftTable(table.family, table.name, table.handle, tuple(table.sets.values()), tuple(chains),
                    tuple(table.objects))
