"""Observed-state parsers on real dumps (captured from the tools in a namespace) and on garbled input."""

from __future__ import annotations

from pathlib import Path

import pytest

from egress_rules.compiler import compile
from egress_rules.demo import demo_state
from egress_rules.errors import ParseError
from egress_rules.model.addresses import Family
from egress_rules.model.config import Config
from egress_rules.observed import Ownership, parse_ip_routes, parse_ip_rules, parse_ipset_save, parse_iptables_save
from egress_rules.plan import plan

DATA = Path(__file__).parent / "data" / "observed"
OWN = Ownership(Config())


def read(name: str) -> str:
    return (DATA / name).read_text()


@pytest.mark.parametrize("name", ["iptables-save.nft.txt", "iptables-save.legacy.txt"])
def test_iptables_save_keeps_ours_typed_and_the_rest_opaque(name: str) -> None:
    dump = parse_iptables_save(read(name), Family.IPV4, OWN)
    assert dump.variant == ("nf_tables" if "nft" in name else "legacy")
    desired = compile(demo_state(), "node-a").family(Family.IPV4)
    assert desired is not None
    for chain in desired.chains:
        table = dump.table(chain.table.value)
        assert table is not None
        saved = table.chain(chain.name)
        assert saved is not None and saved.owned
        assert [r.body for r in saved.rules] == [r.body for r in chain.rules]
    nat = dump.table("nat")
    assert nat is not None
    postrouting = nat.chain("POSTROUTING")
    assert postrouting is not None
    assert [r.owned for r in postrouting.rules] == [True, True, False]
    assert postrouting.rules[2].body is None and "MASQUERADE" in postrouting.rules[2].text


def test_foreign_rule_with_escaped_quotes_is_kept_verbatim() -> None:
    dump = parse_iptables_save(read("iptables-save.nft.txt"), Family.IPV4, OWN)
    mangle = dump.table("mangle")
    assert mangle is not None
    prerouting = mangle.chain("PREROUTING")
    assert prerouting is not None
    assert prerouting.rules[0].text == ('-m comment --comment "cni: \\"quoted\\" accept" '
                                        "-m conntrack --ctstate ESTABLISHED -j ACCEPT")
    assert not prerouting.rules[0].owned
    filter_table = dump.table("filter")
    assert filter_table is not None
    kube = filter_table.chain("KUBE-FORWARD")
    assert kube is not None and not kube.owned


def test_nft_dump_warns_about_legacy_tables() -> None:
    dump = parse_iptables_save(read("iptables-save.nft.txt"), Family.IPV4, OWN)
    assert dump.notes == ()
    warning = "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n"
    text = read("iptables-save.nft.txt") + warning
    assert parse_iptables_save(text, Family.IPV4, OWN).notes[0].startswith("Warning: iptables-legacy")


def test_ipset_save() -> None:
    sets = {s.name: s for s in parse_ipset_save(read("ipset-save.txt"), OWN)}
    assert sets["egress-cluster-cidr-v4"].owned
    assert {str(m) for m in sets["egress-cluster-cidr-v4"].members} >= {"10.244.0.0/16", "192.0.2.1/32"}
    # Named like ours, but without a valid ownership check: foreign, and its entries are not kept.
    assert not sets["egress-src4-0123456789abcdef012"].owned
    assert sets["egress-src4-0123456789abcdef012"].members == frozenset()
    assert sets["egress-src4-0123456789abcdef012"].member_count == 1
    assert not sets["kube-foreign"].owned and sets["kube-foreign"].set_type == "hash:ip,port"


def test_ip_rules_and_routes() -> None:
    rules = parse_ip_rules(read("ip-rule.v4.json"), Family.IPV4, OWN)
    owned = [r for r in rules if r.owned]
    assert [(r.priority, r.mask, r.table) for r in owned] == [(99, 0xFFFFFF00, 3072), (99, 0xFFFFFF00, 3091)]
    foreign = [r for r in rules if not r.owned and r.mark is not None]
    assert [(r.priority, r.mark, r.mask, r.table) for r in foreign] == [(100, 0x4000, 0x4000, 200)]
    routes = parse_ip_routes(read("ip-route.v4.json"), Family.IPV4, OWN)
    assert sorted((r.table, str(r.via)) for r in routes if r.owned) == [(3072, "172.31.0.2"), (3091, "172.31.0.3")]
    assert any(r.table == 255 and r.route_type == "local" for r in routes)
    v6 = parse_ip_routes(read("ip-route.v6.json"), Family.IPV6, OWN)
    assert [str(r.via) for r in v6 if r.owned] == ["fd11::2"]


def test_the_captured_node_needs_no_changes() -> None:
    from tests.fakes.node import observe_dumps

    dumps = {"iptables-save": read("iptables-save.nft.txt"), "ip6tables-save": read("ip6tables-save.nft.txt"),
             "ipset save": read("ipset-save.txt"), "ip -4 -j rule": read("ip-rule.v4.json"),
             "ip -6 -j rule": read("ip-rule.v6.json"), "ip -4 -j route": read("ip-route.v4.json"),
             "ip -6 -j route": read("ip-route.v6.json")}
    result = plan(compile(demo_state(), "node-a"), observe_dumps(dumps, Config()))
    # A CNI rule was inserted above our mangle PREROUTING hook: ours moves back to the top, nothing else changes.
    assert [str(d) for d in result.drift] == [
        'misordered: mangle PREROUTING: rule 2: -m comment --comment "egress-rules: mark request" '
        "-j EGRESSGATEWAY-MARK-REQUEST"]
    assert not result.sets_before and not result.sets_after and not result.routing and not result.conntrack


@pytest.mark.parametrize(("text", "line"), [
    ("-A PREROUTING -j ACCEPT\n", 1),
    ("*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j ACCEPT\n", None),
    ("*mangle\n:PREROUTING ACCEPT [0:0]\n-A NOPE -j ACCEPT\nCOMMIT\n", 3),
    ('*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -m comment --comment "open\nCOMMIT\n', 3),
    ("*mangle\n*nat\n", 2),
    ("*mangle\n:PRE\nCOMMIT\n", 2),
    ("*mangle\nbogus line\nCOMMIT\n", 2),
    ("*mangle\nCOMMIT\n*mangle\nCOMMIT\n", 3),
])
def test_garbled_iptables_save(text: str, line: int | None) -> None:
    with pytest.raises(ParseError) as info:
        parse_iptables_save(text, Family.IPV4, OWN)
    assert info.value.line == line


def test_truncated_dump_is_an_error_not_a_smaller_state() -> None:
    text = read("iptables-save.nft.txt")
    with pytest.raises(ParseError, match="truncated"):
        parse_iptables_save(text[: text.rindex("COMMIT")], Family.IPV4, OWN)


CLUSTER_SET = "create egress-cluster-cidr-v4 hash:net family inet\nadd egress-cluster-cidr-v4 "


@pytest.mark.parametrize("text", ["add x 1.2.3.4\n", "create\n", "frobnicate x\n",
                                  f"{CLUSTER_SET}bad\n", f"{CLUSTER_SET}::1\n"])
def test_garbled_ipset_save(text: str) -> None:
    with pytest.raises(ParseError):
        parse_ipset_save(text, OWN)


@pytest.mark.parametrize("text", ['[{"priority": 1', "{}", '[{"table": "main"}]', '[{"priority": "x"}]',
                                  '[{"priority": 1, "fwmark": "zz"}]'])
def test_garbled_ip_rules(text: str) -> None:
    with pytest.raises(ParseError):
        parse_ip_rules(text, Family.IPV4, OWN)


@pytest.mark.parametrize("text", ['[{"dst": 5}]', '[{"dst": "fd11::/112"}]', '[{"dst": "default", "gateway": "x"}]',
                                  '[{"dst": "default", "table": "nosuch"}]',
                                  '[{"dst": "nonsense", "protocol": "230"}]'])
def test_garbled_routes(text: str) -> None:
    with pytest.raises(ParseError):
        parse_ip_routes(text, Family.IPV4, OWN)
