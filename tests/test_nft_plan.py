"""The nftables planner against the nft fake: convergence, idempotence, foreign tables, repairs, plan size."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from egress_rules.backends import NFT_APPLY_ORDER, render_all
from egress_rules.backends.nftables import NftablesBackend, render_document
from egress_rules.compiler import compile
from egress_rules.errors import InvalidInputError
from egress_rules.model.addresses import Cidr, Family, parse_cidr
from egress_rules.model.cluster import ClusterState
from egress_rules.model.config import Config
from egress_rules.model.ruleset import RuleSet
from egress_rules.observed import ObservedState
from egress_rules.observed.iproute import ObservedIPRule
from egress_rules.plan import ConntrackFlush, plan, render_plan
from egress_rules.plan.model import (
    AddNftChain,
    AddNftElements,
    AddNftTable,
    DeleteNftChain,
    DeleteNftElements,
    DeleteNftTable,
)
from egress_rules.plan.nft import render_nft_batch
from tests import scenarios
from tests.fakes import FakeNode
from tests.fakes.nft import FakeNftNode, foreign_items, ours_snapshot, reference_snapshot
from tests.strategies import cluster_states
from tests.test_plan import big_state

CONFIG = Config()
DATA = Path(__file__).parent / "data" / "observed"


def foreign_listing() -> str:
    """The captured listing without our tables: iptables-nft's and other software's tables."""
    return json.dumps({"nftables": [{"metainfo": {"json_schema_version": 1}},
                                    *foreign_items((DATA / "nft-list.json").read_text(), CONFIG)]})


def node_with_foreign_objects() -> FakeNftNode:
    node = FakeNftNode()
    node.nft.seed(foreign_listing())
    node.nft.apply('{"nftables": [{"add": {"table": {"family": "ip6", "name": "kube"}}},'
                   '{"add": {"chain": {"family": "ip6", "table": "kube", "name": "c"}}}]}')
    node.ip.batch(Family.IPV4, "rule add fwmark 0x4000/0x4000 table 200 pref 100\n"
                               "route replace default via 192.0.2.100 dev eth0 table 200 proto static\n")
    return node


def foreign_parts(node: FakeNftNode) -> dict[str, Any]:
    """Everything on the node the library does not own, as the tools print it."""
    observed = node.observe(CONFIG)
    return {
        "nft": foreign_items(node.nft.list_ruleset(), CONFIG),
        "rules": {f: [r for r in rules if not r.owned] for f, rules in observed.ip_rules.items()},
        "routes": {f: [r for r in routes if not r.owned] for f, routes in observed.routes.items()},
    }


def owned_ip_rules(observed: ObservedState, family: Family) -> list[ObservedIPRule]:
    """Our ip rules, in priority order; rules of one priority in any order.

    The kernel lists rules of equal priority in the order they were added, so a
    node that gained a gateway later lists its rule after the older ones; ours
    match disjoint marks, so their order among themselves changes nothing.
    """
    return sorted((r for r in observed.ip_rules[family] if r.owned),
                  key=lambda r: (r.priority, r.mark or 0, r.mask or 0, r.table or 0, r.protocol or 0, r.selectors))


def owned_mismatches(node: FakeNftNode, desired: RuleSet) -> list[str]:
    """Our objects on the node against the full render loaded into a fresh fake (no planner involved)."""
    reference = FakeNftNode()
    reference.apply(render_all(desired, NFT_APPLY_ORDER))
    have, want = node.observe(CONFIG), reference.observe(CONFIG)
    assert have.nft is not None
    problems = [f"nft {family.label}" for family in Family
                if ours_snapshot(have.nft).get(family) != reference_snapshot(desired).get(family)]
    for family in Family:
        if owned_ip_rules(have, family) != owned_ip_rules(want, family):
            problems.append(f"{family.label} ip rules")
        if [r for r in have.routes[family] if r.owned] != [r for r in want.routes[family] if r.owned]:
            problems.append(f"{family.label} routes")
    return problems


def converge(node: FakeNftNode, desired: RuleSet) -> None:
    node.apply(render_plan(plan(desired, node.observe(CONFIG)), CONFIG))


@given(cluster_states(max_nodes=3, max_policies=5), cluster_states(max_nodes=3, max_policies=5), st.data())
def test_plan_converges_keeps_foreign_tables_and_is_idempotent(before: ClusterState, after: ClusterState,
                                                                 data: st.DataObject) -> None:
    names = sorted({n.name for n in before.nodes} & {n.name for n in after.nodes})
    local = data.draw(st.sampled_from(names))
    node = node_with_foreign_objects()
    foreign = foreign_parts(node)
    for state in (before, after):
        desired = compile(state, local)
        converge(node, desired)
        assert owned_mismatches(node, desired) == []
        assert foreign_parts(node) == foreign
        again = plan(desired, node.observe(CONFIG))
        assert again.is_empty, again.drift
        assert render_plan(again, CONFIG) == ()


@given(cluster_states(max_nodes=3, max_policies=5))
def test_plan_on_an_empty_node_matches_the_full_render(state: ClusterState) -> None:
    for node_obj in state.nodes:
        desired = compile(state, node_obj.name)
        by_plan, by_render = FakeNftNode(), FakeNftNode()
        converge(by_plan, desired)
        by_render.apply(render_all(desired, NFT_APPLY_ORDER))
        assert _without_handles(by_plan.nft.list_ruleset()) == _without_handles(by_render.nft.list_ruleset())
        assert by_plan.dumps()["ip -4 -j rule"] == by_render.dumps()["ip -4 -j rule"]


def _without_handles(listing: str) -> list[Any]:
    return [{k: {f: v for f, v in b.items() if f != "handle"} for k, b in i.items()}
            for i in json.loads(listing)["nftables"]]


# ---------------------------------------------------------------- damage and repair


def _batch(*commands: dict[str, Any]) -> str:
    return json.dumps({"nftables": list(commands)})


def _rule_handles(node: FakeNftNode, family: str, chain: str) -> list[int]:
    return [i["rule"]["handle"] for i in json.loads(node.nft.list_ruleset())["nftables"]
            if "rule" in i and i["rule"]["family"] == family and i["rule"]["table"] == "egress_rules"
            and i["rule"]["chain"] == chain]


T4 = {"family": "ip", "table": "egress_rules"}
MASK = {"&": [{"meta": {"key": "mark"}}, 0xFFFFFF00]}


def _damaged(node: FakeNftNode, damage: str) -> None:
    nft = node.nft
    if damage == "delete our rule":
        handle = _rule_handles(node, "ip", "EGRESSGATEWAY-MARK-REQUEST")[0]
        nft.apply(_batch({"delete": {"rule": {**T4, "chain": "EGRESSGATEWAY-MARK-REQUEST", "handle": handle}}}))
    elif damage == "delete a hook rule":
        handle = _rule_handles(node, "ip", "nat_postrouting")[1]
        nft.apply(_batch({"delete": {"rule": {**T4, "chain": "nat_postrouting", "handle": handle}}}))
    elif damage == "edited rule":
        handle = _rule_handles(node, "ip", "EGRESSGATEWAY-SNAT-EIP")[1]
        nft.apply(_batch({"replace": {"rule": {**T4, "chain": "EGRESSGATEWAY-SNAT-EIP", "handle": handle,
                                               "comment": "egress-rules: hand edit", "expr": [{"return": None}]}}}))
    elif damage == "accept instead of the identity snat":
        handle = _rule_handles(node, "ip", "EGRESSGATEWAY-NO-SNAT")[0]
        nft.apply(_batch({"replace": {"rule": {**T4, "chain": "EGRESSGATEWAY-NO-SNAT", "handle": handle,
                                               "comment": "egress-rules: no snat", "expr": [
                                                   {"match": {"op": "==", "left": MASK, "right": 0x12000000}},
                                                   {"accept": None}]}}}))
    elif damage == "duplicated rule":
        jump = {"jump": {"target": "EGRESSGATEWAY-MARK-REQUEST"}}
        nft.apply(_batch({"insert": {"rule": {**T4, "chain": "mangle_prerouting",
                                              "comment": "egress-rules: mark request", "expr": [jump]}}}))
    elif damage == "stale set and chain":
        nft.apply(_batch(
            {"add": {"set": {**T4, "name": "egress-src4-0000000000000000000", "type": "ipv4_addr",
                             "flags": ["interval"], "elem": ["10.244.9.9"]}}},
            {"add": {"chain": {**T4, "name": "EGRESSGATEWAY-TO-26FFFF00"}}},
            {"add": {"rule": {**T4, "chain": "EGRESSGATEWAY-TO-26FFFF00", "expr": [{"match": {
                "op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                "right": "@egress-src4-0000000000000000000"}}, {"return": None}]}}},
            {"add": {"rule": {**T4, "chain": "EGRESSGATEWAY-MARK-REQUEST", "expr": [
                {"goto": {"target": "EGRESSGATEWAY-TO-26FFFF00"}}]}}}))
    elif damage == "changed element":
        nft.apply(_batch(
            {"delete": {"element": {**T4, "name": "egress-cluster-cidr-v4",
                                    "elem": [{"prefix": {"addr": "10.96.0.0", "len": 12}}]}}},
            {"add": {"element": {**T4, "name": "egress-cluster-cidr-v4",
                                 "elem": [{"range": ["10.96.0.0", "10.96.0.9"]}, "10.99.0.1"]}}}))
    elif damage == "changed priority":
        nft.apply(_batch(
            {"delete": {"chain": {**T4, "name": "nat_postrouting"}}},
            {"add": {"chain": {**T4, "name": "nat_postrouting", "type": "nat", "hook": "postrouting", "prio": 100}}},
            {"add": {"rule": {**T4, "chain": "nat_postrouting", "expr": [
                {"jump": {"target": "EGRESSGATEWAY-SNAT-EIP"}}]}}}))
    elif damage == "changed set flags":
        document, _ = render_document(compile(scenarios.mixed_roles(), "node-b"))
        for command in document["nftables"]:
            if "set" in command.get("add", {}) and command["add"]["set"]["name"] == "egress-cluster-cidr-v4":
                command["add"]["set"]["flags"] = ["interval", "timeout"]
        nft.apply(json.dumps(document))
    elif damage == "object in our table":
        nft.apply(_batch({"add": {"counter": {**T4, "name": "debug"}}}))
    elif damage == "IPv6 table gone":
        nft.apply(_batch({"delete": {"table": {"family": "ip6", "name": "egress_rules"}}}))
    elif damage == "foreign table added":
        nft.apply(_batch({"add": {"table": {"family": "inet", "name": "intruder"}}},
                         {"add": {"chain": {"family": "inet", "table": "intruder", "name": "early", "type": "filter",
                                            "hook": "prerouting", "prio": -300}}}))
    else:
        raise AssertionError(damage)


DAMAGES = ["delete our rule", "delete a hook rule", "edited rule", "accept instead of the identity snat",
           "duplicated rule", "stale set and chain", "changed element", "changed priority", "changed set flags",
           "object in our table", "IPv6 table gone"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_damage_is_repaired_and_foreign_tables_survive(damage: str) -> None:
    desired = compile(scenarios.mixed_roles(), "node-b")
    node = node_with_foreign_objects()
    converge(node, desired)
    _damaged(node, damage)
    foreign = foreign_parts(node)
    result = plan(desired, node.observe(CONFIG))
    assert result.drift, "the damage must show as drift"
    converge(node, desired)
    assert owned_mismatches(node, desired) == []
    assert foreign_parts(node) == foreign
    assert plan(desired, node.observe(CONFIG)).is_empty


def test_a_foreign_table_even_one_hooked_first_is_not_our_business() -> None:
    desired = compile(scenarios.mixed_roles(), "node-b")
    node = node_with_foreign_objects()
    converge(node, desired)
    _damaged(node, "foreign table added")
    assert plan(desired, node.observe(CONFIG)).is_empty


def test_a_priority_change_deletes_and_re_adds_the_base_chain() -> None:
    desired = compile(scenarios.mixed_roles(), "node-b")
    node = FakeNftNode()
    converge(node, desired)
    _damaged(node, "changed priority")
    ops = plan(desired, node.observe(CONFIG)).nft
    assert DeleteNftChain(Family.IPV4, "nat_postrouting") in ops
    [add] = [op for op in ops if isinstance(op, AddNftChain)]
    assert add.hook is not None and add.hook.priority == 99
    assert ops.index(DeleteNftChain(Family.IPV4, "nat_postrouting")) < ops.index(add)


def test_changed_set_flags_replace_the_table_in_the_same_batch() -> None:
    desired = compile(scenarios.mixed_roles(), "node-b")
    node = FakeNftNode()
    _damaged(node, "changed set flags")
    ops = plan(desired, node.observe(CONFIG)).nft
    assert ops[:3] == (AddNftTable(Family.IPV4), DeleteNftTable(Family.IPV4), AddNftTable(Family.IPV4))


def test_a_disabled_family_loses_its_table() -> None:
    node = FakeNftNode()
    converge(node, compile(scenarios.mixed_roles(), "node-a"))
    desired = compile(scenarios.mixed_roles(), "node-a", attrs.evolve(CONFIG, ipv6=False))
    result = plan(desired, node.observe(CONFIG))
    assert result.nft == (DeleteNftTable(Family.IPV6),)
    converge(node, desired)
    assert node.nft.table("ip6", "egress_rules") is None and node.nft.table("ip", "egress_rules") is not None


# ---------------------------------------------------------------- set elements


def _set_elements(node: FakeNftNode, name: str) -> list[Any]:
    return next(i["set"].get("elem", []) for i in json.loads(node.nft.list_ruleset())["nftables"]
                if "set" in i and i["set"]["name"] == name)


def test_elements_are_compared_as_prefixes_and_deleted_whole() -> None:
    desired = compile(scenarios.one_policy(), "node-a")
    node = FakeNftNode()
    converge(node, desired)
    # Someone splits 10.96.0.0/12 into its two halves: the same addresses, so nothing to do.
    halves = [{"prefix": {"addr": "10.96.0.0", "len": 13}}, {"prefix": {"addr": "10.104.0.0", "len": 13}}]
    node.nft.apply(_batch(
        {"delete": {"element": {**T4, "name": "egress-cluster-cidr-v4",
                                "elem": [{"prefix": {"addr": "10.96.0.0", "len": 12}}]}}},
        {"add": {"element": {**T4, "name": "egress-cluster-cidr-v4", "elem": halves}}}))
    assert plan(desired, node.observe(CONFIG)).is_empty
    # The service CIDR shrinks to 10.96.0.0/13: the stored /13 stays, the other half goes whole.
    cluster = attrs.evolve(scenarios.CLUSTER, service=("10.96.0.0/13", "fd00:96::/108"))
    smaller = compile(attrs.evolve(scenarios.one_policy(), cluster=cluster), "node-a")
    ops = plan(smaller, node.observe(CONFIG)).nft
    assert ops == (DeleteNftElements(Family.IPV4, "egress-cluster-cidr-v4", ((parse_cidr("10.104.0.0/13"),),)),)
    # It grows back to the /12: both halves are deleted whole and the /12 added in one batch.
    node.nft.apply(render_nft_batch(ops, CONFIG))
    node.nft.apply(_batch({"add": {"element": {**T4, "name": "egress-cluster-cidr-v4", "elem": [
        {"range": ["10.104.0.0", "10.104.0.9"]}]}}}))
    ops = plan(desired, node.observe(CONFIG)).nft
    stale = (parse_cidr("10.96.0.0/13"),), tuple(parse_cidr(c) for c in (
        "10.104.0.0/29", "10.104.0.8/31"))
    assert ops == (DeleteNftElements(Family.IPV4, "egress-cluster-cidr-v4", stale),
                   AddNftElements(Family.IPV4, "egress-cluster-cidr-v4", (parse_cidr("10.96.0.0/12"),)))
    node.nft.apply(render_nft_batch(ops, CONFIG))
    assert {"prefix": {"addr": "10.96.0.0", "len": 12}} in _set_elements(node, "egress-cluster-cidr-v4")
    assert plan(desired, node.observe(CONFIG)).is_empty


def test_plan_size_follows_the_change() -> None:
    node = FakeNftNode()
    before = compile(big_state(100_000), "node-b")
    converge(node, before)
    after = compile(big_state(100_000, extra=1), "node-b")
    result = plan(after, node.observe(CONFIG))
    src = after.families[0].sets[1].name
    assert result.nft == (AddNftElements(Family.IPV4, src, (parse_cidr("10.200.0.1/32"),)),)
    outputs = {o.name: o for o in render_plan(result, CONFIG)}
    assert set(outputs) == {"nftables.delta.json", "conntrack.commands"}
    assert outputs["nftables.delta.json"].command == "nft -j -f"
    commands = json.loads(outputs["nftables.delta.json"].text)["nftables"]
    assert commands == [{"metainfo": {"json_schema_version": 1}}, {"add": {"element": {
        "family": "ip", "table": "egress_rules", "name": src, "elem": ["10.200.0.1"]}}}]


def test_a_changed_rule_is_one_edit_by_handle() -> None:
    node = FakeNftNode()
    state = scenarios.hundred_policies()
    converge(node, compile(state, "node-a"))
    policies = list(state.policies)
    policies[40] = attrs.evolve(policies[40], gateway_node="node-c" if policies[40].gateway_node == "node-b"
                                else "node-b")
    after = compile(attrs.evolve(state, policies=policies), "node-a")
    commands = json.loads(render_nft_batch(plan(after, node.observe(CONFIG)).nft, CONFIG))["nftables"][1:]
    assert [list(c) + list(next(iter(c.values()))) for c in commands] == [["replace", "rule"]]
    converge(node, after)
    assert owned_mismatches(node, after) == []


# ---------------------------------------------------------------- the datapath choice and outputs


def test_the_nft_datapath_refuses_iptables_state() -> None:
    desired = compile(scenarios.one_policy(), "node-a")
    observed = FakeNftNode().observe(CONFIG)
    iptables_state = FakeNode().observe(CONFIG)
    with pytest.raises(InvalidInputError, match="nftables datapath"):
        plan(desired, attrs.evolve(observed, iptables=iptables_state.iptables))
    with pytest.raises(InvalidInputError, match="IPv6 ip rules or routes missing"):
        plan(desired, attrs.evolve(observed, routes={Family.IPV4: observed.routes[Family.IPV4]}))


def test_plan_notes_carry_the_backend_note_and_an_empty_plan_renders_nothing() -> None:
    desired = compile(scenarios.one_policy(), "node-a")
    node = FakeNftNode()
    first = plan(desired, node.observe(CONFIG))
    [output] = NftablesBackend().render(desired)
    assert first.notes == output.notes
    names = [o.name for o in render_plan(first, CONFIG)]
    # Routes before the rules that mark packets for them.
    assert names == ["iproute-v4.delta", "nftables.delta.json", "conntrack.commands"]
    node.apply(render_plan(first, CONFIG))
    assert render_plan(plan(desired, node.observe(CONFIG)), CONFIG) == ()
    assert render_nft_batch((), CONFIG) == ""


def _halves(flushes: tuple[ConntrackFlush, ...]) -> set[ConntrackFlush]:
    """Flushes with each /0 written as its two /1 halves (how hash:net holds it)."""
    def split(cidr: Cidr) -> list[Cidr]:
        if cidr.prefixlen:
            return [cidr]
        return [Cidr(cidr.family, 0, 1), Cidr(cidr.family, 1 << (cidr.family.bits - 1), 1)]
    return {ConntrackFlush(f.family, s, d) for f in flushes for s in split(f.source)
            for d in (split(f.destination) if f.destination is not None else [None])}


@given(cluster_states(max_nodes=3, max_policies=5), cluster_states(max_nodes=3, max_policies=5), st.data())
def test_conntrack_flushes_are_those_of_the_iptables_datapath(before: ClusterState, after: ClusterState,
                                                               data: st.DataObject) -> None:
    names = sorted({n.name for n in before.nodes} & {n.name for n in after.nodes})
    local = data.draw(st.sampled_from(names))
    nft_node, iptables_node = FakeNftNode(), FakeNode()
    first = compile(before, local)
    converge(nft_node, first)
    iptables_node.apply(render_plan(plan(first, iptables_node.observe(CONFIG)), CONFIG))
    second = compile(after, local)
    on_nft = plan(second, nft_node.observe(CONFIG)).conntrack
    on_iptables = plan(second, iptables_node.observe(CONFIG)).conntrack
    assert _halves(on_nft) == set(on_iptables)


def test_observed_state_without_nft_is_the_iptables_datapath() -> None:
    desired = compile(scenarios.one_policy(), "node-a")
    result = plan(desired, FakeNode().observe(CONFIG))
    assert result.nft == () and result.iptables
    assert ObservedState().nft is None
