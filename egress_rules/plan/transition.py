"""Plans between two desired rule sets, for a node that has the first one applied.

A node agent reconciles against observed state now and then; between those,
each change to the cluster only needs the difference between the previous
and the new RuleSet. That difference is computed here without reading the
kernel: objects that are identical (the same Python object, as the
incremental compiler hands them over) are skipped at the cost of a pointer
comparison, and only what changed is diffed with the planner's own rules.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

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
    _changed_bodies,
    _is_decision,
    _plan_routing,
    _plan_table,
    _regions,
    ipset_entries,
)


def plan_transition(previous: RuleSet, current: RuleSet) -> Plan:
    """The plan that takes a node from ``previous`` (applied exactly) to ``current``."""
    if previous.node != current.node or previous.config != current.config:
        raise InvalidInputError("plan_transition", "both rule sets must be for the same node and config")
    scratch: list[Drift] = []  # a transition is not drift; the planner's helpers want somewhere to write
    iptables: list[IptablesDelta] = []
    routing: list[RouteDelta] = []
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
            route_ops = _plan_routing(new, _observed_routing(family, old), family, scratch)
            if route_ops:
                routing.append(RouteDelta(family, route_ops))
        conntrack |= _conntrack(family, old, new, changed_sets=changed_sets, chains_same=chains_same,
                                config=current.config)
    return Plan(
        node=current.node,
        sets_before=tuple(sets_before),
        iptables=tuple(iptables),
        routing=tuple(routing),
        sets_after=tuple(sets_after),
        conntrack=tuple(sorted(conntrack, key=flush_order)),
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
    if added:
        first.append(AddMembers(after.name, tuple(added)))
    if removed:
        first.append(DeleteMembers(after.name, tuple(removed)))


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


def _decision_bodies(rules: FamilyRuleSet | None, config: Config) -> list[RuleBody]:
    """The rules that decide a flow's egress (the same chains the planner watches)."""
    if rules is None:
        return []
    bodies: list[RuleBody] = []
    for table, name in ((NetfilterTable.MANGLE, config.chains.mark_request),
                        (NetfilterTable.NAT, config.chains.snat_eip)):
        chain = rules.chain(table, name)
        bodies += [r.body for r in chain.rules if _is_decision(r.body)] if chain else []
    return bodies


def _conntrack(family: Family, old: FamilyRuleSet | None, new: FamilyRuleSet | None, *,
               changed_sets: list[tuple[IPSet | None, IPSet | None]], chains_same: bool,
               config: Config) -> set[ConntrackFlush]:
    """Flows whose decision changed: by changed decision rules, and by changed members of unchanged ones."""
    flushes: set[ConntrackFlush] = set()
    changed_names = {ipset.name for pair in changed_sets for ipset in pair if ipset is not None}
    if not changed_names and chains_same:
        return flushes
    old_bodies = _decision_bodies(old, config)
    new_bodies = old_bodies if chains_same else _decision_bodies(new, config)
    changed = [] if chains_same else _changed_bodies(old_bodies, new_bodies)
    kept = set(old_bodies) & set(new_bodies) - set(changed)
    refilled = [body for body in kept if _set_names(body) & changed_names]
    # Every set these rules name, not only the changed ones: a region is sources x destinations.
    names = {name for body in (*changed, *refilled) for name in _set_names(body)}
    old_entries = _entries(old, names)
    new_entries = _entries(new, names)
    for body in changed:
        source = old_entries if body in old_bodies and body not in new_bodies else new_entries
        flushes.update(ConntrackFlush(family, *region) for region in _regions(body, source))
    for body in refilled:
        [*changed_here] = _set_names(body) & changed_names
        if len(changed_here) == 1:
            name = changed_here[0]
            flushes |= member_flushes(family, body, changed=name, before=old_entries.get(name, frozenset()),
                                      after=new_entries.get(name, frozenset()), entries=new_entries)
        else:
            # Sources and destinations both changed: compare the whole regions.
            before = set(_regions(body, old_entries))
            after = set(_regions(body, new_entries))
            flushes.update(ConntrackFlush(family, *region) for region in before ^ after)
    return flushes


def member_flushes(family: Family, body: RuleBody, *, changed: str, before: frozenset[Cidr],
                   after: frozenset[Cidr], entries: Mapping[str, frozenset[Cidr]]) -> set[ConntrackFlush]:
    """Flows a decision rule gains or loses when set ``changed`` goes from ``before`` to ``after``.

    The same regions as comparing all of the rule's regions before and after,
    computed from the changed members alone; only valid when no other set of
    the rule changed.
    """
    delta = before ^ after
    if not delta:
        return set()
    sources: Iterable[Cidr] = ()
    destinations: Iterable[Cidr] | None = None
    for match in body.matches:
        if not isinstance(match, SetMatch) or match.negate:
            continue
        members = delta if match.set_name == changed else entries.get(match.set_name, frozenset())
        if match.direction.value == "src":
            sources = members
        else:
            destinations = members
    if destinations is None:
        return {ConntrackFlush(family, source, None) for source in sources}
    return {ConntrackFlush(family, source, destination) for source in sources for destination in destinations}


def flush_order(flush: ConntrackFlush) -> tuple[Family, Cidr, Cidr]:
    """The order the planner lists conntrack flushes in."""
    return (flush.family, flush.source, flush.destination or flush.source)


def _set_names(body: RuleBody) -> set[str]:
    return {m.set_name for m in body.matches if isinstance(m, SetMatch)}


def _entries(rules: FamilyRuleSet | None, names: set[str]) -> dict[str, frozenset[Cidr]]:
    if rules is None or not names:
        return {}
    return {s.name: ipset_entries(s) for s in rules.sets if s.name in names}
