"""Compile and render: the full path for the gateway node and a non-gateway node."""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks import generate
from benchmarks.conftest import compiled, scenario
from egress_rules.backends import BACKENDS
from egress_rules.compiler import compile
from egress_rules.model.schema import load_input

SIZES = [10, 100, 1000, 5000]


@pytest.mark.parametrize("policies", SIZES)
def test_compile_gateway_node(benchmark: BenchmarkFixture, policies: int) -> None:
    state = scenario(policies)
    benchmark.pedantic(compile, (state, generate.GATEWAY_NODE), rounds=5 if policies >= 1000 else 20,
                       warmup_rounds=1)


@pytest.mark.parametrize("policies", SIZES)
def test_compile_other_node(benchmark: BenchmarkFixture, policies: int) -> None:
    state = scenario(policies)
    benchmark.pedantic(compile, (state, generate.OTHER_NODE), rounds=5 if policies >= 1000 else 20,
                       warmup_rounds=1)


@pytest.mark.parametrize("policies", [1000, 5000])
def test_compile_dual_stack_gateway_node(benchmark: BenchmarkFixture, policies: int) -> None:
    state = scenario(policies, dual_stack=True)
    benchmark.pedantic(compile, (state, generate.GATEWAY_NODE), rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("backend", ["ipset", "iptables", "iproute", "nft"])
@pytest.mark.parametrize("policies", [1000, 5000])
def test_render(benchmark: BenchmarkFixture, backend: str, policies: int) -> None:
    ruleset = compiled(policies)
    benchmark.pedantic(BACKENDS[backend].render, (ruleset,), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("policies", [1000, 5000])
def test_load_json_input(benchmark: BenchmarkFixture, policies: int) -> None:
    document = generate.state_dict(policies)
    benchmark.pedantic(load_input, (document,), rounds=3, warmup_rounds=1)
