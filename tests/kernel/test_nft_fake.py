"""The nft fake against the kernel: the same batches applied to both must list (and parse) the same.

Each test applies every batch, byte for byte the same text, to the fake and
to a fresh namespace, and compares the full listings (handles included:
the fake numbers objects the way the kernel does as long as no batch fails)
and what the parser makes of them. The batches are full renders, the plans
the planner computes from the kernel's own listing between cluster states,
hand-written damage, and every list form the parser reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egress_rules.backends.nftables import NftablesBackend
from egress_rules.compiler import compile
from egress_rules.demo import demo_state
from egress_rules.model.cluster import ClusterState
from egress_rules.model.config import Config
from egress_rules.model.ruleset import RuleSet
from egress_rules.observed import NftRuleset, ObservedState, Ownership, parse_nft_list
from egress_rules.plan import plan
from egress_rules.plan.model import NftOp
from egress_rules.plan.nft import render_nft_batch
from tests import scenarios
from tests.fakes.ipset import ToolError
from tests.fakes.nft import FakeNft
from tests.strategies import cluster_states

from .netns import CommandError, Namespace

pytestmark = pytest.mark.kernel

CONFIG = Config()
DATA = Path(__file__).parent.parent / "data" / "observed"


class Twin:
    """A namespace and a fake that receive the same batches."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.fake = FakeNft()

    def apply(self, text: str) -> None:
        self.ns.run("nft", "-j", "-f", "-", input=text)
        self.fake.apply(text)

    def kernel_listing(self) -> str:
        return self.ns.run("nft", "-j", "list", "ruleset").stdout

    def differences(self) -> list[str]:
        kernel, fake = json.loads(self.kernel_listing()), json.loads(self.fake.list_ruleset())
        problems = [f"kernel {json.dumps(a)} / fake {json.dumps(b)}"
                    for a, b in zip(kernel["nftables"], fake["nftables"], strict=False) if a != b]
        if len(kernel["nftables"]) != len(fake["nftables"]):
            problems.append(f"{len(kernel['nftables'])} objects in the kernel, {len(fake['nftables'])} in the fake")
        own = Ownership(CONFIG)
        if parse_nft_list(self.kernel_listing(), own) != parse_nft_list(self.fake.list_ruleset(), own):
            problems.append("the parsed listings differ")
        return problems

    def plan_and_apply(self, state: ClusterState, node: str) -> int:
        """Plan ``node``'s nft datapath from the kernel's listing, apply the batch to both; its op count."""
        desired = compile(state, node)
        observed = parse_nft_list(self.kernel_listing(), Ownership(CONFIG))
        ops = plan_nft_only(desired, observed)
        if ops:
            self.apply(render_nft_batch(ops, CONFIG))
        return len(ops)


def plan_nft_only(desired: RuleSet, observed: NftRuleset) -> tuple[NftOp, ...]:
    """The nft batch alone (routing is not what these tests compare)."""
    state = ObservedState(nft=observed, ip_rules={f.family: () for f in desired.families},
                          routes={f.family: () for f in desired.families})
    return plan(desired, state).nft


def test_every_list_form_and_a_full_render() -> None:
    with Namespace("nftfake") as ns:
        twin = Twin(ns)
        twin.apply((DATA / "nft-forms.input.json").read_text())
        assert twin.differences() == []
        [output] = NftablesBackend().render(compile(demo_state(), "node-b"))
        twin.apply(output.text)
        assert twin.differences() == []


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(cluster_states(max_nodes=3, max_policies=5), min_size=2, max_size=4), st.data())
def test_planned_batches_between_random_clusters(states: list[ClusterState], data: st.DataObject) -> None:
    names = sorted(set.intersection(*({n.name for n in s.nodes} for s in states)))
    node = data.draw(st.sampled_from(names))
    with Namespace("nftfake") as ns:
        twin = Twin(ns)
        for state in states:
            twin.plan_and_apply(state, node)
            assert twin.differences() == []
            assert twin.plan_and_apply(state, node) == 0


def _handles(listing: str, chain: str) -> list[int]:
    return [i["rule"]["handle"] for i in json.loads(listing)["nftables"]
            if "rule" in i and i["rule"]["family"] == "ip" and i["rule"]["chain"] == chain
            and i["rule"]["table"] == "egress_rules"]


T4 = {"family": "ip", "table": "egress_rules"}


def test_damage_and_repair_batches() -> None:
    with Namespace("nftfake") as ns:
        twin = Twin(ns)
        twin.plan_and_apply(demo_state(), "node-b")
        request = _handles(twin.kernel_listing(), "EGRESSGATEWAY-MARK-REQUEST")
        twin.apply(json.dumps({"nftables": [
            {"delete": {"rule": {**T4, "chain": "EGRESSGATEWAY-MARK-REQUEST", "handle": request[1]}}},
            {"insert": {"rule": {**T4, "chain": "EGRESSGATEWAY-MARK-REQUEST", "handle": request[0],
                                 "expr": [{"counter": None}, {"return": None}]}}},
            {"delete": {"element": {**T4, "name": "egress-cluster-cidr-v4",
                                    "elem": [{"prefix": {"addr": "10.96.0.0", "len": 12}}]}}},
            {"add": {"element": {**T4, "name": "egress-cluster-cidr-v4",
                                 "elem": [{"range": ["10.96.0.0", "10.96.0.9"]}]}}},
            {"add": {"set": {**T4, "name": "stale", "type": "ipv4_addr", "flags": ["interval"]}}},
            {"add": {"counter": {**T4, "name": "debug"}}},
            {"delete": {"chain": {**T4, "name": "nat_postrouting"}}},
            {"add": {"chain": {**T4, "name": "nat_postrouting", "type": "nat", "hook": "postrouting", "prio": 100}}},
            {"add": {"table": {"family": "inet", "name": "foreign"}}},
        ]}))
        assert twin.differences() == []
        assert twin.plan_and_apply(demo_state(), "node-b") > 0
        assert twin.differences() == []
        assert twin.plan_and_apply(scenarios.mixed_roles(), "node-b") > 0
        assert twin.differences() == []
        assert twin.plan_and_apply(scenarios.mixed_roles(), "node-b") == 0


FAILING = [
    {"add": {"element": {**T4, "name": "egress-cluster-cidr-v4",
                         "elem": [{"prefix": {"addr": "10.0.0.0", "len": 8}}]}}},
    {"delete": {"element": {**T4, "name": "egress-cluster-cidr-v4",
                            "elem": [{"prefix": {"addr": "10.96.0.0", "len": 13}}]}}},
    {"delete": {"set": {**T4, "name": "egress-cluster-cidr-v4"}}},
    {"delete": {"chain": {**T4, "name": "EGRESSGATEWAY-NO-SNAT"}}},
    {"add": {"chain": {**T4, "name": "nat_postrouting", "type": "nat", "hook": "postrouting", "prio": 100}}},
    {"add": {"rule": {**T4, "chain": "filter_forward", "expr": [{"snat": {"addr": "192.0.2.9"}}]}}},
    {"delete": {"rule": {**T4, "chain": "filter_forward", "handle": 9999}}},
]


@pytest.mark.parametrize("command", FAILING, ids=lambda c: json.dumps(c)[:60])
def test_the_fake_fails_where_nft_fails_and_both_keep_their_state(command: dict[str, Any]) -> None:
    with Namespace("nftfake") as ns:
        twin = Twin(ns)
        [output] = NftablesBackend().render(compile(demo_state(), "node-a"))
        twin.apply(output.text)
        valid = {"add": {"element": {**T4, "name": "egress-cluster-cidr-v4", "elem": ["10.200.0.1"]}}}
        text = json.dumps({"nftables": [valid, command]})
        kernel_before, fake_before = twin.kernel_listing(), twin.fake.list_ruleset()
        with pytest.raises(CommandError):
            ns.run("nft", "-j", "-f", "-", input=text)
        with pytest.raises(ToolError):
            twin.fake.apply(text)
        assert (twin.kernel_listing(), twin.fake.list_ruleset()) == (kernel_before, fake_before)
        # The batch failed for its second command: the first alone goes through on both.
        twin.apply(json.dumps({"nftables": [valid]}))
        assert twin.kernel_listing() != kernel_before and twin.fake.list_ruleset() != fake_before
