"""Parsers of other tools' output, and the input loaders, under fuzzing.

Every entry point that reads text written by someone else is fed mutated real
dumps (``tests/data/observed``; see :mod:`tests.fuzz.corpus` for the edits)
and plain garbage. The only exception that may come out is the library's
``ParseError`` (``EgressRulesError`` for the input loaders, which also compile
what they accept), and its message must stay one printable line. Inputs that
once crashed a parser are kept as explicit examples.

Two further properties hold for observed state that still parses: a foreign
rule that carries any characters the kernel allows in the places
``iptables-save`` prints them unquoted or quoted never becomes two rules, and a
plan made from garbled dumps edits only objects the parsers marked as ours.
"""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from egress_rules.compiler import compile
from egress_rules.demo import demo_state
from egress_rules.errors import EgressRulesError, ParseError
from egress_rules.model.addresses import Family
from egress_rules.model.config import Config
from egress_rules.observed import (
    ObservedState,
    Ownership,
    parse_ip_routes,
    parse_ip_rules,
    parse_ipset_save,
    parse_iptables_save,
)
from egress_rules.plan import plan, render_plan
from tests.fuzz.corpus import OBSERVED, TARGETS, Target, check, mutate

CONFIG = Config()
OWN = Ownership(CONFIG)


class _Draws:
    """A :class:`tests.fuzz.corpus.Chooser` over hypothesis draws (so failures shrink)."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def text(self, max_size: int) -> str:
        return self.draw(st.text(max_size=max_size))


@st.composite
def _mutated(draw: st.DrawFn, target: Target) -> str:
    return mutate(target, _Draws(draw))


_GARBAGE = st.one_of(
    st.text(),
    st.binary(max_size=200).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.lists(st.sampled_from(("{", "[", "]", "}", '"', ",", ":", "1", "null", "\n", "*x", "-A X", "COMMIT")),
             max_size=40).map("".join),
    st.integers(1, 100_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 100_000).map(lambda n: '{"nftables":[' + '{"a":' * n + "1" + "}" * n + "]}"),
)


def inputs(name: str) -> st.SearchStrategy[str]:
    """Mostly mutated seeds of target ``name``, sometimes garbage."""
    mutated = _mutated(TARGETS[name])
    return st.one_of(mutated, mutated, mutated, _GARBAGE)


def _run(name: str, text: str) -> None:
    event(f"outcome: {check(TARGETS[name], text)}")


# Inputs that crashed a parser before it was fixed, kept as examples (each names the bug).
DEEP_JSON = "[" * 100_000 + "]" * 100_000  # RecursionError out of json.loads
LONG_NUMBER = "9" * 5000  # ValueError: int() (and json.loads) refuse more than 4300 digits


@example(text=":PREROUTING ACCEPT [0:0]\n")  # a chain outside a table
@given(text=inputs("iptables-save"))
def test_iptables_save_parser(text: str) -> None:
    _run("iptables-save", text)


@given(text=inputs("ip6tables-save"))
def test_ip6tables_save_parser(text: str) -> None:
    _run("ip6tables-save", text)


@example(text="create a hash:net family inet maxelem ²\n")  # '²'.isdigit() but int('²') is a ValueError
@example(text=f"create a hash:net family inet maxelem {LONG_NUMBER}\n")
@given(text=inputs("ipset-save"))
def test_ipset_save_parser(text: str) -> None:
    _run("ipset-save", text)


@example(text='[{"priority": 1, "protocol": "²"}]')  # ValueError in protocol_number
@example(text=f'[{{"priority": 1, "protocol": "{LONG_NUMBER}"}}]')
@example(text=DEEP_JSON)
@given(text=inputs("ip-rule-v4"))
def test_ip_rule_parser(text: str) -> None:
    _run("ip-rule-v4", text)


@given(text=inputs("ip-rule-v6"))
def test_ip6_rule_parser(text: str) -> None:
    _run("ip-rule-v6", text)


@example(text='[{"dst": "default", "table": "²"}]')  # ValueError in the table number
@example(text=f'[{{"dst": "default", "table": "{LONG_NUMBER}"}}]')
@example(text=f'[{{"dst": "default", "table": {LONG_NUMBER}}}]')
@example(text=DEEP_JSON)
@given(text=inputs("ip-route-v4"))
def test_ip_route_parser(text: str) -> None:
    _run("ip-route-v4", text)


@given(text=inputs("ip-route-v6"))
def test_ip6_route_parser(text: str) -> None:
    _run("ip-route-v6", text)


NFT_PAYLOAD_NOT_OBJECT = json.dumps({"nftables": [
    {"metainfo": {"json_schema_version": 1}},
    {"table": {"family": "ip", "name": "egress_rules", "handle": 1}},
    {"chain": {"family": "ip", "table": "egress_rules", "name": "c", "handle": 2}},
    {"rule": {"family": "ip", "table": "egress_rules", "chain": "c", "handle": 3,
              "expr": [{"match": {"op": "==", "left": {"payload": 1}, "right": "@s"}}, {"accept": None}]}},
]})


@example(text=NFT_PAYLOAD_NOT_OBJECT)  # AttributeError: 'int' object has no attribute 'get'
@example(text=DEEP_JSON)
@example(text=f'{{"nftables": [{LONG_NUMBER}]}}')
@given(text=inputs("nft-list"))
def test_nft_list_parser(text: str) -> None:
    _run("nft-list", text)


YAML_ALIAS_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                   + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n"
                             for i in range(8))
                   + "apiVersion: egressgateway.spidernet.io/v1beta1\nkind: EgressTunnel\nmetadata: {name: n}\n"
                   "status: {mark: *i}\n")


@example(text=YAML_ALIAS_BOMB)  # 10^9 strings quoted in an error message: hours and gigabytes
@example(text=DEEP_JSON)  # RecursionError out of json.loads
@example(text='{"apiVersion": "x/v1", "kind": "Tab\\nList", "items": 1}')  # a line break in the message
@example(text="a: \udc80\n")  # UnicodeEncodeError out of libyaml (a str with a lone surrogate)
@example(text="apiVersion: egressgateway.spidernet.io/v1beta1\nkind: EgressTunnel\nmetadata: {name: n}\n"
              f"status: {{mark: 0x{'f' * 5000}}}\n")  # ValueError out of repr() of a 20000-bit int in a message
@example(text=f"a: {LONG_NUMBER}\n")  # ValueError out of the YAML constructor
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(text=inputs("resources"))
def test_resource_loader(text: str) -> None:
    _run("resources", text)


@example(text='{"config": {"other_mark_users": [[1]]}}')  # TypeError: unhashable type: 'list'
@example(text='{"nodes": [{"name": "a"}], "policies": [{"name": "p", "gateway_node": "a", '
              '"sources": [{"cidr": "10.0.0.1", "node": ["a"]}]}]}')  # TypeError out of Endpoint's name cache
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(text=inputs("input"))
def test_input_loader(text: str) -> None:
    _run("input", text)


# ------------------------------------------------------------------ tokenizing like the tools

# Characters the kernel allows in an interface name (no '/', ':', NUL, or space as the kernel's isspace
# sees it) and that iptables-save prints unquoted, mixed with ones Python's str.split/splitlines break at.
_IFNAME_CHARS = st.sampled_from("a0_.-\x1c\x1d\x1e\x1f\x85\u2028\u2029\u3000\u1680+=\"'\\")
_COMMENT_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")
_OUR_HOOK = '-A PREROUTING -m comment --comment "egress-rules: mark request"'


def _save_string(text: str) -> str:
    """How ``iptables-save`` prints a comment (xtables_save_string): quoted, ``"``, ``'``, ``\\`` escaped."""
    return '"' + re.sub(r'(["\'\\])', r"\\\1", text) + '"'


@example(ifname="eth\x1c-A", comment="x")  # str.splitlines broke the rule in two
@example(ifname="eth\u2028", comment="\u2028-A EGRESSGATEWAY-MARK-REQUEST -j ACCEPT")
@example(ifname="a\x85-m", comment="egress-rules:")
@example(ifname="a\u3000b", comment="-j")  # str.split broke the interface name in two
@example(ifname="a", comment="x\n-A EGRESSGATEWAY-MARK-REQUEST -j ACCEPT")  # iptables-save's own ambiguity
@example(ifname="a\u3000-j\u3000DROP", comment=None)  # no quote on the line: split at spaces and tabs only
@given(ifname=st.text(_IFNAME_CHARS, min_size=1, max_size=15),
       comment=st.none() | st.text(_COMMENT_CHARS, max_size=40))
def test_a_foreign_rule_stays_one_foreign_rule(ifname: str, comment: str | None) -> None:
    """A foreign rule with an odd interface name and comment is read as one foreign rule, or the dump is refused.

    Refused only where iptables-save itself prints something iptables-restore cannot read back: a line break
    in a comment (the rule's first line then ends inside its quotes), or a '"' in an interface name (printed
    unquoted, so it opens a quote). The parser must never read such a rule as something else.
    """
    dump = (OBSERVED / "iptables-save.nft.txt").read_text()
    commented = "" if comment is None else f"-m comment --comment {_save_string(comment)} "
    foreign = f"-A PREROUTING -i {ifname} {commented}-j ACCEPT"
    text = dump.replace(_OUR_HOOK, f"{foreign}\n{_OUR_HOOK}", 1)
    assert text != dump
    try:
        parsed = parse_iptables_save(text, Family.IPV4, OWN)
    except ParseError:
        assert "\n" in (comment or "") or '"' in ifname, f"a rule the kernel accepts was refused: {foreign!r}"
        event("refused: a line break in the comment or a quote in the interface name")
        return
    assert "\n" not in (comment or ""), "a comment with a line break was read as something"
    baseline = parse_iptables_save(dump, Family.IPV4, OWN)
    for table in baseline.tables:
        other = parsed.table(table.name)
        assert other is not None
        for chain in table.chains:
            expected = [(r.text, r.owned, r.body) for r in chain.rules]
            if (table.name, chain.name) == ("mangle", "PREROUTING"):
                # A comment that starts with our marker claims the rule: by design (explicit markers only).
                expected.insert(1, (foreign[len("-A PREROUTING "):], (comment or "").startswith(OWN.marker), None))
            got = other.chain(chain.name)
            assert got is not None
            assert [(r.text, r.owned, r.body) for r in got.rules] == expected


# ------------------------------------------------------------------ plans over garbled state

_BUILTIN = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
_DUMP_FILES = {
    "iptables-save": ("iptables-save.nft.txt", "iptables-save"),
    "ip6tables-save": ("ip6tables-save.nft.txt", "ip6tables-save"),
    "ipset save": ("ipset-save.txt", "ipset-save"),
    "ip -4 -j rule": ("ip-rule.v4.json", "ip-rule-v4"),
    "ip -6 -j rule": ("ip-rule.v6.json", "ip-rule-v6"),
    "ip -4 -j route": ("ip-route.v4.json", "ip-route-v4"),
    "ip -6 -j route": ("ip-route.v6.json", "ip-route-v6"),
}


@st.composite
def garbled_dumps(draw: st.DrawFn) -> dict[str, str]:
    """The real dumps of one node, one to three of them mutated."""
    texts = {key: (OBSERVED / file).read_text() for key, (file, _) in _DUMP_FILES.items()}
    for key in draw(st.lists(st.sampled_from(sorted(texts)), min_size=1, max_size=3, unique=True)):
        target = TARGETS[_DUMP_FILES[key][1]]
        texts[key] = mutate(Target(target.name, target.run, (texts[key],), target.allowed, target.json_seeds),
                            _Draws(draw))
    return texts


def _parse_all(texts: dict[str, str]) -> ObservedState:
    return ObservedState(
        iptables={Family.IPV4: parse_iptables_save(texts["iptables-save"], Family.IPV4, OWN),
                  Family.IPV6: parse_iptables_save(texts["ip6tables-save"], Family.IPV6, OWN)},
        ipsets=parse_ipset_save(texts["ipset save"], OWN),
        ip_rules={f: parse_ip_rules(texts[f"ip -{f.value} -j rule"], f, OWN) for f in Family},
        routes={f: parse_ip_routes(texts[f"ip -{f.value} -j route"], f, OWN) for f in Family},
    )


def _foreign_rules(dump_text: str, family: Family, delta: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Foreign rules per table/chain before and after applying ``delta`` to the dump; every edit must be ours."""
    dump = parse_iptables_save(dump_text, family, OWN)
    chains = {(t.name, c.name): [(r.text, r.owned) for r in c.rules] for t in dump.tables for c in t.chains}
    before = {f"{t}/{c}": [text for text, owned in rules if not owned] for (t, c), rules in chains.items()}
    table = ""
    for line in delta.splitlines():
        words = line.split(" ")
        if line.startswith("*"):
            table = line[1:]
        elif line == "COMMIT":
            continue
        elif line.startswith(":"):
            assert OWN.owns_chain(words[0][1:]), f"creates a chain that is not ours: {line}"
            chains[(table, words[0][1:])] = []
        else:
            flag, chain = words[0], words[1]
            assert chain in _BUILTIN or OWN.owns_chain(chain), f"edits a chain that is not ours: {line}"
            rules = chains.setdefault((table, chain), [])
            if flag == "-A":
                rules.append(("ours", True))
            elif flag == "-I":
                assert 1 <= int(words[2]) <= len(rules) + 1, line
                rules.insert(int(words[2]) - 1, ("ours", True))
            elif flag in ("-R", "-D"):
                position = int(words[2])
                assert 1 <= position <= len(rules) and rules[position - 1][1], \
                    f"{line} names rule {position} of {table}/{chain}, which is not ours: {rules}"
                if flag == "-D":
                    del rules[position - 1]
                else:
                    rules[position - 1] = ("ours", True)
            elif flag in ("-F", "-X"):
                assert chain not in _BUILTIN, f"flushes or deletes a built-in chain: {line}"
                assert all(owned for _, owned in rules), f"{line} removes foreign rules: {rules}"
                rules.clear()
                if flag == "-X":
                    del chains[(table, chain)]
            else:
                raise AssertionError(f"unexpected delta line {line!r}")
    after = {f"{t}/{c}": [text for text, owned in rules if not owned] for (t, c), rules in chains.items()}
    return before, after


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(texts=garbled_dumps(), node=st.sampled_from(("node-a", "node-b", "node-c")))
def test_a_plan_from_garbled_dumps_edits_only_our_objects(texts: dict[str, str], node: str) -> None:
    """Whatever the dumps say, a plan never edits a foreign chain, rule, set, ip rule or route."""
    try:
        observed = _parse_all(texts)
    except ParseError:
        event("dumps: refused")
        return
    try:
        outputs = render_plan(plan(compile(demo_state(), node), observed), CONFIG)
    except EgressRulesError as error:
        event(f"plan: {type(error).__name__}")
        return
    event(f"plan: {len(outputs)} outputs")
    for output in outputs:
        if output.name in ("iptables.delta", "ip6tables.delta"):
            family = Family.IPV4 if output.name == "iptables.delta" else Family.IPV6
            before, after = _foreign_rules(texts[f"{output.name.split('.')[0]}-save"], family, output.text)
            for chain, rules in before.items():
                assert after.get(chain, []) == rules, f"foreign rules of {chain} changed: {rules} -> {after.get(chain)}"
        elif output.name.startswith("ipset"):
            for line in output.text.splitlines():
                words = line.split(" ")
                assert words[0] in ("create", "add", "del", "destroy", "swap"), line
                for name in words[1:3] if words[0] == "swap" else words[1:2]:
                    assert OWN.owns_set(name), f"names a set that is not ours: {line}"
        elif output.name.startswith("iproute"):
            for line in output.text.splitlines():
                assert line.startswith(("rule ", "route ")), line
                assert re.search(rf" (protocol|proto) {CONFIG.route_protocol}( |$)", line), \
                    f"a routing change without our protocol could hit a foreign rule or route: {line}"
        else:
            assert output.name == "conntrack.commands", output.name


def test_the_atheris_script_names_every_target() -> None:
    from tests.fuzz.fuzz_parsers import TARGET_NAMES

    assert sorted(TARGET_NAMES) == sorted(TARGETS)
