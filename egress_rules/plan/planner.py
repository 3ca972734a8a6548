"""``plan(desired, observed)``: the smallest correct set of changes for one node.

Pure: it reads a desired :class:`RuleSet` and an :class:`ObservedState` and
returns a :class:`Plan`. It only ever touches objects the observed-state
parsers marked as ours (see :mod:`egress_rules.observed.ownership`):

* owned chains are edited rule by rule (an edit script over rule bodies:
  replace, insert, delete by position); chains we no longer need are flushed
  and deleted after the rules that jumped to them are gone;
* hook rules end up as the first rules of their built-in chain, once each, in
  order; foreign rules keep their relative order and are never modified;
* sets get member deltas, or a scratch set and ``swap`` when their type,
  family or size limit must change; stale sets are destroyed after iptables
  stops naming them;
* ip rules and routes are added, replaced and deleted individually;
* conntrack entries whose egress decision changed are listed for deletion.

On a node whose observed state carries the nft listing (``ObservedState.nft``)
the nftables datapath is planned instead of iptables and ipset, as one
atomic batch: see :mod:`egress_rules.plan.nft`. Routing and conntrack are
planned the same way on both datapaths.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence

from egress_rules.backends.ipset import maxelem_for
from egress_rules.errors import InvalidInputError
from egress_rules.model.addresses import Cidr, Family, split_zero_prefix
from egress_rules.model.config import Config
from egress_rules.model.ruleset import (
    BuiltinChain,
    Chain,
    FamilyRuleSet,
    Goto,
    HookRule,
    IPSet,
    NetfilterTable,
    Return,
    Rule,
    RuleBody,
    RuleSet,
    SetMatch,
    Snat,
    decision_chains,
)
from egress_rules.observed.ipset import ObservedSet
from egress_rules.observed.iptables import IptablesDump, SavedChain, SavedRule, SavedTable
from egress_rules.observed.nft import NftRuleset
from egress_rules.observed.state import ObservedState
from egress_rules.plan import nft
from egress_rules.plan.edits import EditKind, edit_script
from egress_rules.plan.model import (
    AddIPRule,
    AddMembers,
    AppendRule,
    ConntrackFlush,
    CreateChain,
    CreateSet,
    DeleteChain,
    DeleteIPRule,
    DeleteMembers,
    DeleteRoute,
    DeleteRule,
    DestroySet,
    Drift,
    DriftKind,
    FlushChain,
    InsertRule,
    IptablesDelta,
    Plan,
    ReplaceRoute,
    ReplaceRule,
    ReplaceSet,
    RouteDelta,
    RouteOp,
    SetOp,
    TableDelta,
    TableOp,
)


def plan(desired: RuleSet, observed: ObservedState) -> Plan:
    """The operations that make ``observed`` equal ``desired`` on our objects, touching nothing else."""
    if observed.nft is not None:
        return _plan_nft_datapath(desired, observed, observed.nft)
    drift: list[Drift] = []
    notes: list[str] = []
    for rules in desired.families:
        if rules.family not in observed.iptables:
            raise InvalidInputError("observed state", f"{rules.family.label} iptables dump missing")
    _check_routing_read(desired, observed)

    iptables = []
    for family, dump in sorted(observed.iptables.items()):
        rules_or_none = desired.family(family)
        notes.extend(f"{family.label} {note}" for note in dump.notes)
        iptables.append(IptablesDelta(family, _plan_iptables(rules_or_none, dump, drift)))

    sets_before, sets_after = _plan_sets(desired, observed.ipsets, drift)
    routing, routing_after = _routing(desired, observed, drift)
    conntrack = _plan_conntrack(desired, observed)
    return Plan(
        node=desired.node,
        sets_before=tuple(sets_before),
        iptables=tuple(d for d in iptables if d.tables),
        routing=routing,
        routing_after=routing_after,
        sets_after=tuple(sets_after),
        conntrack=conntrack,
        drift=tuple(sorted(drift)),
        notes=tuple(notes),
    )


def _check_routing_read(desired: RuleSet, observed: ObservedState) -> None:
    for rules in desired.families:
        if rules.family not in observed.ip_rules or rules.family not in observed.routes:
            raise InvalidInputError("observed state", f"{rules.family.label} ip rules or routes missing")


def _routing(desired: RuleSet, observed: ObservedState,
             drift: list[Drift]) -> tuple[tuple[RouteDelta, ...], tuple[RouteDelta, ...]]:
    """Routing deltas per family: before and after the packet-filter changes."""
    before, after = [], []
    for family in sorted(set(observed.ip_rules) | set(observed.routes)):
        first, last = _plan_routing(desired.family(family), observed, family, drift)
        if first:
            before.append(RouteDelta(family, first))
        if last:
            after.append(RouteDelta(family, last))
    return tuple(before), tuple(after)


def _plan_nft_datapath(desired: RuleSet, observed: ObservedState, listing: NftRuleset) -> Plan:
    """The nftables datapath: one nft batch for our tables, then routing and conntrack as on iptables."""
    if observed.iptables or observed.ipsets:
        raise InvalidInputError("observed state", "the nft listing says this node uses the nftables datapath: "
                                "leave out the iptables dumps and ipsets (they describe the iptables datapath)")
    _check_routing_read(desired, observed)
    drift: list[Drift] = []
    ops = nft.plan_nft(desired, listing, drift)
    routing, routing_after = _routing(desired, observed, drift)
    flushes: set[ConntrackFlush] = set()
    for family, old, new, old_sets, new_sets in nft.decision_inputs(desired, listing):
        flushes |= _flushes(family, [b for b in old if _is_decision(b)], [b for b in new if _is_decision(b)],
                            old_sets, new_sets)
    return Plan(
        node=desired.node,
        sets_before=(),
        iptables=(),
        routing=routing,
        routing_after=routing_after,
        sets_after=(),
        conntrack=sorted_flushes(flushes),
        drift=tuple(sorted(drift)),
        notes=nft.datapath_notes(desired),
        nft=ops,
    )


# ---------------------------------------------------------------- iptables


def _plan_iptables(rules: FamilyRuleSet | None, dump: IptablesDump, drift: list[Drift]) -> tuple[TableDelta, ...]:
    deltas = []
    for table in NetfilterTable:
        saved = dump.table(table.value) or SavedTable(table.value, ())
        desired_chains = [c for c in rules.chains if c.table is table] if rules else []
        desired_hooks = [h for h in rules.hooks if h.table is table] if rules else []
        ops = _plan_table(table, saved, desired_chains, desired_hooks, drift)
        if ops:
            deltas.append(TableDelta(table, tuple(ops)))
    return tuple(deltas)


def _plan_table(table: NetfilterTable, saved: SavedTable, chains: Sequence[Chain], hooks: Sequence[HookRule],
                drift: list[Drift]) -> list[TableOp]:
    ops: list[TableOp] = []
    wanted = {c.name for c in chains}
    for chain in chains:
        if saved.chain(chain.name) is None:
            ops.append(CreateChain(chain.name))
            drift.append(Drift(DriftKind.MISSING, f"{table.value} chain {chain.name}", "not on the node"))
    for chain in chains:
        observed_chain = saved.chain(chain.name)
        observed_rules = observed_chain.rules if observed_chain else ()
        ops.extend(_edit_chain(f"{table.value} {chain.name}", chain.name, observed_rules, chain.rules,
                               drift if observed_chain else []))
    for builtin in BuiltinChain:
        wanted_hooks = sorted((h for h in hooks if h.chain is builtin), key=lambda h: h.position)
        observed_builtin = saved.chain(builtin.value)
        observed_rules = observed_builtin.rules if observed_builtin else ()
        ops.extend(_place_hooks(f"{table.value} {builtin.value}", builtin.value, observed_rules,
                                [h.rule for h in wanted_hooks], drift))
    for chain_obj in saved.chains:
        if chain_obj.owned and chain_obj.name not in wanted:
            ops.extend((FlushChain(chain_obj.name), DeleteChain(chain_obj.name)))
            drift.append(Drift(DriftKind.EXTRA, f"{table.value} chain {chain_obj.name}", "no longer needed"))
    return ops


class _Unparsed:
    """Stands for an observed rule of ours that no longer parses: equal to nothing."""


def _key(rule: SavedRule) -> RuleBody | _Unparsed:
    return rule.body if rule.body is not None else _Unparsed()


def _edit_chain(subject: str, chain: str, observed: Sequence[SavedRule], desired: Sequence[Rule],
                drift: list[Drift]) -> list[TableOp]:
    """An edit script turning ``observed`` into ``desired`` (positions valid as the ops run in order)."""
    old = [_key(r) for r in observed]
    new = [r.body for r in desired]
    if old == new:
        return []
    ops: list[TableOp] = []
    for step in edit_script(old, new):
        position = step.new + 1
        if step.kind is EditKind.REPLACE:
            assert step.old is not None
            ops.append(ReplaceRule(chain, position, desired[step.new]))
            drift.append(Drift(DriftKind.MODIFIED, subject, f"rule {position} differs: {observed[step.old].text}"))
        elif step.kind is EditKind.DELETE:
            assert step.old is not None
            ops.append(DeleteRule(chain, position))
            drift.append(Drift(DriftKind.EXTRA, subject, f"rule {observed[step.old].text}"))
        else:
            rule = desired[step.new]
            ops.append(AppendRule(chain, rule) if step.anchor is None else InsertRule(chain, position, rule))
            drift.append(Drift(DriftKind.MISSING, subject, f"rule {position} ({rule.comment})"))
    return ops


def _place_hooks(subject: str, chain: str, observed: Sequence[SavedRule], desired: Sequence[Rule],
                 drift: list[Drift]) -> list[TableOp]:
    """Our hooks as the first rules of ``chain``, once each, in order; foreign rules untouched."""
    prefix = 0
    while (prefix < len(desired) and prefix < len(observed) and observed[prefix].owned
           and observed[prefix].body == desired[prefix].body):
        prefix += 1
    stale = [i for i, rule in enumerate(observed) if rule.owned and i >= prefix]
    if prefix == len(desired) and not stale:
        return []
    wanted = {r.body for r in desired}
    seen: set[RuleBody | None] = {r.body for r in observed[:prefix]}
    for i in stale:
        body = observed[i].body
        if body in seen and body in wanted:
            drift.append(Drift(DriftKind.DUPLICATE, subject, f"rule {i + 1}: {observed[i].text}"))
        elif body in wanted:
            drift.append(Drift(DriftKind.MISORDERED, subject, f"rule {i + 1}: {observed[i].text}"))
        else:
            drift.append(Drift(DriftKind.EXTRA, subject, f"rule {i + 1}: {observed[i].text}"))
        seen.add(body)
    present = {observed[i].body for i in stale} | seen
    for rule in desired[prefix:]:
        if rule.body not in present:
            drift.append(Drift(DriftKind.MISSING, subject, f"hook ({rule.comment})"))
    ops: list[TableOp] = [DeleteRule(chain, i + 1) for i in reversed(stale)]
    ops.extend(InsertRule(chain, position, rule) for position, rule in enumerate(desired[prefix:], start=prefix + 1))
    return ops


# ---------------------------------------------------------------- ipset


def ipset_entries(ipset: IPSet) -> frozenset[Cidr]:
    """The entries ``hash:net`` holds for ``ipset`` (a /0 is two /1 halves)."""
    return frozenset(split_zero_prefix(ipset.members))


def _plan_sets(desired: RuleSet, observed: Sequence[ObservedSet],
               drift: list[Drift]) -> tuple[list[SetOp], list[SetOp]]:
    limit = desired.config.ipset_maxelem_limit
    by_name = {s.name: s for s in observed if s.owned}
    before: list[SetOp] = []
    after: list[SetOp] = []
    wanted: set[str] = set()
    for rules in desired.families:
        for ipset in rules.sets:
            wanted.add(ipset.name)
            entries = ipset_entries(ipset)
            current = by_name.get(ipset.name)
            if current is None:
                maxelem_for(len(entries), limit, f"set {ipset.name}")
                before.append(CreateSet(ipset))
                drift.append(Drift(DriftKind.MISSING, f"set {ipset.name}", "not on the node"))
                continue
            if (current.set_type != "hash:net" or current.family is not ipset.family
                    or current.maxelem is None or current.maxelem < len(entries)):
                maxelem_for(len(entries), limit, f"set {ipset.name}")
                before.append(ReplaceSet(ipset))
                drift.append(Drift(DriftKind.MODIFIED, f"set {ipset.name}",
                                   f"{current.set_type} {current.options} cannot hold the desired entries"))
                continue
            added = sorted(entries - current.members)
            removed = sorted(current.members - entries)
            # Deletions first: a set at its maxelem has no room for an addition until they are done.
            if removed:
                before.append(DeleteMembers(ipset.name, tuple(removed)))
                drift.append(Drift(DriftKind.EXTRA, f"set {ipset.name}", f"{len(removed)} entries"))
            if added:
                before.append(AddMembers(ipset.name, tuple(added)))
                drift.append(Drift(DriftKind.MISSING, f"set {ipset.name}", f"{len(added)} entries"))
    for name in sorted(set(by_name) - wanted):
        after.append(DestroySet(name))
        drift.append(Drift(DriftKind.EXTRA, f"set {name}", "no longer needed"))
    return before, after


# ---------------------------------------------------------------- routing

# The only selector besides fwmark that ``ip -j rule`` prints for the rules we write.
_FROM_ALL = (("src", json.dumps("all")),)


def _plan_routing(rules: FamilyRuleSet | None, observed: ObservedState, family: Family,
                  drift: list[Drift]) -> tuple[tuple[RouteOp, ...], tuple[RouteOp, ...]]:
    """Routing operations to apply before the packet-filter changes, and after them.

    Before: new and changed routes, then the rules that use them, so that a
    packet marked for a gateway always finds its route. A stray rule of ours
    in the way of one to add (same priority, mark and table, other selectors)
    is deleted first: the kernel compares only the selectors an add names, so
    the add would fail. After: rules and routes of gateways no longer used,
    once nothing marks packets for them.
    """
    desired_rules = {(r.priority, r.mark, r.mask, r.table): r for r in rules.ip_rules} if rules else {}
    desired_routes = {(r.table, r.destination): r for r in rules.routes} if rules else {}
    owned_rules = [r for r in observed.ip_rules.get(family, ()) if r.owned]
    owned_routes = [r for r in observed.routes.get(family, ()) if r.owned]
    adds: list[RouteOp] = []
    conflicting_deletes: list[RouteOp] = []
    rule_deletes: list[RouteOp] = []
    route_deletes: list[RouteOp] = []
    seen_rules = set()
    for rule in owned_rules:
        key = (rule.priority, rule.mark, rule.mask, rule.table)
        if key in desired_rules and key not in seen_rules and rule.selectors == _FROM_ALL:
            seen_rules.add(key)
            continue
        delete = DeleteIPRule(family, rule.priority, rule.mark, rule.mask, rule.table,
                              rule.protocol if rule.protocol is not None else 0, rule.selectors)
        (conflicting_deletes if key in desired_rules else rule_deletes).append(delete)
        drift.append(Drift(DriftKind.EXTRA, f"{family.label} ip rule pref {rule.priority}",
                           f"fwmark {rule.mark} table {rule.table}"))
    seen_routes = {}
    for route in owned_routes:
        if route.destination is not None:
            seen_routes[(route.table, route.destination)] = route
    for route_key, wanted_route in desired_routes.items():
        current = seen_routes.get(route_key)
        if current is None or current.via != wanted_route.via or current.device != wanted_route.device:
            adds.append(ReplaceRoute(wanted_route))
            drift.append(Drift(DriftKind.MISSING if current is None else DriftKind.MODIFIED,
                               f"{family.label} route table {wanted_route.table}", f"default via {wanted_route.via}"))
    for key, wanted_rule in desired_rules.items():
        if key not in seen_rules:
            adds.append(AddIPRule(wanted_rule))
            drift.append(Drift(DriftKind.MISSING, f"{family.label} ip rule pref {wanted_rule.priority}",
                               f"fwmark {wanted_rule.mark:#x} table {wanted_rule.table}"))
    for route in owned_routes:
        if route.destination is None or (route.table, route.destination) not in desired_routes:
            destination = route.destination or Cidr(family, 0, 0)
            route_deletes.append(DeleteRoute(family, route.table, destination,
                                             route.protocol if route.protocol is not None else 0))
            drift.append(Drift(DriftKind.EXTRA, f"{family.label} route table {route.table}", str(destination)))
    before = (*[op for op in adds if isinstance(op, ReplaceRoute)], *conflicting_deletes,
              *[op for op in adds if isinstance(op, AddIPRule)])
    return before, (*rule_deletes, *route_deletes)


# ---------------------------------------------------------------- conntrack


def _decisions(chain: SavedChain | Chain | None) -> list[RuleBody]:
    if chain is None:
        return []
    if isinstance(chain, Chain):
        return [r.body for r in chain.rules]
    return [r.body for r in chain.rules if r.body is not None]


def _set_matches(body: RuleBody) -> tuple[str | None, str | None, bool]:
    """The source set, the destination set, and whether the destination match is negated."""
    source = destination = None
    negated = False
    for match in body.matches:
        if isinstance(match, SetMatch) and match.direction.value == "src" and not match.negate:
            source = match.set_name
        elif isinstance(match, SetMatch) and match.direction.value == "dst":
            destination, negated = match.set_name, match.negate
    return source, destination, negated


def rule_regions(body: RuleBody, sets: Mapping[str, frozenset[Cidr]]) -> set[tuple[Cidr, Cidr | None]]:
    """The flows a decision rule decides: (source, destination) prefix pairs; ``None`` means any destination.

    A negated destination set ("outside the cluster") cannot be written as a
    conntrack filter, so such a rule's flows are named by source alone.
    """
    source, destination, negated = _set_matches(body)
    sources = sets.get(source, frozenset()) if source else frozenset()
    if destination is None or negated:
        return {(s, None) for s in sources}
    return {(s, d) for s in sources for d in sets.get(destination, frozenset())}


def region_changes(body: RuleBody, old: Mapping[str, frozenset[Cidr]],
                   new: Mapping[str, frozenset[Cidr]]) -> set[tuple[Cidr, Cidr | None]]:
    """Flows a kept decision rule gains or loses when its sets change from ``old`` to ``new``.

    Computed from the changed members only, so one new pod costs one region per destination.
    """
    source, destination, negated = _set_matches(body)
    empty: frozenset[Cidr] = frozenset()
    s0, s1 = (old.get(source, empty), new.get(source, empty)) if source else (empty, empty)
    if destination is None:
        return {(s, None) for s in s0 ^ s1}
    d0, d1 = old.get(destination, empty), new.get(destination, empty)
    if negated:
        # A source that joined or left: all its flows outside the set; a prefix that joined or left the
        # negated set: flows of the kept sources to it (e.g. a new cluster CIDR must stop being redirected).
        return {(s, None) for s in s0 ^ s1} | {(s, d) for s in s0 & s1 for d in d0 ^ d1}
    changes: set[tuple[Cidr, Cidr | None]] = {(s, d) for s in s0 & s1 for d in d0 ^ d1}
    changes.update((s, d) for s in s0 - s1 for d in d0)
    changes.update((s, d) for s in s1 - s0 for d in d1)
    return changes


def _is_decision(body: RuleBody) -> bool:
    return isinstance(body.action, (Goto, Snat)) or (isinstance(body.action, Return) and bool(body.matches)
                                                     and any(isinstance(m, SetMatch) for m in body.matches))


def decision_rules(rules: FamilyRuleSet | None, config: Config) -> list[Rule]:
    """The rules of :func:`decision_chains` that decide a flow's egress, in chain order."""
    if rules is None:
        return []
    found: list[Rule] = []
    for table, name in decision_chains(config):
        chain = rules.chain(table, name)
        found += [r for r in chain.rules if _is_decision(r.body)] if chain else []
    return found


def _plan_conntrack(desired: RuleSet, observed: ObservedState) -> tuple[ConntrackFlush, ...]:
    """Flows whose egress decision (mark for a gateway, local gateway, SNAT) may have changed."""
    old_sets = {s.name: s.members for s in observed.ipsets if s.owned}
    flushes: set[ConntrackFlush] = set()
    for family, dump in observed.iptables.items():
        rules = desired.family(family)
        new_sets = {s.name: ipset_entries(s) for s in rules.sets} if rules else {}
        for table, name in decision_chains(desired.config):
            saved_table = dump.table(table.value)
            old = [b for b in _decisions(saved_table.chain(name) if saved_table else None) if _is_decision(b)]
            new = [b for b in _decisions(rules.chain(table, name) if rules else None) if _is_decision(b)]
            flushes |= _flushes(family, old, new, old_sets, new_sets)
    return sorted_flushes(flushes)


def sorted_flushes(flushes: set[ConntrackFlush]) -> tuple[ConntrackFlush, ...]:
    """Flushes in a fixed order: by family, source, then destination (any destination first)."""
    return tuple(sorted(flushes, key=_flush_key))


def _flush_key(flush: ConntrackFlush) -> tuple[int, int, int, int, int]:
    destination = flush.destination
    return (flush.family, flush.source.network, flush.source.prefixlen,
            -1 if destination is None else destination.network, -1 if destination is None else destination.prefixlen)


def _flushes(family: Family, old: list[RuleBody], new: list[RuleBody], old_sets: Mapping[str, frozenset[Cidr]],
             new_sets: Mapping[str, frozenset[Cidr]]) -> set[ConntrackFlush]:
    """Flows of the decisions ``old`` -> ``new`` that changed, by rule or by the members of their sets."""
    flushes: set[ConntrackFlush] = set()
    changed = _changed_bodies(old, new)
    for body in changed:
        for region in rule_regions(body, old_sets if body in old and body not in new else new_sets):
            flushes.add(ConntrackFlush(family, *region))
    for body in set(old) & set(new) - set(changed):
        flushes.update(ConntrackFlush(family, *region) for region in region_changes(body, old_sets, new_sets))
    return flushes


def _changed_bodies(old: list[RuleBody], new: list[RuleBody]) -> list[RuleBody]:
    """Decision rules added, removed, or whose order relative to the others changed."""
    old_set, new_set = set(old), set(new)
    changed = [b for b in old if b not in new_set] + [b for b in new if b not in old_set]
    common_old = [b for b in old if b in new_set]
    common_new = [b for b in new if b in old_set]
    if common_old != common_new:
        matcher = difflib.SequenceMatcher(a=common_old, b=common_new, autojunk=False)
        kept = {common_old[i] for block in matcher.get_matching_blocks() for i in range(block.a, block.a + block.size)}
        changed.extend(b for b in common_new if b not in kept)
    return changed
