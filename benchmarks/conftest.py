"""Shared fixtures for the pytest-benchmark suite: scenarios are built once per session."""

from __future__ import annotations

import functools

from benchmarks import generate
from egress_rules.compiler import compile
from egress_rules.model.cluster import ClusterState
from egress_rules.model.ruleset import RuleSet


@functools.cache
def scenario(policies: int, dual_stack: bool = False) -> ClusterState:
    return generate.state(policies, dual_stack=dual_stack)


@functools.cache
def compiled(policies: int, node: str = generate.GATEWAY_NODE, dual_stack: bool = False) -> RuleSet:
    return compile(scenario(policies, dual_stack), node)
