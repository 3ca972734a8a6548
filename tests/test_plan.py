"""The planner against in-memory fakes of the tools: convergence, idempotence, foreign objects, plan size."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from egress_rules.backends import render_all
from egress_rules.compiler import compile
from egress_rules.compiler.naming import is_owned_set
from egress_rules.errors import InvalidInputError
from egress_rules.model.addresses import Family
from egress_rules.model.cluster import ClusterState, EgressIP, Endpoint, Policy
from egress_rules.model.config import Config
from egress_rules.model.ruleset import RuleSet
from egress_rules.observed import ObservedState
from egress_rules.plan import DriftKind, plan, render_plan
from egress_rules.plan.planner import ipset_entries
from tests import scenarios
from tests.fakes import FakeNode
from tests.strategies import cluster_states

CONFIG = Config()

FOREIGN_V4 = """*nat
-A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
COMMIT
*mangle
-I PREROUTING 1 -m comment --comment "cni: early accept" -m conntrack --ctstate ESTABLISHED -j ACCEPT
COMMIT
*filter
:KUBE-FORWARD - [0:0]
-A FORWARD -j KUBE-FORWARD
-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT
COMMIT
"""


def node_with_foreign_objects() -> FakeNode:
    node = FakeNode()
    node.ipset.restore("create egress-src4-0123456789abcdef012 hash:net family inet\n"
                       "add egress-src4-0123456789abcdef012 10.9.0.0/16\n"
                       "create kube-foreign hash:net family inet6\nadd kube-foreign 2001:db8::/64\n")
    node.iptables[Family.IPV4].restore(FOREIGN_V4)
    node.iptables[Family.IPV6].restore("*nat\n-A POSTROUTING -s fd00:244::/32 -j MASQUERADE\nCOMMIT\n")
    node.ip.batch(Family.IPV4, "rule add fwmark 0x4000/0x4000 table 200 pref 100\n"
                               "route replace default via 192.0.2.100 dev eth0 table 200 proto static\n")
    return node


def foreign_parts(observed: ObservedState) -> dict[str, Any]:
    """Everything in ``observed`` the library does not own, in a comparable form."""
    parts: dict[str, Any] = {}
    for family, dump in observed.iptables.items():
        for table in dump.tables:
            for chain in table.chains:
                foreign_rules = [r.text for r in chain.rules if not r.owned]
                if not chain.owned and (foreign_rules or not chain.builtin):
                    parts[f"{family.value} {table.name} {chain.name}"] = foreign_rules
    parts["sets"] = sorted((s.name, s.set_type, s.member_count) for s in observed.ipsets if not s.owned)
    parts["rules"] = {f: [r for r in rules if not r.owned] for f, rules in observed.ip_rules.items()}
    parts["routes"] = {f: [r for r in routes if not r.owned] for f, routes in observed.routes.items()}
    return parts


def owned_mismatches(observed: ObservedState, desired: RuleSet) -> list[str]:
    """Differences between our objects on the node and the desired rule set (independent of the planner)."""
    problems = []
    for family, dump in observed.iptables.items():
        rules = desired.family(family)
        for table in dump.tables:
            for chain in table.chains:
                if chain.owned:
                    wanted = rules.chain(_table(table.name), chain.name) if rules else None
                    if wanted is None:
                        problems.append(f"stale chain {chain.name}")
                    elif [r.body for r in chain.rules] != [r.body for r in wanted.rules]:
                        problems.append(f"chain {chain.name} differs")
                elif chain.builtin:
                    hooks = [h.rule.body for h in (rules.hooks if rules else ()) if h.table.value == table.name
                             and h.chain.value == chain.name]
                    hooks_sorted = [h.rule.body for h in sorted(
                        (h for h in (rules.hooks if rules else ()) if h.table.value == table.name
                         and h.chain.value == chain.name), key=lambda h: h.position)]
                    assert sorted(map(repr, hooks)) == sorted(map(repr, hooks_sorted))
                    owned = [(i, r.body) for i, r in enumerate(chain.rules) if r.owned]
                    if owned != list(enumerate(hooks_sorted)):
                        problems.append(f"hooks of {table.name} {chain.name}: {owned}")
        if rules:
            for chain_obj in rules.chains:
                table_obj = dump.table(chain_obj.table.value)
                if table_obj is None or table_obj.chain(chain_obj.name) is None:
                    problems.append(f"missing chain {chain_obj.name}")
    wanted_sets = {s.name: ipset_entries(s) for rules in desired.families for s in rules.sets}
    have_sets = {s.name: s.members for s in observed.ipsets if s.owned}
    if wanted_sets != have_sets:
        problems.append(f"sets differ: {sorted(set(wanted_sets) ^ set(have_sets))}")
    for family in Family:
        rules = desired.family(family)
        want = sorted((r.priority, r.mark, r.mask, r.table) for r in (rules.ip_rules if rules else ()))
        have = sorted((r.priority, r.mark, r.mask, r.table) for r in observed.ip_rules.get(family, ()) if r.owned)
        if want != have:
            problems.append(f"{family.label} ip rules {have} != {want}")
        want_routes = sorted((r.table, str(r.via)) for r in (rules.routes if rules else ()))
        have_routes = sorted((r.table, str(r.via)) for r in observed.routes.get(family, ()) if r.owned)
        if want_routes != have_routes:
            problems.append(f"{family.label} routes {have_routes} != {want_routes}")
    return problems


def _table(name: str) -> Any:
    from egress_rules.model.ruleset import NetfilterTable

    return NetfilterTable(name)


def converge(node: FakeNode, desired: RuleSet) -> None:
    node.apply(render_plan(plan(desired, node.observe(CONFIG)), CONFIG))


@given(cluster_states(max_nodes=3, max_policies=5), cluster_states(max_nodes=3, max_policies=5), st.data())
def test_plan_converges_keeps_foreign_objects_and_is_idempotent(before: ClusterState, after: ClusterState,
                                                                 data: st.DataObject) -> None:
    names = sorted({n.name for n in before.nodes} & {n.name for n in after.nodes})
    local = data.draw(st.sampled_from(names))
    node = node_with_foreign_objects()
    foreign = foreign_parts(node.observe(CONFIG))
    for state in (before, after):
        desired = compile(state, local)
        converge(node, desired)
        observed = node.observe(CONFIG)
        assert owned_mismatches(observed, desired) == []
        assert foreign_parts(observed) == foreign
        again = plan(desired, observed)
        assert again.is_empty, again.drift
        assert render_plan(again, CONFIG) == ()


@given(cluster_states(max_nodes=3, max_policies=5))
def test_plan_on_an_empty_node_matches_the_full_render(state: ClusterState) -> None:
    for node_obj in state.nodes:
        desired = compile(state, node_obj.name)
        by_plan, by_render = FakeNode(), FakeNode()
        converge(by_plan, desired)
        by_render.apply(render_all(desired))
        assert by_plan.observe(CONFIG) == by_render.observe(CONFIG)


def _damaged(node: FakeNode, damage: str) -> None:
    v4 = node.iptables[Family.IPV4]
    if damage == "delete our rule":
        v4.restore("*mangle\n-D EGRESSGATEWAY-MARK-REQUEST 1\nCOMMIT\n")
    elif damage == "foreign rule between ours":
        v4.restore('*nat\n-I POSTROUTING 2 -m comment --comment "intruder" -j ACCEPT\nCOMMIT\n')
    elif damage == "foreign rule above ours":
        v4.restore('*nat\n-I POSTROUTING 1 -m comment --comment "calico" -j ACCEPT\nCOMMIT\n')
    elif damage == "duplicate jump":
        v4.restore('*mangle\n-A PREROUTING -m comment --comment "egress-rules: mark request" '
                   "-j EGRESSGATEWAY-MARK-REQUEST\nCOMMIT\n")
    elif damage == "edited rule":
        v4.restore("*nat\n-R EGRESSGATEWAY-SNAT-EIP 2 -m comment --comment \"egress-rules: hand edit\" -j ACCEPT\n"
                   "COMMIT\n")
    elif damage == "stale set":
        # A scratch set left by an interrupted restore, and the set of a policy that is gone.
        gone = compile(scenarios.overlapping(), "node-b").families[0].sets[1].name
        node.ipset.restore(f"create egress-tmp-v4 hash:net family inet\ncreate {gone} hash:net family inet\n"
                           "create egress-src4-0000000000000000000 hash:net family inet\n")
    elif damage == "stale ip rule":
        node.ip.batch(Family.IPV4, "rule add fwmark 0x26123400/0xffffff00 table 3099 pref 99 protocol 230\n"
                                   "route replace default via 172.31.0.9 dev egress.vxlan table 3099 proto 230\n")
    elif damage == "changed member":
        src = next(s for s in node.ipset.sets if s.startswith("egress-src4-") and is_owned_set(CONFIG, s)
                   and node.ipset.sets[s].members)
        member = sorted(node.ipset.sets[src].members)[0]
        node.ipset.restore(f"del {src} {member.host_str()}\nadd {src} 10.244.99.99\n")
    elif damage == "wrong route":
        node.ip.batch(Family.IPV4, "route replace default via 172.31.0.9 dev egress.vxlan table "
                                   f"{next(r.table for r in node.ip.routes[Family.IPV4] if r.protocol == '230')} "
                                   "proto 230\n")
    else:
        raise AssertionError(damage)


DAMAGES = ["delete our rule", "foreign rule between ours", "foreign rule above ours", "duplicate jump",
           "edited rule", "stale set", "stale ip rule", "changed member", "wrong route"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_damage_is_repaired_and_foreign_objects_survive(damage: str) -> None:
    desired = compile(scenarios.mixed_roles(), "node-b")
    node = node_with_foreign_objects()
    converge(node, desired)
    _damaged(node, damage)
    damaged = node.observe(CONFIG)
    foreign = foreign_parts(damaged)
    result = plan(desired, damaged)
    assert result.drift, "the damage must show as drift"
    converge(node, desired)
    repaired = node.observe(CONFIG)
    assert owned_mismatches(repaired, desired) == []
    assert foreign_parts(repaired) == foreign
    assert plan(desired, repaired).is_empty


def test_drift_says_what_and_why() -> None:
    desired = compile(scenarios.mixed_roles(), "node-b")
    node = FakeNode()
    converge(node, desired)
    _damaged(node, "duplicate jump")
    _damaged(node, "foreign rule above ours")
    kinds = {(d.kind, d.subject) for d in plan(desired, node.observe(CONFIG)).drift}
    assert (DriftKind.DUPLICATE, "mangle PREROUTING") in kinds
    assert (DriftKind.MISORDERED, "nat POSTROUTING") in kinds


def test_foreign_set_named_like_ours_is_never_destroyed() -> None:
    node = node_with_foreign_objects()
    converge(node, compile(scenarios.one_policy(), "node-a"))
    assert "egress-src4-0123456789abcdef012" in node.ipset.sets
    assert "kube-foreign" in node.ipset.sets


def test_missing_family_in_observed_state_is_refused() -> None:
    desired = compile(scenarios.one_policy(), "node-a")
    observed = FakeNode().observe(CONFIG)
    partial = ObservedState(iptables={Family.IPV4: observed.iptables[Family.IPV4]}, ipsets=observed.ipsets,
                            ip_rules=observed.ip_rules, routes=observed.routes)
    with pytest.raises(InvalidInputError, match="IPv6 iptables"):
        plan(desired, partial)


def big_state(count: int, extra: int = 0) -> ClusterState:
    policies = []
    per = 50
    for p in range(count // per):
        sources = [Endpoint(f"10.{(p * per + i) >> 16 & 255}.{(p * per + i) >> 8 & 255}.{(p * per + i) & 255}",
                            f"node-{'abc'[i % 3]}") for i in range(per)]
        if p == 0:
            sources += [Endpoint(f"10.200.0.{i + 1}", "node-a") for i in range(extra)]
        policies.append(Policy(namespace=f"ns-{p % 50}", name=f"p-{p}", gateway_node="node-b",
                               sources=sources, destinations=[f"198.51.{p % 250}.0/24"],
                               egress_ip=EgressIP(ipv4=f"192.0.2.{p % 200 + 10}")))
    return ClusterState(nodes=scenarios.NODES, cluster=scenarios.CLUSTER, policies=policies)


def test_plan_size_follows_the_change() -> None:
    node = FakeNode()
    before = compile(big_state(100_000), "node-b")
    converge(node, before)
    after = compile(big_state(100_000, extra=1), "node-b")
    outputs = render_plan(plan(after, node.observe(CONFIG)), CONFIG)
    by_name = {o.name: o.text for o in outputs}
    src = after.families[0].sets[1].name
    assert by_name["ipset-before.restore"] == f"add {src} 10.200.0.1 -exist\n"
    assert set(by_name) == {"ipset-before.restore", "conntrack.commands"}
    assert by_name["conntrack.commands"] == (
        "conntrack -D -f ipv4 -s 10.200.0.1 -d 198.51.0.0 --mask-dst 255.255.255.0\n")


def test_a_new_cluster_cidr_flushes_the_flows_it_stops_redirecting() -> None:
    # Under an empty destSubnet, a prefix joining the cluster CIDRs stops being redirected: flows already
    # tunnelled there keep their "no NAT" binding and would leak the pod's address until flushed.
    import attrs

    before = scenarios.empty_destinations()
    after = attrs.evolve(before, cluster=attrs.evolve(before.cluster, extra=(*before.cluster.extra,
                                                                            "198.51.100.0/24")))
    node = FakeNode()
    converge(node, compile(before, "node-a"))
    flushes = plan(compile(after, "node-a"), node.observe(CONFIG)).conntrack
    assert [" ".join(f.argv()) for f in flushes] == [
        "conntrack -D -f ipv4 -s 10.244.1.10 -d 198.51.100.0 --mask-dst 255.255.255.0"]
