"""The ``nft -j list`` parser on real listings (captured by ``tests/data/observed/capture-nft.sh``) and bad input."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egress_rules.compiler import compile
from egress_rules.demo import demo_state
from egress_rules.errors import ParseError
from egress_rules.model.addresses import Family, parse_address, parse_cidr
from egress_rules.model.config import Config
from egress_rules.model.ruleset import (
    Accept,
    ConntrackDirectionMatch,
    CtDirection,
    Direction,
    Drop,
    Goto,
    Jump,
    MarkMatch,
    Masquerade,
    Return,
    RuleBody,
    SetMark,
    SetMatch,
    Snat,
)
from egress_rules.observed import ObservedState, Ownership, parse_ip_routes, parse_ip_rules, parse_nft_list
from egress_rules.observed.nft import NftHook, NftRuleset, rule_body
from egress_rules.plan import plan
from egress_rules.plan.nft import comparable, desired_chains

DATA = Path(__file__).parent / "data" / "observed"
OWN = Ownership(Config())
FULL = 0xFFFFFFFF


def read(name: str) -> str:
    return (DATA / name).read_text()


def listing(name: str = "nft-list.json") -> NftRuleset:
    return parse_nft_list(read(name), OWN)


def test_our_tables_are_typed_and_equal_the_desired_ones() -> None:
    parsed = listing()
    desired = compile(demo_state(), "node-a")
    assert parsed.version == "1.0.6"
    assert [t.family for t in parsed.tables] == [Family.IPV4, Family.IPV6]
    for rules in desired.families:
        table = parsed.table(rules.family)
        assert table is not None and table.name == "egress_rules"
        wanted = desired_chains(rules)
        assert [(c.name, c.hook) for c in table.chains] == [(c.name, c.hook) for c in wanted]
        for chain in wanted:
            observed = table.chain(chain.name)
            assert observed is not None
            assert [r.body for r in observed.rules] == [comparable(r) for r in chain.rules]
        assert {s.name: s.members for s in table.sets} == {s.name: s.members for s in rules.sets}
        assert all(s.set_type == f"ipv{rules.family.value}_addr" and s.flags == ("interval",) for s in table.sets)
    ours = parsed.table(Family.IPV4)
    assert ours is not None
    nat = ours.chain("nat_postrouting")
    assert nat is not None and nat.hook == NftHook("nat", "postrouting", 99, "accept")


def test_everything_else_is_foreign_and_kept_as_names() -> None:
    foreign = {(t.family, t.name): t for t in listing().foreign}
    assert list(foreign) == [("ip", "nat"), ("ip6", "nat"), ("ip", "filter"), ("inet", "cni"),
                             ("inet", "egress_rules"), ("ip", "egress_rules_other")]
    assert foreign[("ip", "filter")].chains == ("KUBE-FORWARD", "FORWARD")
    assert foreign[("ip", "filter")].rule_count == 2
    assert foreign[("inet", "cni")].sets == ("pods",)


def test_the_captured_nft_node_needs_no_changes() -> None:
    # capture-nft.sh and capture.sh both load the demo's node-a output: nft rules, ip rules and routes.
    observed = ObservedState(
        nft=listing(),
        ip_rules={Family.IPV4: parse_ip_rules(read("ip-rule.v4.json"), Family.IPV4, OWN),
                  Family.IPV6: parse_ip_rules(read("ip-rule.v6.json"), Family.IPV6, OWN)},
        routes={Family.IPV4: parse_ip_routes(read("ip-route.v4.json"), Family.IPV4, OWN),
                Family.IPV6: parse_ip_routes(read("ip-route.v6.json"), Family.IPV6, OWN)},
    )
    result = plan(compile(demo_state(), "node-a"), observed)
    assert result.is_empty, result.drift
    assert result.drift == ()


def _rules_by_comment(document: dict[str, Any], family: str = "ip") -> dict[str, tuple[str, list[Any]]]:
    found = {}
    for item in document["nftables"]:
        body = item.get("rule") or item.get("add", {}).get("rule")
        if body is not None and body["family"] == family:
            found[body.get("comment", "")] = (body["chain"], body["expr"])
    return found


SMALL = MarkMatch(0x12000000, 0xFFFFFF00)
# comment -> the body the listed rule must read as (None: not a form we write).
EXPECTED: dict[str, RuleBody | None] = {
    "to nat": RuleBody((), Jump("forms-nat"), "to nat"),
    "to filter": RuleBody((), Jump("forms-filter"), "to filter"),
    "identity snat": RuleBody((SMALL,), Accept(), "identity snat"),
    "accept in nat": None,
    "snat to eip": RuleBody((SetMatch("forms-elems", Direction.SRC),), Snat(parse_address("192.0.2.50")),
                            "snat to eip"),
    "masquerade": RuleBody((), Masquerade(), "masquerade"),
    "counted return": RuleBody((), Return(), "counted return"),
    "mark full mask": RuleBody((MarkMatch(0x12345678, FULL),), Accept(), "mark full mask"),
    "mark no mask": RuleBody((MarkMatch(7, FULL),), Accept(), "mark no mask"),
    "mark high 24": RuleBody((SMALL,), Accept(), "mark high 24"),
    "mark high 8 negated": RuleBody((MarkMatch(0x26000000, 0xFF000000, negate=True),), Return(),
                                    "mark high 8 negated"),
    "mark zero mask": RuleBody((MarkMatch(0, 0),), Return(), "mark zero mask"),
    "mark high 8 zero value": RuleBody((MarkMatch(0, 0xFF000000),), Return(), "mark high 8 zero value"),
    "mark low bits": RuleBody((MarkMatch(5, 0xFF),), Return(), "mark low bits"),
    "mark middle bits": RuleBody((MarkMatch(0x10000, 0xFF0000),), Return(), "mark middle bits"),
    "setmark owned": RuleBody((), SetMark(0x26646D00, 0xFFFFFF00), "setmark owned"),
    "setmark zero value": RuleBody((), SetMark(0, 0x00FFFFFF), "setmark zero value"),
    "setmark or": RuleBody((), SetMark(0xF, 0xF), "setmark or"),
    "setmark whole": RuleBody((), SetMark(5, FULL), "setmark whole"),
    "setmark plain value": RuleBody((), SetMark(7, FULL), "setmark plain value"),
    "setmark zero": RuleBody((), SetMark(0, FULL), "setmark zero"),
    "setmark identity": RuleBody((), SetMark(0, 0), "setmark identity"),
    "sets and ct": RuleBody((SetMatch("forms-elems", Direction.SRC), SetMatch("forms-all", Direction.DST, True),
                             ConntrackDirectionMatch(CtDirection.ORIGINAL)), Goto("forms-target"), "sets and ct"),
    "ct reply": RuleBody((ConntrackDirectionMatch(CtDirection.REPLY),), Return(), "ct reply"),
    "drop is not ours": RuleBody((), Drop(), "drop is not ours"),
    'a "quoted" \\ comment': RuleBody((), Accept(), 'a "quoted" \\ comment'),
    "": RuleBody((), Accept(), ""),
    "goto target accept": RuleBody((), Accept(), "goto target accept"),
}


def test_every_list_form_reads_back_as_what_the_input_meant() -> None:
    parsed = listing("nft-forms.list.json")
    table = parsed.table(Family.IPV4)
    assert table is not None
    bodies = {r.text: r.body for c in table.chains for r in c.rules}
    listed = {json.loads(text).get("comment", ""): body for text, body in bodies.items()}
    assert listed == EXPECTED
    # The input forms (what a backend writes) read as the same bodies as the list forms.
    written = _rules_by_comment(json.loads(read("nft-forms.input.json")))
    nat = {"nat_postrouting", "forms-nat"}
    for comment, (chain, expr) in written.items():
        assert rule_body(expr, comment, "ip", chain in nat) == EXPECTED[comment], comment
    assert set(written) == set(EXPECTED)


def test_ipv6_list_forms() -> None:
    table = listing("nft-forms.list.json").table(Family.IPV6)
    assert table is not None
    chain = table.chain("nat_postrouting")
    assert chain is not None
    assert [r.body for r in chain.rules] == [
        RuleBody((SetMatch("forms-elems6", Direction.SRC),), Accept(), "identity snat6"),
        RuleBody((), Snat(parse_address("2001:db8:1::50")), "snat6")]
    elems = table.set("forms-elems6")
    assert elems is not None
    assert elems.elements[0] == (parse_cidr("2001:db8::/64"),)
    assert [str(c) for c in elems.elements[2]] == ["2001:db8:2::1/128", "2001:db8:2::2/127", "2001:db8:2::4/126",
                                                   "2001:db8:2::8/127"]
    everything = table.set("forms-all6")
    assert everything is not None and everything.members == (parse_cidr("::/0"),)


def test_set_elements_keep_their_stored_intervals() -> None:
    table = listing("nft-forms.list.json").table(Family.IPV4)
    assert table is not None
    elems = table.set("forms-elems")
    assert elems is not None
    assert [[str(c) for c in e] for e in elems.elements] == [
        ["10.0.0.0/24"], ["10.0.1.0/24"], ["10.4.0.1/32"], ["10.5.0.1/32"], ["10.5.0.2/32"], ["10.6.0.0/16"],
        ["10.7.0.5/32"], ["10.8.0.0/24"], ["10.9.0.1/32", "10.9.0.2/31", "10.9.0.4/30", "10.9.0.8/31"]]
    # Compared as collapsed prefixes: adjacent elements merge, the range stays its prefixes.
    assert [str(c) for c in elems.members] == [
        "10.0.0.0/23", "10.4.0.1/32", "10.5.0.1/32", "10.5.0.2/32", "10.6.0.0/16", "10.7.0.5/32", "10.8.0.0/24",
        "10.9.0.1/32", "10.9.0.2/31", "10.9.0.4/30", "10.9.0.8/31"]
    shapes = {s.name: (s.set_type, s.flags, len(s.elements)) for s in table.sets}
    assert shapes == {"forms-elems": ("ipv4_addr", ("interval",), 9), "forms-all": ("ipv4_addr", ("interval",), 1),
                      "forms-empty": ("ipv4_addr", ("interval",), 0), "forms-plain": ("ipv4_addr", (), 1),
                      "forms-ports": ("inet_service", (), 0)}
    assert table.objects == (("counter", "forms-counter"),)


def test_a_single_table_listing_parses() -> None:
    parsed = parse_nft_list(read("nft-list-table.json"), OWN, "nft -j list table ip egress_rules")
    assert [t.family for t in parsed.tables] == [Family.IPV4] and parsed.foreign == ()
    assert parsed.tables[0] == listing().tables[0]


def _replace_in_listing(old: str, new: str) -> str:
    text = read("nft-list.json")
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty output"),
    ('{"nftables": [', "not valid JSON"),
    ("[]", 'expected {"nftables"'),
    ('{"nftables": {}}', 'expected {"nftables"'),
    ('{"nftables": [5]}', "item 0"),
    ('{"nftables": [{"metainfo": {"json_schema_version": 2}}]}', "json_schema_version"),
    ('{"nftables": [{"rule": {"family": "ip", "table": "egress_rules", "chain": "x"}}]}', "before the table"),
    ('{"nftables": [{"table": {"family": "ip", "name": "egress_rules"}}]}', "'handle' missing"),
    ('{"nftables": [{"table": {"family": "ip", "name": "t", "handle": 1}},'
     ' {"table": {"family": "ip", "name": "t", "handle": 2}}]}', "listed twice"),
])
def test_garbled_listing(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_nft_list(text, OWN)


@pytest.mark.parametrize(("old", "new", "message"), [
    ('"prio": 99', '"prio": "srcnat - 1"', "no integer prio"),
    ('"elem": ["10.244.1.10"]', '"elem": ["10.244.1.10/32"]', "bad element"),
    ('"elem": ["10.244.1.10"]', '"elem": [{"range": ["10.244.1.10", "10.244.1.1"]}]', "bad element"),
    ('"elem": ["10.244.1.10"]', '"elem": ["fd00::1"]', "bad element"),
    ('"chain": "EGRESSGATEWAY-NO-SNAT"', '"chain": "NO-SUCH-CHAIN"', "not listed before it"),
    ('"handle": 36', '"handle": "36"', "'handle' missing or not a int"),
    ('"handle": 36', '"handle": 35', "rule handle 35 listed twice"),
    ('"expr": [{"jump": {"target": "EGRESSGATEWAY-MARK-REQUEST"}}]',
     '"expr": {"jump": {"target": "EGRESSGATEWAY-MARK-REQUEST"}}', "'expr' missing or not a list"),
])
def test_garbled_objects_of_our_table(old: str, new: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse_nft_list(_replace_in_listing(old, new), OWN)


def test_truncated_listing_is_an_error_not_a_smaller_ruleset() -> None:
    text = read("nft-list.json")
    for cut in (len(text) // 3, len(text) // 2, len(text) - 3):
        with pytest.raises(ParseError, match="truncated"):
            parse_nft_list(text[:cut], OWN)


def test_unknown_forms_in_foreign_tables_are_not_errors() -> None:
    text = _replace_in_listing('{"xt": {"type": "target", "name": "MASQUERADE"}}', '{"future": {"thing": [1]}}')
    assert [t.name for t in parse_nft_list(text, OWN).foreign][:1] == ["nat"]


def test_a_table_named_like_ours_in_another_configuration_is_foreign() -> None:
    own = Ownership(Config(nft_table="other_rules"))
    parsed = parse_nft_list(read("nft-list.json"), own)
    assert parsed.tables == ()
    assert ("ip", "egress_rules") in {(t.family, t.name) for t in parsed.foreign}


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2, 2**33) | st.text(max_size=8)
                    | st.sampled_from(["@egress-cluster-cidr-v4", "10.0.0.1", "fd00::1", "mark", "saddr", "nat"]),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
                        ["prefix", "addr", "len", "range", "&", "|", "meta", "key", "op", "left", "right", "elem",
                         "payload", "protocol", "field", "snat", "mangle", "value", "jump", "target", "handle"]),
                        inner, max_size=3), max_leaves=6)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            found += _paths(item, (*path, position))
    return found


def _replaced(document: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    copy = dict(document) if isinstance(document, dict) else list(document)
    copy[path[0]] = _replaced(document[path[0]], path[1:], value)
    return copy


@settings(max_examples=300)
@given(st.sampled_from(["nft-list.json", "nft-forms.list.json"]), st.data(), JSON)
def test_any_edit_of_a_listing_parses_or_is_a_parse_error(name: str, data: st.DataObject, value: Any) -> None:
    document = json.loads(read(name))
    path = data.draw(st.sampled_from(_paths(document)))
    with contextlib.suppress(ParseError):
        parse_nft_list(json.dumps(_replaced(document, path, value)), OWN)
