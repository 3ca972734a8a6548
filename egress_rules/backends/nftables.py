"""nftables JSON (``nft -j -f``): one table per family that the library owns entirely.

Mapping of the model:

* each owned iptables chain becomes a regular chain of the same name;
* the hook rules of each built-in chain become a base chain ``<table>_<chain>``
  (e.g. ``nat_postrouting``) whose integer priority is one below the chain
  iptables-nft registers for it (mangle -150 -> -151, filter 0 -> -1, nat
  POSTROUTING 100 -> 99), so ours runs first on the hook, as the hook rules do
  at position 1 of the built-in chain; distinct priorities keep the order of
  equal-priority chains from depending on registration order;
* sets become named interval sets of the table (members are already collapsed;
  nft rejects overlapping intervals, and accepts ``/0``).

Semantic differences, and what the backend does about them:

* An ``accept`` ends only the base chain it is in; base chains of other
  tables on the same hook still run. In a nat chain, "accept" in iptables
  means "this connection is not translated" (the CNI's MASQUERADE later in
  the same chain is skipped). The faithful nftables equivalent is a NAT
  binding that keeps the address, ``snat to ip saddr``, at a priority before
  the CNI's nat chain: the first nat chain that translates wins. The backend
  writes that.
* A filter ``accept`` cannot override a ``drop`` in another table. The seed's
  keep-mark ACCEPTs in filter FORWARD/OUTPUT and mangle POSTROUTING therefore
  only end our own chain: if other software drops or re-marks that traffic
  later, nftables cannot prevent it. The output carries a note saying so
  (``strict=True`` makes it an error instead).

The full render replaces our tables atomically in one batch: ``add table``
(so the next ``delete`` cannot fail), ``delete table``, then the new contents.
Nothing outside our tables is ever named.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from egress_rules.backends.base import Output
from egress_rules.backends.text import truncate_utf8
from egress_rules.errors import UnsupportedError
from egress_rules.gcpause import without_gc
from egress_rules.model.addresses import Cidr, Family
from egress_rules.model.ruleset import (
    Accept,
    Action,
    BuiltinChain,
    ConnmarkMatch,
    ConntrackDirectionMatch,
    Drop,
    FamilyRuleSet,
    Goto,
    HookRule,
    IPSet,
    Jump,
    MarkMatch,
    Masquerade,
    Match,
    NetfilterTable,
    OutInterfaceMatch,
    Return,
    Rule,
    RuleSet,
    SetConnmark,
    SetMark,
    SetMatch,
    Snat,
)

COMMAND = "nft -j -f"
COMMENT_MAX_BYTES = 128
MARK_ALL = 0xFFFFFFFF

# The priorities iptables-nft registers its built-in chains at.
IPTABLES_PRIORITY = {
    (NetfilterTable.MANGLE, BuiltinChain.PREROUTING): -150,
    (NetfilterTable.MANGLE, BuiltinChain.INPUT): -150,
    (NetfilterTable.MANGLE, BuiltinChain.FORWARD): -150,
    (NetfilterTable.MANGLE, BuiltinChain.OUTPUT): -150,
    (NetfilterTable.MANGLE, BuiltinChain.POSTROUTING): -150,
    (NetfilterTable.FILTER, BuiltinChain.INPUT): 0,
    (NetfilterTable.FILTER, BuiltinChain.FORWARD): 0,
    (NetfilterTable.FILTER, BuiltinChain.OUTPUT): 0,
    (NetfilterTable.NAT, BuiltinChain.PREROUTING): -100,
    (NetfilterTable.NAT, BuiltinChain.INPUT): 100,
    (NetfilterTable.NAT, BuiltinChain.OUTPUT): -100,
    (NetfilterTable.NAT, BuiltinChain.POSTROUTING): 100,
}

NOTE_FILTER_ACCEPT = ("nftables: an accept ends only the base chain it is in, so the keep-mark accepts in {where} "
                      "cannot stop a drop or a mark change by other tables on the same hooks (iptables would skip "
                      "the rest of the built-in chain). If other software filters forwarded or node traffic, allow "
                      "packets carrying the keep mark there.")


def family_name(family: Family) -> str:
    return "ip" if family is Family.IPV4 else "ip6"


def base_chain_name(table: NetfilterTable, chain: BuiltinChain) -> str:
    return f"{table.value}_{chain.value.lower()}"


def base_chain_priority(table: NetfilterTable, chain: BuiltinChain) -> int:
    return IPTABLES_PRIORITY[(table, chain)] - 1


# Names are validated identifiers and addresses come from inet_ntop, so neither ever needs
# escaping; comments go through the JSON encoder. Writing the JSON as text, rather than
# building dicts for the encoder, halves the time of a large render.
_ENCODER = json.JSONEncoder(separators=(",", ":"))
_MARK = '{"meta":{"key":"mark"}}'
_CT_MARK = '{"ct":{"key":"mark"}}'


def _element_json(cidr: Cidr) -> str:
    text = cidr.host_str()
    address, slash, _ = text.partition("/")
    return f'{{"prefix":{{"addr":"{address}","len":{cidr.prefixlen}}}}}' if slash else f'"{text}"'


def elements(members: Iterable[Cidr]) -> list[Any]:
    """Set elements as JSON values (prefixes as objects, hosts as plain strings)."""
    return [json.loads(_element_json(m)) for m in members]


class _Translator:
    """Writes one family's model objects as JSON text."""

    def __init__(self, family: Family, table: str, nat_chains: set[str]) -> None:
        self.family = family
        self.protocol = family_name(family)
        self.table = table
        self.nat_chains = nat_chains
        self.saddr = f'{{"payload":{{"protocol":"{self.protocol}","field":"saddr"}}}}'
        self.daddr = f'{{"payload":{{"protocol":"{self.protocol}","field":"daddr"}}}}'

    def match(self, match: Match) -> str:
        if isinstance(match, MarkMatch):
            left = _MARK if match.mask == MARK_ALL else f'{{"&":[{_MARK},{match.mask}]}}'
            return f'{{"match":{{"op":"{"!=" if match.negate else "=="}","left":{left},"right":{match.value}}}}}'
        if isinstance(match, SetMatch):
            left = self.saddr if match.direction.value == "src" else self.daddr
            return (f'{{"match":{{"op":"{"!=" if match.negate else "=="}","left":{left},'
                    f'"right":"@{match.set_name}"}}}}')
        if isinstance(match, ConntrackDirectionMatch):
            return (f'{{"match":{{"op":"==","left":{{"ct":{{"key":"direction"}}}},'
                    f'"right":"{match.direction.value.lower()}"}}}}')
        if isinstance(match, ConnmarkMatch):
            left = _CT_MARK if match.mask == MARK_ALL else f'{{"&":[{_CT_MARK},{match.mask}]}}'
            return f'{{"match":{{"op":"{"!=" if match.negate else "=="}","left":{left},"right":{match.value}}}}}'
        if isinstance(match, OutInterfaceMatch):
            return (f'{{"match":{{"op":"{"!=" if match.negate else "=="}","left":{{"meta":{{"key":"oifname"}}}},'
                    f'"right":"{match.name}"}}}}')
        raise UnsupportedError(f"match {match!r}", "the nftables backend cannot express it")

    def action(self, action: Action, chain: str) -> str:
        if isinstance(action, Accept):
            if chain in self.nat_chains:
                # "No NAT for this connection" that later nat chains (a CNI's MASQUERADE) cannot override.
                return f'{{"snat":{{"addr":{self.saddr}}}}}'
            return '{"accept":null}'
        if isinstance(action, Drop):
            return '{"drop":null}'
        if isinstance(action, Return):
            return '{"return":null}'
        if isinstance(action, Jump):
            return f'{{"jump":{{"target":"{action.chain}"}}}}'
        if isinstance(action, Goto):
            return f'{{"goto":{{"target":"{action.chain}"}}}}'
        if isinstance(action, SetMark):
            keep = ~action.mask & MARK_ALL
            return f'{{"mangle":{{"key":{_MARK},"value":{{"|":[{{"&":[{_MARK},{keep}]}},{action.value}]}}}}}}'
        if isinstance(action, SetConnmark):
            keep = ~action.mask & MARK_ALL
            return (f'{{"mangle":{{"key":{_CT_MARK},"value":{{"|":[{{"&":[{_CT_MARK},{keep}]}},'
                    f'{action.value}]}}}}}}')
        if isinstance(action, Snat):
            return f'{{"snat":{{"addr":"{action.address}"}}}}'
        if isinstance(action, Masquerade):
            return '{"masquerade":null}'
        raise UnsupportedError(f"action {action!r}", "the nftables backend cannot express it")

    def rule(self, chain: str, rule: Rule) -> str:
        """The rule object (the value of ``"rule"``) as JSON text."""
        expr = ",".join([*(self.match(m) for m in rule.matches), self.action(rule.action, chain)])
        comment = ""
        if rule.comment:
            cut = truncate_utf8(rule.comment, COMMENT_MAX_BYTES)
            if "\x00" in cut:  # nft refuses the whole batch
                raise UnsupportedError(f"nftables comment {rule.comment!r}", "contains a NUL character")
            comment = f',"comment":{_ENCODER.encode(cut)}'
        return (f'{{"family":"{self.protocol}","table":"{self.table}","chain":"{chain}",'
                f'"expr":[{expr}]{comment}}}')


def rule_object(family: Family, table: str, chain: str, rule: Rule, nat: bool) -> dict[str, Any]:
    """The rule object of ``add``/``insert``/``replace`` for ``rule`` in ``chain`` (``nat``: reachable from nat)."""
    body: dict[str, Any] = json.loads(_Translator(family, table, {chain} if nat else set()).rule(chain, rule))
    return body


def nat_chains(rules: FamilyRuleSet) -> set[str]:
    """Chains reachable from a nat hook: where an accept must become an identity NAT binding."""
    reachable = {base_chain_name(h.table, h.chain) for h in rules.hooks if h.table is NetfilterTable.NAT}
    pending = [h.rule for h in rules.hooks if h.table is NetfilterTable.NAT]
    by_name = {c.name: c for c in rules.chains if c.table is NetfilterTable.NAT}
    while pending:
        rule = pending.pop()
        if isinstance(rule.action, (Jump, Goto)) and rule.action.chain not in reachable:
            reachable.add(rule.action.chain)
            pending.extend(by_name[rule.action.chain].rules if rule.action.chain in by_name else ())
    return reachable


def _base_chains(rules: FamilyRuleSet) -> dict[tuple[NetfilterTable, BuiltinChain], list[HookRule]]:
    grouped: dict[tuple[NetfilterTable, BuiltinChain], list[HookRule]] = {}
    for hook in sorted(rules.hooks, key=lambda h: (list(NetfilterTable).index(h.table),
                                                   list(BuiltinChain).index(h.chain), h.position)):
        grouped.setdefault((hook.table, hook.chain), []).append(hook)
    return grouped


def _set_json(family: str, table: str, ipset: IPSet) -> str:
    kind = "ipv4_addr" if ipset.family is Family.IPV4 else "ipv6_addr"
    elem = f',"elem":[{",".join(_element_json(m) for m in ipset.members)}]' if ipset.members else ""
    return (f'{{"family":"{family}","table":"{table}","name":"{ipset.name}","type":"{kind}",'
            f'"flags":["interval"]{elem}}}')


def set_object(family: str, table: str, ipset: IPSet) -> dict[str, Any]:
    """The set object of an ``add`` command (an empty set has no ``elem``: nft rejects an empty list)."""
    body: dict[str, Any] = json.loads(_set_json(family, table, ipset))
    return body


def base_chain_object(family: str, table: str, nf_table: NetfilterTable, builtin: BuiltinChain) -> dict[str, Any]:
    return {"family": family, "table": table, "name": base_chain_name(nf_table, builtin),
            "type": "nat" if nf_table is NetfilterTable.NAT else "filter", "hook": builtin.value.lower(),
            "prio": base_chain_priority(nf_table, builtin), "policy": "accept"}


def family_commands(rules: FamilyRuleSet, table: str) -> tuple[list[str], list[str]]:
    """``add`` commands, as JSON text, that build one family's table contents (after the table exists).

    Also returns where a filter accept cannot be faithful (see the module docstring).
    """
    family = family_name(rules.family)
    translator = _Translator(rules.family, table, nat_chains(rules))
    commands = [f'{{"add":{{"set":{_set_json(family, table, ipset)}}}}}' for ipset in rules.sets]
    notes: list[str] = []
    grouped = _base_chains(rules)
    for (nf_table, builtin) in grouped:
        commands.append(_ENCODER.encode({"add": {"chain": base_chain_object(family, table, nf_table, builtin)}}))
    for chain in rules.chains:
        commands.append(_ENCODER.encode({"add": {"chain": {"family": family, "table": table, "name": chain.name}}}))
    for (nf_table, builtin), hooks in grouped.items():
        name = base_chain_name(nf_table, builtin)
        for hook in hooks:
            commands.append(f'{{"add":{{"rule":{translator.rule(name, hook.rule)}}}}}')
            if isinstance(hook.rule.action, Accept) and nf_table is not NetfilterTable.NAT:
                notes.append(f"{rules.family.label} {nf_table.value} {builtin.value}")
    for chain in rules.chains:
        commands.extend(f'{{"add":{{"rule":{translator.rule(chain.name, rule)}}}}}' for rule in chain.rules)
    return commands, notes


def render_text(ruleset: RuleSet) -> tuple[str, tuple[str, ...]]:
    """The full batch as JSON text (one command per line), and the notes about semantic differences."""
    table = ruleset.config.nft_table
    commands = ['{"metainfo":{"json_schema_version":1}}']
    unfaithful: list[str] = []
    for rules in ruleset.families:
        ref = f'{{"family":"{family_name(rules.family)}","name":"{table}"}}'
        commands += [f'{{"add":{{"table":{ref}}}}}', f'{{"delete":{{"table":{ref}}}}}', f'{{"add":{{"table":{ref}}}}}']
        objects, places = family_commands(rules, table)
        commands += objects
        unfaithful += places
    notes = (NOTE_FILTER_ACCEPT.format(where=", ".join(unfaithful)),) if unfaithful else ()
    return '{"nftables":[\n' + ",\n".join(commands) + "\n]}\n", notes


def render_document(ruleset: RuleSet) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The full batch as a JSON-ready document, and the notes about semantic differences."""
    text, notes = render_text(ruleset)
    document: dict[str, Any] = json.loads(text)
    return document, notes


def dumps(document: dict[str, Any]) -> str:
    """Compact, deterministic JSON, one command per line for readable diffs (the full render's layout)."""
    lines = ",\n".join(_ENCODER.encode(command) for command in document["nftables"])
    return '{"nftables":[\n' + lines + "\n]}\n"


class NftablesBackend:
    """``nft -j -f`` JSON that atomically replaces the library's tables."""

    name = "nft"

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict

    @without_gc
    def render(self, ruleset: RuleSet) -> tuple[Output, ...]:
        text, notes = render_text(ruleset)
        if self.strict and notes:
            raise UnsupportedError("nftables backend", notes[0])
        return (Output("nftables.json", COMMAND, text, notes),)
