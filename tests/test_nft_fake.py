"""The nft fake against real listings: it prints what nft 1.0.6 printed, and fails where nft fails.

The listings were captured from the kernel (``tests/data/observed/capture-nft.sh``);
``tests/kernel/test_nft_fake.py`` repeats the comparison live, for planned batches too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from egress_rules.backends.nftables import NftablesBackend
from egress_rules.compiler import compile
from egress_rules.demo import demo_state
from tests.fakes.ipset import ToolError
from tests.fakes.nft import FakeNft

DATA = Path(__file__).parent / "data" / "observed"


def without_handles(listing: str, tables: set[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """The listing's objects without handles (the kernel numbers them its own way), optionally of some tables."""
    result = []
    for item in json.loads(listing)["nftables"]:
        [(kind, body)] = item.items()
        if kind == "metainfo":
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        table = (body["family"], body["name"] if kind == "table" else body["table"])
        if tables is None or table in tables:
            result.append({kind: body})
    return result


def test_every_list_form_is_printed_as_nft_prints_it() -> None:
    fake = FakeNft()
    fake.apply((DATA / "nft-forms.input.json").read_text())
    assert without_handles(fake.list_ruleset()) == without_handles((DATA / "nft-forms.list.json").read_text())


def test_a_full_render_is_listed_as_the_kernel_listed_it() -> None:
    fake = FakeNft()
    [output] = NftablesBackend().render(compile(demo_state(), "node-a"))
    fake.apply(output.text)
    ours = {("ip", "egress_rules"), ("ip6", "egress_rules")}
    assert without_handles(fake.list_ruleset()) == without_handles((DATA / "nft-list.json").read_text(), ours)


def test_seeded_tables_are_listed_verbatim_and_never_changed() -> None:
    real = (DATA / "nft-list.json").read_text()
    fake = FakeNft()
    fake.seed(real)
    assert json.loads(fake.list_ruleset()) == json.loads(real)
    with pytest.raises(ToolError, match="seeded"):
        fake.apply('{"nftables": [{"flush": {"chain": {"family": "ip", "table": "nat", "name": "POSTROUTING"}}}]}')


def batch(*commands: dict[str, Any]) -> str:
    return json.dumps({"nftables": list(commands)})


TABLE = {"family": "ip", "table": "t"}


def _base() -> FakeNft:
    fake = FakeNft()
    fake.apply(batch(
        {"add": {"table": {"family": "ip", "name": "t"}}},
        {"add": {"set": {**TABLE, "name": "s", "type": "ipv4_addr", "flags": ["interval"],
                         "elem": [{"prefix": {"addr": "10.0.0.0", "len": 24}}, "10.1.0.1"]}}},
        {"add": {"chain": {**TABLE, "name": "b", "type": "filter", "hook": "forward", "prio": -1}}},
        {"add": {"chain": {**TABLE, "name": "r"}}},
        {"add": {"rule": {**TABLE, "chain": "b", "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@s"}},
            {"jump": {"target": "r"}}]}}},
    ))
    return fake


# Each batch fails in nft 1.0.6 with the message the fake imitates (see the reference page, section 2).
FAILING: dict[str, tuple[dict[str, Any], str]] = {
    "overlapping elements in one command": ({"add": {"element": {**TABLE, "name": "s", "elem": [
        {"prefix": {"addr": "10.2.0.0", "len": 16}}, {"prefix": {"addr": "10.2.1.0", "len": 24}}]}}},
        "conflicting intervals"),
    "element overlapping a stored one": ({"add": {"element": {**TABLE, "name": "s", "elem": [
        {"prefix": {"addr": "10.0.0.0", "len": 16}}]}}}, "overlaps with an existing one"),
    "deleting part of a stored interval": ({"delete": {"element": {**TABLE, "name": "s", "elem": [
        {"prefix": {"addr": "10.0.0.0", "len": 25}}]}}}, "element does not exist"),
    "a CIDR written as a string": ({"add": {"element": {**TABLE, "name": "s", "elem": ["10.9.0.0/16"]}}},
                                   "resolve hostname"),
    "an empty element list": ({"add": {"element": {**TABLE, "name": "s", "elem": []}}}, "Invalid set elem"),
    "a set a rule names": ({"delete": {"set": {**TABLE, "name": "s"}}}, "busy"),
    "a chain a rule jumps to": ({"delete": {"chain": {**TABLE, "name": "r"}}}, "busy"),
    "a new priority": ({"add": {"chain": {**TABLE, "name": "b", "type": "filter", "hook": "forward", "prio": 5}}},
                       "Operation not supported"),
    "snat in a filter chain": ({"add": {"rule": {**TABLE, "chain": "r", "expr": [{"snat": {"addr": "1.2.3.4"}}]}}},
                               "Operation not supported"),
    "a missing rule handle": ({"delete": {"rule": {**TABLE, "chain": "b", "handle": 999}}}, "No such file"),
    "a jump to a missing chain": ({"add": {"rule": {**TABLE, "chain": "b", "expr": [{"jump": {"target": "x"}}]}}},
                                  "No such file"),
    "a delete of a missing table": ({"delete": {"table": {"family": "ip6", "name": "t"}}}, "No such file"),
}


@pytest.mark.parametrize("case", sorted(FAILING))
def test_failing_batches_change_nothing(case: str) -> None:
    fake = _base()
    before = fake.list_ruleset()
    command, message = FAILING[case]
    # A valid command first: the failure must undo it too (the batch is one transaction).
    with pytest.raises(ToolError, match=message):
        fake.apply(batch({"add": {"element": {**TABLE, "name": "s", "elem": ["10.3.0.1"]}}}, command))
    assert fake.list_ruleset() == before


def test_what_nft_accepts() -> None:
    fake = _base()
    fake.apply(batch(
        # Deleting an element and adding one overlapping it in the same transaction; re-adding an identical one.
        {"delete": {"element": {**TABLE, "name": "s", "elem": [{"prefix": {"addr": "10.0.0.0", "len": 24}}]}}},
        {"add": {"element": {**TABLE, "name": "s", "elem": [{"prefix": {"addr": "10.0.0.0", "len": 16}}, "10.1.0.1"]}}},
        # A base chain's priority changes by deleting (rules go with it) and re-adding it; add table is a no-op.
        {"delete": {"chain": {**TABLE, "name": "b"}}},
        {"add": {"chain": {**TABLE, "name": "b", "type": "filter", "hook": "forward", "prio": 5}}},
        {"add": {"table": {"family": "ip", "name": "t"}}},
    ))
    items = json.loads(fake.list_ruleset())["nftables"]
    [elements] = [i["set"]["elem"] for i in items if "set" in i]
    assert elements == [{"prefix": {"addr": "10.0.0.0", "len": 16}}, "10.1.0.1"]
    [chain] = [i["chain"] for i in items if "chain" in i and i["chain"]["name"] == "b"]
    assert chain["prio"] == 5 and not [i for i in items if "rule" in i and i["rule"]["chain"] == "b"]


def test_inserts_before_a_handle_keep_their_order_and_replace_keeps_the_handle() -> None:
    fake = _base()
    handle = next(r["rule"]["handle"] for r in json.loads(fake.list_ruleset())["nftables"] if "rule" in r)
    fake.apply(batch(
        {"insert": {"rule": {**TABLE, "chain": "b", "handle": handle, "comment": "A", "expr": [{"accept": None}]}}},
        {"insert": {"rule": {**TABLE, "chain": "b", "handle": handle, "comment": "B", "expr": [{"accept": None}]}}},
        {"replace": {"rule": {**TABLE, "chain": "b", "handle": handle, "comment": "C", "expr": [{"return": None}]}}},
        {"add": {"rule": {**TABLE, "chain": "b", "comment": "D", "expr": [{"accept": None}]}}},
    ))
    rules = [i["rule"] for i in json.loads(fake.list_ruleset())["nftables"] if "rule" in i]
    assert [(r.get("comment"), r["handle"] == handle) for r in rules] == [
        ("A", False), ("B", False), ("C", True), ("D", False)]
