"""Load tests: every full render loads into a real kernel and reads back as the model.

For every scenario and node, in a fresh namespace: ``ipset restore``,
``iptables-restore --noflush`` and ``ip6tables-restore --noflush`` (nf_tables),
the same iptables texts through ``iptables-legacy-restore`` (legacy and nft
tables coexist in one namespace and are read back separately), ``ip -4/-6
-batch``. Then, per iptables variant, (a) the library's parsers plus the
planner find nothing to do, and (b) an independent text check
(:func:`~tests.kernel.kernel_node.model_mismatches`) finds the model exactly.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import HealthCheck, given, settings

from egress_rules.backends import render_all
from egress_rules.compiler import compile
from egress_rules.model.addresses import Family
from egress_rules.model.cluster import ClusterState
from egress_rules.model.ruleset import RuleSet
from egress_rules.plan import plan
from tests.fakes.node import observe_dumps
from tests.scenarios import SCENARIOS
from tests.strategies import cluster_states

from .kernel_node import Variant, apply_outputs, dump_node, model_mismatches, node_namespace

pytestmark = pytest.mark.kernel

VARIANTS: tuple[Variant, ...] = ("nft", "legacy")
NODES = ("node-a", "node-b", "node-c")


def load_and_check(state: ClusterState, node_name: str) -> list[str]:
    """Load ``node_name``'s full render in a fresh namespace; every problem found, per variant."""
    ruleset = compile(state, node_name)
    node = state.node(node_name)
    assert node is not None
    problems: list[str] = []
    with node_namespace(node, tunnel_device=ruleset.config.tunnel_device) as ns:
        outputs = render_all(ruleset)
        apply_outputs(ns, outputs, variant="nft")
        apply_outputs(ns, [o for o in outputs if "tables-restore" in o.command], variant="legacy")
        for variant in VARIANTS:
            dumps = dump_node(ns, variant)
            result = plan(ruleset, observe_dumps(dumps, ruleset.config))
            problems += [f"{variant}: plan not empty: {d}" for d in result.drift]
            if not result.is_empty and not result.drift:
                problems.append(f"{variant}: plan not empty without drift: {result}")
            problems += [f"{variant}: {p}" for p in model_mismatches(dumps, ruleset)]
            if variant == "nft":
                problems += _rules_are_really_there(dumps, ruleset)
    return problems


def _rules_are_really_there(dumps: dict[str, str], ruleset: RuleSet) -> list[str]:
    """Guards the checks above against vacuity: the dumps hold the model's objects by name."""
    missing = []
    for rules in ruleset.families:
        text = dumps["iptables-save" if rules.family is Family.IPV4 else "ip6tables-save"]
        missing += [f"chain {c.name}" for c in rules.chains if f":{c.name} " not in text]
        missing += [f"set {s.name}" for s in rules.sets if f"create {s.name} " not in dumps["ipset save"]]
    return [f"not loaded: {m}" for m in missing]


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_full_render_loads_and_reads_back_as_the_model(scenario: str, node: str) -> None:
    assert load_and_check(SCENARIOS[scenario](), node) == []


def test_zero_prefix_destinations_load_as_two_halves() -> None:
    base = SCENARIOS["dual-stack"]()
    policy = attrs.evolve(base.policies[0], destinations=["0.0.0.0/0", "::/0"])
    state = attrs.evolve(base, policies=[policy])
    assert load_and_check(state, "node-b") == []
    node = state.node("node-b")
    assert node is not None
    with node_namespace(node) as ns:
        apply_outputs(ns, render_all(compile(state, "node-b")))
        saved = dump_node(ns)["ipset save"]
    for half in ("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"):
        assert f" {half}\n" in saved, half


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_states(max_nodes=3, max_policies=5))
def test_random_clusters_load_on_every_node(state: ClusterState) -> None:
    # Each namespace's tunnel device has exactly the node's tunnel addresses: a route the
    # kernel would refuse (no on-link next hop) fails the load.
    for node in state.nodes:
        assert load_and_check(state, node.name) == [], node.name


def test_a_node_without_an_ipv6_tunnel_address_loads_without_ipv6_routes() -> None:
    """Regression: such a node used to get IPv6 routes via the gateway, which the kernel refuses."""
    state = SCENARIOS["dual-stack"]()
    nodes = [n if n.name != "node-a" else type(n)(n.name, tunnel_ipv4=n.tunnel_ipv4) for n in state.nodes]
    without_v6 = ClusterState(policies=state.policies, nodes=nodes, cluster=state.cluster)
    assert load_and_check(without_v6, "node-a") == []
    ruleset = compile(without_v6, "node-a")
    v6 = ruleset.family(Family.IPV6)
    assert v6 is not None and not v6.ip_rules and not v6.routes
    assert any("IPv6" in w and "tunnel" in w for w in ruleset.warnings), ruleset.warnings
