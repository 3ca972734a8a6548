"""Plans between two desired rule sets, for a node that has the first one applied.

A node agent reconciles against observed state now and then; between those,
each change to the cluster only needs the difference between the previous
and the new RuleSet. That difference is computed here without reading the
kernel: objects that are identical (the same Python object, as the
incremental compiler hands them over) are skipped at the cost of a pointer
comparison, and only what changed is diffed with the planner's own rules.
"""

from __future__ import annotations

from collections.abc import Sequence

from egress_rules.backends.ipset import maxelem_for
from egress_rules.errors import InvalidInputError
from egress_rules.model.addresses import Cidr, Family
from egress_rules.model.config import Config
from egress_rules.model.ruleset import FamilyRuleSet, IPSet, NetfilterTable, RuleBody, RuleSet, SetMatch
from egress_rules.observed.iproute import ObservedIPRule, ObservedRoute
from egress_rules.observed.iptables import SavedChain, SavedRule, SavedTable
from egress_rules.observed.state import ObservedState
from egress_rules.plan.model import (
    AddMembers,
    ConntrackFlush,
    CreateSet,
    DeleteMembers,
    DestroySet,
    Drift,
    IptablesDelta,
    Plan,
    ReplaceSet,
    RouteDelta,
    SetOp,
    TableDelta,
)
from egress_rules.plan.planner import (
    _FROM_ALL,
    _flushes,
    _plan_routing,
    _plan_table,
    decision_rules,
    ipset_entries,
    region_changes,
    sorted_flushes,
)


def plan_transition(previous: RuleSet, current: RuleSet) -> Plan:
    """The plan that takes a node from ``previous`` (applied exactly) to ``current``."""
    if previous.node != current.node or previous.config != current.config:
        raise InvalidInputError("plan_transition", "both rule sets must be for the same node and config")
    scratch: list[Drift] = []  # a transition is not drift; the planner's helpers want somewhere to write
    iptables: list[IptablesDelta] = []
    routing: list[RouteDelta] = []
    routing_after: list[RouteDelta] = []
    sets_before: list[SetOp] = []
    sets_after: list[SetOp] = []
    conntrack: set[ConntrackFlush] = set()
    limit = current.config.ipset_maxelem_limit
    for family in Family:
        old, new = previous.family(family), current.family(family)
        if old is new:
            continue
        old_sets = old.sets if old else ()
        new_sets = new.sets if new else ()
        changed_sets = _changed_sets(old_sets, new_sets)
        for before, after in changed_sets:
            _set_change(before, after, limit, sets_before, sets_after)
        old_chains = old.chains if old else ()
        new_chains = new.chains if new else ()
        chains_same = len(old_chains) == len(new_chains) and all(
            a is b for a, b in zip(old_chains, new_chains, strict=True))
        hooks_same = (old.hooks if old else ()) == (new.hooks if new else ())
        if not (chains_same and hooks_same):
            tables = []
            for table in NetfilterTable:
                ops = _plan_table(table, _saved_table(table, old), [c for c in new_chains if c.table is table],
                                  [h for h in (new.hooks if new else ()) if h.table is table], scratch)
                if ops:
                    tables.append(TableDelta(table, tuple(ops)))
            if tables:
                iptables.append(IptablesDelta(family, tuple(tables)))
        if (old.ip_rules if old else ()) != (new.ip_rules if new else ()) or (
                (old.routes if old else ()) != (new.routes if new else ())):
            first, last = _plan_routing(new, _observed_routing(family, old), family, scratch)
            if first:
                routing.append(RouteDelta(family, first))
            if last:
                routing_after.append(RouteDelta(family, last))
        conntrack |= _conntrack(family, old, new, changed_sets=changed_sets, chains_same=chains_same,
                                config=current.config)
    return Plan(
        node=current.node,
        sets_before=tuple(sets_before),
        iptables=tuple(iptables),
        routing=tuple(routing),
        routing_after=tuple(routing_after),
        sets_after=tuple(sets_after),
        conntrack=sorted_flushes(conntrack),
        drift=(),
    )


def _changed_sets(old: Sequence[IPSet], new: Sequence[IPSet]) -> list[tuple[IPSet | None, IPSet | None]]:
    """Pairs (before, after) of sets that differ; ``None`` for a set that appears or disappears."""
    if len(old) == len(new) and all(a is b or a.name == b.name for a, b in zip(old, new, strict=True)):
        return [(a, b) for a, b in zip(old, new, strict=True) if a is not b and a != b]
    old_by_name = {s.name: s for s in old}
    new_by_name = {s.name: s for s in new}
    pairs: list[tuple[IPSet | None, IPSet | None]] = []
    for name, after in new_by_name.items():
        before = old_by_name.get(name)
        if before is None or before != after:
            pairs.append((before, after))
    pairs.extend((before, None) for name, before in old_by_name.items() if name not in new_by_name)
    return pairs


def set_change(before: IPSet | None, after: IPSet | None, limit: int) -> tuple[list[SetOp], list[SetOp]]:
    """Operations (before iptables, after iptables) that turn set ``before`` into ``after``."""
    first: list[SetOp] = []
    last: list[SetOp] = []
    _set_change(before, after, limit, first, last)
    return first, last


def _set_change(before: IPSet | None, after: IPSet | None, limit: int, first: list[SetOp], last: list[SetOp]) -> None:
    if after is None:
        assert before is not None
        last.append(DestroySet(before.name))
        return
    entries = ipset_entries(after)
    if before is None:
        maxelem_for(len(entries), limit, f"set {after.name}")
        first.append(CreateSet(after))
        return
    old_entries = ipset_entries(before)
    if len(entries) > maxelem_for(len(old_entries), limit, f"set {before.name}"):
        maxelem_for(len(entries), limit, f"set {after.name}")
        first.append(ReplaceSet(after))
        return
    added = sorted(entries - old_entries)
    removed = sorted(old_entries - entries)
    # Deletions first: a set at its maxelem has no room for an addition until they are done.
    if removed:
        first.append(DeleteMembers(after.name, tuple(removed)))
    if added:
        first.append(AddMembers(after.name, tuple(added)))


def _saved_table(table: NetfilterTable, rules: FamilyRuleSet | None) -> SavedTable:
    """The table as iptables-save would show it after ``rules`` was applied to an empty node."""
    if rules is None:
        return SavedTable(table.value, ())
    chains = [SavedChain(c.name, False, None, True, tuple(SavedRule("", True, r.body) for r in c.rules))
              for c in rules.chains if c.table is table]
    builtin: dict[str, list[SavedRule]] = {}
    for hook in sorted((h for h in rules.hooks if h.table is table), key=lambda h: h.position):
        builtin.setdefault(hook.chain.value, []).append(SavedRule("", True, hook.rule.body))
    chains += [SavedChain(name, True, "ACCEPT", False, tuple(saved)) for name, saved in builtin.items()]
    return SavedTable(table.value, tuple(chains))


def _observed_routing(family: Family, rules: FamilyRuleSet | None) -> ObservedState:
    ip_rules = tuple(ObservedIPRule(family, r.priority, r.mark, r.mask, r.table, r.protocol, True, _FROM_ALL)
                     for r in (rules.ip_rules if rules else ()))
    routes = tuple(ObservedRoute(family, r.table, r.destination, r.via, r.device, r.protocol, "unicast", True)
                   for r in (rules.routes if rules else ()))
    return ObservedState(ip_rules={family: ip_rules}, routes={family: routes})


def _conntrack(family: Family, old: FamilyRuleSet | None, new: FamilyRuleSet | None, *,
               changed_sets: list[tuple[IPSet | None, IPSet | None]], chains_same: bool,
               config: Config) -> set[ConntrackFlush]:
    """Flows whose decision changed: by changed decision rules, and by changed members of kept ones."""
    changed_names = {ipset.name for pair in changed_sets for ipset in pair if ipset is not None}
    if not changed_names and chains_same:
        return set()
    old_bodies = [r.body for r in decision_rules(old, config)]
    if chains_same:
        # Only the rules naming a changed set can change their decisions; read just their sets.
        touched = [body for body in old_bodies if _set_names(body) & changed_names]
        names = {name for body in touched for name in _set_names(body)}
        old_entries, new_entries = _entries(old, names), _entries(new, names)
        return {ConntrackFlush(family, *region)
                for body in touched for region in region_changes(body, old_entries, new_entries)}
    new_bodies = [r.body for r in decision_rules(new, config)]
    names = {name for body in (*old_bodies, *new_bodies) for name in _set_names(body)}
    return _flushes(family, old_bodies, new_bodies, _entries(old, names), _entries(new, names))


def _set_names(body: RuleBody) -> set[str]:
    return {m.set_name for m in body.matches if isinstance(m, SetMatch)}


def _entries(rules: FamilyRuleSet | None, names: set[str]) -> dict[str, frozenset[Cidr]]:
    if rules is None or not names:
        return {}
    return {s.name: ipset_entries(s) for s in rules.sets if s.name in names}
