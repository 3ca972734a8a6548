"""Parsing observed state, planning, and the incremental path of the sync loop."""

from __future__ import annotations

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from benchmarks import generate
from benchmarks.conftest import compiled
from egress_rules.backends import render_all
from egress_rules.compiler.incremental import NodeCompiler
from egress_rules.model.addresses import Family
from egress_rules.model.cluster import Endpoint
from egress_rules.model.config import Config
from egress_rules.observed import Ownership, parse_ipset_save, parse_iptables_save
from egress_rules.plan import plan, render_plan
from tests.fakes import FakeNode
from tests.fakes.node import observe_dumps

CONFIG = Config()
OWNERSHIP = Ownership(CONFIG)


def _node_dumps(policies: int) -> dict[str, str]:
    node = FakeNode()
    node.apply(render_all(compiled(policies)))
    return node.dumps()


@pytest.mark.parametrize("policies", [1000, 5000])
def test_parse_iptables_save(benchmark: BenchmarkFixture, policies: int) -> None:
    text = _node_dumps(policies)["iptables-save"]
    benchmark.pedantic(parse_iptables_save, (text, Family.IPV4, OWNERSHIP), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("policies", [1000, 5000])
def test_parse_ipset_save(benchmark: BenchmarkFixture, policies: int) -> None:
    text = _node_dumps(policies)["ipset save"]
    benchmark.pedantic(parse_ipset_save, (text, OWNERSHIP), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("policies", [1000, 5000])
def test_plan_against_an_up_to_date_node(benchmark: BenchmarkFixture, policies: int) -> None:
    observed = observe_dumps(_node_dumps(policies), CONFIG)
    desired = compiled(policies)
    result = benchmark.pedantic(plan, (desired, observed), rounds=5, warmup_rounds=1)
    assert result.is_empty


@pytest.mark.parametrize("policies", [1000])
def test_plan_against_an_empty_node(benchmark: BenchmarkFixture, policies: int) -> None:
    observed = FakeNode().observe(CONFIG)
    benchmark.pedantic(plan, (compiled(policies), observed), rounds=5, warmup_rounds=1)


@pytest.fixture(scope="module")
def hundred_thousand() -> NodeCompiler:
    # 2000 policies x 50 endpoints = 100 000 endpoints.
    return NodeCompiler(generate.state(2000), generate.GATEWAY_NODE)


def test_incremental_one_endpoint_added_and_removed(benchmark: BenchmarkFixture,
                                                    hundred_thousand: NodeCompiler) -> None:
    compiler = hundred_thousand
    key = compiler.state.policies[1000].key
    endpoint = Endpoint("10.250.0.1", generate.OTHER_NODE)
    lines: list[int] = []

    def one_change() -> None:
        added = compiler.update_endpoints(key, add=[endpoint])
        removed = compiler.update_endpoints(key, remove=[endpoint])
        lines.append(sum(o.text.count("\n") for o in (*render_plan(added.plan, CONFIG),
                                                        *render_plan(removed.plan, CONFIG))))

    benchmark.pedantic(one_change, rounds=50, warmup_rounds=2)
    # Two changes, each one set line and one conntrack line: output follows the change, not the cluster.
    assert set(lines) == {2 + 2 * 5}
