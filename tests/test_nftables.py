"""The nftables JSON backend: structure, priorities, semantic translations and their notes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from egress_rules.backends.nftables import NftablesBackend, base_chain_priority, nat_chains
from egress_rules.compiler import compile
from egress_rules.errors import UnsupportedError
from egress_rules.model.config import Config
from egress_rules.model.ruleset import BuiltinChain, NetfilterTable
from tests import scenarios


def commands(scenario: str, node: str, config: Config | None = None) -> list[dict[str, Any]]:
    ruleset = compile(scenarios.SCENARIOS[scenario](), node, config or Config())
    [output] = NftablesBackend().render(ruleset)
    document = json.loads(output.text)
    assert list(document) == ["nftables"]
    result: list[dict[str, Any]] = document["nftables"]
    return result


def test_table_is_replaced_atomically_and_nothing_else_is_named() -> None:
    cmds = commands("demo", "node-b")
    assert cmds[0] == {"metainfo": {"json_schema_version": 1}}
    for family in ("ip", "ip6"):
        ref = {"family": family, "name": "egress_rules"}
        start = cmds.index({"add": {"table": ref}})
        assert cmds[start + 1: start + 3] == [{"delete": {"table": ref}}, {"add": {"table": ref}}]
    tables = {json.dumps([c.get("family"), c.get("table", c.get("name"))])
              for cmd in cmds[1:] for verb in cmd.values() for c in verb.values()}
    assert tables == {'["ip", "egress_rules"]', '["ip6", "egress_rules"]'}
    assert not any("flush" in cmd for cmd in cmds)


def test_base_chain_priorities_are_integers_one_below_iptables() -> None:
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"] for c in commands("one-policy", "node-a")
              if "chain" in c.get("add", {}) and "hook" in c["add"]["chain"] and c["add"]["chain"]["family"] == "ip"}
    assert {name: chain["prio"] for name, chain in chains.items()} == {
        "mangle_prerouting": -151, "mangle_forward": -151, "mangle_postrouting": -151,
        "filter_forward": -1, "filter_output": -1, "nat_postrouting": 99}
    assert all(type(chain["prio"]) is int for chain in chains.values())
    assert chains["nat_postrouting"]["type"] == "nat"
    assert base_chain_priority(NetfilterTable.NAT, BuiltinChain.POSTROUTING) == 99


def _rules(cmds: list[dict[str, Any]], chain: str, family: str = "ip") -> list[dict[str, Any]]:
    return [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})
            and c["add"]["rule"]["chain"] == chain and c["add"]["rule"]["family"] == family]


def test_no_snat_accept_becomes_an_identity_snat() -> None:
    cmds = commands("one-policy", "node-a")
    [keep] = _rules(cmds, "EGRESSGATEWAY-NO-SNAT")
    assert keep["expr"][-1] == {"snat": {"addr": {"payload": {"protocol": "ip", "field": "saddr"}}}}
    [keep6] = _rules(cmds, "EGRESSGATEWAY-NO-SNAT", "ip6")
    assert keep6["expr"][-1] == {"snat": {"addr": {"payload": {"protocol": "ip6", "field": "saddr"}}}}
    # Outside nat, an accept stays an accept.
    guard, filter_keep = _rules(cmds, "filter_forward")
    assert filter_keep["expr"][-1] == {"accept": None}
    assert guard["expr"][-1] == {"drop": None}


def test_mark_and_goto_and_sets() -> None:
    ruleset = compile(scenarios.one_policy(), "node-a")
    mark = ruleset.node_mark("node-b")
    assert mark is not None
    cmds = commands("one-policy", "node-a")
    [request] = _rules(cmds, "EGRESSGATEWAY-MARK-REQUEST")
    assert request["expr"][-1] == {"goto": {"target": f"EGRESSGATEWAY-TO-{mark:08X}"}}
    assert request["expr"][2] == {"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": "original"}}
    [set_mark] = _rules(cmds, f"EGRESSGATEWAY-TO-{mark:08X}")
    assert set_mark["expr"] == [{"mangle": {"key": {"meta": {"key": "mark"}}, "value": {
        "|": [{"&": [{"meta": {"key": "mark"}}, 0xFF]}, mark]}}}]
    sets = {c["add"]["set"]["name"]: c["add"]["set"] for c in cmds if "set" in c.get("add", {})}
    src = request["expr"][0]["match"]["right"][1:]
    assert sets[src]["elem"] == ["10.244.1.10"] and sets[src]["flags"] == ["interval"]


def test_zero_prefix_and_empty_sets() -> None:
    cmds = commands("empty-destinations", "node-a")
    sets = [c["add"]["set"] for c in cmds if "set" in c.get("add", {})]
    assert all("elem" not in s or s["elem"] for s in sets), "nft rejects an empty elem list"


def test_comments_are_capped_at_128_bytes() -> None:
    long_name = "x" * 200
    state = scenarios.one_policy()
    policy = state.policies[0]
    import attrs

    state = attrs.evolve(state, policies=[attrs.evolve(policy, name=long_name)])
    [output] = NftablesBackend().render(compile(state, "node-a"))
    comments = [c["add"]["rule"].get("comment", "") for c in json.loads(output.text)["nftables"]
                if "rule" in c.get("add", {})]
    assert max(len(c.encode()) for c in comments) == 128


def test_unfaithful_accepts_are_reported_and_strict_mode_refuses_them() -> None:
    ruleset = compile(scenarios.one_policy(), "node-a")
    [output] = NftablesBackend().render(ruleset)
    [note] = output.notes
    assert "IPv4 filter FORWARD" in note and "IPv6 filter OUTPUT" in note and "mangle POSTROUTING" in note
    with pytest.raises(UnsupportedError, match="keep-mark accepts"):
        NftablesBackend(strict=True).render(ruleset)


def test_nat_reachability() -> None:
    rules = compile(scenarios.one_policy(), "node-b").families[0]
    assert nat_chains(rules) == {"nat_postrouting", "EGRESSGATEWAY-SNAT-EIP", "EGRESSGATEWAY-NO-SNAT"}
