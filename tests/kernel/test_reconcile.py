"""The planner against a real kernel: repair damage, keep foreign objects, move between states.

A node with foreign objects (CNI, kube-proxy, another tool's ip rule) gets
the full render; then each kind of damage is done with the real tools, the
node is read back with the real tools, planned, and the rendered plan is
applied with the real tools. Afterwards our objects equal the model (planner
and independent text check), every foreign object is unchanged, the next
plan is empty, and packets still take the EIP. Also: converging a cluster
from scenario A to B and back, with packet checks after each step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from egress_rules.model.ruleset import RuleSet
from egress_rules.plan import plan
from tests.fakes.node import observe_dumps

from .cases import CASES, scenario_state
from .cluster import apply_state, converge_state, rulesets
from .damage import DAMAGES, FOREIGN, FOREIGN_SETS, apply_steps, extra_selector, stale_sets
from .gate import require_kernel
from .kernel_node import comparable, converge_node, dump_node, foreign_snapshot, model_mismatches, observe_node
from .netns import CommandError
from .topology import NODE_ROLES, NodeRole, Topology

pytestmark = pytest.mark.kernel

SCENARIO = "mixed-roles"  # node-b: web's gateway, not api's
NODE: NodeRole = "node-b"


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    require_kernel()
    with Topology() as cluster:
        yield cluster


class ForeignNode:
    """node-b with foreign objects installed before the scenario's rules; reinstalled when a test left it off."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.ruleset: RuleSet | None = None
        self.baseline: dict[str, Any] = {}

    def ready(self) -> RuleSet:
        ns = self.topo.ns(NODE)
        if self.ruleset is not None:
            ours = {s.name for rules in self.ruleset.families for s in rules.sets}
            if (plan(self.ruleset, observe_node(ns, self.ruleset.config)).is_empty
                    and foreign_snapshot(dump_node(ns), self.ruleset.config, ours) == self.baseline):
                return self.ruleset
        self.topo.reset()
        apply_steps(FOREIGN, ns=ns)
        self.ruleset = apply_state(self.topo, scenario_state(SCENARIO))[NODE]
        ours = {s.name for rules in self.ruleset.families for s in rules.sets}
        self.baseline = foreign_snapshot(dump_node(ns), self.ruleset.config, ours)
        return self.ruleset


@pytest.fixture(scope="module")
def foreign_node(topo: Topology) -> ForeignNode:
    return ForeignNode(topo)


def _packets_take_their_eips(topo: Topology, scenario: str) -> list[str]:
    """Every case of ``scenario`` that leaves the cluster (UDP and TCP), through the topology's echo server."""
    wrong = []
    for case in CASES:
        if case.scenario == scenario and case.receiver == "ext":
            got = topo.probe(case.pod, case.destination, case.proto, timeout=2.0)
            if got != case.expected_source:
                wrong.append(f"{case.id}: {got} != {case.expected_source}")
    return wrong


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damage_is_repaired_and_foreign_objects_survive(damage: str, topo: Topology,
                                                        foreign_node: ForeignNode) -> None:
    ns, desired = topo.ns(NODE), foreign_node.ready()
    ours = {s.name for rules in desired.families for s in rules.sets}
    assert foreign_node.baseline["ipset"], "the foreign objects are there"

    apply_steps(DAMAGES[damage](desired), ns=ns)
    damaged = dump_node(ns)
    stale = set(stale_sets(desired)) if damage == "stale and look-alike sets" else set()
    foreign = foreign_snapshot(damaged, desired.config, ours | stale)
    assert plan(desired, observe_node(ns, desired.config)).drift, "the planner must see the damage"
    assert model_mismatches(damaged, desired, foreign_sets=FOREIGN_SETS), "the text check must see the damage"

    _, outputs, _ = converge_node(ns, desired)
    assert outputs, "a non-empty plan renders to something"

    repaired = dump_node(ns)
    assert model_mismatches(repaired, desired, foreign_sets=FOREIGN_SETS) == []
    assert foreign_snapshot(repaired, desired.config, ours) == foreign
    assert plan(desired, observe_node(ns, desired.config)).is_empty
    for name in FOREIGN_SETS:
        assert f"create {name} " in repaired["ipset save"] or name not in damaged["ipset save"]
    assert _packets_take_their_eips(topo, SCENARIO) == []


def test_an_ip_rule_of_ours_with_an_extra_selector_is_repaired(topo: Topology, foreign_node: ForeignNode) -> None:
    ns, desired = topo.ns(NODE), foreign_node.ready()
    stray = extra_selector(desired)
    apply_steps(stray, ns=ns)
    assert model_mismatches(dump_node(ns), desired, foreign_sets=FOREIGN_SETS), "the text check sees it"
    failures = []
    try:
        # One plan repairs it: the stray rule is deleted by all of its selectors before ours is added.
        try:
            converge_node(ns, desired)
        except CommandError as error:
            failures.append(error.stderr.strip())
        assert model_mismatches(dump_node(ns), desired, foreign_sets=FOREIGN_SETS) == [], failures
        assert plan(desired, observe_node(ns, desired.config)).is_empty
    finally:
        converge_node(ns, desired)


def test_all_damage_at_once(topo: Topology, foreign_node: ForeignNode) -> None:
    ns, desired = topo.ns(NODE), foreign_node.ready()
    ours = {s.name for rules in desired.families for s in rules.sets}
    for damage in sorted(DAMAGES):
        apply_steps(DAMAGES[damage](desired), ns=ns)
    damaged = dump_node(ns)
    foreign = foreign_snapshot(damaged, desired.config, ours | set(stale_sets(desired)))
    converge_node(ns, desired)
    repaired = dump_node(ns)
    assert model_mismatches(repaired, desired, foreign_sets=FOREIGN_SETS) == []
    assert foreign_snapshot(repaired, desired.config, ours) == foreign
    assert plan(desired, observe_node(ns, desired.config)).is_empty
    assert _packets_take_their_eips(topo, SCENARIO) == []


def test_planner_installs_from_scratch_like_the_full_render(topo: Topology) -> None:
    """On clean nodes, converging through the planner gives the same dumps as the full render."""
    state = scenario_state("demo")
    topo.reset()
    apply_state(topo, state)
    by_render = {node: dump_node(topo.ns(node)) for node in NODE_ROLES}
    topo.reset()
    first = converge_state(topo, state)
    assert not any(p.is_empty for p in first.plans.values())
    for node, ruleset in rulesets(state).items():
        by_plan = dump_node(topo.ns(node))
        assert model_mismatches(by_plan, ruleset) == []
        for key in ("ip -4 -j rule", "ip -6 -j rule", "ip -4 -j route", "ip -6 -j route"):
            assert by_plan[key] == by_render[node][key], (node, key)
        assert comparable(observe_node(topo.ns(node), ruleset.config)) == comparable(
            observe_dumps(by_render[node], ruleset.config))
    assert _packets_take_their_eips(topo, "demo") == []


PATHS = [("mixed-roles", "demo", "mixed-roles"), ("dual-stack", "overlapping", "node-ip", "dual-stack")]


@pytest.mark.parametrize("path", PATHS, ids="->".join)
def test_converging_between_scenarios(path: tuple[str, ...], topo: Topology) -> None:
    topo.reset()  # clean nodes: the first step is an install by the planner
    for name in path:
        state = scenario_state(name)
        changed = converge_state(topo, state)
        assert not changed.all_empty, f"moving to {name} changes something"
        for node, ruleset in rulesets(state).items():
            assert model_mismatches(dump_node(topo.ns(node)), ruleset) == [], (name, node)
        assert converge_state(topo, state).all_empty, f"{name}: the second plan is empty"
        assert _packets_take_their_eips(topo, name) == [], name
