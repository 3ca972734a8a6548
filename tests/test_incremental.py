"""The incremental compiler: every update equals a full compile, and its plan equals the transition plan."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from egress_rules.backends import render_all
from egress_rules.compiler import compile
from egress_rules.compiler.incremental import NodeCompiler
from egress_rules.errors import InvalidInputError
from egress_rules.model.cluster import ClusterState, Endpoint, PolicyKey
from egress_rules.model.config import Config
from egress_rules.plan import plan, render_plan
from egress_rules.plan.transition import plan_transition
from tests.fakes import FakeNode
from tests.strategies import cluster_states, endpoints

CONFIG = Config()


def _with_sources(state: ClusterState, key: PolicyKey, sources: list[Endpoint]) -> ClusterState:
    return attrs.evolve(state, policies=[attrs.evolve(p, sources=sources) if p.key == key else p
                                         for p in state.policies])


@given(cluster_states(max_nodes=3, max_policies=4), st.data())
def test_endpoint_updates_equal_a_full_compile(state: ClusterState, data: st.DataObject) -> None:
    if not state.policies:
        return
    node = data.draw(st.sampled_from([n.name for n in state.nodes]))
    compiler = NodeCompiler(state, node)
    fake = FakeNode()
    fake.apply(render_all(compiler.ruleset))
    for _ in range(3):
        policy = data.draw(st.sampled_from(compiler.state.policies))
        remove = data.draw(st.lists(st.sampled_from(policy.sources), unique=True, max_size=2)) if policy.sources else []
        add = data.draw(st.lists(endpoints(state.nodes), max_size=2))
        update = compiler.update_endpoints(policy.key, add=add, remove=remove)
        sources = list(policy.sources)
        for endpoint in remove:
            sources.remove(endpoint)
        expected_state = _with_sources(compiler.state, policy.key, [*sources, *add])
        marks = compiler.ruleset.node_marks
        assert update.current == compile(expected_state, node)
        assert dict(marks) == dict(update.previous.node_marks)
        assert update.plan == plan_transition(update.previous, update.current)
        fake.apply(render_plan(update.plan, CONFIG))
        assert plan(update.current, fake.observe(CONFIG)).is_empty


@given(cluster_states(max_nodes=3, max_policies=4), cluster_states(max_nodes=3, max_policies=4), st.data())
def test_general_updates_keep_marks_and_converge(before: ClusterState, after: ClusterState,
                                                 data: st.DataObject) -> None:
    names = sorted({n.name for n in before.nodes} & {n.name for n in after.nodes})
    node = data.draw(st.sampled_from(names))
    compiler = NodeCompiler(before, node)
    fake = FakeNode()
    fake.apply(render_all(compiler.ruleset))
    update = compiler.update(after)
    previous_marks = dict(update.previous.node_marks)
    assert all(dict(update.current.node_marks)[n] == m for n, m in previous_marks.items()
               if n in dict(update.current.node_marks))
    fake.apply(render_plan(update.plan, CONFIG))
    assert plan(update.current, fake.observe(CONFIG)).is_empty


def test_unknown_policy_and_absent_endpoint_are_errors() -> None:
    from tests import scenarios

    compiler = NodeCompiler(scenarios.one_policy(), "node-a")
    with pytest.raises(InvalidInputError, match="not in the cluster state"):
        compiler.update_endpoints(PolicyKey("default", "nope"), add=[Endpoint("10.244.1.99", "node-a")])
    with pytest.raises(InvalidInputError, match="not one of its sources"):
        compiler.update_endpoints(PolicyKey("default", "web"), remove=[Endpoint("10.244.1.99", "node-a")])


def test_one_endpoint_in_a_hundred_thousand_gives_one_line() -> None:
    from tests.test_plan import big_state

    state = big_state(100_000)
    compiler = NodeCompiler(state, "node-b")
    key = state.policies[0].key
    update = compiler.update_endpoints(key, add=[Endpoint("10.200.0.1", "node-a")])
    outputs = render_plan(update.plan, CONFIG)
    assert {o.name: o.text.count("\n") for o in outputs} == {"ipset-before.restore": 1, "conntrack.commands": 1}
    # Only the changed set is a new object; everything else is shared with the previous RuleSet.
    before, after = update.previous.families[0], update.current.families[0]
    assert after.chains is before.chains
    assert sum(a is not b for a, b in zip(before.sets, after.sets, strict=True)) == 1
