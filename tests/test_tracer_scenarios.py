"""The tracer on the named scenarios: which address each pod's traffic leaves with, hop by hop."""

from __future__ import annotations

import attrs
import pytest

from egress_rules.demo import demo_state
from egress_rules.errors import TraceError
from egress_rules.model.addresses import Family, parse_address
from egress_rules.model.cluster import ClusterState, EgressIP, Node, Policy
from egress_rules.model.config import Config, MarkLayout
from egress_rules.model.ruleset import CtDirection, Goto, Jump, MarkMatch, Role, RuleSet
from egress_rules.tracer import (
    ClusterOutcome,
    ClusterTrace,
    Disposition,
    MainRoute,
    Outcome,
    Packet,
    SourceKind,
    format_cluster_trace,
    trace_cluster,
)
from egress_rules.tracer.example import POD_BRIDGE
from tests import scenarios
from tests.tracer_oracle import (
    build,
    expected_source,
    from_pod,
    pod_placements,
    probe_destinations,
)

POD_A, POD_A6 = "10.244.1.10", "fd00:244:1::10"
POD_B, POD_B6 = "10.244.2.10", "fd00:244:2::10"
POD_C = "10.244.3.10"
EXT, EXT6 = "203.0.113.10", "2001:db8:ff::10"
EXT2 = "203.0.113.20"


def leaves(result: ClusterTrace) -> tuple[str, SourceKind | None, str | None, str | None]:
    """(source seen outside, its kind, the policy that set it, the node that translated it)."""
    assert result.outcome is ClusterOutcome.LEFT_CLUSTER, format_cluster_trace(result)
    policy = result.policy
    return (str(result.final_source), result.source_kind, None if policy is None else str(policy), result.nat_node)


def path(result: ClusterTrace) -> list[str]:
    return [hop.node for hop in result.hops]


# ---------------------------------------------------------------- one policy


def test_pod_in_the_policy_leaves_with_the_eip_through_the_gateway() -> None:
    cluster = build(scenarios.one_policy())
    result = from_pod(cluster, "node-a", POD_A, EXT)
    assert leaves(result) == ("192.0.2.50", SourceKind.EIP, "default/web", "node-b")
    assert path(result) == ["node-a", "node-b"]
    first = result.hops[0]
    assert first.trace.verdict.device == "egress.vxlan" and first.next_node == "node-b"
    assert first.encapsulation is not None and first.encapsulation.verdict.device == "eth0"
    # The mark the tunnel's outer packet carries is the keep mark, which no ip rule selects.
    assert first.encapsulation.packet.mark == 0x12000000
    assert result.hops[1].trace.packet.in_interface == "egress.vxlan"
    assert result.hops[1].trace.packet.mark == 0
    assert format_cluster_trace(result).splitlines()[-1] == \
        "leaves with 192.0.2.50 (EIP of policy default/web via node-b)"


def test_destination_outside_dest_subnet_and_pod_outside_the_policy_use_the_cni_masquerade() -> None:
    cluster = build(scenarios.one_policy())
    assert leaves(from_pod(cluster, "node-a", POD_A, EXT2)) == ("192.0.2.1", SourceKind.CNI_MASQUERADE, None,
                                                                "node-a")
    assert leaves(from_pod(cluster, "node-a", "10.244.1.11", EXT)) == ("192.0.2.1", SourceKind.CNI_MASQUERADE,
                                                                      None, "node-a")
    assert leaves(from_pod(cluster, "node-b", POD_B, EXT)) == ("192.0.2.2", SourceKind.CNI_MASQUERADE, None,
                                                              "node-b")


def test_reply_packets_are_never_marked_or_translated() -> None:
    rulesets, envs = build(scenarios.one_policy())
    packet = Packet(POD_A, EXT, in_interface=POD_BRIDGE, ct_direction=CtDirection.REPLY)
    result = trace_cluster(rulesets, envs, "node-a", packet)
    assert path(result) == ["node-a"]
    assert result.source_kind is SourceKind.UNCHANGED and result.leak
    assert any(s.outcome is Outcome.NAT_SKIPPED for s in result.hops[0].trace.steps)


def test_pod_to_another_pod_is_delivered_unchanged_over_the_underlay() -> None:
    cluster = build(scenarios.one_policy())
    result = from_pod(cluster, "node-a", POD_A, POD_B)
    assert result.outcome is ClusterOutcome.DELIVERED
    assert path(result) == ["node-a", "node-b"]
    assert result.hops[0].encapsulation is None and result.hops[0].next_node == "node-b"
    assert str(result.final_source) == POD_A and result.source_kind is SourceKind.UNCHANGED
    assert result.destination_in_cluster and not result.leak


# ---------------------------------------------------------------- dual stack, node IP, gateway-local pods


@pytest.mark.parametrize(("node", "src", "dst", "eip"), [
    ("node-a", POD_A, EXT, "192.0.2.50"),
    ("node-a", POD_A6, EXT6, "2001:db8:1::50"),
    ("node-b", POD_B, EXT, "192.0.2.50"),      # the pod on the gateway itself
    ("node-b", POD_B6, EXT6, "2001:db8:1::50"),
])
def test_dual_stack_both_families_and_the_gateways_own_pod(node: str, src: str, dst: str, eip: str) -> None:
    result = from_pod(build(scenarios.dual_stack()), node, src, dst)
    assert leaves(result) == (eip, SourceKind.EIP, "default/web", "node-b")
    assert path(result) == (["node-b"] if node == "node-b" else ["node-a", "node-b"])


def test_ipv6_destination_outside_the_policy_is_masqueraded_to_the_nodes_ipv6_address() -> None:
    result = from_pod(build(scenarios.dual_stack()), "node-a", POD_A6, "2001:db8:ff::20")
    assert leaves(result) == ("2001:db8:1::1", SourceKind.CNI_MASQUERADE, None, "node-a")


@pytest.mark.parametrize(("src", "dst", "address"), [(POD_A, EXT, "192.0.2.2"),
                                                     (POD_A6, EXT6, "2001:db8:1::2")])
def test_node_ip_policy_leaves_with_the_gateway_nodes_address(src: str, dst: str, address: str) -> None:
    result = from_pod(build(scenarios.node_ip()), "node-a", src, dst)
    assert leaves(result) == (address, SourceKind.GATEWAY_NODE_IP, "ops", "node-b")
    assert format_cluster_trace(result).splitlines()[-1] == (
        f"leaves with {address} (node-b's address via MASQUERADE: clusterpolicy ops uses the gateway node's IP)")


def test_node_ip_means_the_address_of_the_device_the_gateway_sends_the_packet_out_of() -> None:
    # MASQUERADE picks the out device's address: towards the gateway's own pods that is its pod bridge.
    state = ClusterState(nodes=scenarios.NODES, cluster=scenarios.CLUSTER, policies=[
        Policy(name="ops", gateway_node="node-b", sources=[scenarios.pod("node-a")],
               destinations=["10.244.2.0/24"], egress_ip=EgressIP(use_node_ip=True))])
    result = from_pod(build(state), "node-a", POD_A, POD_B)
    assert result.outcome is ClusterOutcome.DELIVERED and path(result) == ["node-a", "node-b"]
    assert (str(result.final_source), result.source_kind) == ("10.244.2.1", SourceKind.GATEWAY_NODE_IP)


@pytest.mark.parametrize(("node", "src", "dst", "expected"), [
    ("node-a", POD_A, EXT, ("192.0.2.50", SourceKind.EIP, "default/web", "node-b")),
    ("node-a", POD_A, EXT2, ("192.0.2.60", SourceKind.EIP, "default/api", "node-c")),
    ("node-b", POD_B, EXT, ("192.0.2.50", SourceKind.EIP, "default/web", "node-b")),
    ("node-b", POD_B, EXT2, ("192.0.2.60", SourceKind.EIP, "default/api", "node-c")),
])
def test_a_gateway_for_one_policy_and_not_another_handles_both(
        node: str, src: str, dst: str, expected: tuple[str, SourceKind, str, str]) -> None:
    assert leaves(from_pod(build(scenarios.mixed_roles()), node, src, dst)) == expected


def test_overlapping_policies_the_precedence_winner_decides() -> None:
    cluster = build(scenarios.overlapping())
    assert leaves(from_pod(cluster, "node-a", POD_A, EXT)) == ("192.0.2.60", SourceKind.EIP, "default/first",
                                                               "node-c")
    # Only "second" covers the rest of the /24.
    assert leaves(from_pod(cluster, "node-a", POD_A, "203.0.113.11")) == ("192.0.2.50", SourceKind.EIP,
                                                                          "default/second", "node-b")


# ---------------------------------------------------------------- empty destSubnet


@pytest.mark.parametrize(("src", "dst", "eip"), [(POD_A, "198.51.100.7", "192.0.2.50"),
                                                 (POD_A6, "2001:db8:ee::1", "2001:db8:1::50")])
def test_empty_dest_subnet_covers_everything_outside_the_cluster(src: str, dst: str, eip: str) -> None:
    assert leaves(from_pod(build(scenarios.empty_destinations()), "node-a", src, dst)) == (
        eip, SourceKind.EIP, "default/everything", "node-b")


@pytest.mark.parametrize(("src", "dst"), [
    (POD_A, POD_B), (POD_A, "10.96.0.10"), (POD_A, "192.0.2.3"), (POD_A, "172.31.0.3"),
    (POD_A6, POD_B6), (POD_A6, "fd00:96::a"), (POD_A6, "2001:db8:1::3"),
])
def test_empty_dest_subnet_never_redirects_cluster_destinations(src: str, dst: str) -> None:
    result = from_pod(build(scenarios.empty_destinations()), "node-a", src, dst)
    assert result.outcome is not ClusterOutcome.DROPPED, format_cluster_trace(result)
    # Not our business: a pod keeps its address towards pods, the CNI masquerades towards node and service IPs.
    to_pod = dst in (POD_B, POD_B6)
    assert result.source_kind is (SourceKind.UNCHANGED if to_pod else SourceKind.CNI_MASQUERADE)
    assert (str(result.final_source) == src) is to_pod
    assert result.destination_in_cluster
    assert result.hops[0].trace.packet_out is not None and result.hops[0].trace.packet_out.mark == 0
    policy_steps = [s for hop in result.hops for s in hop.trace.steps
                    if s.provenance is not None and s.provenance.policy is not None]
    assert policy_steps and all(s.outcome is Outcome.NO_MATCH for s in policy_steps)


# ---------------------------------------------------------------- the demo cluster


@pytest.mark.parametrize(("node", "src", "dst", "expected"), [
    ("node-a", POD_A, EXT, ("192.0.2.50", SourceKind.EIP, "default/web", "node-b")),
    ("node-a", POD_A, EXT2, ("192.0.2.52", SourceKind.EIP, "team-x/override", "node-c")),   # priority 50 beats ops
    ("node-a", "10.244.1.11", "198.51.100.7", ("192.0.2.51", SourceKind.EIP, "default/batch", "node-c")),
    # batch has no IPv6 EIP: its pod's IPv6 traffic is the CNI's.
    ("node-a", "fd00:244:1::11", "2001:db8:ee::1", ("2001:db8:1::1", SourceKind.CNI_MASQUERADE, None, "node-a")),
    ("node-c", POD_C, EXT, ("192.0.2.50", SourceKind.EIP, "default/web", "node-b")),
    ("node-c", POD_C, EXT2, ("192.0.2.2", SourceKind.GATEWAY_NODE_IP, "ops", "node-b")),
    ("node-c", "fd00:244:3::10", "2001:db8:ff::20", ("2001:db8:1::2", SourceKind.GATEWAY_NODE_IP, "ops", "node-b")),
    ("node-c", "10.244.3.99", EXT2, ("192.0.2.2", SourceKind.GATEWAY_NODE_IP, "ops", "node-b")),
    ("node-c", "10.244.3.99", EXT, ("192.0.2.3", SourceKind.CNI_MASQUERADE, None, "node-c")),
])
def test_demo(node: str, src: str, dst: str, expected: tuple[str, SourceKind, str | None, str | None]) -> None:
    assert leaves(from_pod(build(demo_state()), node, src, dst)) == expected


# ---------------------------------------------------------------- every scenario against the oracle


@pytest.mark.parametrize("name", sorted(scenarios.SCENARIOS))
def test_every_scenario_agrees_with_the_oracle(name: str) -> None:
    state = scenarios.SCENARIOS[name]()
    cluster = build(state)
    _, envs = cluster
    checked = 0
    placements = pod_placements(state)
    for pod, node in placements:
        for dst in probe_destinations(state, envs, pod, placements):
            result = from_pod(cluster, node, pod, dst)
            assert result.outcome is not ClusterOutcome.DROPPED, format_cluster_trace(result)
            assert result.final_source == expected_source(state, envs, pod, node, dst), format_cluster_trace(result)
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("config", [
    Config(weave_no_snat=True),
    Config(mark_layout=MarkLayout(prefix=0x5, prefix_shift=28, prefix_bits=4, value_shift=12, value_bits=12),
           keep_mark=0x10000000, ip_rule_priority=500, tunnel_device="egw0"),
], ids=["weave-no-snat", "other-layout"])
@pytest.mark.parametrize("name", ["demo", "mixed-roles", "empty-destinations"])
def test_other_configurations_agree_with_the_oracle(name: str, config: Config) -> None:
    state = scenarios.SCENARIOS[name]()
    cluster = build(state, config)
    _, envs = cluster
    placements = pod_placements(state)
    for pod, node in placements:
        for dst in probe_destinations(state, envs, pod, placements):
            result = from_pod(cluster, node, pod, dst)
            assert result.final_source == expected_source(state, envs, pod, node, dst), format_cluster_trace(result)


# ---------------------------------------------------------------- families, nodes, CNI placement


def strip_family(state: ClusterState, family: Family) -> ClusterState:
    """The same cluster with every policy's addresses of ``family`` removed."""
    policies = []
    for policy in state.policies:
        eip = policy.egress_ip
        if not eip.use_node_ip:
            eip = EgressIP(ipv4=None if family is Family.IPV4 else eip.ipv4,
                           ipv6=None if family is Family.IPV6 else eip.ipv6)
        policies.append(attrs.evolve(policy, egress_ip=eip,
                                     sources=[e for e in policy.sources if e.cidr.family is not family],
                                     destinations=[c for c in policy.destinations if c.family is not family]))
    return attrs.evolve(state, policies=policies)


@pytest.mark.parametrize("family", list(Family))
def test_the_families_never_influence_each_other(family: Family) -> None:
    other = Family.IPV6 if family is Family.IPV4 else Family.IPV4
    state = scenarios.dual_stack()
    full, stripped = build(state), build(strip_family(state, other))
    src, dst = (POD_A, EXT) if family is Family.IPV4 else (POD_A6, EXT6)
    with_other, without_other = from_pod(full, "node-a", src, dst), from_pod(stripped, "node-a", src, dst)
    # Only the tunnel's outer packet (always IPv4 here) may see other rules.
    assert [h.trace for h in with_other.hops] == [h.trace for h in without_other.hops]
    assert attrs.evolve(with_other, hops=()) == attrs.evolve(without_other, hops=())
    # And with the family's own policy addresses gone, its traffic is the CNI's.
    assert from_pod(build(strip_family(state, family)), "node-a", src, dst).source_kind is SourceKind.CNI_MASQUERADE


def test_pod_to_its_own_node_or_the_gateway_is_delivered_locally_even_under_a_catch_all_policy() -> None:
    # The local table is looked up before our ip rules, so the node's own addresses never go to a gateway.
    state = ClusterState(nodes=scenarios.NODES, cluster=scenarios.CLUSTER, policies=[
        Policy(namespace="default", name="all", gateway_node="node-b", sources=[scenarios.pod("node-a")],
               destinations=["0.0.0.0/0"], egress_ip=EgressIP(ipv4="192.0.2.50"))])
    cluster = build(state)
    own = from_pod(cluster, "node-a", POD_A, "192.0.2.1")
    assert own.outcome is ClusterOutcome.DELIVERED and path(own) == ["node-a"]
    assert str(own.final_source) == POD_A
    at_gateway = from_pod(cluster, "node-a", POD_A, "192.0.2.2")
    assert path(at_gateway) == ["node-a", "node-b"] and at_gateway.hops[0].encapsulation is not None
    assert at_gateway.outcome is ClusterOutcome.DELIVERED and str(at_gateway.final_source) == POD_A
    # Another node's address is not local to the gateway: it is translated and sent on.
    third = from_pod(cluster, "node-a", POD_A, "192.0.2.3")
    assert path(third) == ["node-a", "node-b", "node-c"] and str(third.final_source) == "192.0.2.50"


def test_cni_masquerade_in_another_backend_rewrites_tunneled_traffic_to_the_tunnel_address() -> None:
    # Our NO-SNAT ACCEPT only ends our own nat chain; the gateway then no longer recognises the source.
    cluster = build(scenarios.one_policy(), cni_same_backend=False)
    result = from_pod(cluster, "node-a", POD_A, EXT)
    assert leaves(result) == ("172.31.0.1", SourceKind.CNI_MASQUERADE, None, "node-a")
    assert path(result) == ["node-a", "node-b"]
    # The gateway's own pods are unaffected: our SNAT binds first.
    gateway_pod = from_pod(build(scenarios.dual_stack(), cni_same_backend=False), "node-b", POD_B, EXT)
    assert leaves(gateway_pod) == ("192.0.2.50", SourceKind.EIP, "default/web", "node-b")


# ---------------------------------------------------------------- the tunnel loop


def with_seed_reset_mask(ruleset: RuleSet, gateway: str) -> RuleSet:
    """The RuleSet with the seed's reset match ``--mark $NODE_MARK/0x26000000``, which never matches."""
    mark = ruleset.node_mark(gateway)
    assert mark is not None
    families = []
    for family in ruleset.families:
        chains = tuple(attrs.evolve(chain, rules=tuple(
            attrs.evolve(rule, matches=(MarkMatch(mark, 0x26000000),)) if rule.provenance.role is Role.RESET_MARK
            else rule for rule in chain.rules)) for chain in family.chains)
        families.append(attrs.evolve(family, chains=chains))
    return attrs.evolve(ruleset, families=tuple(families))


@pytest.mark.parametrize(("src", "dst"), [(POD_A, EXT), (POD_A6, EXT6)])
def test_the_seed_reset_mask_sends_the_outer_packet_back_into_the_tunnel(src: str, dst: str) -> None:
    rulesets, envs = build(scenarios.dual_stack())
    good = trace_cluster(rulesets, envs, "node-a", Packet(src, dst, in_interface=POD_BRIDGE))
    assert good.outcome is ClusterOutcome.LEFT_CLUSTER
    buggy = dict(rulesets, **{"node-a": with_seed_reset_mask(rulesets["node-a"], "node-b")})
    result = trace_cluster(buggy, envs, "node-a", Packet(src, dst, in_interface=POD_BRIDGE))
    assert result.outcome is ClusterOutcome.DROPPED and result.final_source is None
    [hop] = result.hops
    assert hop.encapsulation is not None
    assert hop.encapsulation.verdict.disposition is Disposition.DROPPED
    assert hop.encapsulation.packet.mark == rulesets["node-a"].node_mark("node-b")
    assert "circular route" in result.reason
    assert format_cluster_trace(result).splitlines()[-1].startswith("never arrives: dropped on node-a: circular route")


def test_mark_request_with_jump_instead_of_goto_lets_the_last_matching_policy_win() -> None:
    # The compiler's reason for goto: MARK does not end a chain, so after a jump the next policy re-marks.
    state = scenarios.overlapping()
    rulesets, envs = build(state)
    source = rulesets["node-a"]
    jumping = attrs.evolve(source, families=tuple(attrs.evolve(family, chains=tuple(
        attrs.evolve(chain, rules=tuple(attrs.evolve(rule, action=Jump(rule.action.chain))
                                        if isinstance(rule.action, Goto) else rule for rule in chain.rules))
        for chain in family.chains)) for family in source.families))
    result = from_pod((dict(rulesets, **{"node-a": jumping}), envs), "node-a", POD_A, EXT)
    assert leaves(result) == ("192.0.2.50", SourceKind.EIP, "default/second", "node-b")
    assert expected_source(state, envs, parse_address(POD_A), "node-a", parse_address(EXT)) == \
        parse_address("192.0.2.60")


def test_a_forwarding_loop_is_bounded() -> None:
    rulesets, envs = build(scenarios.one_policy())
    # Each node sends the destination to the other over the underlay.
    looping = {
        "node-a": attrs.evolve(envs["node-a"], main_routes=(
            *envs["node-a"].main_routes, MainRoute("198.51.100.0/24", "eth0", "192.0.2.2"))),
        "node-b": attrs.evolve(envs["node-b"], main_routes=(
            *envs["node-b"].main_routes, MainRoute("198.51.100.0/24", "eth0", "192.0.2.1"))),
    }
    result = trace_cluster(rulesets, looping, "node-a", Packet(POD_A, "198.51.100.7", in_interface=POD_BRIDGE),
                           max_hops=5)
    assert result.outcome is ClusterOutcome.DROPPED
    assert len(result.hops) == 5 and "forwarding loop" in result.reason


def test_a_tunnel_next_hop_no_node_owns_is_a_drop() -> None:
    rulesets, envs = build(scenarios.one_policy())
    without_b = {name: env for name, env in envs.items() if name != "node-b"}
    result = trace_cluster(rulesets, without_b, "node-a", Packet(POD_A, EXT, in_interface=POD_BRIDGE))
    assert result.outcome is ClusterOutcome.DROPPED
    assert result.reason == "dropped on node-a: no other node owns the tunnel next hop 172.31.0.2"


# ---------------------------------------------------------------- a node without an IPv6 tunnel address


def no_ipv6_tunnel_on_node_a() -> ClusterState:
    return ClusterState(
        nodes=[Node("node-a", tunnel_ipv4="172.31.0.1"),
               Node("node-b", tunnel_ipv4="172.31.0.2", tunnel_ipv6="fd11::2")],
        cluster=scenarios.CLUSTER,
        policies=[Policy(namespace="default", name="web", gateway_node="node-b",
                         sources=[scenarios.pod("node-a", family=6)], destinations=["2001:db8:ff::10/128"],
                         egress_ip=EgressIP(ipv6="2001:db8:1::50"))])


def test_a_policy_route_whose_next_hop_is_not_on_link_is_reported_not_guessed() -> None:
    # A route the kernel would refuse (next hop not on-link) is a TraceError, and a node that holds the
    # ip rule without its route (ip -batch stopped at the route) leaks the pod's own address.
    # Rules compiled for a node-a with an IPv6 tunnel address, traced on a node-a without one.
    state = no_ipv6_tunnel_on_node_a()
    with_tunnel = attrs.evolve(state, nodes=[Node("node-a", tunnel_ipv4="172.31.0.1", tunnel_ipv6="fd11::1"),
                                             state.nodes[1]])
    rulesets, _ = build(with_tunnel)
    _, envs = build(state)
    with pytest.raises(TraceError, match=r"next hop fd11::2 is not on-link on egress\.vxlan"):
        from_pod((rulesets, envs), "node-a", POD_A6, EXT6)


def test_a_node_without_an_ipv6_tunnel_address_gets_only_rules_it_can_install() -> None:
    state = no_ipv6_tunnel_on_node_a()
    rulesets, envs = build(state)
    v6 = rulesets["node-a"].family(Family.IPV6)
    assert v6 is not None and v6.ip_rules == () and v6.routes == ()
    assert any("node-a: has no IPv6 tunnel address" in w for w in rulesets["node-a"].warnings)
    result = from_pod((rulesets, envs), "node-a", POD_A6, EXT6)
    # Not the EIP (node-a cannot reach the gateway in IPv6), but never the pod's own address.
    assert result.outcome is not ClusterOutcome.DROPPED and not result.leak
    assert str(result.final_source) == "2001:db8:1::1"
