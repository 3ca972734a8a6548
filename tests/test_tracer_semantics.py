"""The tracer's iptables and routing semantics, each on a small hand-built RuleSet."""

from __future__ import annotations

from typing import cast

import attrs
import pytest

from egress_rules.errors import TraceError
from egress_rules.model.addresses import Cidr, Family, parse_address, parse_cidr
from egress_rules.model.config import DEFAULT_CONFIG
from egress_rules.model.ruleset import (
    Accept,
    Action,
    BuiltinChain,
    Chain,
    ConntrackDirectionMatch,
    CtDirection,
    Direction,
    FamilyRuleSet,
    Goto,
    HookRule,
    IPRule,
    IPSet,
    Jump,
    MarkMatch,
    Masquerade,
    Match,
    NetfilterTable,
    Provenance,
    Return,
    Role,
    Route,
    Rule,
    RuleSet,
    SetMark,
    SetMatch,
    Snat,
)
from egress_rules.tracer import (
    CniMasquerade,
    Disposition,
    Interface,
    MainRoute,
    NodeEnvironment,
    Outcome,
    Packet,
    PathKind,
    RouteKind,
    format_node_trace,
    trace,
)

MANGLE, FILTER, NAT = NetfilterTable.MANGLE, NetfilterTable.FILTER, NetfilterTable.NAT
PREROUTING, FORWARD, OUTPUT, POSTROUTING = (
    BuiltinChain.PREROUTING, BuiltinChain.FORWARD, BuiltinChain.OUTPUT, BuiltinChain.POSTROUTING)
BASE = Provenance(Role.MARK_REQUEST)
V4 = Family.IPV4


def rule(action: Action, *matches: Match, comment: str = "test") -> Rule:
    return Rule(tuple(matches), action, comment, BASE)


def hooks(table: NetfilterTable, chain: BuiltinChain, *rules: Rule) -> tuple[HookRule, ...]:
    return tuple(HookRule(table, chain, i, r) for i, r in enumerate(rules, start=1))


def ruleset(*, hook_rules: tuple[HookRule, ...] = (), chains: tuple[Chain, ...] = (), sets: tuple[IPSet, ...] = (),
            ip_rules: tuple[IPRule, ...] = (), routes: tuple[Route, ...] = ()) -> RuleSet:
    family = FamilyRuleSet(V4, sets, chains, hook_rules, ip_rules, routes)
    return RuleSet("n1", DEFAULT_CONFIG, (family,), (), ())


def env(*, cni: CniMasquerade | None = None, extra_routes: tuple[MainRoute, ...] = ()) -> NodeEnvironment:
    return NodeEnvironment(
        node="n1", uplink="eth0",
        interfaces=(Interface("eth0", ("192.0.2.1",)), Interface("cni0", ("10.244.1.1",)),
                    Interface("egress.vxlan", ("172.31.0.1",)), Interface("bare")),
        main_routes=(MainRoute("0.0.0.0/0", "eth0", "192.0.2.100"), MainRoute("192.0.2.0/24", "eth0"),
                     MainRoute("10.244.1.0/24", "cni0"), MainRoute("172.31.0.0/16", "egress.vxlan"), *extra_routes),
        cni_masquerade=cni,
    )


def pod(dst: str = "203.0.113.10", *, mark: int = 0, ct: CtDirection = CtDirection.ORIGINAL) -> Packet:
    return Packet("10.244.1.10", dst, in_interface="cni0", mark=mark, ct_direction=ct)


def outcomes(rules: RuleSet, packet: Packet, environment: NodeEnvironment | None = None) -> list[tuple[str, int | None,
                                                                                                     Outcome]]:
    result = trace(rules, packet, environment or env())
    return [(s.chain, s.position, s.outcome) for s in result.steps]


# ---------------------------------------------------------------- traversal


def test_jump_returns_after_the_calling_rule_on_return_and_at_the_end_of_the_chain() -> None:
    rules = ruleset(
        hook_rules=hooks(MANGLE, PREROUTING, rule(Jump("A")), rule(SetMark(0x1, 0x1)), rule(Jump("B")),
                         rule(SetMark(0x1000, 0x1000))),
        chains=(Chain(MANGLE, "A", (rule(SetMark(0x10, 0x10)), rule(Return()), rule(SetMark(0x100, 0x100)))),
                Chain(MANGLE, "B", (rule(SetMark(0x20, 0x20)),))),
    )
    result = trace(rules, pod(), env())
    assert result.packet_out is not None and result.packet_out.mark == 0x1031
    assert [(s.chain, s.position, s.outcome) for s in result.steps] == [
        ("PREROUTING", 1, Outcome.JUMP), ("A", 1, Outcome.MARK), ("A", 2, Outcome.RETURN),
        ("PREROUTING", 2, Outcome.MARK), ("PREROUTING", 3, Outcome.JUMP), ("B", 1, Outcome.MARK),
        ("B", None, Outcome.CHAIN_END), ("PREROUTING", 4, Outcome.MARK), ("PREROUTING", None, Outcome.POLICY),
    ]


def test_goto_skips_the_rest_of_its_chain_and_returns_after_the_rule_that_jumped_into_it() -> None:
    rules = ruleset(
        hook_rules=hooks(MANGLE, PREROUTING, rule(Jump("A")), rule(SetMark(0x1, 0x1))),
        chains=(Chain(MANGLE, "A", (rule(Goto("B")), rule(SetMark(0x100, 0x100)))),
                Chain(MANGLE, "B", (rule(SetMark(0x10, 0x10)),))),
    )
    result = trace(rules, pod(), env())
    assert result.packet_out is not None and result.packet_out.mark == 0x11
    assert ("A", 2, Outcome.MARK) not in [(s.chain, s.position, s.outcome) for s in result.steps]
    end = next(s for s in result.steps if s.outcome is Outcome.CHAIN_END)
    assert (end.chain, end.detail) == ("B", "back to PREROUTING:2")


def test_goto_from_a_builtin_chain_ends_in_its_policy() -> None:
    rules = ruleset(hook_rules=hooks(MANGLE, PREROUTING, rule(Goto("B")), rule(SetMark(0x1, 0x1))),
                    chains=(Chain(MANGLE, "B", (rule(SetMark(0x10, 0x10)),)),))
    assert outcomes(rules, pod()) == [("PREROUTING", 1, Outcome.GOTO), ("B", 1, Outcome.MARK),
                                      ("B", None, Outcome.POLICY)]


def test_return_in_a_builtin_chain_is_its_policy() -> None:
    rules = ruleset(hook_rules=hooks(MANGLE, PREROUTING, rule(Return()), rule(SetMark(0x1, 0x1))))
    result = trace(rules, pod(), env())
    assert [s.outcome for s in result.steps] == [Outcome.RETURN]
    assert result.packet_out is not None and result.packet_out.mark == 0


def test_accept_in_a_called_chain_ends_the_builtin_chain_but_not_other_tables() -> None:
    rules = ruleset(
        hook_rules=(*hooks(MANGLE, POSTROUTING, rule(Jump("A")), rule(SetMark(0x1, 0x1))),
                    *hooks(NAT, POSTROUTING, rule(Snat(parse_address("192.0.2.50"))))),
        chains=(Chain(MANGLE, "A", (rule(Accept()), rule(SetMark(0x10, 0x10)))),),
    )
    result = trace(rules, pod(), env())
    assert result.packet_out is not None
    assert result.packet_out.mark == 0
    assert str(result.packet_out.src) == "192.0.2.50"
    assert [(s.hook.label, s.outcome) for s in result.steps] == [
        ("mangle POSTROUTING", Outcome.JUMP), ("mangle POSTROUTING", Outcome.ACCEPT), ("nat POSTROUTING", Outcome.SNAT)]


def test_set_mark_writes_only_its_mask_and_does_not_end_the_chain() -> None:
    rules = ruleset(hook_rules=hooks(MANGLE, PREROUTING, rule(SetMark(0x12000000, 0xFFFFFF00)),
                                     rule(SetMark(0x4000, 0xC000))))
    result = trace(rules, pod(mark=0x26646DFF), env())
    assert [(s.mark_before, s.mark_after) for s in result.steps[:2]] == [(0x26646DFF, 0x120000FF),
                                                                         (0x120000FF, 0x120040FF)]


@pytest.mark.parametrize(("match", "mark", "hit"), [
    (MarkMatch(0x12000000, 0xFFFFFF00), 0x120000AB, True),
    (MarkMatch(0x12000000, 0xFFFFFF00), 0x12000100, False),
    (MarkMatch(0x12000000, 0xFFFFFF00, negate=True), 0x12000100, True),
    (MarkMatch(0x26646D00, 0x26000000), 0x26646D00, False),  # the seed's mask: value outside the mask never matches
])
def test_mark_match_is_bit_exact(match: MarkMatch, mark: int, hit: bool) -> None:
    rules = ruleset(hook_rules=hooks(MANGLE, PREROUTING, rule(SetMark(0x1, 0x1), match)))
    [step, *_] = trace(rules, pod(mark=mark), env()).steps
    assert (step.outcome is Outcome.MARK) is hit


def test_set_match_by_direction_with_negation() -> None:
    sets = (IPSet("src", V4, (parse_cidr("10.244.1.0/24"),), BASE),
            IPSet("dst", V4, (parse_cidr("203.0.113.0/25"), parse_cidr("198.51.100.7/32")), BASE))
    rules = ruleset(sets=sets, hook_rules=hooks(
        MANGLE, PREROUTING,
        rule(SetMark(0x1, 0x1), SetMatch("src", Direction.SRC), SetMatch("dst", Direction.DST)),
        rule(SetMark(0x2, 0x2), SetMatch("src", Direction.DST, negate=True)),
        rule(SetMark(0x4, 0x4), SetMatch("dst", Direction.SRC)),
    ))
    for dst, mark in (("203.0.113.10", 0x3), ("198.51.100.7", 0x3), ("203.0.113.200", 0x2)):
        result = trace(rules, pod(dst), env())
        assert result.packet_out is not None and result.packet_out.mark == mark, dst
    miss = trace(rules, pod("203.0.113.200"), env()).steps[0]
    assert miss.detail == "dst 203.0.113.200 not in set dst"


def test_conntrack_direction_match_and_nat_only_for_the_first_packet() -> None:
    rules = ruleset(hook_rules=(
        *hooks(MANGLE, PREROUTING, rule(SetMark(0x1, 0x1), ConntrackDirectionMatch(CtDirection.ORIGINAL))),
        *hooks(NAT, POSTROUTING, rule(Snat(parse_address("192.0.2.50")))),
    ))
    first = trace(rules, pod(), env())
    assert first.packet_out is not None
    assert (first.packet_out.mark, str(first.packet_out.src)) == (0x1, "192.0.2.50")
    reply = trace(rules, pod(ct=CtDirection.REPLY), env())
    assert reply.packet_out is not None
    assert (reply.packet_out.mark, str(reply.packet_out.src)) == (0, "10.244.1.10")
    assert [s.outcome for s in reply.steps] == [Outcome.NO_MATCH, Outcome.POLICY, Outcome.NAT_SKIPPED]
    assert reply.translation is None


def test_snat_ends_the_nat_chain_and_is_recorded() -> None:
    rules = ruleset(hook_rules=hooks(NAT, POSTROUTING, rule(Snat(parse_address("192.0.2.50"))),
                                     rule(Snat(parse_address("192.0.2.60")))))
    result = trace(rules, pod(), env())
    assert result.translation is not None and str(result.translation.address) == "192.0.2.50"
    assert result.translation.step.position == 1
    assert [s.outcome for s in result.steps] == [Outcome.SNAT]


def test_masquerade_takes_the_out_device_primary_address_or_drops() -> None:
    rules = ruleset(hook_rules=hooks(NAT, POSTROUTING, rule(Masquerade())))
    out = trace(rules, pod(), env()).packet_out
    assert out is not None and str(out.src) == "192.0.2.1"
    bare = env(extra_routes=(MainRoute("198.51.100.0/24", "bare"),))
    dropped = trace(rules, pod("198.51.100.1"), bare)
    assert dropped.verdict.disposition is Disposition.DROPPED
    assert dropped.verdict.reason == "MASQUERADE: bare has no IPv4 address"
    assert dropped.packet_out is None


# ---------------------------------------------------------------- the CNI masquerade


def test_cni_masquerade_in_the_same_backend_is_skipped_by_our_accept() -> None:
    cni = CniMasquerade(sources=("10.244.0.0/16",), exempt_destinations=("10.244.0.0/16",))
    accept = ruleset(hook_rules=hooks(NAT, POSTROUTING, rule(Accept(), MarkMatch(0x1, 0x1))))
    marked = trace(accept, pod(mark=0x1), env(cni=cni))
    assert marked.packet_out is not None and str(marked.packet_out.src) == "10.244.1.10"
    assert [s.outcome for s in marked.steps] == [Outcome.ACCEPT, Outcome.NOT_REACHED]
    unmarked = trace(accept, pod(), env(cni=cni))
    assert unmarked.packet_out is not None and str(unmarked.packet_out.src) == "192.0.2.1"
    assert unmarked.steps[-1].foreign is not None and unmarked.steps[-1].outcome is Outcome.MASQUERADE
    exempt = trace(accept, pod("10.244.2.10"), env(cni=cni))
    assert exempt.packet_out is not None and str(exempt.packet_out.src) == "10.244.1.10"


def test_cni_masquerade_in_another_backend_runs_after_our_accept_but_not_after_our_snat() -> None:
    cni = CniMasquerade(sources=("10.244.0.0/16",), same_backend=False)
    accept = ruleset(hook_rules=hooks(NAT, POSTROUTING, rule(Accept())))
    result = trace(accept, pod(), env(cni=cni))
    assert result.packet_out is not None and str(result.packet_out.src) == "192.0.2.1"
    assert result.steps[-1].hook.other_backend
    snat = ruleset(hook_rules=hooks(NAT, POSTROUTING, rule(Snat(parse_address("192.0.2.50")))))
    result = trace(snat, pod(), env(cni=cni))
    assert result.packet_out is not None and str(result.packet_out.src) == "192.0.2.50"
    assert result.steps[-1].outcome is Outcome.NOT_REACHED


def test_cni_masquerade_out_interface_restriction() -> None:
    cni = CniMasquerade(sources=("10.244.0.0/16",), out_interface="eth0")
    tunneled = trace(ruleset(), pod("172.31.0.2"), env(cni=cni))
    assert tunneled.packet_out is not None and str(tunneled.packet_out.src) == "10.244.1.10"
    assert tunneled.steps[0].detail == "out device egress.vxlan is not eth0"


# ---------------------------------------------------------------- routing


def policy_routing(*, table_routes: tuple[Route, ...], priority_b: int = 99) -> RuleSet:
    provenance = Provenance(Role.ROUTE_TO_GATEWAY, gateway="gw")
    return ruleset(
        hook_rules=hooks(MANGLE, PREROUTING, rule(SetMark(0x26000100, 0xFFFFFF00))),
        ip_rules=(IPRule(V4, 90, 0x26000100, 0xFFFFFF00, 3001, 230, provenance),
                  IPRule(V4, priority_b, 0x26000000, 0xFF000000, 3002, 230, provenance)),
        routes=table_routes,
    )


def tunnel_route(table: int, destination: str, via: str = "172.31.0.2") -> Route:
    return Route(V4, table, parse_cidr(destination), parse_address(via), "egress.vxlan", 230,
                 Provenance(Role.ROUTE_TO_GATEWAY, gateway="gw"))


def test_ip_rules_in_priority_order_fall_through_an_empty_table() -> None:
    rules = policy_routing(table_routes=(tunnel_route(3001, "198.51.100.0/24"), tunnel_route(3002, "0.0.0.0/0",
                                                                                             "172.31.0.3")))
    result = trace(rules, pod("203.0.113.10"), env())
    decision = result.route
    assert decision is not None and decision.kind is RouteKind.POLICY
    assert (decision.table, decision.device, str(decision.next_hop)) == (3002, "egress.vxlan", "172.31.0.3")
    assert [(c.rule.table, c.matched) for c in decision.checks] == [(3001, False), (3002, True)]
    assert "has no route to 203.0.113.10" in decision.checks[0].detail
    inside = trace(rules, pod("198.51.100.9"), env()).route
    assert inside is not None and inside.table == 3001


def test_longest_prefix_wins_in_a_table_and_main_is_last() -> None:
    rules = policy_routing(table_routes=(tunnel_route(3001, "0.0.0.0/0"), tunnel_route(3001, "203.0.113.0/24",
                                                                                       "172.31.0.3")))
    decision = trace(rules, pod(), env()).route
    assert decision is not None and str(decision.next_hop) == "172.31.0.3"
    unmarked = ruleset(ip_rules=rules.families[0].ip_rules, routes=rules.families[0].routes)
    main = trace(unmarked, pod(), env()).route
    assert main is not None and main.kind is RouteKind.MAIN and str(main.next_hop) == "192.0.2.100"


def test_ip_rule_mark_test_is_the_kernels() -> None:
    # (rule mark ^ packet mark) & mask: bits of the packet mark outside the mask do not matter.
    rules = ruleset(ip_rules=(IPRule(V4, 99, 0x26000100, 0xFFFFFF00, 3001, 230, BASE),),
                    routes=(tunnel_route(3001, "0.0.0.0/0"),))
    for mark in (0x26000100, 0x260001FF):
        hit = trace(rules, pod(mark=mark), env()).route
        assert hit is not None and (hit.kind, hit.table) == (RouteKind.POLICY, 3001)
    miss = trace(rules, pod(mark=0x26000200), env()).route
    assert miss is not None and miss.kind is RouteKind.MAIN


def test_local_and_unreachable_destinations() -> None:
    local = trace(ruleset(), pod("192.0.2.1", mark=0x26000100), env())
    assert local.verdict.disposition is Disposition.DELIVERED
    assert local.route is not None and local.route.kind is RouteKind.LOCAL
    nowhere = NodeEnvironment(node="n1", uplink="eth0", interfaces=(Interface("eth0", ("192.0.2.1",)),),
                              main_routes=())
    dropped = trace(ruleset(), pod(), nowhere)
    assert dropped.verdict.disposition is Disposition.DROPPED
    assert dropped.verdict.reason == "no route to 203.0.113.10"


def test_a_route_the_kernel_would_refuse_is_an_error() -> None:
    rules = ruleset(hook_rules=hooks(MANGLE, PREROUTING, rule(SetMark(0x26000100, 0xFFFFFF00))),
                    ip_rules=(IPRule(V4, 99, 0x26000100, 0xFFFFFF00, 3001, 230, BASE),),
                    routes=(tunnel_route(3001, "0.0.0.0/0", via="10.9.9.9"),))
    with pytest.raises(TraceError, match=r"not on-link on egress\.vxlan"):
        trace(rules, pod(), env())


def test_output_path_routes_again_after_mangle_output_changes_the_mark() -> None:
    rules = policy_routing(table_routes=(tunnel_route(3001, "0.0.0.0/0"),))
    rules = ruleset(hook_rules=hooks(MANGLE, OUTPUT, rule(SetMark(0x26000100, 0xFFFFFF00))),
                    ip_rules=rules.families[0].ip_rules, routes=rules.families[0].routes)
    result = trace(rules, Packet("192.0.2.1", "203.0.113.10"), env())
    assert result.path is PathKind.OUTPUT
    assert [d.kind for d in result.routing] == [RouteKind.MAIN, RouteKind.POLICY]
    assert result.verdict.device == "egress.vxlan"
    # The second lookup follows mangle OUTPUT (its mark step and its policy event).
    assert [d.at_step for d in result.routing] == [0, 2]


def test_an_encapsulated_packet_routed_into_the_tunnel_is_a_circular_route() -> None:
    rules = policy_routing(table_routes=(tunnel_route(3001, "0.0.0.0/0"),))
    plain = ruleset(ip_rules=rules.families[0].ip_rules, routes=rules.families[0].routes)
    outer = Packet("192.0.2.1", "192.0.2.2", mark=0x26000100)
    assert trace(plain, outer, env()).verdict.device == "egress.vxlan"
    looped = trace(plain, outer, env(), encapsulated=True)
    assert looped.verdict.disposition is Disposition.DROPPED
    assert looped.verdict.reason.startswith("circular route")
    assert looped.steps == ()


# ---------------------------------------------------------------- refusing to guess


@attrs.frozen
class LengthMatch:
    """A match type the tracer does not know."""

    length: int


@attrs.frozen
class Drop:
    """An action type the tracer does not know."""


def test_unknown_match_and_action_are_errors() -> None:
    unknown_match = Rule((cast(Match, LengthMatch(100)),), Accept(), "odd match", BASE)
    with pytest.raises(TraceError, match="unknown match LengthMatch"):
        trace(ruleset(hook_rules=hooks(MANGLE, PREROUTING, unknown_match)), pod(), env())
    unknown_action = Rule((), cast(Action, Drop()), "odd action", BASE)
    with pytest.raises(TraceError, match="unknown action Drop"):
        trace(ruleset(hook_rules=hooks(MANGLE, PREROUTING, unknown_action)), pod(), env())


@pytest.mark.parametrize(("rules", "message"), [
    (ruleset(hook_rules=hooks(MANGLE, PREROUTING, rule(Jump("MISSING")))), "targets chain MISSING"),
    (ruleset(hook_rules=hooks(MANGLE, PREROUTING, rule(SetMark(1, 1), SetMatch("nope", Direction.SRC)))),
     "matches set nope"),
    (ruleset(hook_rules=hooks(MANGLE, POSTROUTING, rule(Snat(parse_address("192.0.2.50"))))),
     "SNAT is valid only under"),
    (ruleset(hook_rules=hooks(NAT, PREROUTING, rule(Masquerade()))), "MASQUERADE is valid only under"),
    (ruleset(hook_rules=hooks(NAT, POSTROUTING, rule(Snat(parse_address("2001:db8::1"))))), "SNAT to 2001:db8::1"),
    (ruleset(hook_rules=hooks(MANGLE, PREROUTING, rule(Jump("A"))),
             chains=(Chain(MANGLE, "A", (rule(Jump("A")),)),)), "already on the call path"),
    (ruleset(hook_rules=hooks(MANGLE, PREROUTING, rule(Goto("A"))),
             chains=(Chain(MANGLE, "A", (rule(Goto("A")),)),)), "chain cycle"),
    (ruleset(hook_rules=(HookRule(MANGLE, PREROUTING, 2, rule(Accept())),)), "are not 1..k"),
    (ruleset(hook_rules=hooks(FILTER, PREROUTING, rule(Accept()))), "filter has no built-in chain PREROUTING"),
    (ruleset(hook_rules=hooks(MANGLE, PREROUTING, rule(Jump("A"))),
             chains=(Chain(NAT, "A", ()),)), "mangle table does not define"),
])
def test_what_the_tracer_cannot_evaluate_exactly_is_an_error(rules: RuleSet, message: str) -> None:
    with pytest.raises(TraceError, match=message):
        trace(rules, pod(), env())


def test_inputs_are_checked() -> None:
    with pytest.raises(TraceError, match="different families"):
        Packet("10.0.0.1", "2001:db8::1")
    with pytest.raises(TraceError, match="icmp has no ports"):
        Packet("10.0.0.1", "10.0.0.2", protocol="icmp", dport=1)
    with pytest.raises(TraceError, match="mark"):
        Packet("10.0.0.1", "10.0.0.2", mark=1 << 32)
    with pytest.raises(TraceError, match="uplink eth1 is not among"):
        NodeEnvironment(node="n1", uplink="eth1", interfaces=(Interface("eth0", ("192.0.2.1",)),), main_routes=())
    with pytest.raises(TraceError, match="does not describe node n1"):
        trace(ruleset(), pod(), attrs.evolve(env(), node="n2"))


def test_node_trace_text_shows_positions_provenance_and_marks() -> None:
    rules = ruleset(hook_rules=hooks(MANGLE, PREROUTING, rule(SetMark(0x1, 0x1), MarkMatch(0x2, 0x2)),
                                     rule(SetMark(0x1, 0x1))))
    text = format_node_trace(trace(rules, pod(), env()))
    lines = text.splitlines()
    assert lines[0] == "n1: udp 10.244.1.10 -> 203.0.113.10, in cni0, mark 0x00000000, ct ORIGINAL (forward path)"
    assert "PREROUTING:1" in lines[1] and "no match: mark 0x00000000 & 0x00000002 != 0x00000002" in lines[1]
    assert "PREROUTING:2" in lines[2] and "0x00000000->0x00000001" in lines[2] and "(mark request)" in lines[2]
    assert lines[-1].strip() == ("=> forwarded out eth0 via 192.0.2.100 as udp 10.244.1.10 -> 203.0.113.10, "
                                 "mark 0x00000001")
    short = format_node_trace(trace(rules, pod(), env()), misses=False)
    assert "no match" not in short


def test_a_family_without_rules_only_routes() -> None:
    v6 = trace(ruleset(), Packet("fd00:244:1::10", "2001:db8:ff::10", in_interface="cni0"),
               attrs.evolve(env(), main_routes=(MainRoute(Cidr(Family.IPV6, 0, 0), "eth0", "2001:db8:1::100"),)))
    assert v6.steps == () and v6.verdict.device == "eth0"
