"""Backend serialization details: syntax forms, limits, ordering, failure without partial output."""

from __future__ import annotations

import attrs
import pytest

from egress_rules.backends import BACKENDS, render_all
from egress_rules.backends.ipset import IpsetBackend, maxelem_for
from egress_rules.backends.iptables import render_rule
from egress_rules.backends.text import quoted_comment, truncate_utf8
from egress_rules.compiler import compile
from egress_rules.errors import UnsupportedError
from egress_rules.model.addresses import Family, parse_address, parse_cidr
from egress_rules.model.cluster import ClusterState, EgressIP, Endpoint, Policy
from egress_rules.model.config import Config
from egress_rules.model.ruleset import (
    ConntrackDirectionMatch,
    CtDirection,
    Direction,
    Goto,
    MarkMatch,
    Masquerade,
    Provenance,
    Role,
    Rule,
    SetMark,
    SetMatch,
    Snat,
)
from tests import scenarios


def _rule(*matches: object, action: object, comment: str = "c") -> Rule:
    return Rule(tuple(matches), action, comment, Provenance(Role.MARK_REQUEST))  # type: ignore[arg-type]


def test_rule_forms_are_those_iptables_save_prints() -> None:
    rule = _rule(SetMatch("s", Direction.SRC), SetMatch("d", Direction.DST, negate=True),
                 ConntrackDirectionMatch(CtDirection.ORIGINAL), MarkMatch(0x26000000, 0xFF000000, negate=True),
                 action=SetMark(0x26000100, 0xFFFFFF00))
    assert render_rule(rule) == (
        '-m comment --comment "c" -m set --match-set s src -m set ! --match-set d dst '
        "-m conntrack --ctdir ORIGINAL -m mark ! --mark 0x26000000/0xff000000 "
        "-j MARK --set-xmark 0x26000100/0xffffff00")
    assert render_rule(_rule(action=Goto("X"))).endswith("-g X")
    assert render_rule(_rule(action=Snat(parse_address("2001:db8::1")))).endswith("-j SNAT --to-source 2001:db8::1")
    assert render_rule(_rule(action=Masquerade())).endswith("-j MASQUERADE")


def test_hooks_follow_chain_rules_in_position_order() -> None:
    [output] = BACKENDS["iptables"].render(compile(scenarios.one_policy(), "node-a"))
    nat = output.text.split("*nat\n")[1]
    lines = nat.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("-I POSTROUTING 1 ")))
    second = lines.index(next(line for line in lines if line.startswith("-I POSTROUTING 2 ")))
    assert first < second
    assert "EGRESSGATEWAY-SNAT-EIP" in lines[first] and "EGRESSGATEWAY-NO-SNAT" in lines[second]
    assert lines[-1] == "COMMIT"


def test_comment_truncation_keeps_utf8_whole() -> None:
    assert truncate_utf8("é" * 200, 255).encode() == ("é" * 127).encode()
    assert quoted_comment("x" * 300, 255, "iptables") == '"' + "x" * 255 + '"'


@pytest.mark.parametrize("text", ['a"b', "a\\b", "a\nb", "a'b", "a\x00b", "é"])
def test_unquotable_comments_are_refused(text: str) -> None:
    with pytest.raises(UnsupportedError):
        quoted_comment(text, 255, "iptables")


def test_a_failing_backend_returns_nothing() -> None:
    ruleset = compile(scenarios.one_policy(), "node-b")
    rules = ruleset.families[0]
    chain = rules.chains[0]
    bad_rule = attrs.evolve(chain.rules[0], comment='x" -j DROP "')
    bad = attrs.evolve(ruleset, families=(attrs.evolve(rules, chains=(attrs.evolve(chain, rules=(bad_rule,)),
                                                                        *rules.chains[1:])),))
    with pytest.raises(UnsupportedError):
        render_all(bad)


def test_ipset_replaces_each_set_through_a_scratch_set() -> None:
    [output] = IpsetBackend().render(compile(scenarios.one_policy(), "node-a"))
    lines = output.text.splitlines()
    assert lines[1] == "destroy egress-tmp-v4 -exist"
    src = next(line.split()[1] for line in lines if line.startswith("create egress-src4-"))
    block = lines[lines.index(next(x for x in lines if x.startswith(f"create {src} "))):]
    assert block[:5] == [
        f"create {src} hash:net family inet hashsize 1024 maxelem 65536 -exist",
        "create egress-tmp-v4 hash:net family inet hashsize 1024 maxelem 65536",
        "add egress-tmp-v4 10.244.1.10",
        f"swap egress-tmp-v4 {src}",
        "destroy egress-tmp-v4",
    ]


def test_ipset_splits_zero_prefixes() -> None:
    state = ClusterState(nodes=scenarios.NODES, cluster=scenarios.CLUSTER, policies=[
        Policy(name="all", gateway_node="node-b", sources=[Endpoint("10.244.1.10", "node-a")],
               destinations=["0.0.0.0/0", "10.0.0.0/8"], egress_ip=EgressIP(ipv4="192.0.2.50"))])
    [output] = IpsetBackend().render(compile(state, "node-a"))
    assert "add egress-tmp-v4 0.0.0.0/1\nadd egress-tmp-v4 128.0.0.0/1\n" in output.text
    assert "0.0.0.0/0" not in output.text and "10.0.0.0/8" not in output.text


def test_maxelem_grows_with_the_set_and_is_bounded() -> None:
    assert maxelem_for(10, 1 << 24, "s") == 65536
    assert maxelem_for(65537, 1 << 24, "s") == 131072
    with pytest.raises(UnsupportedError, match="limit"):
        maxelem_for(70000, 65536, "s")


def test_large_sets_get_a_large_maxelem() -> None:
    sources = [Endpoint(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", "node-a") for i in range(0, 140000, 2)]
    state = ClusterState(nodes=scenarios.NODES, policies=[
        Policy(name="big", gateway_node="node-b", sources=sources, egress_ip=EgressIP(ipv4="192.0.2.50"))])
    [output] = IpsetBackend().render(compile(state, "node-a"))
    assert "maxelem 131072" in output.text
    with pytest.raises(UnsupportedError):
        IpsetBackend().render(compile(state, "node-a", Config(ipset_maxelem_limit=65536)))


def test_iproute_outputs_one_file_per_family() -> None:
    outputs = BACKENDS["iproute"].render(compile(scenarios.dual_stack(), "node-a"))
    assert [(o.name, o.command) for o in outputs] == [("iproute-v4.batch", "ip -4 -batch FILE"),
                                                     ("iproute-v6.batch", "ip -6 -batch FILE")]
    v6 = outputs[1].text.splitlines()
    assert v6[1].startswith("rule add fwmark 0x26") and v6[1].endswith("pref 99 protocol 230")
    assert v6[2].startswith("route replace default via fd11::2 dev egress.vxlan table ")


def test_disabled_family_has_no_output() -> None:
    ruleset = compile(scenarios.one_policy(), "node-a", Config(ipv6=False))
    assert BACKENDS["ip6tables"].render(ruleset) == ()
    assert [o.name for o in BACKENDS["iproute"].render(ruleset)] == ["iproute-v4.batch"]
    assert "inet6" not in BACKENDS["ipset"].render(ruleset)[0].text


def test_every_output_line_is_ascii_without_control_characters() -> None:
    for make in scenarios.SCENARIOS.values():
        for node in ("node-a", "node-b", "node-c"):
            for output in render_all(compile(make(), node)):
                assert output.text.isascii()
                assert all(c == "\n" or " " <= c <= "~" for c in output.text)


def test_family_of_rendered_addresses() -> None:
    assert parse_cidr("fd00::/8").family is Family.IPV6
