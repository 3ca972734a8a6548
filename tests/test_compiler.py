"""The compiler: datapath per role, precedence, families, errors, determinism."""

from __future__ import annotations

import random
from typing import TypeVar

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from egress_rules.allocators import MarkAllocator
from egress_rules.backends import render_all
from egress_rules.compiler import compile
from egress_rules.errors import (
    ConfigError,
    DuplicateError,
    EgressRulesError,
    EIPNotServableError,
    FamilyMismatchError,
    InvalidInputError,
    UnknownNodeError,
)
from egress_rules.model.addresses import Family
from egress_rules.model.cluster import ClusterState, EgressIP, Endpoint, Node, Policy
from egress_rules.model.config import Config, MarkLayout
from egress_rules.model.ruleset import (
    Accept,
    BuiltinChain,
    Drop,
    Goto,
    Masquerade,
    NetfilterTable,
    OutInterfaceMatch,
    Return,
    Role,
    SetConnmark,
    SetMark,
    SetMatch,
    Snat,
)
from tests import scenarios
from tests.strategies import cluster_states
from tests.structure import structural_problems

CHAINS = Config().chains
T = TypeVar("T")


def chain_rules(state: ClusterState, node: str, table: NetfilterTable, name: str,
                family: Family = Family.IPV4) -> list[object]:
    rules = compile(state, node).family(family)
    assert rules is not None
    chain = rules.chain(table, name)
    assert chain is not None
    return list(chain.rules)


def test_non_gateway_node_marks_for_the_gateway_and_routes_through_the_tunnel() -> None:
    ruleset = compile(scenarios.one_policy(), "node-a")
    v4 = ruleset.family(Family.IPV4)
    assert v4 is not None
    mark_b = ruleset.node_mark("node-b")
    assert mark_b is not None
    request = v4.chain(NetfilterTable.MANGLE, CHAINS.mark_request)
    assert request is not None
    [rule] = request.rules
    assert rule.action == Goto(CHAINS.gateway_chain(mark_b))
    gateway_chain = v4.chain(NetfilterTable.MANGLE, CHAINS.gateway_chain(mark_b))
    assert gateway_chain is not None
    assert [r.action for r in gateway_chain.rules] == [SetMark(mark_b, 0xFFFFFF00)]
    [ip_rule] = v4.ip_rules
    [route] = v4.routes
    assert (ip_rule.mark, ip_rule.mask, ip_rule.priority) == (mark_b, 0xFFFFFF00, 99)
    assert ip_rule.table == route.table == dict(ruleset.routing_tables)["node-b"]
    assert (str(route.via), route.device, route.destination.prefixlen) == ("172.31.0.2", "egress.vxlan", 0)
    snat = v4.chain(NetfilterTable.NAT, CHAINS.snat_eip)
    assert snat is not None
    assert [r.provenance.role for r in snat.rules] == [Role.SKIP_TUNNELED, Role.SKIP_UNROUTED]


def test_gateway_node_snats_and_returns_early_in_mark_request() -> None:
    v4 = compile(scenarios.one_policy(), "node-b").family(Family.IPV4)
    assert v4 is not None
    request = v4.chain(NetfilterTable.MANGLE, CHAINS.mark_request)
    snat = v4.chain(NetfilterTable.NAT, CHAINS.snat_eip)
    assert request is not None and snat is not None
    assert [r.action for r in request.rules] == [Return()]
    assert [type(r.action) for r in snat.rules] == [Return, Return, Snat]
    assert str(snat.rules[2].action.address) == "192.0.2.50"  # type: ignore[union-attr]
    assert v4.ip_rules == () and v4.routes == ()


def test_source_sets_hold_local_endpoints_on_other_nodes_and_all_on_the_gateway() -> None:
    state = scenarios.mixed_roles()
    for node, expected in (("node-a", ["10.244.1.10"]), ("node-b", ["10.244.1.10", "10.244.2.10"]),
                           ("node-c", [])):
        v4 = compile(state, node).family(Family.IPV4)
        assert v4 is not None
        web = next(s for s in v4.sets if s.provenance.role is Role.SOURCES and s.provenance.policy
                   and s.provenance.policy.name == "web")
        assert [m.host_str() for m in web.members] == expected, node


def test_endpoint_without_node_is_on_every_node() -> None:
    state = ClusterState(nodes=scenarios.NODES, cluster=scenarios.CLUSTER, policies=[
        Policy(name="p", gateway_node="node-b", sources=[Endpoint("10.244.9.0/24")],
               egress_ip=EgressIP(ipv4="192.0.2.50"))])
    for node in ("node-a", "node-b", "node-c"):
        v4 = compile(state, node).family(Family.IPV4)
        assert v4 is not None
        src = next(s for s in v4.sets if s.provenance.role is Role.SOURCES)
        assert [str(m) for m in src.members] == ["10.244.9.0/24"]


def test_node_that_is_gateway_for_one_policy_and_not_another() -> None:
    v4 = compile(scenarios.mixed_roles(), "node-b").family(Family.IPV4)
    assert v4 is not None
    request = v4.chain(NetfilterTable.MANGLE, CHAINS.mark_request)
    snat = v4.chain(NetfilterTable.NAT, CHAINS.snat_eip)
    assert request is not None and snat is not None
    by_policy = {r.provenance.policy.name: r.action for r in request.rules}  # type: ignore[union-attr]
    assert by_policy["web"] == Return()
    assert isinstance(by_policy["api"], Goto)
    assert [r.provenance.policy.name for r in snat.rules[2:]] == ["web"]  # type: ignore[union-attr]
    assert [r.table for r in v4.routes] == [r.table for r in v4.ip_rules] and len(v4.routes) == 1


def test_precedence_orders_mark_and_snat_rules() -> None:
    state = scenarios.overlapping()
    v4 = compile(state, "node-a").family(Family.IPV4)
    assert v4 is not None
    request = v4.chain(NetfilterTable.MANGLE, CHAINS.mark_request)
    assert request is not None
    assert [r.provenance.policy.name for r in request.rules] == ["first", "second"]  # type: ignore[union-attr]
    # Every mark-request rule ends the chain (goto), so the first match wins.
    assert all(isinstance(r.action, (Goto, Return)) for r in request.rules)


def test_equal_priorities_break_ties_by_namespace_then_name_cluster_scoped_first() -> None:
    gw = "node-b"
    policies = [Policy(namespace=ns, name=name, priority=5, gateway_node=gw, egress_ip=EgressIP(ipv4="192.0.2.50"))
                for ns, name in (("b", "x"), ("a", "y"), (None, "z"), ("a", "x"))]
    state = ClusterState(nodes=scenarios.NODES, cluster=scenarios.CLUSTER, policies=policies)
    v4 = compile(state, "node-a").family(Family.IPV4)
    assert v4 is not None
    request = v4.chain(NetfilterTable.MANGLE, CHAINS.mark_request)
    assert request is not None
    assert [str(r.provenance.policy) for r in request.rules] == ["z", "a/x", "a/y", "b/x"]


def test_empty_destinations_match_everything_outside_the_cluster() -> None:
    v4 = compile(scenarios.empty_destinations(), "node-a").family(Family.IPV4)
    assert v4 is not None
    request = v4.chain(NetfilterTable.MANGLE, CHAINS.mark_request)
    assert request is not None
    [rule] = request.rules
    dst = [m for m in rule.matches if isinstance(m, SetMatch) and m.direction.value == "dst"]
    assert dst == [SetMatch("egress-cluster-cidr-v4", dst[0].direction, negate=True)]
    cluster = v4.set("egress-cluster-cidr-v4")
    assert cluster is not None
    assert {"10.244.0.0/16", "10.96.0.0/12", "172.31.0.0/16"} <= {str(m) for m in cluster.members}


def test_node_ip_policy_masquerades_in_every_family_its_gateway_can_tunnel() -> None:
    ruleset = compile(scenarios.node_ip(), "node-b")
    for family in Family:
        rules = ruleset.family(family)
        assert rules is not None
        snat = rules.chain(NetfilterTable.NAT, CHAINS.snat_eip)
        assert snat is not None
        assert [type(r.action) for r in snat.rules] == [Return, Return, Masquerade]


def test_family_without_eip_gets_no_policy_rules() -> None:
    ruleset = compile(scenarios.one_policy(), "node-a")
    v6 = ruleset.family(Family.IPV6)
    assert v6 is not None
    request = v6.chain(NetfilterTable.MANGLE, CHAINS.mark_request)
    assert request is not None and request.rules == ()
    assert [s.provenance.role for s in v6.sets] == [Role.CLUSTER_CIDRS]
    assert v6.ip_rules == () and v6.routes == ()


def test_base_rules_and_hook_positions() -> None:
    v4 = compile(ClusterState(nodes=scenarios.NODES), "node-a").family(Family.IPV4)
    assert v4 is not None
    hooks = {(h.table, h.chain, h.position): h.rule.action for h in v4.hooks}
    assert hooks[(NetfilterTable.NAT, BuiltinChain.POSTROUTING, 1)].chain == CHAINS.snat_eip  # type: ignore[union-attr]
    assert hooks[(NetfilterTable.NAT, BuiltinChain.POSTROUTING, 2)].chain == CHAINS.no_snat  # type: ignore[union-attr]
    assert hooks[(NetfilterTable.FILTER, BuiltinChain.FORWARD, 1)] == Drop()
    assert hooks[(NetfilterTable.FILTER, BuiltinChain.FORWARD, 2)] == Accept()
    assert hooks[(NetfilterTable.FILTER, BuiltinChain.OUTPUT, 1)] == Accept()
    assert hooks[(NetfilterTable.MANGLE, BuiltinChain.POSTROUTING, 1)] == Accept()
    reset = v4.chain(NetfilterTable.MANGLE, CHAINS.reset_mark)
    assert reset is not None
    rule, remember = reset.rules
    # The seed's "--mark $NODE_MARK/0x26000000" never matches; any node mark is "prefix under the prefix mask",
    # and only on packets that go into the tunnel.
    into_tunnel, match = rule.matches
    assert into_tunnel == OutInterfaceMatch("egress.vxlan")
    assert (match.value, match.mask) == (0x26000000, 0xFF000000)  # type: ignore[union-attr]
    for mark in (0x26000000, 0x26ABCD00, 0x26FFFF00, 0x26ABCD42):
        assert match.matches(mark)  # type: ignore[union-attr]
    assert not match.matches(0x12000000)  # type: ignore[union-attr]
    assert rule.action == SetMark(0x12000000, 0xFFFFFF00)
    assert remember.action == SetConnmark(0x12000000, 0xFFFFFF00)


def test_weave_switch_adds_no_snat_rules_on_non_gateway_nodes() -> None:
    config = Config(weave_no_snat=True)
    v4 = compile(scenarios.one_policy(), "node-a", config).family(Family.IPV4)
    assert v4 is not None
    no_snat = v4.chain(NetfilterTable.NAT, config.chains.no_snat)
    assert no_snat is not None
    assert [r.provenance.role for r in no_snat.rules] == [Role.NO_SNAT, Role.WEAVE_NO_SNAT]
    v4b = compile(scenarios.one_policy(), "node-b", config).family(Family.IPV4)
    assert v4b is not None
    no_snat_b = v4b.chain(NetfilterTable.NAT, config.chains.no_snat)
    assert no_snat_b is not None and len(no_snat_b.rules) == 1


def test_disabled_family_is_absent() -> None:
    ruleset = compile(scenarios.one_policy(), "node-a", Config(ipv6=False))
    assert [f.family for f in ruleset.families] == [Family.IPV4]


# ------------------------------------------------------------------ errors


def _state(**policy: object) -> ClusterState:
    base: dict[str, object] = {"name": "p", "gateway_node": "node-b", "egress_ip": EgressIP(ipv4="192.0.2.50")}
    base.update(policy)
    return ClusterState(nodes=scenarios.NODES, cluster=scenarios.CLUSTER, policies=[Policy(**base)])  # type: ignore[arg-type]


def test_unknown_local_node() -> None:
    with pytest.raises(UnknownNodeError, match="node-z"):
        compile(scenarios.one_policy(), "node-z")


def test_unknown_gateway_node() -> None:
    with pytest.raises(UnknownNodeError, match=r"policy p.*gateway node node-z"):
        compile(_state(gateway_node="node-z"), "node-a")


def test_eip_in_a_disabled_family() -> None:
    with pytest.raises(EIPNotServableError, match="IPv6 is disabled"):
        compile(_state(egress_ip=EgressIP(ipv6="2001:db8:1::50")), "node-a", Config(ipv6=False))


def test_eip_family_the_gateway_cannot_tunnel() -> None:
    nodes = (Node("node-a", tunnel_ipv4="172.31.0.1"), Node("node-b", tunnel_ipv4="172.31.0.2"))
    state = ClusterState(nodes=nodes, policies=[Policy(name="p", gateway_node="node-b",
                                                       egress_ip=EgressIP(ipv6="2001:db8:1::50"))])
    with pytest.raises(EIPNotServableError, match="no IPv6 tunnel address"):
        compile(state, "node-a")


def test_node_ip_policy_with_no_usable_family() -> None:
    nodes = (Node("node-a", tunnel_ipv4="172.31.0.1"), Node("node-b", tunnel_ipv6="fd11::2"))
    state = ClusterState(nodes=nodes, policies=[Policy(name="p", gateway_node="node-b",
                                                       egress_ip=EgressIP(use_node_ip=True))])
    with pytest.raises(EIPNotServableError):
        compile(state, "node-a", Config(ipv6=False))


def test_family_mismatch_in_eip_and_tunnel() -> None:
    with pytest.raises(FamilyMismatchError, match="ipv4"):
        EgressIP(ipv4="2001:db8::1")
    with pytest.raises(FamilyMismatchError, match="node-x tunnel_ipv6"):
        Node("node-x", tunnel_ipv6="10.0.0.1")
    with pytest.raises(InvalidInputError, match="use_node_ip"):
        EgressIP(ipv4="192.0.2.1", use_node_ip=True)


def test_duplicates() -> None:
    with pytest.raises(DuplicateError, match="policy default/p"):
        ClusterState(nodes=scenarios.NODES, policies=[
            Policy(namespace="default", name="p", gateway_node="node-b"),
            Policy(namespace="default", name="p", gateway_node="node-c")])
    with pytest.raises(DuplicateError, match="node node-a"):
        ClusterState(nodes=[*scenarios.NODES, Node("node-a")])
    with pytest.raises(DuplicateError, match=r"tunnel IP 172\.31\.0\.1"):
        ClusterState(nodes=[Node("x", tunnel_ipv4="172.31.0.1"), Node("y", tunnel_ipv4="172.31.0.1")])


def test_same_name_in_two_scopes_is_two_policies() -> None:
    state = ClusterState(nodes=scenarios.NODES, policies=[
        Policy(namespace="a-b", name="c", gateway_node="node-b", egress_ip=EgressIP(ipv4="192.0.2.50")),
        Policy(namespace="a", name="b-c", gateway_node="node-b", egress_ip=EgressIP(ipv4="192.0.2.51")),
        Policy(name="c", gateway_node="node-b", egress_ip=EgressIP(ipv4="192.0.2.52"))])
    v4 = compile(state, "node-a").family(Family.IPV4)
    assert v4 is not None
    assert len({s.name for s in v4.sets}) == len(v4.sets) == 4


def test_allocator_with_another_layout_is_refused() -> None:
    with pytest.raises(ConfigError):
        compile(scenarios.one_policy(), "node-a", marks=MarkAllocator(MarkLayout(value_bits=8)))


@pytest.mark.parametrize("bad", [
    {"name": "Web"}, {"name": "a\nb"}, {"namespace": 'x"y'}, {"namespace": ""}, {"priority": -1},
    {"priority": 2**64}, {"priority": "1"}, {"gateway_node": "a b"},
])
def test_invalid_policy_fields(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        _state(**bad)


def test_errors_are_one_family() -> None:
    for error in (UnknownNodeError, EIPNotServableError, FamilyMismatchError, DuplicateError, ConfigError):
        assert issubclass(error, EgressRulesError)


# ------------------------------------------------------------------ properties


def _shuffled(state: ClusterState, seed: int) -> ClusterState:
    rng = random.Random(seed)

    def shuffle(items: tuple[T, ...]) -> list[T]:
        result = list(items)
        rng.shuffle(result)
        return result

    policies = [attrs.evolve(p, sources=shuffle(p.sources), destinations=shuffle(p.destinations))
                for p in shuffle(state.policies)]
    return ClusterState(policies=policies, nodes=shuffle(state.nodes), cluster=state.cluster)


@given(cluster_states(), st.integers(0, 2**32))
def test_output_is_byte_identical_under_any_input_order(state: ClusterState, seed: int) -> None:
    for node in state.nodes:
        first = compile(state, node.name)
        second = compile(_shuffled(state, seed), node.name)
        assert first == second
        assert render_all(first) == render_all(second)


@given(cluster_states())
def test_every_reference_is_declared_and_names_fit(state: ClusterState) -> None:
    for node in state.nodes:
        assert structural_problems(compile(state, node.name)) == []


@given(cluster_states())
def test_marks_are_unique_per_gateway_and_identical_on_every_node(state: ClusterState) -> None:
    rulesets = [compile(state, node.name) for node in state.nodes]
    marks = {rs.node_marks for rs in rulesets}
    assert len(marks) == 1
    [assignment] = marks
    assert len({m for _n, m in assignment}) == len(assignment)
