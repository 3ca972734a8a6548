"""Invariants over random clusters: the tracer's answer equals the oracle's, marks are routed and unique.

For every pod a policy names (on the node it runs on), every destination
worth probing and both families, the source address the tracer predicts is
the one :func:`tests.tracer_oracle.expected_source` computes from the
ClusterState alone. A disagreement is a bug in the compiler, the tracer or
the oracle; the trace printed with the failure says which.
"""

from __future__ import annotations

from hypothesis import given

from egress_rules.model.cluster import ClusterState
from egress_rules.model.ruleset import Role, SetMark
from egress_rules.tracer import ClusterOutcome, Outcome, format_cluster_trace
from tests.strategies import cluster_states
from tests.tracer_oracle import build, contains, expected_source, from_pod, pod_placements, probe_destinations


@given(cluster_states())
def test_every_pod_leaves_with_the_address_the_oracle_predicts(state: ClusterState) -> None:
    cluster = build(state)
    _, envs = cluster
    empty_destinations = {p.key for p in state.policies if not p.destinations}
    placements = pod_placements(state)
    for pod, node in placements:
        for dst in probe_destinations(state, envs, pod, placements):
            result = from_pod(cluster, node, pod, dst)
            text = format_cluster_trace(result)
            expected = expected_source(state, envs, pod, node, dst)
            assert result.outcome is not ClusterOutcome.DROPPED, text
            assert expected is None or result.final_source == expected, text
            assert not result.leak or expected == pod, text
            if contains(state.cluster.all(dst.family), dst):
                claimed = [s for hop in result.hops for s in hop.trace.steps
                           if s.provenance is not None and s.provenance.policy in empty_destinations
                           and s.outcome is not Outcome.NO_MATCH]
                assert not claimed, text


@given(cluster_states())
def test_every_gateway_mark_is_routed_to_its_gateway_and_marks_are_unique(state: ClusterState) -> None:
    rulesets, _ = build(state)
    mark_of: dict[str, int] = {}
    for name, ruleset in rulesets.items():
        keep = ruleset.config.keep_mark
        for family in ruleset.families:
            assert not [r for r in family.ip_rules if not (r.mark ^ keep) & r.mask], "the keep mark must not be routed"
            for chain in family.chains:
                for rule in chain.rules:
                    if not isinstance(rule.action, SetMark) or rule.provenance.role is not Role.MARK_GATEWAY:
                        continue
                    gateway, mark = rule.provenance.gateway, rule.action.value
                    assert gateway is not None and gateway != name
                    assert mark_of.setdefault(gateway, mark) == mark, f"{gateway} has two marks"
                    [ip_rule] = [r for r in family.ip_rules if not (r.mark ^ mark) & r.mask]
                    routes = [r for r in family.routes if r.table == ip_rule.table]
                    gateway_node = state.node(gateway)
                    assert gateway_node is not None
                    assert [(r.destination.prefixlen, r.via) for r in routes] == [
                        (0, gateway_node.tunnel_ip(family.family))]
    assert len(set(mark_of.values())) == len(mark_of), "two gateways share a mark"
