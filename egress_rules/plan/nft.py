"""The nftables half of the planner: desired RuleSet + ``nft -j list ruleset`` -> one atomic batch.

Which datapath a node uses is said by the observed state: ``ObservedState.nft``
given (the parsed ``nft -j list ruleset``) means the nftables datapath, and
the iptables dumps and ipsets must then be left out; ``nft=None`` means the
iptables datapath, planned exactly as before. ip rules and routes are the
same on both.

Only our table of each family (``ip``/``ip6`` ``config.nft_table``) is ever
named; foreign tables, iptables-nft's included, are never touched. Per family:

* no table yet: ``add table`` and everything in it; a family no longer
  wanted: ``delete table``;
* sets are compared on their members as collapsed prefixes. When they
  differ, the stored elements that are not exactly a desired prefix are
  deleted whole (nft refuses to delete part of a stored interval) and the
  desired prefixes not stored as such are added; the deletes come first, as
  the kernel accepts an element overlapping one deleted earlier in the same
  transaction;
* chains missing are added; a base chain whose type, hook, priority or policy
  differ is deleted and added again (``add chain`` cannot change a priority)
  and refilled; other chains get an edit script by handle (replace, delete,
  insert before the next kept rule, append), so a change touches only the
  rules it changes;
* chains no longer wanted are flushed, then deleted, after the rules jumping
  to them are gone; stale sets and other named objects go last;
* a set whose type or flags differ, or a chain that must turn from regular to
  base (or back), cannot be changed while rules name it: the table is then
  replaced whole (``add``, ``delete``, ``add`` table, contents), still in the
  same batch.

Rules are compared as bodies, with the desired comment cut to the 128 bytes
nft keeps. :func:`render_nft_batch` writes the operations as one
``{"nftables": [...]}`` document for ``nft -j -f``; applied, it either
happens entirely or not at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import attrs

from egress_rules.backends.nftables import (
    COMMENT_MAX_BYTES,
    NOTE_FILTER_ACCEPT,
    base_chain_name,
    base_chain_priority,
    dumps,
    elements,
    family_name,
    nat_chains,
    rule_object,
    set_object,
)
from egress_rules.backends.text import truncate_utf8
from egress_rules.model.addresses import Cidr, Family, IPAddress, collapse
from egress_rules.model.config import Config
from egress_rules.model.ruleset import (
    Accept,
    BuiltinChain,
    FamilyRuleSet,
    IPSet,
    NetfilterTable,
    Rule,
    RuleBody,
    RuleSet,
    decision_chains,
)
from egress_rules.observed.nft import NftChain, NftHook, NftRuleset, NftTable
from egress_rules.plan.edits import EditKind, edit_script
from egress_rules.plan.model import (
    AddNftChain,
    AddNftElements,
    AddNftSet,
    AddNftTable,
    AppendNftRule,
    DeleteNftChain,
    DeleteNftElements,
    DeleteNftObject,
    DeleteNftRule,
    DeleteNftSet,
    DeleteNftTable,
    Drift,
    DriftKind,
    FlushNftChain,
    InsertNftRule,
    NftOp,
    ReplaceNftRule,
)

SET_FLAGS = ("interval",)


@attrs.frozen
class DesiredChain:
    """A chain of our table as the backend builds it: a base chain (``hook``) or a regular one."""

    name: str
    hook: NftHook | None
    rules: tuple[Rule, ...]
    nat: bool


def set_type(family: Family) -> str:
    return "ipv4_addr" if family is Family.IPV4 else "ipv6_addr"


def comparable(rule: Rule) -> RuleBody:
    """The body the kernel holds for ``rule``: its comment cut as the backend cuts it."""
    return RuleBody(rule.matches, rule.action, truncate_utf8(rule.comment, COMMENT_MAX_BYTES))


def _hooks_in_order(rules: FamilyRuleSet) -> list[tuple[NetfilterTable, BuiltinChain, list[Rule]]]:
    grouped: dict[tuple[NetfilterTable, BuiltinChain], list[Rule]] = {}
    for hook in sorted(rules.hooks, key=lambda h: (list(NetfilterTable).index(h.table),
                                                   list(BuiltinChain).index(h.chain), h.position)):
        grouped.setdefault((hook.table, hook.chain), []).append(hook.rule)
    return [(table, chain, hooked) for (table, chain), hooked in grouped.items()]


def desired_chains(rules: FamilyRuleSet) -> tuple[DesiredChain, ...]:
    """Every chain of our table for ``rules``: base chains (the hooks), then the owned chains."""
    nat = nat_chains(rules)
    result = []
    for table, chain, hooked in _hooks_in_order(rules):
        name = base_chain_name(table, chain)
        hook = NftHook("nat" if table is NetfilterTable.NAT else "filter", chain.value.lower(),
                       base_chain_priority(table, chain), "accept")
        result.append(DesiredChain(name, hook, tuple(hooked), name in nat))
    result.extend(DesiredChain(c.name, None, c.rules, c.name in nat) for c in rules.chains)
    return tuple(result)


def datapath_notes(desired: RuleSet) -> tuple[str, ...]:
    """The nft backend's note on keep-mark accepts that cannot be faithful, for the plan's notes."""
    places = [f"{rules.family.label} {table.value} {chain.value}"
              for rules in desired.families for table, chain, hooked in _hooks_in_order(rules)
              if table is not NetfilterTable.NAT and any(isinstance(r.action, Accept) for r in hooked)]
    return (NOTE_FILTER_ACCEPT.format(where=", ".join(places)),) if places else ()


# ---------------------------------------------------------------- planning


@attrs.define
class _Batch:
    """One family's operations, grouped so that every object exists before it is named and after it is not."""

    new_sets: list[NftOp] = attrs.field(factory=list)
    elements: list[NftOp] = attrs.field(factory=list)
    drop_chains: list[NftOp] = attrs.field(factory=list)
    new_chains: list[NftOp] = attrs.field(factory=list)
    rules: list[NftOp] = attrs.field(factory=list)
    stale_flush: list[NftOp] = attrs.field(factory=list)
    stale_delete: list[NftOp] = attrs.field(factory=list)
    last: list[NftOp] = attrs.field(factory=list)

    def ops(self) -> list[NftOp]:
        return [*self.new_sets, *self.elements, *self.drop_chains, *self.new_chains, *self.rules,
                *self.stale_flush, *self.stale_delete, *self.last]


def plan_nft(desired: RuleSet, observed: NftRuleset, drift: list[Drift]) -> tuple[NftOp, ...]:
    """The batch that makes our tables equal ``desired``; empty when they already are."""
    ops: list[NftOp] = []
    for family in Family:
        ops.extend(_plan_family(family, desired.family(family), observed.table(family),
                                desired.config.nft_table, drift))
    return tuple(ops)


def _subject(family: Family, what: str) -> str:
    return f"nft {family_name(family)} {what}"


def _create_all(family: Family, rules: FamilyRuleSet, chains: Sequence[DesiredChain]) -> list[NftOp]:
    ops: list[NftOp] = [AddNftTable(family)]
    ops.extend(AddNftSet(family, ipset) for ipset in rules.sets)
    ops.extend(AddNftChain(family, chain.name, chain.hook) for chain in chains)
    ops.extend(AppendNftRule(family, chain.name, rule, chain.nat) for chain in chains for rule in chain.rules)
    return ops


def _rebuild_reason(family: Family, rules: FamilyRuleSet, chains: Sequence[DesiredChain],
                    table: NftTable) -> str | None:
    for ipset in rules.sets:
        current = table.set(ipset.name)
        if current is not None and (current.set_type != set_type(family) or current.flags != SET_FLAGS):
            return f"set {ipset.name} is {current.set_type} with flags {list(current.flags)}"
    for chain in chains:
        observed = table.chain(chain.name)
        if observed is not None and (observed.hook is None) != (chain.hook is None):
            return f"chain {chain.name} is a {'regular' if observed.hook is None else 'base'} chain"
    return None


def _plan_family(family: Family, rules: FamilyRuleSet | None, table: NftTable | None, table_name: str,
                 drift: list[Drift]) -> list[NftOp]:
    if rules is None:
        if table is None:
            return []
        drift.append(Drift(DriftKind.EXTRA, _subject(family, f"table {table_name}"), f"{family.label} is disabled"))
        return [DeleteNftTable(family)]
    chains = desired_chains(rules)
    if table is None:
        drift.append(Drift(DriftKind.MISSING, _subject(family, f"table {table_name}"), "not on the node"))
        return _create_all(family, rules, chains)
    reason = _rebuild_reason(family, rules, chains, table)
    if reason is not None:
        drift.append(Drift(DriftKind.MODIFIED, _subject(family, f"table {table_name}"),
                           f"{reason}: cannot change while rules name it, replacing the table"))
        return [AddNftTable(family), DeleteNftTable(family), *_create_all(family, rules, chains)]

    batch = _Batch()
    for ipset in rules.sets:
        _plan_set(family, ipset, table, batch, drift)
    for chain in chains:
        observed = table.chain(chain.name)
        if observed is None:
            drift.append(Drift(DriftKind.MISSING, _subject(family, f"chain {chain.name}"), "not on the node"))
        elif observed.hook != chain.hook:
            drift.append(Drift(DriftKind.MODIFIED, _subject(family, f"chain {chain.name}"),
                               f"hook {observed.hook} differs, re-adding it"))
            batch.drop_chains.append(DeleteNftChain(family, chain.name))
        else:
            batch.rules.extend(_edit_chain(family, chain, observed, drift))
            continue
        batch.new_chains.append(AddNftChain(family, chain.name, chain.hook))
        batch.rules.extend(AppendNftRule(family, chain.name, rule, chain.nat) for rule in chain.rules)
    wanted_chains = {c.name for c in chains}
    for observed_chain in table.chains:
        if observed_chain.name not in wanted_chains:
            drift.append(Drift(DriftKind.EXTRA, _subject(family, f"chain {observed_chain.name}"), "no longer needed"))
            batch.stale_flush.append(FlushNftChain(family, observed_chain.name))
            batch.stale_delete.append(DeleteNftChain(family, observed_chain.name))
    wanted_sets = {s.name for s in rules.sets}
    for observed_set in table.sets:
        if observed_set.name not in wanted_sets:
            drift.append(Drift(DriftKind.EXTRA, _subject(family, f"set {observed_set.name}"), "no longer needed"))
            batch.last.append(DeleteNftSet(family, observed_set.name))
    for kind, name in table.objects:
        drift.append(Drift(DriftKind.EXTRA, _subject(family, f"{kind} {name}"), "not something we create"))
        batch.last.append(DeleteNftObject(family, kind, name))
    return batch.ops()


def _plan_set(family: Family, ipset: IPSet, table: NftTable, batch: _Batch, drift: list[Drift]) -> None:
    current = table.set(ipset.name)
    subject = _subject(family, f"set {ipset.name}")
    if current is None:
        batch.new_sets.append(AddNftSet(family, ipset))
        drift.append(Drift(DriftKind.MISSING, subject, "not on the node"))
        return
    want = collapse(ipset.members)
    if current.members == want:
        return
    wanted = set(want)
    stale = tuple(e for e in current.elements if not (len(e) == 1 and e[0] in wanted))
    stored = {e[0] for e in current.elements if len(e) == 1}
    added = tuple(m for m in want if m not in stored)
    if stale:
        batch.elements.append(DeleteNftElements(family, ipset.name, stale))
        drift.append(Drift(DriftKind.EXTRA, subject, f"{len(stale)} elements"))
    if added:
        batch.elements.append(AddNftElements(family, ipset.name, added))
        drift.append(Drift(DriftKind.MISSING, subject, f"{len(added)} elements"))


class _Unparsed:
    """Stands for an observed rule that is no form we write: equal to nothing."""


def _edit_chain(family: Family, chain: DesiredChain, observed: NftChain, drift: list[Drift]) -> list[NftOp]:
    """An edit script by handle turning the observed rules into the desired ones."""
    old: list[RuleBody | _Unparsed] = [r.body if r.body is not None else _Unparsed() for r in observed.rules]
    new: list[RuleBody | _Unparsed] = [comparable(r) for r in chain.rules]
    if old == new:
        return []
    subject = _subject(family, f"chain {chain.name}")
    ops: list[NftOp] = []
    for step in edit_script(old, new):
        if step.kind is EditKind.INSERT:
            rule = chain.rules[step.new]
            ops.append(AppendNftRule(family, chain.name, rule, chain.nat) if step.anchor is None
                       else InsertNftRule(family, chain.name, observed.rules[step.anchor].handle, rule, chain.nat))
            drift.append(Drift(DriftKind.MISSING, subject, f"rule {step.new + 1} ({rule.comment})"))
            continue
        assert step.old is not None
        old_rule = observed.rules[step.old]
        if step.kind is EditKind.REPLACE:
            ops.append(ReplaceNftRule(family, chain.name, old_rule.handle, chain.rules[step.new], chain.nat))
            drift.append(Drift(DriftKind.MODIFIED, subject, f"rule handle {old_rule.handle}: {old_rule.text}"))
        else:
            ops.append(DeleteNftRule(family, chain.name, old_rule.handle))
            drift.append(Drift(DriftKind.EXTRA, subject, f"rule handle {old_rule.handle}: {old_rule.text}"))
    return ops


# ---------------------------------------------------------------- conntrack inputs

DecisionInputs = tuple[Family, list[RuleBody], list[RuleBody], dict[str, frozenset[Cidr]], dict[str, frozenset[Cidr]]]


def decision_inputs(desired: RuleSet, observed: NftRuleset) -> Iterator[DecisionInputs]:
    """Per family and decision chain (mark request, SNAT): old and new bodies, old and new set members."""
    names = [name for _, name in decision_chains(desired.config)]
    for family in Family:
        rules, table = desired.family(family), observed.table(family)
        if rules is None and table is None:
            continue
        old_sets = {s.name: frozenset(s.members) for s in table.sets} if table else {}
        new_sets = {s.name: frozenset(s.members) for s in rules.sets} if rules else {}
        wanted = {c.name: c for c in rules.chains} if rules else {}
        for name in names:
            observed_chain = table.chain(name) if table else None
            old = [r.body for r in observed_chain.rules if r.body is not None] if observed_chain else []
            new = [comparable(r) for r in wanted[name].rules] if name in wanted else []
            yield family, old, new, old_sets, new_sets


# ---------------------------------------------------------------- rendering


def _ref(family: Family, table: str, **more: Any) -> dict[str, Any]:
    return {"family": family_name(family), "table": table, **more}


def _stored_element(element: tuple[Cidr, ...]) -> Any:
    if len(element) == 1:
        return elements(element)[0]
    first, last = element[0], element[-1]
    return {"range": [first.address, str(IPAddress(last.family, last.last))]}


def nft_command(op: NftOp, table: str) -> dict[str, Any]:
    """One operation as an nft JSON command."""
    family = op.family
    if isinstance(op, AddNftTable):
        return {"add": {"table": {"family": family_name(family), "name": table}}}
    if isinstance(op, DeleteNftTable):
        return {"delete": {"table": {"family": family_name(family), "name": table}}}
    if isinstance(op, AddNftSet):
        return {"add": {"set": set_object(family_name(family), table, op.ipset)}}
    if isinstance(op, DeleteNftSet):
        return {"delete": {"set": _ref(family, table, name=op.name)}}
    if isinstance(op, AddNftElements):
        return {"add": {"element": _ref(family, table, name=op.set_name, elem=elements(op.members))}}
    if isinstance(op, DeleteNftElements):
        return {"delete": {"element": _ref(family, table, name=op.set_name,
                                           elem=[_stored_element(e) for e in op.elements])}}
    if isinstance(op, AddNftChain):
        body = _ref(family, table, name=op.name)
        if op.hook is not None:
            body |= {"type": op.hook.chain_type, "hook": op.hook.hook, "prio": op.hook.priority,
                     "policy": op.hook.policy}
        return {"add": {"chain": body}}
    if isinstance(op, FlushNftChain):
        return {"flush": {"chain": _ref(family, table, name=op.name)}}
    if isinstance(op, DeleteNftChain):
        return {"delete": {"chain": _ref(family, table, name=op.name)}}
    if isinstance(op, AppendNftRule):
        return {"add": {"rule": rule_object(family, table, op.chain, op.rule, op.nat)}}
    if isinstance(op, InsertNftRule):
        # With a handle, "insert" places the rule right before that rule.
        return {"insert": {"rule": {**rule_object(family, table, op.chain, op.rule, op.nat), "handle": op.before}}}
    if isinstance(op, ReplaceNftRule):
        return {"replace": {"rule": {**rule_object(family, table, op.chain, op.rule, op.nat), "handle": op.handle}}}
    if isinstance(op, DeleteNftRule):
        return {"delete": {"rule": _ref(family, table, chain=op.chain, handle=op.handle)}}
    if isinstance(op, DeleteNftObject):
        return {"delete": {op.kind: _ref(family, table, name=op.name)}}
    raise TypeError(f"unknown nftables operation {op!r}")


def render_nft_batch(ops: Sequence[NftOp], config: Config) -> str:
    """The operations as one ``nft -j -f`` document (empty text for no operations)."""
    if not ops:
        return ""
    commands = [{"metainfo": {"json_schema_version": 1}}, *(nft_command(op, config.nft_table) for op in ops)]
    return dumps({"nftables": commands})
