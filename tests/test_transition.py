"""Plans between two desired rule sets agree with plans against the observed node."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from egress_rules.compiler import compile
from egress_rules.model.cluster import ClusterState
from egress_rules.model.config import Config
from egress_rules.plan import plan, render_plan
from egress_rules.plan.transition import plan_transition
from tests.fakes import FakeNode
from tests.strategies import cluster_states

CONFIG = Config()


@given(cluster_states(max_nodes=3, max_policies=5), cluster_states(max_nodes=3, max_policies=5), st.data())
def test_transition_converges_like_a_plan_against_the_node(before: ClusterState, after: ClusterState,
                                                          data: st.DataObject) -> None:
    names = sorted({n.name for n in before.nodes} & {n.name for n in after.nodes})
    local = data.draw(st.sampled_from(names))
    previous, current = compile(before, local), compile(after, local)
    node = FakeNode()
    node.apply(render_plan(plan(previous, node.observe(CONFIG)), CONFIG))
    observed_plan = plan(current, node.observe(CONFIG))
    transition = plan_transition(previous, current)
    assert transition.conntrack == observed_plan.conntrack
    node.apply(render_plan(transition, CONFIG))
    after_transition = plan(current, node.observe(CONFIG))
    assert after_transition.is_empty, after_transition.drift


@given(cluster_states(max_nodes=3, max_policies=5))
def test_transition_to_itself_is_empty(state: ClusterState) -> None:
    for node in state.nodes:
        ruleset = compile(state, node.name)
        assert plan_transition(ruleset, ruleset).is_empty
        assert plan_transition(ruleset, compile(state, node.name)).is_empty
