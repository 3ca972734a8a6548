"""Hostile names and config strings never break or inject into an output.

Every string that reaches an output comes from someone: policy and namespace
names from whoever may create an EgressPolicy, node names and config from the
cluster's admins, resource fields from the adapter's input. Each property here
puts hostile strings (quotes, line breaks, NUL, backslashes, spaces, pieces of
iptables-restore/ipset/nft syntax, shell metacharacters, bidi controls,
lookalikes, 10 kB strings, non-strings) into one or more of those fields and
demands one of two things:

* construction refuses the value with one of the library's typed errors
  (``InvalidInputError``), never a bare ``ValueError``/``TypeError``/``KeyError``;
* or the value is plain (letters, digits, ``.``, ``-``, ``_``) and every output
  of every backend reads back to exactly the model: a strict tokenizer
  written here for ``iptables-restore``, ``ipset restore`` and ``ip -batch``
  text, JSON decoding for nft, and the library's own parsers (through the
  in-memory fakes of the tools where the parser reads the tool's listing
  rather than its input) find the same tables, chains, rules, sets, elements,
  ip rules and routes as the model, and nothing else.

The checkers are shared with the kernel tier (``tests/kernel/test_hardening_kernel.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from egress_rules.adapters import load_resource_text
from egress_rules.backends import APPLY_ORDER, Output, render_all
from egress_rules.backends.ipset import maxelem_for
from egress_rules.backends.nftables import COMMENT_MAX_BYTES as NFT_COMMENT_MAX
from egress_rules.backends.nftables import base_chain_name, base_chain_priority, family_name
from egress_rules.backends.text import quoted_comment, truncate_utf8
from egress_rules.compiler import compile
from egress_rules.errors import EgressRulesError, InvalidInputError, UnsupportedError
from egress_rules.model.addresses import Cidr, Family, collapse, parse_address, parse_cidr, split_zero_prefix
from egress_rules.model.cluster import ClusterCIDRs, ClusterState, EgressIP, Endpoint, Node, Policy
from egress_rules.model.config import ChainNames, Config
from egress_rules.model.names import IFNAME_MAX, IPSET_NAME_MAX, IPTABLES_CHAIN_MAX, NFT_NAME_MAX
from egress_rules.model.ruleset import (
    Accept,
    Action,
    BuiltinChain,
    ConnmarkMatch,
    ConntrackDirectionMatch,
    CtDirection,
    Direction,
    Drop,
    FamilyRuleSet,
    Goto,
    Jump,
    MarkMatch,
    Masquerade,
    Match,
    NetfilterTable,
    OutInterfaceMatch,
    Return,
    Rule,
    RuleBody,
    RuleSet,
    SetConnmark,
    SetMark,
    SetMatch,
    Snat,
)
from egress_rules.observed import Ownership, parse_ip_routes, parse_ip_rules, parse_ipset_save, parse_iptables_save
from egress_rules.observed.nft import parse_nft_list
from tests.fakes.iproute import FakeIproute
from tests.fakes.nft import FakeNft

ALL_FORMATS = (*APPLY_ORDER, "nft")
IPTABLES_COMMENT_MAX = 255

# ------------------------------------------------------------------ hostile strings

FRAGMENTS = (
    '"', "'", "\\", "\n", "\r", "\r\n", "\x00", " ", "\t", "\x0b", "\x1b[2J",
    "-j ACCEPT", " -j DROP", " --to-source 6.6.6.6", "\nCOMMIT\n", "*nat", "\n*filter\n:INPUT DROP [0:0]\nCOMMIT\n",
    ":X - [0:0]", "\n-A INPUT -j DROP", "\nflush\n", "\ndestroy\n", "\nroute flush table main\n",
    '"}]}', '",{"delete":{"table":{"family":"ip","name":"filter"}}},"', "$(reboot)", "`id`", "; rm -rf /", "| sh",
    "&&", "> /etc/passwd", "#", "--", "-", ".", "..", "/", ":", "@", "%", "{", "}", "*", "!", "~", "+", "eth+",
    "\u202e", "\u200f", "\u2066", "\u200b", "\ufeff", "\u0301", "\u0430", "\u0435", "\uff41", "ſ", "K", "ı",
    "\u00a0", "\u2028", "\u2029", "\x85", "\x1c", "é", "\U0001f600", "\ud800", "A", "Z", "0", "_", "a",
    "MARK", "ACCEPT", "DROP", "RETURN", "MASQUERADE", "SNAT", "PREROUTING", "POSTROUTING", "nat_postrouting",
    "mangle_prerouting", "filter", "mangle", "raw", "table", "chain", "default", "all", "lo", "help",
)
LONG = ("x" * 10_000, "a." * 5_000, "a" * 64, "a" * 254, "a" * 253, "A" * 29, "a" * 16, "é" * 200,
        "-".join(["a"] * 127), ".".join(["a" * 63] * 4))

_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
dns_labels = st.from_regex(rf"\A{_LABEL}\Z")
dns_subdomains = st.lists(dns_labels, min_size=1, max_size=4).map(".".join).filter(lambda s: len(s) <= 253)
chain_names = st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,27}\Z")


def _insert(name: str, fragment: str, at: int) -> str:
    at %= len(name) + 1
    return name[:at] + fragment + name[at:]


def hostile(valid: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    """Strings meant to break an output, valid values of the field (so the accepted path runs), non-strings."""
    fragments = st.sampled_from(FRAGMENTS)
    return st.one_of(
        fragments,
        st.builds(_insert, valid, fragments, st.integers(0, 300)),
        st.lists(st.one_of(fragments, st.sampled_from(("web", "node-a", "a", "0"))), min_size=1, max_size=6)
        .map("".join),
        st.text(max_size=40),
        st.sampled_from(LONG),
        valid,
        valid,
        valid,
        st.one_of(st.none(), st.integers(), st.binary(max_size=8), st.lists(st.text(max_size=3), max_size=2),
                  st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2), st.floats()),
    )


def _is_plain(value: object) -> bool:
    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9._-]+", value) is not None


# ------------------------------------------------------------------ the cluster hostile values go into

MODEL_FIELDS: dict[str, st.SearchStrategy[str]] = {
    "namespace": dns_labels,
    "name": dns_subdomains,
    "cluster_policy": dns_subdomains,
    "gateway_node": st.sampled_from(("node-a", "node-b", "node-c")),
    "endpoint_node": dns_subdomains,  # a node the state does not have is allowed (a warning)
    "node_a": dns_subdomains,
    "node_b": dns_subdomains,
    "node_c": dns_subdomains,
    "local": st.sampled_from(("node-a", "node-b", "node-c")),
}
CONFIG_FIELDS: dict[str, st.SearchStrategy[str]] = {
    "owner": st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,31}\Z"),
    "set_prefix": st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,13}\Z"),
    "reset_mark": chain_names,
    "mark_request": chain_names,
    "no_snat": chain_names,
    "snat_eip": chain_names,
    "gateway_prefix": st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,19}\Z"),
    "tunnel_device": st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}\Z"),
    "nft_table": st.from_regex(r"\A[A-Za-z][A-Za-z0-9_]{0,60}\Z"),
}
DEFAULTS: dict[str, Any] = {
    "namespace": "default", "name": "web", "cluster_policy": "ops",
    "node_a": "node-a", "node_b": "node-b", "node_c": "node-c",
    "owner": "egress-rules", "set_prefix": "egress-", "reset_mark": "EGRESSGATEWAY-RESET-MARK",
    "mark_request": "EGRESSGATEWAY-MARK-REQUEST", "no_snat": "EGRESSGATEWAY-NO-SNAT",
    "snat_eip": "EGRESSGATEWAY-SNAT-EIP", "gateway_prefix": "EGRESSGATEWAY-TO-", "tunnel_device": "egress.vxlan",
    "nft_table": "egress_rules",
}


def build_config(values: Mapping[str, Any]) -> Config:
    v = {**DEFAULTS, **values}
    chains = ChainNames(reset_mark=v["reset_mark"], mark_request=v["mark_request"], no_snat=v["no_snat"],
                        snat_eip=v["snat_eip"], gateway_prefix=v["gateway_prefix"])
    return Config(chains=chains, owner=v["owner"], set_prefix=v["set_prefix"], tunnel_device=v["tunnel_device"],
                  nft_table=v["nft_table"], weave_no_snat=True)


def build_state(values: Mapping[str, Any]) -> ClusterState:
    """Three dual-stack-ish nodes; a namespaced policy via node_b, a cluster policy on node_a (node IP), one via node_c.

    Together they make every kind of rule: marks and gotos to remote gateways, SNAT to an EIP, MASQUERADE,
    local-gateway RETURNs, weave no-SNAT accepts, empty and non-empty destinations, both families.
    """
    v = {**DEFAULTS, **values}
    node_a, node_b, node_c = v["node_a"], v["node_b"], v["node_c"]
    # Given or not given (None is a value: an endpoint on no known node, or a gateway that is no name).
    endpoint_node = v.get("endpoint_node", node_a)
    gateway = v.get("gateway_node", node_b)
    nodes = [Node(node_a, tunnel_ipv4="172.31.0.1", tunnel_ipv6="fd11::1"),
             Node(node_b, tunnel_ipv4="172.31.0.2", tunnel_ipv6="fd11::2"),
             Node(node_c, tunnel_ipv4="172.31.0.3", tunnel_ipv6="fd11::3")]
    pods = [Endpoint("10.244.1.10", endpoint_node), Endpoint("fd00:244:1::10", endpoint_node),
            Endpoint("10.244.2.10", node_b), Endpoint("10.244.9.0/24")]
    policies = [
        Policy(namespace=v["namespace"], name=v["name"], gateway_node=gateway, priority=100, sources=pods,
               destinations=["203.0.113.0/24", "2001:db8:ff::/64", "0.0.0.0/0"],
               egress_ip=EgressIP(ipv4="192.0.2.50", ipv6="2001:db8:1::50")),
        Policy(namespace=None, name=v["cluster_policy"], gateway_node=node_a, priority=200, sources=pods,
               destinations=[], egress_ip=EgressIP(use_node_ip=True)),
        Policy(namespace=v["namespace"], name="batch", gateway_node=node_c, priority=300, sources=pods[:1],
               destinations=["198.51.100.7"], egress_ip=EgressIP(ipv4="192.0.2.51")),
    ]
    cluster = ClusterCIDRs(pod=["10.244.0.0/16", "fd00:244::/32"], service=["10.96.0.0/12"])
    return ClusterState(policies=policies, nodes=nodes, cluster=cluster)


def compile_values(values: Mapping[str, Any]) -> list[RuleSet] | InvalidInputError:
    """The rule sets of node_a (or ``local``) and node_b, or the typed error construction raised."""
    try:
        config = build_config(values)
        state = build_state(values)
        local = values["local"] if "local" in values else state.nodes[0].name
        return [compile(state, local, config), compile(state, state.nodes[1].name, config)]
    except InvalidInputError as error:
        return error


# ------------------------------------------------------------------ strict readers of each output

# A word of iptables-restore text as the iptables backend may write it: plain printable ASCII without quotes or
# backslashes, or (only for a comment) a double-quoted run of printable ASCII without '"' and '\'.
_PLAIN = r"[\x21\x23-\x26\x28-\x5b\x5d-\x7e]+"
_QUOTED = r'"[\x20\x21\x23-\x5b\x5d-\x7e]*"'
_IPT_LINE = re.compile(rf"(?:{_QUOTED}|{_PLAIN})(?: (?:{_QUOTED}|{_PLAIN}))*")
_IPT_WORDS = re.compile(rf"{_QUOTED}|{_PLAIN}")
_CHAIN = re.compile(rf"[A-Za-z][A-Za-z0-9_.-]{{0,{IPTABLES_CHAIN_MAX - 1}}}")
_SET = re.compile(rf"[A-Za-z][A-Za-z0-9_.-]{{0,{IPSET_NAME_MAX - 1}}}")
_IFNAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.-]{{0,{IFNAME_MAX - 1}}}")
_MARK = re.compile(r"(0x[0-9a-f]+)/(0x[0-9a-f]+)")
_BUILTIN = ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")


class OutputMismatchError(AssertionError):
    """An output differs from the model (or is not what the backend may write at all)."""


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise OutputMismatchError(message)


def expected_body(rule: Rule, limit: int, interfaces_first: bool = False) -> RuleBody:
    """The body the backend writes for ``rule`` (iptables writes interface matches first, as iptables-save does)."""
    matches = rule.matches
    if interfaces_first:
        matches = (*(m for m in matches if isinstance(m, OutInterfaceMatch)),
                   *(m for m in matches if not isinstance(m, OutInterfaceMatch)))
    return RuleBody(matches, rule.action, truncate_utf8(rule.comment, limit))


def _address(text: str) -> str:
    address = parse_address(text)
    _expect(str(address) == text, f"address {text!r} is not canonical")
    return text


def read_rule(words: list[str]) -> RuleBody:
    """A rule's words after ``-A CHAIN`` / ``-I CHAIN N``, read strictly in the backend's grammar."""
    i, comment = 0, ""
    matches: list[Match] = []
    while words[i:i + 1] == ["-o"] or words[i:i + 2] == ["!", "-o"]:
        negate = words[i] == "!"
        name = words[i + 1 + negate] if len(words) > i + 1 + negate else ""
        _expect(_IFNAME.fullmatch(name) is not None, f"interface name in {words}")
        matches.append(OutInterfaceMatch(name, negate))
        i += 2 + negate
    if words[i:i + 3] == ["-m", "comment", "--comment"]:
        _expect(len(words) > i + 3 and words[i + 3].startswith('"'), f"comment not quoted: {words}")
        comment, i = words[i + 3][1:-1], i + 4
    for word in words[i:]:
        _expect(not word.startswith('"'), f"a quoted word outside the comment: {words}")
    while i < len(words) and words[i] == "-m":
        module, rest = words[i + 1], words[i + 2:]
        negate = bool(rest) and rest[0] == "!"
        rest = rest[1:] if negate else rest
        match: Match
        if module in ("mark", "connmark") and len(rest) >= 2 and rest[0] == "--mark" and _MARK.fullmatch(rest[1]):
            value, mask = (int(x, 16) for x in rest[1].split("/"))
            match, used = (MarkMatch if module == "mark" else ConnmarkMatch)(value, mask, negate), 2
        elif module == "set" and len(rest) >= 3 and rest[0] == "--match-set" and _SET.fullmatch(rest[1]) \
                and rest[2] in ("src", "dst"):
            match, used = SetMatch(rest[1], Direction(rest[2]), negate), 3
        elif module == "conntrack" and not negate and len(rest) >= 2 and rest[0] == "--ctdir" \
                and rest[1] in ("ORIGINAL", "REPLY"):
            match, used = ConntrackDirectionMatch(CtDirection(rest[1])), 2
        else:
            raise OutputMismatchError(f"unexpected match in {words}")
        matches.append(match)
        i += 2 + negate + used
    tail = words[i:]
    action: Action
    if tail[:1] == ["-g"] and len(tail) == 2 and _CHAIN.fullmatch(tail[1]):
        action = Goto(tail[1])
    elif tail == ["-j", "ACCEPT"]:
        action = Accept()
    elif tail == ["-j", "RETURN"]:
        action = Return()
    elif tail == ["-j", "MASQUERADE"]:
        action = Masquerade()
    elif tail == ["-j", "DROP"]:
        action = Drop()
    elif tail[:1] == ["-j"] and tail[1:3] in (["MARK", "--set-xmark"], ["CONNMARK", "--set-xmark"]) \
            and len(tail) == 4 and _MARK.fullmatch(tail[3]):
        value, mask = (int(x, 16) for x in tail[3].split("/"))
        action = SetMark(value, mask) if tail[1] == "MARK" else SetConnmark(value, mask)
    elif tail[:3] == ["-j", "SNAT", "--to-source"] and len(tail) == 4:
        action = Snat(parse_address(_address(tail[3])))
    elif tail[:1] == ["-j"] and len(tail) == 2 and _CHAIN.fullmatch(tail[1]):
        action = Jump(tail[1])
    else:
        raise OutputMismatchError(f"unexpected target in {words}")
    return RuleBody(tuple(matches), action, comment)


def check_iptables(ruleset: RuleSet, rules: FamilyRuleSet, output: Output) -> None:
    """Every line of the iptables-restore text is the expected line, read word by word."""
    config = ruleset.config
    tool = "iptables" if rules.family is Family.IPV4 else "ip6tables"
    lines = output.text.split("\n")
    _expect(lines[-1] == "", "no final newline")
    lines = lines[:-1]
    _expect(lines[0] == f"# {config.owner}: {rules.family.label} rules for node {ruleset.node}; apply with: "
                        f"{tool}-restore --noflush", f"header {lines[0]!r}")
    expected: list[tuple[str, Any]] = []
    for table in rules.tables():
        chains = [c for c in rules.chains if c.table is table]
        expected.append(("table", table.value))
        expected += [("chain", c.name) for c in chains]
        expected += [("append", (c.name, expected_body(r, IPTABLES_COMMENT_MAX, True)))
                     for c in chains for r in c.rules]
        hooks = sorted((h for h in rules.hooks if h.table is table), key=lambda h: (h.chain.value, h.position))
        expected += [("insert", (h.chain.value, h.position, expected_body(h.rule, IPTABLES_COMMENT_MAX, True)))
                     for h in hooks]
        expected.append(("commit", None))
    got: list[tuple[str, Any]] = []
    for line in lines[1:]:
        _expect(_IPT_LINE.fullmatch(line) is not None, f"not a line of plain words: {line!r}")
        words = _IPT_WORDS.findall(line)
        if len(words) == 1 and line.startswith("*"):
            got.append(("table", line[1:]))
        elif line == "COMMIT":
            got.append(("commit", None))
        elif len(words) == 3 and words[0].startswith(":") and words[1:] == ["-", "[0:0]"]:
            _expect(_CHAIN.fullmatch(words[0][1:]) is not None, f"chain name {words[0]!r}")
            got.append(("chain", words[0][1:]))
        elif words[0] == "-A" and len(words) > 2 and _CHAIN.fullmatch(words[1]):
            got.append(("append", (words[1], read_rule(words[2:]))))
        elif words[0] == "-I" and len(words) > 3 and words[1] in _BUILTIN and words[2].isdigit():
            got.append(("insert", (words[1], int(words[2]), read_rule(words[3:]))))
        else:
            raise OutputMismatchError(f"unexpected line {line!r}")
    _expect(got == expected, f"{tool}: lines differ from the model:\n{got}\n{expected}")
    _check_with_iptables_parser(ruleset, rules, output.text)


def _check_with_iptables_parser(ruleset: RuleSet, rules: FamilyRuleSet, text: str) -> None:
    """The library's parser reads the text (as iptables-save would print it after loading) back to the model."""
    saved: list[str] = []
    for block in text.split("COMMIT\n")[:-1]:
        body = [line for line in block.split("\n") if line and not line.startswith("#")]
        header, rest = body[0], body[1:]
        saved += [header, *(f":{c} ACCEPT [0:0]" for c in _BUILTIN)]
        saved += [line for line in rest if line.startswith(":")]
        saved += [line for line in rest if line.startswith("-A ")]
        saved += [f"-A {line.split(' ', 3)[1]} {line.split(' ', 3)[3]}" for line in rest if line.startswith("-I ")]
        saved.append("COMMIT")
    dump = parse_iptables_save("\n".join(saved) + "\n", rules.family, Ownership(ruleset.config))
    for table in dump.tables:
        for chain in table.chains:
            if chain.builtin:
                hooks = rules.hooks_of(NetfilterTable(table.name), BuiltinChain(chain.name))
                _expect([(r.owned, r.body) for r in chain.rules] ==
                        [(True, expected_body(h.rule, IPTABLES_COMMENT_MAX, True)) for h in hooks],
                        f"parser: hooks of {table.name} {chain.name}")
            else:
                model = rules.chain(NetfilterTable(table.name), chain.name)
                _expect(model is not None and chain.owned, f"parser: chain {chain.name} not ours")
                assert model is not None
                _expect([(r.owned, r.body) for r in chain.rules] ==
                        [(True, expected_body(r, IPTABLES_COMMENT_MAX, True)) for r in model.rules],
                        f"parser: rules of {chain.name}")
    declared = {(t.name, c.name) for t in dump.tables for c in t.chains if not c.builtin}
    _expect(declared == {(c.table.value, c.name) for c in rules.chains}, "parser: chains differ")


_IPSET_LINES = {
    "create": re.compile(r"create (\S+) hash:net family (inet|inet6) hashsize 1024 maxelem (\d+)( -exist)?"),
    "add": re.compile(r"add (\S+) (\S+)"),
    "swap": re.compile(r"swap (\S+) (\S+)"),
    "destroy": re.compile(r"destroy (\S+)( -exist)?"),
}


def check_ipset(ruleset: RuleSet, output: Output) -> None:
    """Run the ipset restore text on a model of ipset; the sets it leaves are exactly the model's."""
    config = ruleset.config
    lines = output.text.split("\n")
    _expect(lines[-1] == "" and lines[0] == f"# {config.owner}: sets for node {ruleset.node}; apply with: "
                                            "ipset restore (before iptables)", f"header {lines[0]!r}")
    sets: dict[str, tuple[str, int, set[Cidr]]] = {}
    for line in lines[1:-1]:
        _expect(line.isascii() and line.isprintable(), f"unprintable line {line!r}")
        kind = line.split(" ", 1)[0]
        found = _IPSET_LINES[kind].fullmatch(line) if kind in _IPSET_LINES else None
        _expect(found is not None, f"unexpected line {line!r}")
        assert found is not None
        names = [found.group(1)] + ([found.group(2)] if kind == "swap" else [])
        _expect(all(_SET.fullmatch(n) for n in names), f"set name in {line!r}")
        name = names[0]
        if kind == "create":
            if name not in sets or not found.group(4):
                _expect(name not in sets, f"create of an existing set: {line!r}")
                sets[name] = (found.group(2), int(found.group(3)), set())
        elif kind == "add":
            _expect(name in sets, f"add to a missing set: {line!r}")
            cidr = parse_cidr(found.group(2))
            _expect(cidr.host_str() == found.group(2), f"entry not canonical: {line!r}")
            set_family = Family.IPV4 if sets[name][0] == "inet" else Family.IPV6
            _expect(cidr.family is set_family and cidr not in sets[name][2], f"entry {line!r}")
            sets[name][2].add(cidr)
        elif kind == "swap":
            other = found.group(2)
            _expect(name in sets and other in sets and sets[name][0] == sets[other][0], f"swap {line!r}")
            sets[name], sets[other] = sets[other], sets[name]
        else:
            _expect(name in sets or bool(found.group(2)), f"destroy of a missing set: {line!r}")
            sets.pop(name, None)
    expected = {s.name: (s, split_zero_prefix(s.members)) for r in ruleset.families for s in r.sets}
    _expect(set(sets) == set(expected), f"sets differ: {sorted(sets)} != {sorted(expected)}")
    for name, (keyword, maxelem, members) in sets.items():
        ipset, entries = expected[name]
        _expect(keyword == ("inet" if ipset.family is Family.IPV4 else "inet6"), f"{name}: family")
        _expect(members == set(entries), f"{name}: members differ")
        _expect(maxelem == maxelem_for(len(entries), config.ipset_maxelem_limit, name) >= len(entries),
                f"{name}: maxelem {maxelem}")
    save = "".join(f"create {name} hash:net family {keyword} hashsize 1024 maxelem {maxelem}\n"
                   + "".join(f"add {name} {m.host_str()}\n" for m in sorted(members))
                   for name, (keyword, maxelem, members) in sets.items())
    for observed in parse_ipset_save(save, Ownership(config)):
        _expect(observed.owned and observed.members == frozenset(expected[observed.name][1]),
                f"parser: set {observed.name}")


def check_iproute(ruleset: RuleSet, rules: FamilyRuleSet, output: Output) -> None:
    config = ruleset.config
    family = rules.family
    lines = output.text.split("\n")
    _expect(lines[-1] == "" and lines[0] == f"# {config.owner}: {family.label} policy routing for node "
                                            f"{ruleset.node}; apply with: ip -{family.value} -batch FILE",
            f"header {lines[0]!r}")
    rule_re = re.compile(r"rule add fwmark (0x[0-9a-f]+)/(0x[0-9a-f]+) table (\d+) pref (\d+) protocol (\d+)")
    route_re = re.compile(r"route replace default via (\S+) dev (\S+) table (\d+) proto (\d+)")
    got_rules, got_routes = [], []
    for line in lines[1:-1]:
        if found := rule_re.fullmatch(line):
            got_rules.append((int(found.group(1), 16), int(found.group(2), 16), int(found.group(3)),
                              int(found.group(4)), int(found.group(5))))
        elif found := route_re.fullmatch(line):
            _expect(_IFNAME.fullmatch(found.group(2)) is not None, f"device in {line!r}")
            got_routes.append((_address(found.group(1)), found.group(2), int(found.group(3)), int(found.group(4))))
        else:
            raise OutputMismatchError(f"unexpected line {line!r}")
    _expect(got_rules == [(r.mark, r.mask, r.table, r.priority, r.protocol) for r in rules.ip_rules], "ip rules")
    _expect(got_routes == [(str(r.via), r.device, r.table, r.protocol) for r in rules.routes], "routes")
    fake = FakeIproute(devices=(config.tunnel_device,))
    fake.batch(family, output.text)
    own = Ownership(config)
    parsed_rules = [r for r in parse_ip_rules(fake.rule_json(family), family, own) if r.owned]
    _expect([(r.mark, r.mask, r.table, r.priority) for r in parsed_rules] ==
            [(r.mark, r.mask, r.table, r.priority) for r in rules.ip_rules], "parser: ip rules")
    parsed_routes = [r for r in parse_ip_routes(fake.route_json(family), family, own) if r.owned]
    _expect(sorted((r.table, str(r.via), r.device) for r in parsed_routes) ==
            sorted((r.table, str(r.via), r.device) for r in rules.routes), "parser: routes")


def check_nft(ruleset: RuleSet, output: Output) -> None:
    """The nft JSON names only our table and holds exactly the model; the fake nft loads it and reads it back."""
    config = ruleset.config
    # The batch deletes our table before it fills it: the name must never be one of iptables-nft's tables.
    _expect(config.nft_table not in ("filter", "nat", "mangle", "raw", "security"), "deletes an iptables-nft table")
    _expect(output.text.isascii(), "nft text is not ASCII (the encoder escapes everything else)")
    lines = output.text.split("\n")
    _expect(lines[0] == '{"nftables":[' and lines[-2:] == ["]}", ""], "nft layout")
    commands = [json.loads(line.rstrip(",")) for line in lines[1:-2]]
    _expect(json.loads(output.text) == {"nftables": commands}, "one command per line")
    _expect(commands[0] == {"metainfo": {"json_schema_version": 1}}, "metainfo first")
    counts: dict[tuple[str, str], int] = {}
    for command in commands[1:]:
        [(verb, body)] = command.items()
        [(kind, obj)] = body.items()
        _expect(obj["family"] in ("ip", "ip6"), f"family {obj['family']!r}")
        _expect(obj.get("table", obj.get("name")) == config.nft_table, f"names another table: {command}")
        counts[(verb, f"{obj['family']} {kind}")] = counts.get((verb, f"{obj['family']} {kind}"), 0) + 1
        if kind == "rule":
            comment = obj.get("comment", "")
            _expect(len(comment.encode()) <= NFT_COMMENT_MAX, f"comment over {NFT_COMMENT_MAX} bytes")
            _expect(set(obj) <= {"family", "table", "chain", "expr", "comment"}, f"rule keys {sorted(obj)}")
    expected_counts: dict[tuple[str, str], int] = {}
    for rules in ruleset.families:
        fam = family_name(rules.family)
        base = {(h.table, h.chain) for h in rules.hooks}
        for key, count in ((("add", f"{fam} table"), 2), (("delete", f"{fam} table"), 1),
                           (("add", f"{fam} set"), len(rules.sets)),
                           (("add", f"{fam} chain"), len(rules.chains) + len(base)),
                           (("add", f"{fam} rule"), len(rules.hooks) + sum(len(c.rules) for c in rules.chains))):
            if count:
                expected_counts[key] = count
    _expect(counts == expected_counts, f"nft commands differ: {counts} != {expected_counts}")
    fake = FakeNft()
    fake.apply(output.text)
    listing = parse_nft_list(fake.list_ruleset(), Ownership(config))
    _expect(not listing.foreign, "foreign tables appeared")
    for rules in ruleset.families:
        table = listing.table(rules.family)
        _expect(table is not None and table.name == config.nft_table, "our table")
        assert table is not None
        wanted: dict[str, list[RuleBody]] = {c.name: [expected_body(r, NFT_COMMENT_MAX) for r in c.rules]
                                             for c in rules.chains}
        for hook in sorted(rules.hooks, key=lambda h: h.position):
            wanted.setdefault(base_chain_name(hook.table, hook.chain), []).append(
                expected_body(hook.rule, NFT_COMMENT_MAX))
        _expect({c.name: [r.body for r in c.rules] for c in table.chains} == wanted, "nft: chains and rules")
        for chain in table.chains:
            hooked = [h for h in rules.hooks if base_chain_name(h.table, h.chain) == chain.name]
            if hooked:
                _expect(chain.hook is not None
                        and chain.hook.priority == base_chain_priority(hooked[0].table, hooked[0].chain),
                        f"nft: hook of {chain.name}")
            else:
                _expect(chain.hook is None, f"nft: {chain.name} became a base chain")
        _expect({s.name: s.members for s in table.sets} == {s.name: collapse(s.members) for s in rules.sets},
                "nft: sets")


def check_outputs(ruleset: RuleSet, outputs: Iterable[Output]) -> None:
    """Every output of a full render is exactly the model (see the module docstring)."""
    by_name = {o.name: o for o in outputs}
    for rules in ruleset.families:
        tool = "iptables" if rules.family is Family.IPV4 else "ip6tables"
        check_iptables(ruleset, rules, by_name.pop(f"{tool}.rules"))
        check_iproute(ruleset, rules, by_name.pop(f"iproute-{rules.family.suffix}.batch"))
    check_ipset(ruleset, by_name.pop("ipset.restore"))
    check_nft(ruleset, by_name.pop("nftables.json"))
    _expect(not by_name, f"unexpected outputs {sorted(by_name)}")
    for rules in ruleset.families:
        for ipset in rules.sets:
            _expect(len(ipset.name) <= IPSET_NAME_MAX, f"set name {ipset.name}")
        for chain in rules.chains:
            _expect(len(chain.name) <= IPTABLES_CHAIN_MAX, f"chain name {chain.name}")
        for route in rules.routes:
            _expect(len(route.device) <= IFNAME_MAX, f"device {route.device}")
    _expect(len(ruleset.config.nft_table) <= NFT_NAME_MAX, "nft table name")


def accepted_or_refused(values: Mapping[str, Any]) -> None:
    """The property: a typed refusal, or plain values and outputs that read back as the model."""
    result = compile_values(values)
    if isinstance(result, InvalidInputError):
        event(f"refused: {type(result).__name__}")
        _expect(str(result).isprintable(), f"error message is not one printable line: {str(result)!r}")
        return
    event("accepted")
    for field, value in values.items():
        _expect((value is None and field in ("namespace", "endpoint_node")) or _is_plain(value),
                f"{field}={value!r} was accepted but is not plain")
    for ruleset in result:
        check_outputs(ruleset, render_all(ruleset, ALL_FORMATS))


# ------------------------------------------------------------------ properties

_BUGS_FOUND: tuple[dict[str, Any], ...] = (
    {"snat_eip": "MASQUERADE"},  # the nat hook's "-j MASQUERADE" masqueraded everything
    {"no_snat": "ACCEPT"},  # "-j ACCEPT" in nat POSTROUTING: no NAT for anything
    {"mark_request": "DROP"},  # iptables-nft: the mangle PREROUTING hook dropped every packet
    {"reset_mark": "PREROUTING"},  # a built-in chain: our rules appended to it, the hook jumps to itself
    {"no_snat": "nat_postrouting"},  # the nft backend's base chain name: a regular chain merged into it
    {"nft_table": "mangle"},  # the nft backend deletes its table first: iptables-nft's mangle table
    {"endpoint_node": ["node-a"]},  # TypeError: unhashable type: 'list' (Endpoint's name cache)
    {"local": []},  # TypeError: unhashable type: 'list' (compile's node lookup)
)


@example(values=_BUGS_FOUND[0])
@example(values=_BUGS_FOUND[1])
@example(values=_BUGS_FOUND[2])
@example(values=_BUGS_FOUND[3])
@example(values=_BUGS_FOUND[4])
@example(values=_BUGS_FOUND[5])
@example(values=_BUGS_FOUND[6])
@example(values=_BUGS_FOUND[7])
@example(values={"name": "a\nCOMMIT", "node_b": 'x" -j ACCEPT'})
@example(values={"namespace": "a" * 63, "name": ".".join(["b" * 63] * 3) + "." + "c" * 61,
                 "node_b": ".".join(["d" * 63] * 3) + "." + "e" * 61})
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(values=st.one_of(
    st.sampled_from(sorted(MODEL_FIELDS | CONFIG_FIELDS)).map(lambda k: [k]),
    st.lists(st.sampled_from(sorted(MODEL_FIELDS | CONFIG_FIELDS)), min_size=2, max_size=3, unique=True),
).flatmap(lambda keys: st.fixed_dictionaries({k: hostile((MODEL_FIELDS | CONFIG_FIELDS)[k]) for k in keys})))
def test_hostile_fields_are_refused_or_rendered_exactly(values: dict[str, Any]) -> None:
    accepted_or_refused(values)


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(values=st.fixed_dictionaries({k: s for k, s in (MODEL_FIELDS | CONFIG_FIELDS).items()
                                     if k not in ("gateway_node", "local", "endpoint_node")}))
def test_valid_but_unusual_values_everywhere_render_exactly(values: dict[str, Any]) -> None:
    """Every field at once with a valid value of any length and shape (the accepted path, densely)."""
    assume(len({values["node_a"], values["node_b"], values["node_c"]}) == 3)
    accepted_or_refused(values)


def test_the_fuzzed_fields_cover_every_string_of_the_model_and_config() -> None:
    """The fields above are every string a user controls: a new one must be added to the fuzzing."""
    strings = {a.name for a in attrs.fields(Config) if a.type in ("str", str)}
    strings |= {a.name for a in attrs.fields(ChainNames)}
    assert strings <= set(CONFIG_FIELDS), strings - set(CONFIG_FIELDS)
    model = {(cls.__name__, a.name) for cls in (Policy, Node, Endpoint) for a in attrs.fields(cls)
             if "str" in str(a.type)}
    assert model == {("Policy", "name"), ("Policy", "gateway_node"), ("Policy", "namespace"), ("Node", "name"),
                     ("Endpoint", "node")}, model


# ------------------------------------------------------------------ text helpers


def _has_surrogate(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in text)


@example(text="é" * 200, limit=255)
@example(text="a" * 254 + "é", limit=255)
@example(text="\U0001f600" * 40, limit=128)
@example(text="a\ud800", limit=128)  # UnicodeEncodeError out of a backend before it was typed
@given(text=st.text(st.characters(codec=None)), limit=st.integers(0, 300))
def test_truncate_utf8_cuts_between_characters_within_the_limit(text: str, limit: int) -> None:
    if _has_surrogate(text):
        with pytest.raises(UnsupportedError):
            truncate_utf8(text, limit)
        return
    cut = truncate_utf8(text, limit)
    encoded = cut.encode()
    assert len(encoded) <= limit
    assert text.startswith(cut)
    assert len(encoded) > limit - 4 or cut == text  # never more than one character short of the limit
    assert text.encode()[:len(encoded)] == encoded


@example(text='a"b', limit=255)
@example(text="x" * 300, limit=255)
@example(text="a\nb", limit=255)
@example(text="é", limit=255)
@example(text="\ud800", limit=255)
@given(text=st.text(st.characters(codec=None), max_size=300),
       limit=st.sampled_from((IPTABLES_COMMENT_MAX, NFT_COMMENT_MAX, 10)))
def test_quoted_comment_is_one_safe_word_or_refused(text: str, limit: int) -> None:
    refused: UnsupportedError | None = None
    try:
        quoted = quoted_comment(text, limit, "iptables")
    except UnsupportedError as error:
        refused = error
    if refused is not None:
        assert str(refused).isprintable()
        if not _has_surrogate(text):
            cut = truncate_utf8(text, limit)
            assert any(not (" " <= c <= "~") or c in "\"'\\" for c in cut)
        event("refused")
        return
    event("quoted")
    assert re.fullmatch(_QUOTED, quoted) and "'" not in quoted
    assert quoted[1:-1] == truncate_utf8(text, limit) and len(quoted[1:-1].encode()) <= limit


# ------------------------------------------------------------------ the adapter's resources

GROUP = "egressgateway.spidernet.io/v1beta1"


def resources(node_b: str = "node-b") -> list[dict[str, Any]]:
    """A small complete set of egressgateway resources (two nodes, a policy with a slice, a gateway)."""
    return [
        {"apiVersion": GROUP, "kind": "EgressTunnel", "metadata": {"name": "node-a"},
         "status": {"mark": "0x26000100", "phase": "Ready", "tunnel": {"ipv4": "172.31.0.1", "ipv6": "fd11::1"}}},
        {"apiVersion": GROUP, "kind": "EgressTunnel", "metadata": {"name": node_b},
         "status": {"mark": "0x26000200", "phase": "Ready", "tunnel": {"ipv4": "172.31.0.2", "ipv6": "fd11::2"}}},
        {"apiVersion": GROUP, "kind": "EgressClusterInfo", "metadata": {"name": "default"},
         "status": {"podCIDR": {"calico": {"ipv4": ["10.244.0.0/16"]}}, "clusterIP": {"ipv4": ["10.96.0.0/12"]},
                    "extraCidr": ["10.10.10.1"]}},
        {"apiVersion": GROUP, "kind": "EgressGateway", "metadata": {"name": "gw"},
         "status": {"nodeList": [{"name": node_b, "eips": [{"ipv4": "192.0.2.50", "ipv6": "2001:db8:1::50",
                                                            "policies": [{"name": "web", "namespace": "default"}]}]}]}},
        {"apiVersion": GROUP, "kind": "EgressPolicy", "metadata": {"name": "web", "namespace": "default"},
         "spec": {"egressGatewayName": "gw", "appliedTo": {"podSubnet": ["10.244.9.0/24"]},
                  "destSubnet": ["203.0.113.0/24"], "priority": 5},
         "status": {"node": node_b, "eip": {"ipv4": "192.0.2.50", "ipv6": "2001:db8:1::50"}}},
        {"apiVersion": GROUP, "kind": "EgressClusterPolicy", "metadata": {"name": "ops"},
         "spec": {"egressGatewayName": "gw", "egressIP": {"useNodeIP": True}, "appliedTo": {}},
         "status": {"node": "node-a"}},
        {"apiVersion": GROUP, "kind": "EgressEndpointSlice", "metadata": {
            "name": "web-x", "namespace": "default", "labels": {"spidernet.io/policy-name": "web"}},
         "endpoints": [{"node": "node-a", "ipv4": ["10.244.1.10"], "ipv6": ["fd00:244:1::10"]}]},
    ]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths of every string (and every key) of ``value``."""
    found: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            found.append((*prefix, ("key", key)))
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    else:
        found.append(prefix)
    return found


RESOURCE_PATHS = _paths(resources())


def _substitute(documents: list[Any], path: tuple[Any, ...], value: object) -> None:
    *parents, last = path
    node: Any = documents
    for step in parents:
        node = node[step]
    if isinstance(last, tuple):
        node[value if isinstance(value, str) else str(value)] = node.pop(last[1])
    else:
        node[last] = value


def _node_names(text: str) -> list[str]:
    return [n.name for n in load_resource_text(text).compile_input.state.nodes]


@example(path=(4, "status", "node"), value="node-b\nwarning: forged", as_yaml=False)  # a warning of two lines
@example(path=(0, "kind"), value="Tab\nList", as_yaml=False)
@settings(suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(RESOURCE_PATHS), value=hostile(dns_subdomains), as_yaml=st.booleans())
def test_hostile_resource_fields_are_refused_or_rendered_exactly(path: tuple[Any, ...], value: object,
                                                                 as_yaml: bool) -> None:
    yaml = pytest.importorskip("yaml")
    documents: list[Any] = resources()
    _substitute(documents, path, value)
    try:
        text = yaml.safe_dump_all(documents) if as_yaml else json.dumps(documents)
    except (yaml.YAMLError, UnicodeEncodeError, TypeError, ValueError):
        assume(False)  # the test's own encoder refused the value
        return
    refused: EgressRulesError | None = None
    try:
        result = load_resource_text(text)
    except EgressRulesError as error:
        refused = error
    if refused is not None:
        event(f"refused: {type(refused).__name__}")
        assert isinstance(refused, InvalidInputError)
        assert str(refused).isprintable(), f"error message is not one printable line: {str(refused)!r}"
        return
    event(f"accepted, {len(result.warnings)} warnings")
    for warning in result.warnings:
        assert warning.isprintable(), f"warning is not one printable line: {warning!r}"
    item = result.compile_input
    for node in item.state.nodes:
        assert _is_plain(node.name)
        ruleset = compile(item.state, node.name, item.config, marks=item.mark_allocator(),
                          tables=item.table_allocator(node.name))
        for policy in item.state.policies:
            assert _is_plain(policy.name) and (policy.namespace is None or _is_plain(policy.namespace))
        check_outputs(ruleset, render_all(ruleset, ALL_FORMATS))


@given(node=dns_subdomains)
def test_a_node_renamed_everywhere_in_the_resources_renders_exactly(node: str) -> None:
    assume(node != "node-a")
    text = json.dumps(resources(node_b=node))
    assert sorted(_node_names(text)) == sorted(["node-a", node])
    item = load_resource_text(text).compile_input
    for name in ("node-a", node):
        ruleset = compile(item.state, name, item.config, marks=item.mark_allocator(), tables=item.table_allocator(name))
        check_outputs(ruleset, render_all(ruleset, ALL_FORMATS))


# ------------------------------------------------------------------ the checkers can fail

_INJECTIONS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("iptables.rules", lambda t: t.replace("COMMIT\n", "-A INPUT -j DROP\nCOMMIT\n", 1)),
    ("iptables.rules", lambda t: t.replace(' -j RETURN', ' -j RETURN --extra', 1)),
    ("iptables.rules", lambda t: t.replace('--comment "egress-rules: ', '--comment "egress-rules:\\" ', 1)),
    ("ip6tables.rules", lambda t: t.replace(":EGRESSGATEWAY-NO-SNAT - [0:0]\n", "", 1)),
    ("ipset.restore", lambda t: t + "add egress-cluster-cidr-v4 6.6.6.6\n"),
    ("ipset.restore", lambda t: t.replace("hashsize 1024", "hashsize 1024 comment", 1)),
    ("iproute-v4.batch", lambda t: t + "route flush table main\n"),
    ("nftables.json", lambda t: t.replace('"name":"egress_rules"}}},', '"name":"filter"}}},', 1)),
    ("nftables.json", lambda t: t.replace('"comment":"egress-rules: ', '"comment":"egress-rules:\\n', 1)),
)


@pytest.mark.parametrize(("name", "inject"), _INJECTIONS)
def test_the_output_checks_catch_an_injected_line(name: str, inject: Callable[[str], str]) -> None:
    """Guards the properties above against vacuity: each kind of tampering is caught."""
    ruleset = compile(build_state({}), "node-a", build_config({}))
    outputs = [attrs.evolve(o, text=inject(o.text)) if o.name == name else o for o in render_all(ruleset, ALL_FORMATS)]
    assert any(o.name == name and inject(o.text) != o.text for o in render_all(ruleset, ALL_FORMATS))
    with pytest.raises(OutputMismatchError):
        check_outputs(ruleset, outputs)
    check_outputs(ruleset, render_all(ruleset, ALL_FORMATS))
