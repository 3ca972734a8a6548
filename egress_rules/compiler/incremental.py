"""Incremental compilation for a node agent's sync loop.

A node agent recompiles on every pod change. :class:`NodeCompiler` keeps the
last RuleSet and the indexes needed to patch it, so that adding or removing a
policy's endpoints costs time proportional to that policy, not to the
cluster: one set is recollapsed, its tuple slot replaced, and the plan for the
change (set members, conntrack entries) computed from that set alone. Every
other change goes through a full compile and :func:`plan_transition`.

The result of any sequence of updates equals a full compile of the resulting
state (tested), so an agent may mix both paths freely.
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from egress_rules.allocators import MarkAllocator, TableAllocator
from egress_rules.compiler import naming
from egress_rules.compiler.compile import compile, local_sources, policy_families, policy_warnings
from egress_rules.errors import InvalidInputError
from egress_rules.gcpause import without_gc
from egress_rules.model.addresses import Cidr, Family
from egress_rules.model.cluster import ClusterState, Endpoint, PolicyKey
from egress_rules.model.config import DEFAULT_CONFIG, Config
from egress_rules.model.ruleset import FamilyRuleSet, Role, RuleBody, RuleSet, SetMatch
from egress_rules.plan.model import ConntrackFlush, Plan, SetOp
from egress_rules.plan.planner import decision_rules, ipset_entries, region_changes, sorted_flushes
from egress_rules.plan.transition import plan_transition, set_change


@attrs.frozen
class Update:
    """One step of the sync loop: the RuleSet before, the RuleSet after, and the plan between them."""

    previous: RuleSet
    current: RuleSet
    plan: Plan


class NodeCompiler:
    """Compiles one node and keeps what it needs to apply small changes quickly.

    Pass the assignments of the previous run in ``marks``/``tables`` as for
    :func:`~egress_rules.compiler.compile`; later compiles reuse the
    assignments this one made, so marks and tables never move.
    """

    def __init__(self, state: ClusterState, node: str, config: Config = DEFAULT_CONFIG, *,
                 marks: MarkAllocator | None = None, tables: TableAllocator | None = None) -> None:
        self._node = node
        self._config = config
        self._table_allocator = tables
        self._mark_layout = marks.layout if marks is not None else config.mark_layout
        self._load(state, compile(state, node, config, marks=marks, tables=tables))

    def _load(self, state: ClusterState, ruleset: RuleSet) -> None:
        self._state: ClusterState | None = state
        self._ruleset = ruleset
        self._policies = {p.key: p for p in state.policies}
        self._nodes = {n.name: n for n in state.nodes}
        self._cluster = state.cluster
        self._set_slot = {(rules.family, s.name): i for rules in ruleset.families for i, s in enumerate(rules.sets)}
        self._decisions: dict[tuple[Family, PolicyKey], list[RuleBody]] = {}
        for rules in ruleset.families:
            for rule in decision_rules(rules, self._config):
                if rule.provenance.policy is not None:
                    self._decisions.setdefault((rules.family, rule.provenance.policy), []).append(rule.body)
        self._families = {p.key: policy_families(p, self._nodes[p.gateway_node], self._config)
                          for p in state.policies}
        self._warnings = {p.key: tuple(policy_warnings(p, self._families[p.key], self._nodes))
                          for p in sorted(state.policies, key=lambda p: p.precedence)}
        # The node's own warnings follow the policies' (as compile orders them); endpoints never change them.
        policy_count = sum(len(w) for w in self._warnings.values())
        self._node_warnings = ruleset.warnings[policy_count:]

    @property
    def ruleset(self) -> RuleSet:
        return self._ruleset

    @property
    def state(self) -> ClusterState:
        """The cluster state the current RuleSet was compiled from."""
        if self._state is None:
            self._state = ClusterState(policies=self._policies.values(), nodes=self._nodes.values(),
                                       cluster=self._cluster)
        return self._state

    def _allocators(self) -> tuple[MarkAllocator, TableAllocator]:
        marks = MarkAllocator(self._mark_layout, dict(self._ruleset.node_marks))
        base = self._table_allocator
        tables = TableAllocator(self._config.tables, dict(self._ruleset.routing_tables),
                                base.in_use if base is not None else frozenset())
        return marks, tables

    @without_gc
    def update(self, state: ClusterState) -> Update:
        """Any change: a full compile (keeping marks and tables) and the transition plan."""
        marks, tables = self._allocators()
        previous = self._ruleset
        current = compile(state, self._node, self._config, marks=marks, tables=tables)
        self._load(state, current)
        return Update(previous, current, plan_transition(previous, current))

    @without_gc
    def update_endpoints(self, key: PolicyKey, *, add: Iterable[Endpoint] = (),
                         remove: Iterable[Endpoint] = ()) -> Update:
        """Add and remove sources of one policy; costs time proportional to that policy."""
        policy = self._policies.get(key)
        if policy is None:
            raise InvalidInputError(f"{key.kind} {key}", "is not in the cluster state")
        sources = list(policy.sources)
        for endpoint in remove:
            try:
                sources.remove(endpoint)
            except ValueError:
                raise InvalidInputError(policy.subject, f"{endpoint.cidr} on {endpoint.node} is not one of its "
                                        "sources") from None
        sources.extend(add)
        updated = attrs.evolve(policy, sources=sources)
        previous = self._ruleset
        families = list(previous.families)
        sets_before: list[SetOp] = []
        sets_after: list[SetOp] = []
        flushes: set[ConntrackFlush] = set()
        local_is_gateway = policy.gateway_node == self._node
        for position, rules in enumerate(previous.families):
            name = naming.policy_set_name(self._config, Role.SOURCES, rules.family, key)
            slot = self._set_slot.get((rules.family, name))
            if slot is None:
                continue  # the policy has no rules in this family
            before = rules.sets[slot]
            members = local_sources(updated, rules.family, self._node, local_is_gateway)
            if members == before.members:
                continue
            after = attrs.evolve(before, members=members)
            families[position] = attrs.evolve(rules, sets=(*rules.sets[:slot], after, *rules.sets[slot + 1:]))
            first, last = set_change(before, after, self._config.ipset_maxelem_limit)
            sets_before += first
            sets_after += last
            flushes |= self._flushes(rules, key, name, ipset_entries(before), ipset_entries(after))
        self._policies[key] = updated
        self._state = None
        self._warnings[key] = tuple(policy_warnings(updated, self._families[key], self._nodes))
        current = attrs.evolve(previous, families=tuple(families),
                               warnings=(*(w for warnings in self._warnings.values() for w in warnings),
                                         *self._node_warnings))
        self._ruleset = current
        plan = Plan(node=self._node, sets_before=tuple(sets_before), iptables=(), routing=(),
                    sets_after=tuple(sets_after),
                    conntrack=sorted_flushes(flushes),
                    drift=())
        return Update(previous, current, plan)

    def _flushes(self, rules: FamilyRuleSet, key: PolicyKey, changed: str, before: frozenset[Cidr],
                 after: frozenset[Cidr]) -> set[ConntrackFlush]:
        """Flows of this policy whose source joined or left the set (the planner's rule, on one policy)."""
        flushes: set[ConntrackFlush] = set()
        for body in self._decisions.get((rules.family, key), []):
            entries = {}
            for match in body.matches:
                slot = self._set_slot.get((rules.family, match.set_name)) if isinstance(match, SetMatch) else None
                if slot is not None:
                    entries[rules.sets[slot].name] = ipset_entries(rules.sets[slot])
            old, new = {**entries, changed: before}, {**entries, changed: after}
            flushes.update(ConntrackFlush(rules.family, *region) for region in region_changes(body, old, new))
        return flushes
