"""Load tests for the nftables datapath: every full render passes nft's dry run, loads, and reads back as itself.

For every scenario and node, and for bounded random clusters, in a fresh
namespace: ``nft -j -c -f`` accepts the nft output (and changes nothing),
``nft -j -f`` and ``ip -4/-6 -batch`` load it, then (a) ``nft -j list
ruleset`` parsed by the library and planned against the same RuleSet gives
an empty plan, and (b) our tables equal the same render loaded into the nft
fake (so the fake prints what the kernel prints for every render).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from egress_rules.backends import NFT_APPLY_ORDER, render_all
from egress_rules.compiler import compile
from egress_rules.model.cluster import ClusterState
from egress_rules.plan import plan
from tests.fakes.nft import ours_snapshot, reference_snapshot
from tests.scenarios import SCENARIOS
from tests.strategies import cluster_states

from .kernel_node import node_namespace
from .netns import run as ns_run
from .test_nft_support import apply_nft_outputs, observe_nft_node

pytestmark = pytest.mark.kernel

NODES = ("node-a", "node-b", "node-c")


def load_and_check(state: ClusterState, node_name: str, *, onlink6: bool = False) -> list[str]:
    """Dry-run, load and read back ``node_name``'s nft render in a fresh namespace; every problem found."""
    ruleset = compile(state, node_name)
    node = state.node(node_name)
    assert node is not None
    outputs = render_all(ruleset, NFT_APPLY_ORDER)
    [batch] = [o for o in outputs if o.command == "nft -j -f"]
    problems: list[str] = []
    with node_namespace(node, tunnel_device=ruleset.config.tunnel_device, onlink6=onlink6) as ns:
        ns_run(ns, "nft", "-j", "-c", "-f", "-", input=batch.text)
        if "egress_rules" in ns_run(ns, "nft", "list", "tables").stdout:
            problems.append("the dry run (-c) loaded something")
        apply_nft_outputs(ns, outputs)
        observed = observe_nft_node(ns, ruleset.config)
        assert observed.nft is not None
        result = plan(ruleset, observed)
        problems += [f"plan not empty: {d}" for d in result.drift]
        if not result.is_empty and not result.drift:
            problems.append(f"plan not empty without drift: {result}")
        if ours_snapshot(observed.nft) != reference_snapshot(ruleset):
            problems.append("the kernel's listing differs from the fake's for the same render")
        for rules in ruleset.families:
            table = observed.nft.table(rules.family)
            loaded = {c.name for c in table.chains} | {s.name for s in table.sets} if table else set()
            missing = {c.name for c in rules.chains} | {s.name for s in rules.sets}
            problems += [f"not loaded: {rules.family.label} {name}" for name in sorted(missing - loaded)]
    return problems


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_full_render_loads_and_reads_back_with_an_empty_plan(scenario: str, node: str) -> None:
    assert load_and_check(SCENARIOS[scenario](), node) == []


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_states(max_nodes=3, max_policies=5))
def test_random_clusters_load_on_every_node(state: ClusterState) -> None:
    for node in state.nodes:
        assert load_and_check(state, node.name, onlink6=True) == [], node.name


def test_the_full_render_applied_again_replaces_our_tables_and_nothing_else() -> None:
    """Unlike the iptables text, the nft full render is safe to re-apply: it swaps our tables in one batch."""
    state = SCENARIOS["demo"]()
    ruleset = compile(state, "node-b")
    node = state.node("node-b")
    assert node is not None
    outputs = [o for o in render_all(ruleset, NFT_APPLY_ORDER) if o.command == "nft -j -f"]
    with node_namespace(node) as ns:
        ns_run(ns, "iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.244.0.0/16", "-j", "MASQUERADE")
        apply_nft_outputs(ns, outputs)
        first = observe_nft_node(ns, ruleset.config).nft
        apply_nft_outputs(ns, outputs)
        second = observe_nft_node(ns, ruleset.config).nft
        assert first is not None and second is not None
        assert ours_snapshot(second) == ours_snapshot(first) == reference_snapshot(ruleset)
        assert [t.handle for t in second.tables] != [t.handle for t in first.tables], "new tables"
        assert second.foreign == first.foreign and [t.name for t in first.foreign] == ["nat"]
