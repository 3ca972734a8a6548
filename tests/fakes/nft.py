"""A fake ``nft -j -f`` (atomic batches) and ``nft -j list ruleset`` (printed in the real list forms).

A batch runs on a copy of the ruleset and is committed only if every command
succeeds, like the kernel's transaction. It fails where nft 1.0.6 fails for
the commands the library writes: missing tables, chains, sets, rules or
elements; overlapping intervals; deleting a chain a rule jumps to or a set a
rule names; changing a base chain's type, hook or priority; NAT statements
reachable from a non-nat base chain. The listing prints what nft prints, not
what was written (``tests/kernel/test_nft_fake.py`` compares the two on a
real kernel): mark matches with contiguous high-bit masks as prefixes, the
mark mangle with its mask rewritten, counters with values, set elements
sorted as strings, prefixes and ranges.

:meth:`FakeNft.seed` loads tables from a real listing verbatim (iptables-nft's
``xt`` expressions included, which real nft cannot read back); a batch that
names a seeded table fails, so a test using them also shows they were never
touched.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterable
from typing import Any

import attrs

from egress_rules.backends.base import Output
from egress_rules.backends.nftables import NftablesBackend
from egress_rules.errors import InvalidAddressError
from egress_rules.model.addresses import Family, IPAddress, parse_address
from egress_rules.model.config import Config
from egress_rules.model.ruleset import RuleSet
from egress_rules.observed import ObservedState, Ownership, parse_ip_routes, parse_ip_rules, parse_nft_list
from egress_rules.observed.nft import NftRuleset
from tests.fakes.iproute import FakeIproute
from tests.fakes.ipset import ToolError

MARK_ALL = 0xFFFFFFFF
_MARK = {"meta": {"key": "mark"}}
_FAMILIES = {"ip": Family.IPV4, "ip6": Family.IPV6}
METAINFO = {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}
NAT_STATEMENTS = ("snat", "masquerade")
OBJECTS = {"counter": {"packets": 0, "bytes": 0}, "quota": {"bytes": 0, "used": 0, "inv": False}}

Interval = tuple[int, int]


@attrs.define
class FakeSet:
    name: str
    handle: int
    set_type: str
    flags: list[str]
    intervals: list[Interval] = attrs.field(factory=list)
    values: list[Any] = attrs.field(factory=list)  # elements of sets that hold no addresses, as written
    comments: dict[Interval, str] = attrs.field(factory=dict)


@attrs.define
class FakeRule:
    handle: int
    expr: list[Any]
    comment: str | None


@attrs.define
class FakeChain:
    name: str
    handle: int
    hook: dict[str, Any] | None
    rules: list[FakeRule] = attrs.field(factory=list)


@attrs.define
class FakeTable:
    family: str
    name: str
    handle: int
    last_handle: int = 0
    objects: dict[tuple[str, str], dict[str, Any]] = attrs.field(factory=dict)
    sets: dict[str, FakeSet] = attrs.field(factory=dict)
    chains: dict[str, FakeChain] = attrs.field(factory=dict)
    seeded: list[dict[str, Any]] | None = None  # a table loaded verbatim from a real listing

    def next_handle(self) -> int:
        self.last_handle += 1
        return self.last_handle


@attrs.define
class _State:
    tables: list[FakeTable] = attrs.field(factory=list)
    last_table_handle: int = 0


# ---------------------------------------------------------------- list forms


def _number(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise ToolError(f"Invalid value {value!r}")


_CT_MARK = {"ct": {"key": "mark"}}
_MARK_KEYS = (_MARK, _CT_MARK)


def _key_and(key: Any, value: Any) -> int | None:
    if isinstance(value, dict) and set(value) == {"&"} and value["&"][0] == key:
        return _number(value["&"][1])
    return None


def _list_match(match: dict[str, Any]) -> dict[str, Any]:
    """A packet or connection mark match as nft prints it (the kernel prints both alike): all-ones masks
    dropped, contiguous high-bit masks as a prefix."""
    for key in _MARK_KEYS:
        mask = _key_and(key, match["left"])
        if match["left"] == key:
            right = match["right"]
            return {"op": match["op"], "left": key, "right": right if isinstance(right, dict) else _number(right)}
        if mask is None:
            continue
        value = _number(match["right"])
        if mask == MARK_ALL:
            return {"op": match["op"], "left": key, "right": value}
        inverted = ~mask & MARK_ALL
        if inverted & (inverted + 1) == 0:  # the mask is some high bits, all set
            prefix = {"addr": value, "len": 32 - inverted.bit_length()}
            return {"op": match["op"], "left": key, "right": {"prefix": prefix}}
        return {"op": match["op"], "left": {"&": [key, mask]}, "right": value}
    return copy.deepcopy(match)


def _list_mangle(key: Any, value: Any) -> Any:
    """``(key & K) | V`` as nft prints it: the mask becomes ``K | V``, and all-ones or zero parts vanish."""
    if isinstance(value, dict) and set(value) == {"|"}:
        inner, number = value["|"][0], _number(value["|"][1])
        keep = MARK_ALL if inner == key else _key_and(key, inner)
        if keep is None:
            return copy.deepcopy(value)
    elif isinstance(value, dict) and set(value) == {"&"}:
        keep, number = _key_and(key, value), 0
        if keep is None:
            return copy.deepcopy(value)
    elif value == key:
        return copy.deepcopy(key)
    else:
        return _number(value)
    keep |= number
    if number == 0:
        return copy.deepcopy(key) if keep == MARK_ALL else {"&": [key, keep]}
    if keep == MARK_ALL:
        return {"|": [key, number]}
    return {"|": [{"&": [key, keep]}, number]}


def _list_statement(statement: dict[str, Any]) -> dict[str, Any]:
    [(kind, value)] = statement.items()
    if kind == "counter" and value is None:
        return {"counter": {"packets": 0, "bytes": 0}}
    if kind == "match" and isinstance(value, dict):
        return {"match": _list_match(value)}
    if kind == "mangle" and isinstance(value, dict) and value.get("key") in _MARK_KEYS:
        return {"mangle": {"key": value["key"], "value": _list_mangle(value["key"], value["value"])}}
    return copy.deepcopy(statement)


def _interval(value: Any, family: Family) -> Interval:
    """An input element as the interval it stores."""
    if isinstance(value, dict) and set(value) == {"elem"}:
        return _interval(value["elem"]["val"], family)
    if isinstance(value, str):
        if "/" in value:
            raise ToolError(f"Could not resolve hostname: {value}")
        address = _address(value, family)
        return address, address
    if isinstance(value, dict) and "prefix" in value:
        address, length = _address(value["prefix"]["addr"], family), value["prefix"]["len"]
        hostmask = (1 << (family.bits - length)) - 1
        return address & ~hostmask, address | hostmask
    if isinstance(value, dict) and "range" in value:
        first, last = (_address(v, family) for v in value["range"])
        if first > last:
            raise ToolError("Range negative size")
        return first, last
    raise ToolError(f"Invalid set elem expression {value!r}")


def _address(text: Any, family: Family) -> int:
    try:
        address = parse_address(str(text))
    except InvalidAddressError:
        raise ToolError(f"Could not resolve hostname: {text}") from None
    if address.family is not family:
        raise ToolError(f"Could not resolve hostname: {text} (wrong family)")
    return address.value


def _format(value: int, family: Family) -> str:
    return str(IPAddress(family, value))


def _list_element(interval: Interval, family: Family) -> Any:
    first, last = interval
    size = last - first + 1
    if size == 1:
        return _format(first, family)
    if size & (size - 1) == 0 and first % size == 0:
        return {"prefix": {"addr": _format(first, family), "len": family.bits - size.bit_length() + 1}}
    return {"range": [_format(first, family), _format(last, family)]}


# ---------------------------------------------------------------- the fake


class FakeNft:
    """The nftables state of one network namespace."""

    def __init__(self) -> None:
        self.state = _State()

    # ------------------------------------------------------------ input

    def apply(self, text: str) -> None:
        """``nft -j -f``: the whole batch or nothing; raises :class:`ToolError` like nft's error message."""
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            raise ToolError("Error: syntax error, unexpected '{'") from None
        if not isinstance(document, dict) or not isinstance(document.get("nftables"), list):
            raise ToolError("Error: No 'nftables' array found")
        work = copy.deepcopy(self.state)
        for index, command in enumerate(document["nftables"]):
            if not isinstance(command, dict) or len(command) != 1:
                raise ToolError(f"Error: Parsing command array at index {index} failed.")
            [(verb, body)] = command.items()
            if verb == "metainfo":
                continue
            try:
                _Batch(work).command(verb, body)
            except ToolError as error:
                raise ToolError(f"Error: {error} (command {index}: {json.dumps(command)[:120]})") from None
        for table in work.tables:
            _check_nat(table)
        self.state = work

    def seed(self, listing: str) -> None:
        """Add the tables of a real ``nft -j list ruleset`` output verbatim (for foreign tables)."""
        items = json.loads(listing)["nftables"]
        tables: dict[tuple[str, str], FakeTable] = {}
        for item in items:
            [(kind, body)] = item.items()
            if kind == "metainfo":
                continue
            if kind == "table":
                table = FakeTable(body["family"], body["name"], body["handle"], seeded=[item])
                tables[(table.family, table.name)] = table
                self.state.tables.append(table)
                self.state.last_table_handle = max(self.state.last_table_handle, table.handle)
            else:
                seeded = tables[(body["family"], body["table"])].seeded
                assert seeded is not None
                seeded.append(copy.deepcopy(item))

    # ------------------------------------------------------------ output

    def list_ruleset(self) -> str:
        """``nft -j list ruleset``, in the forms and order nft 1.0.6 prints them."""
        items: list[dict[str, Any]] = [METAINFO]
        for table in self.state.tables:
            items.extend(_list_table(table))
        return json.dumps({"nftables": items})

    def table(self, family: str, name: str) -> FakeTable | None:
        for table in self.state.tables:
            if table.family == family and table.name == name:
                return table
        return None


def _list_table(table: FakeTable) -> list[dict[str, Any]]:
    if table.seeded is not None:
        return copy.deepcopy(table.seeded)
    ref = {"family": table.family, "table": table.name}
    items: list[dict[str, Any]] = [{"table": {"family": table.family, "name": table.name, "handle": table.handle}}]
    for (kind, name), obj in table.objects.items():
        items.append({kind: {"family": table.family, "name": name, "table": table.name, **obj}})
    family = _FAMILIES.get(table.family, Family.IPV4)
    for item in table.sets.values():
        body: dict[str, Any] = {"family": table.family, "name": item.name, "table": table.name,
                                "type": item.set_type, "handle": item.handle}
        if item.flags:
            body["flags"] = list(item.flags)
        if item.intervals:
            body["elem"] = [_list_element(i, family) if i not in item.comments
                            else {"elem": {"val": _list_element(i, family), "comment": item.comments[i]}}
                            for i in sorted(item.intervals)]
        elif item.values:
            body["elem"] = sorted(item.values)
        items.append({"set": body})
    for chain in table.chains.values():
        chain_body: dict[str, Any] = {**ref, "name": chain.name, "handle": chain.handle}
        if chain.hook is not None:
            chain_body |= chain.hook
        items.append({"chain": chain_body})
    for chain in table.chains.values():
        for rule in chain.rules:
            rule_body: dict[str, Any] = {**ref, "chain": chain.name, "handle": rule.handle}
            if rule.comment is not None:
                rule_body["comment"] = rule.comment
            rule_body["expr"] = copy.deepcopy(rule.expr)
            items.append({"rule": rule_body})
    return items


def _targets(rule: FakeRule) -> list[str]:
    return [s[k]["target"] for s in rule.expr for k in ("jump", "goto") if k in s]


def _named_sets(rule: FakeRule) -> list[str]:
    return [s["match"]["right"][1:] for s in rule.expr
            if "match" in s and isinstance(s["match"].get("right"), str) and s["match"]["right"].startswith("@")]


def _check_nat(table: FakeTable) -> None:
    """Source NAT only in chains that nat base chains on postrouting/input reach, as the kernel checks."""
    if table.seeded is not None:
        return
    for chain in table.chains.values():
        if chain.hook is None:
            continue
        nat_ok = chain.hook["type"] == "nat" and chain.hook["hook"] in ("postrouting", "input")
        seen, pending = {chain.name}, [chain.name]
        while pending:
            current = table.chains[pending.pop()]
            for rule in current.rules:
                if not nat_ok and any(k in s for s in rule.expr for k in NAT_STATEMENTS):
                    raise ToolError("Error: Could not process rule: Operation not supported")
                for target in _targets(rule):
                    if target not in seen:
                        seen.add(target)
                        pending.append(target)


class _Batch:
    """Applies one command to the working copy."""

    def __init__(self, state: _State) -> None:
        self.state = state

    def table(self, body: dict[str, Any], key: str = "table") -> FakeTable:
        for table in self.state.tables:
            if table.family == body.get("family") and table.name == body.get(key):
                if table.seeded is not None:
                    raise ToolError(f"the fake does not change seeded table {table.family} {table.name}")
                return table
        raise ToolError(f"Could not process rule: No such file or directory (table {body.get(key)})")

    def chain(self, table: FakeTable, name: Any) -> FakeChain:
        if name not in table.chains:
            raise ToolError(f"Could not process rule: No such file or directory (chain {name})")
        return table.chains[name]

    def command(self, verb: str, body: Any) -> None:
        if not isinstance(body, dict) or len(body) != 1:
            raise ToolError(f"Unknown object passed to {verb} command.")
        [(kind, spec)] = body.items()
        handler = getattr(self, f"{verb}_{kind}".replace(" ", "_"), None)
        if handler is None:
            raise ToolError(f"Unknown object passed to {verb} command: {kind}")
        handler(spec)

    # ------------------------------------------------------------ tables

    def add_table(self, spec: dict[str, Any]) -> None:
        if spec.get("family") not in ("ip", "ip6", "inet", "arp", "bridge", "netdev"):
            raise ToolError(f"unknown family {spec.get('family')!r}")
        for table in self.state.tables:
            if table.family == spec["family"] and table.name == spec["name"]:
                return
        self.state.last_table_handle += 1
        self.state.tables.append(FakeTable(spec["family"], spec["name"], self.state.last_table_handle))

    def delete_table(self, spec: dict[str, Any]) -> None:
        self.state.tables.remove(self.table(spec, "name"))

    # ------------------------------------------------------------ sets and elements

    def add_set(self, spec: dict[str, Any]) -> None:
        table = self.table(spec)
        flags = spec.get("flags", [])
        if not isinstance(flags, list):
            flags = []  # nft 1.0.6 ignores a flags string
        existing = table.sets.get(spec["name"])
        if existing is not None:
            if existing.set_type != spec.get("type") or existing.flags != flags:
                raise ToolError("Could not process rule: File exists")
        else:
            existing = FakeSet(spec["name"], table.next_handle(), spec["type"], flags)
            table.sets[existing.name] = existing
        if "elem" in spec:
            self._add_elements(table, existing, spec["elem"])

    def delete_set(self, spec: dict[str, Any]) -> None:
        table = self.table(spec)
        if spec.get("name") not in table.sets:
            raise ToolError("Could not process rule: No such file or directory")
        if any(spec["name"] in _named_sets(r) for c in table.chains.values() for r in c.rules):
            raise ToolError("Could not process rule: Device or resource busy")
        del table.sets[spec["name"]]

    def flush_set(self, spec: dict[str, Any]) -> None:
        table = self.table(spec)
        if spec.get("name") not in table.sets:
            raise ToolError("Could not process rule: No such file or directory")
        table.sets[spec["name"]].intervals.clear()

    def _set(self, spec: dict[str, Any]) -> tuple[FakeTable, FakeSet]:
        table = self.table(spec)
        if spec.get("name") not in table.sets:
            raise ToolError("Could not process rule: No such file or directory")
        return table, table.sets[spec["name"]]

    def add_element(self, spec: dict[str, Any]) -> None:
        table, item = self._set(spec)
        self._add_elements(table, item, spec.get("elem"))

    def _add_elements(self, table: FakeTable, item: FakeSet, values: Any) -> None:
        if not isinstance(values, list) or not values:
            raise ToolError("Invalid set elem expression")
        if item.set_type not in ("ipv4_addr", "ipv6_addr"):
            item.values = [*item.values, *(v for v in values if v not in item.values)]
            return
        family = _FAMILIES[table.family]
        new = sorted({_interval(v, family) for v in values})
        if "interval" not in item.flags and any(first != last for first, last in new):
            raise ToolError("You must add 'flags interval' to your set declaration if you want to add prefix "
                            "elements")
        for before, after in itertools.pairwise(new):
            if after[0] <= before[1]:
                raise ToolError("conflicting intervals specified")
        stored = set(item.intervals)
        fresh = [i for i in new if i not in stored]  # re-adding an identical element is accepted
        # Both lists are sorted and disjoint within themselves: one merge pass finds any overlap.
        merged = sorted(item.intervals + fresh)
        for before, after in itertools.pairwise(merged):
            if after[0] <= before[1]:
                raise ToolError("interval overlaps with an existing one")
        item.intervals = merged
        for value in values:
            if isinstance(value, dict) and isinstance(value.get("elem"), dict) and "comment" in value["elem"]:
                item.comments[_interval(value, family)] = str(value["elem"]["comment"])

    def delete_element(self, spec: dict[str, Any]) -> None:
        table, item = self._set(spec)
        values = spec.get("elem")
        if not isinstance(values, list) or not values:
            raise ToolError("Invalid set elem expression")
        stored = set(item.intervals)
        for value in values:
            interval = _interval(value, _FAMILIES[table.family])
            if interval not in stored:
                raise ToolError("element does not exist")
            stored.discard(interval)
            item.comments.pop(interval, None)
        item.intervals = sorted(stored)

    # ------------------------------------------------------------ named objects

    def add_counter(self, spec: dict[str, Any]) -> None:
        self._add_object("counter", spec)

    def add_quota(self, spec: dict[str, Any]) -> None:
        self._add_object("quota", spec)

    def _add_object(self, kind: str, spec: dict[str, Any]) -> None:
        table = self.table(spec)
        if (kind, spec["name"]) not in table.objects:
            values = {**OBJECTS[kind], **{k: v for k, v in spec.items() if k in OBJECTS[kind]}}
            table.objects[(kind, spec["name"])] = {"handle": table.next_handle(), **values}

    def delete_counter(self, spec: dict[str, Any]) -> None:
        self._delete_object("counter", spec)

    def delete_quota(self, spec: dict[str, Any]) -> None:
        self._delete_object("quota", spec)

    def _delete_object(self, kind: str, spec: dict[str, Any]) -> None:
        table = self.table(spec)
        if table.objects.pop((kind, str(spec.get("name"))), None) is None:
            raise ToolError("Could not process rule: No such file or directory")

    # ------------------------------------------------------------ chains

    def add_chain(self, spec: dict[str, Any]) -> None:
        table = self.table(spec)
        hook = None
        # Pitfall of nft 1.0.6: without an integer prio the chain silently becomes a regular chain.
        if "hook" in spec and isinstance(spec.get("prio"), int):
            hook = {"type": spec.get("type", "filter"), "hook": spec["hook"], "prio": spec["prio"],
                    "policy": spec.get("policy", "accept")}
            if hook["type"] == "nat" and hook["hook"] == "forward":
                raise ToolError("Could not process rule: Operation not supported")
        existing = table.chains.get(spec["name"])
        if existing is None:
            table.chains[spec["name"]] = FakeChain(spec["name"], table.next_handle(), hook)
            return
        if hook is None:
            return
        if existing.hook is None or any(existing.hook[k] != hook[k] for k in ("type", "hook", "prio")):
            raise ToolError("Could not process rule: Operation not supported")
        existing.hook["policy"] = hook["policy"]

    def delete_chain(self, spec: dict[str, Any]) -> None:
        table = self.table(spec)
        chain = self.chain(table, spec.get("name"))
        if any(chain.name in _targets(r) for c in table.chains.values() if c is not chain for r in c.rules):
            raise ToolError("Could not process rule: Device or resource busy")
        del table.chains[chain.name]

    def flush_chain(self, spec: dict[str, Any]) -> None:
        table = self.table(spec)
        self.chain(table, spec.get("name")).rules.clear()

    # ------------------------------------------------------------ rules

    def _new_rule(self, table: FakeTable, spec: dict[str, Any], handle: int | None = None) -> FakeRule:
        expr = spec.get("expr")
        if not isinstance(expr, list) or not all(isinstance(s, dict) and len(s) == 1 for s in expr):
            raise ToolError("Invalid rule expression")
        comment = spec.get("comment")
        if comment is not None and (not isinstance(comment, str) or len(comment.encode()) > 253):
            raise ToolError("netlink_linearize.c:1686: Memory allocation failure")
        rule = FakeRule(handle if handle is not None else 0, [_list_statement(s) for s in expr], comment)
        for name in _named_sets(rule):
            if name not in table.sets:
                raise ToolError(f"Could not process rule: No such file or directory (set {name})")
        for target in _targets(rule):
            target_chain = self.chain(table, target)
            if target_chain.hook is not None:
                raise ToolError("Could not process rule: Operation not supported")
        if handle is None:
            rule.handle = table.next_handle()
        return rule

    def _position(self, chain: FakeChain, handle: Any) -> int:
        for index, rule in enumerate(chain.rules):
            if rule.handle == handle:
                return index
        raise ToolError("Could not process rule: No such file or directory")

    def add_rule(self, spec: dict[str, Any]) -> None:
        table = self.table(spec)
        chain = self.chain(table, spec.get("chain"))
        if "handle" in spec:
            position = self._position(chain, spec["handle"]) + 1
            chain.rules.insert(position, self._new_rule(table, spec))
        else:
            chain.rules.append(self._new_rule(table, spec))

    def insert_rule(self, spec: dict[str, Any]) -> None:
        table = self.table(spec)
        chain = self.chain(table, spec.get("chain"))
        position = self._position(chain, spec["handle"]) if "handle" in spec else 0
        chain.rules.insert(position, self._new_rule(table, spec))

    def replace_rule(self, spec: dict[str, Any]) -> None:
        table = self.table(spec)
        chain = self.chain(table, spec.get("chain"))
        position = self._position(chain, spec.get("handle"))
        chain.rules[position] = self._new_rule(table, spec, handle=chain.rules[position].handle)

    def delete_rule(self, spec: dict[str, Any]) -> None:
        table = self.table(spec)
        chain = self.chain(table, spec.get("chain"))
        del chain.rules[self._position(chain, spec.get("handle"))]


class FakeNftNode:
    """A node on the nftables datapath: the nft fake and the ``ip`` fake, applied and observed like the real tools."""

    def __init__(self) -> None:
        self.nft = FakeNft()
        self.ip = FakeIproute()

    def apply(self, outputs: Iterable[Output]) -> None:
        """Apply the outputs of a full render (``nft``, ``iproute`` formats) or of a plan, by command."""
        for output in outputs:
            command = output.command
            if command.startswith("nft -j -f"):
                self.nft.apply(output.text)
            elif command.startswith("ip -4 -batch"):
                self.ip.batch(Family.IPV4, output.text)
            elif command.startswith("ip -6 -batch"):
                self.ip.batch(Family.IPV6, output.text)
            elif output.name != "conntrack.commands":
                raise ToolError(f"an nft node cannot apply {command!r}")

    def dumps(self) -> dict[str, str]:
        return {"nft -j list ruleset": self.nft.list_ruleset(),
                **{f"ip -{f.value} -j rule": self.ip.rule_json(f) for f in Family},
                **{f"ip -{f.value} -j route": self.ip.route_json(f) for f in Family}}

    def observe(self, config: Config) -> ObservedState:
        return observe_nft_dumps(self.dumps(), config)


def observe_nft_dumps(dumps: dict[str, str], config: Config) -> ObservedState:
    """The observed state of an nft node from what the tools printed (real or fake)."""
    own = Ownership(config)
    return ObservedState(
        nft=parse_nft_list(dumps["nft -j list ruleset"], own),
        ip_rules={f: parse_ip_rules(dumps[f"ip -{f.value} -j rule"], f, own) for f in Family},
        routes={f: parse_ip_routes(dumps[f"ip -{f.value} -j route"], f, own) for f in Family},
    )


def ours_snapshot(listing: NftRuleset) -> dict[Family, Any]:
    """Our tables as comparable data, without handles: chains with hook and rule bodies, sets, other objects."""
    return {table.family: ({c.name: (c.hook, [r.body for r in c.rules]) for c in table.chains},
                           {s.name: (s.set_type, s.flags, s.members) for s in table.sets}, table.objects)
            for table in listing.tables}


def reference_snapshot(desired: RuleSet) -> dict[Family, Any]:
    """:func:`ours_snapshot` of the backend's full render of ``desired``, loaded into a fresh fake."""
    fake = FakeNft()
    [output] = NftablesBackend().render(desired)
    fake.apply(output.text)
    return ours_snapshot(parse_nft_list(fake.list_ruleset(), Ownership(desired.config)))


def foreign_items(listing: str, config: Config) -> list[dict[str, Any]]:
    """The objects of a listing that are not in our tables, verbatim (handles included)."""
    ours = {(family, config.nft_table) for family in _FAMILIES}
    result = []
    for item in json.loads(listing)["nftables"]:
        [(kind, body)] = item.items()
        if kind != "metainfo" and (body["family"], body["name"] if kind == "table" else body["table"]) not in ours:
            result.append(item)
    return result
