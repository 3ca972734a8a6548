"""The kernel tier's packet cases, run through the tracer: both referees must agree.

``tests/kernel/cases.py`` is the one table of packet cases; the kernel tier
sends each as real packets (``tests/kernel/test_datapath.py``), this module
evaluates each with the tracer over the same compiled rules. The address the
tracer predicts must be the one the kernel produced; a disagreement is a bug
in one of them.
"""

from __future__ import annotations

import functools

import pytest

from egress_rules.compiler import compile
from egress_rules.model.ruleset import RuleSet
from egress_rules.tracer import NodeEnvironment, Packet, example_environments, format_cluster_trace, trace_cluster
from egress_rules.tracer.example import POD_BRIDGE
from tests.kernel.cases import CASES, PacketCase, scenario_state


@functools.cache
def cluster(scenario: str) -> tuple[dict[str, RuleSet], dict[str, NodeEnvironment]]:
    state = scenario_state(scenario)
    return ({n.name: compile(state, n.name) for n in state.nodes}, example_environments(state))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_tracer_predicts_what_the_kernel_produced(case: PacketCase) -> None:
    rulesets, envs = cluster(case.scenario)
    packet = Packet(case.source, case.destination, protocol=case.proto, dport=7777, in_interface=POD_BRIDGE)
    result = trace_cluster(rulesets, envs, case.source_node, packet)
    text = format_cluster_trace(result)
    assert str(result.final_source) == case.expected_source, text
    assert result.leak is False, text
    if case.egress_node is not None:
        assert result.hops[-1].node == case.egress_node, text
    tunneled = any(hop.encapsulation is not None for hop in result.hops)
    assert tunneled is case.tunneled, text
