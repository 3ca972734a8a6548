"""Reconcile on the nftables datapath in a real kernel: damage our tables, observe, plan, apply, check.

A fresh namespace holds a node's nft datapath (converged through the
planner from nothing), a CNI-style MASQUERADE and a kube chain written with
iptables-nft, another program's nft table, and a foreign ip rule. Each test
damages our tables (and adds more foreign objects), reads the node with
``nft -j list ruleset`` and ``ip -j``, plans, applies the rendered plan,
and checks that our tables equal the full render again, that nothing
foreign changed (the nft listing of foreign tables, handles included, and
``iptables-save``), and that the next plan is empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from egress_rules.compiler import compile
from egress_rules.demo import demo_state
from egress_rules.model.addresses import Family
from egress_rules.model.config import Config
from egress_rules.model.ruleset import RuleSet
from egress_rules.plan import plan, render_plan
from egress_rules.plan.model import DeleteNftTable
from tests.fakes.nft import foreign_items, ours_snapshot, reference_snapshot

from .kernel_node import node_namespace
from .netns import run as ns_run
from .test_nft_support import apply_nft_outputs, converge_nft_node, observe_nft_node

pytestmark = pytest.mark.kernel

CONFIG = Config()
T4 = {"family": "ip", "table": "egress_rules"}
FOREIGN_NFT = """table inet cni {
	set pods {
		type ipv4_addr
		flags interval
		elements = { 10.244.0.0/16 }
	}
	chain forward_cni {
		type filter hook forward priority 0; policy accept;
		ip saddr @pods counter accept
	}
}
"""


@pytest.fixture
def node() -> Iterator[str]:
    """A namespace for node-b with our converged nft datapath and foreign objects next to it."""
    desired = compile(demo_state(), "node-b")
    spec = demo_state().node("node-b")
    assert spec is not None
    with node_namespace(spec, tunnel_device=CONFIG.tunnel_device) as ns:
        first = converge_nft_node(ns, desired)
        assert first.nft and first.routing
        for argv in (("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.244.0.0/16", "!", "-d",
                      "10.244.0.0/16", "-j", "MASQUERADE"),
                     ("ip6tables", "-t", "nat", "-A", "POSTROUTING", "-s", "fd00:244::/32", "-j", "MASQUERADE"),
                     ("iptables", "-t", "filter", "-N", "KUBE-FORWARD"),
                     ("iptables", "-t", "filter", "-A", "FORWARD", "-j", "KUBE-FORWARD"),
                     ("iptables", "-t", "filter", "-A", "KUBE-FORWARD", "-m", "mark", "--mark", "0x4000/0x4000",
                      "-m", "comment", "--comment", "kube: accept marked", "-j", "ACCEPT"),
                     ("nft", "-f", "-"),
                     ("ip", "rule", "add", "fwmark", "0x4000/0x4000", "table", "200", "pref", "100")):
            ns_run(ns, *argv, input=FOREIGN_NFT if argv[0] == "nft" else None)
        yield ns


def _iptables(ns: str) -> dict[str, str]:
    """Both families' iptables-save without dates and counters."""
    return {tool: "".join(line + "\n" for line in ns_run(ns, tool).stdout.splitlines()
                          if not line.startswith("#"))
            for tool in ("iptables-save", "ip6tables-save")}


def _nft(ns: str, *commands: dict[str, Any]) -> None:
    ns_run(ns, "nft", "-j", "-f", "-", input=json.dumps({"nftables": list(commands)}))


def _handles(ns: str, chain: str) -> list[int]:
    return [i["rule"]["handle"] for i in json.loads(ns_run(ns, "nft", "-j", "list", "ruleset").stdout)["nftables"]
            if "rule" in i and i["rule"]["table"] == "egress_rules" and i["rule"]["family"] == "ip"
            and i["rule"]["chain"] == chain]


def _damage(ns: str, damage: str) -> None:
    if damage == "rule, set, element, foreign table and foreign rule":
        handle = _handles(ns, "EGRESSGATEWAY-MARK-REQUEST")[1]
        _nft(ns,
             {"delete": {"rule": {**T4, "chain": "EGRESSGATEWAY-MARK-REQUEST", "handle": handle}}},
             {"add": {"set": {**T4, "name": "egress-src4-0000000000000000000", "type": "ipv4_addr",
                              "flags": ["interval"], "elem": ["10.244.9.9"]}}},
             {"delete": {"element": {**T4, "name": "egress-cluster-cidr-v4",
                                     "elem": [{"prefix": {"addr": "10.244.0.0", "len": 16}}]}}},
             {"add": {"element": {**T4, "name": "egress-cluster-cidr-v4",
                                  "elem": [{"range": ["10.244.0.0", "10.244.0.200"]}, "10.200.0.1"]}}},
             {"add": {"table": {"family": "ip6", "name": "other"}}},
             {"add": {"chain": {"family": "ip6", "table": "other", "name": "early", "type": "filter",
                                "hook": "prerouting", "prio": -300}}})
        ns_run(ns, "iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-s", "10.244.9.0/24", "-j", "RETURN")
    elif damage == "priority and hook rules":
        _nft(ns, {"delete": {"chain": {**T4, "name": "nat_postrouting"}}},
             {"add": {"chain": {**T4, "name": "nat_postrouting", "type": "nat", "hook": "postrouting", "prio": 101}}},
             {"add": {"rule": {**T4, "chain": "nat_postrouting", "expr": [
                 {"jump": {"target": "EGRESSGATEWAY-NO-SNAT"}}]}}})
    elif damage == "accept in place of the identity snat, and a counter object":
        handle = _handles(ns, "EGRESSGATEWAY-NO-SNAT")[0]
        _nft(ns, {"replace": {"rule": {**T4, "chain": "EGRESSGATEWAY-NO-SNAT", "handle": handle,
                                       "comment": "egress-rules: no snat", "expr": [{"match": {
                                           "op": "==", "left": {"&": [{"meta": {"key": "mark"}}, 0xFFFFFF00]},
                                           "right": 0x12000000}}, {"accept": None}]}}},
             {"add": {"counter": {**T4, "name": "debug"}}})
    elif damage == "set flags changed":
        ns_run(ns, "nft", "delete", "table", "ip6", "egress_rules")
        _nft(ns, {"add": {"table": {"family": "ip6", "name": "egress_rules"}}},
             {"add": {"set": {"family": "ip6", "table": "egress_rules", "name": "egress-cluster-cidr-v6",
                              "type": "ipv6_addr", "flags": ["interval", "timeout"]}}})
    elif damage == "rules flushed":
        ns_run(ns, "nft", "flush", "table", "ip", "egress_rules")
    else:
        raise AssertionError(damage)


DAMAGES = ["rule, set, element, foreign table and foreign rule", "priority and hook rules",
           "accept in place of the identity snat, and a counter object", "set flags changed", "rules flushed"]


def _restored(ns: str, desired: RuleSet) -> None:
    observed = observe_nft_node(ns, desired.config)
    assert observed.nft is not None
    assert ours_snapshot(observed.nft) == reference_snapshot(desired)
    again = plan(desired, observed)
    assert again.is_empty, again.drift
    assert render_plan(again, desired.config) == ()


@pytest.mark.parametrize("damage", DAMAGES)
def test_damage_is_repaired_and_foreign_objects_survive(node: str, damage: str) -> None:
    desired = compile(demo_state(), "node-b")
    _damage(node, damage)
    listing = ns_run(node, "nft", "-j", "list", "ruleset").stdout
    foreign, iptables = foreign_items(listing, CONFIG), _iptables(node)
    rules = json.loads(ns_run(node, "ip", "-j", "rule").stdout)
    result = plan(desired, observe_nft_node(node, CONFIG))
    assert result.drift, "the damage must show as drift"
    apply_nft_outputs(node, render_plan(result, CONFIG))
    _restored(node, desired)
    assert foreign_items(ns_run(node, "nft", "-j", "list", "ruleset").stdout, CONFIG) == foreign
    assert _iptables(node) == iptables
    assert json.loads(ns_run(node, "ip", "-j", "rule").stdout) == rules


def test_policy_changes_and_a_disabled_family(node: str) -> None:
    state = demo_state()
    foreign = foreign_items(ns_run(node, "nft", "-j", "list", "ruleset").stdout, CONFIG)
    fewer = attrs.evolve(state, policies=state.policies[1:])
    for step in (fewer, state):
        converge_nft_node(node, compile(step, "node-b"))
        _restored(node, compile(step, "node-b"))
    ipv4_only = compile(attrs.evolve(state, policies=[p for p in state.policies if p.egress_ip.ipv6 is None
                                                      and not p.egress_ip.use_node_ip]),
                        "node-b", attrs.evolve(CONFIG, ipv6=False))
    assert DeleteNftTable(Family.IPV6) in converge_nft_node(node, ipv4_only).nft
    _restored(node, ipv4_only)
    assert foreign_items(ns_run(node, "nft", "-j", "list", "ruleset").stdout, CONFIG) == foreign
