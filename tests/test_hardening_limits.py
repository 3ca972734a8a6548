"""Limits: names within each tool's limit, comments within each backend's, sets past ipset's default size.

* Every kernel object name fits its tool: ipset 31 characters, iptables chains
  28, nftables names 255, interface names 15, at the longest settings the
  config accepts; one character more is refused when the config is built.
* Comments are cut at a UTF-8 character boundary: the compiler cuts them to
  128 bytes (the smaller of the nft and iptables limits, 128 and 255) so
  that what the kernel stores is the model's comment, and a plan made after
  applying a render of maximal-length names is empty on both datapaths.
* A set with more entries than ipset's default ``maxelem`` (65536) gets the
  next power of two, up to ``Config.ipset_maxelem_limit``, past which the
  render is refused; a plan grows a set with a scratch set and ``swap``, and
  changes the members of a full set without overflowing it.

The kernel tier (``tests/kernel/test_hardening_kernel.py``) loads the same
outputs into the real tools.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from egress_rules.backends import APPLY_ORDER, render_all
from egress_rules.backends.ipset import DEFAULT_MAXELEM, IpsetBackend, maxelem_for
from egress_rules.backends.iptables import COMMENT_MAX_BYTES as IPTABLES_COMMENT_MAX
from egress_rules.backends.iptables import IptablesBackend
from egress_rules.backends.nftables import COMMENT_MAX_BYTES as NFT_COMMENT_MAX
from egress_rules.backends.nftables import NftablesBackend
from egress_rules.backends.text import truncate_utf8
from egress_rules.compiler import compile, naming
from egress_rules.compiler.incremental import NodeCompiler
from egress_rules.errors import InvalidInputError, UnsupportedError
from egress_rules.model.addresses import Cidr, Family
from egress_rules.model.cluster import ClusterState, EgressIP, Endpoint, Node, Policy, PolicyKey
from egress_rules.model.config import Config
from egress_rules.model.names import IFNAME_MAX, IPSET_NAME_MAX, IPTABLES_CHAIN_MAX, NFT_NAME_MAX
from egress_rules.model.ruleset import IPSet, RuleSet
from egress_rules.plan import plan, render_plan
from egress_rules.plan.model import ReplaceSet
from tests.fakes.nft import FakeNftNode
from tests.fakes.node import FakeNode
from tests.test_hardening_render import (
    ALL_FORMATS,
    build_config,
    build_state,
    check_outputs,
    dns_labels,
    dns_subdomains,
)

# The longest values every field accepts.
LONGEST_NAMES: dict[str, Any] = {
    "namespace": "n" * 63,
    "name": ".".join(["p" * 63] * 3) + "." + "q" * 61,
    "cluster_policy": ".".join(["c" * 63] * 3) + "." + "d" * 61,
    "node_a": ".".join(["a" * 63] * 3) + "." + "a" * 61,
    "node_b": ".".join(["b" * 63] * 3) + "." + "b" * 61,
    "node_c": ".".join(["c" * 63] * 3) + "." + "c" * 61,
}
LONGEST_CONFIG: dict[str, Any] = {
    "owner": "O" * 32,
    "set_prefix": "S" * (IPSET_NAME_MAX - 17),
    "reset_mark": "R" * IPTABLES_CHAIN_MAX,
    "mark_request": "M" * IPTABLES_CHAIN_MAX,
    "no_snat": "N" * IPTABLES_CHAIN_MAX,
    "snat_eip": "E" * IPTABLES_CHAIN_MAX,
    "gateway_prefix": "G" * (IPTABLES_CHAIN_MAX - 8),
    "tunnel_device": "t" * IFNAME_MAX,
    "nft_table": "T" * NFT_NAME_MAX,
}
LONGEST = {**LONGEST_NAMES, **LONGEST_CONFIG}


def test_the_longest_values_are_all_accepted_and_every_name_fits() -> None:
    assert all(len(v) == 253 for k, v in LONGEST_NAMES.items() if k != "namespace")
    state, config = build_state(LONGEST), build_config(LONGEST)
    for node in state.nodes[:2]:
        ruleset = compile(state, node.name, config)
        for rules in ruleset.families:
            assert rules.sets and all(len(s.name) <= IPSET_NAME_MAX for s in rules.sets)
            assert any(len(s.name) == IPSET_NAME_MAX for s in rules.sets)  # policy sets: exactly 31
            assert all(len(c.name) <= IPTABLES_CHAIN_MAX for c in rules.chains)
            assert any(len(c.name) == IPTABLES_CHAIN_MAX for c in rules.chains)
            assert all(len(r.device) == IFNAME_MAX for r in rules.routes)
            for _, rule in rules.rules():
                assert len(rule.comment.encode()) <= naming.COMMENT_MAX_BYTES
                assert rule.comment.startswith(f"{config.owner}:")
        check_outputs(ruleset, render_all(ruleset, ALL_FORMATS))


@pytest.mark.parametrize("field", sorted(LONGEST_CONFIG))
def test_one_character_more_is_refused(field: str) -> None:
    build_config(LONGEST_CONFIG)
    with pytest.raises(InvalidInputError, match=f"config.*{field}"):
        build_config({**LONGEST_CONFIG, field: LONGEST_CONFIG[field] + "x"})


@pytest.mark.parametrize("field", sorted(LONGEST_NAMES))
def test_one_character_more_in_a_name_is_refused(field: str) -> None:
    build_state(LONGEST_NAMES)
    with pytest.raises(InvalidInputError, match="RFC 1123"):
        build_state({**LONGEST_NAMES, field: LONGEST_NAMES[field] + "x"})


# ------------------------------------------------------------------ comments


@example(namespace="n" * 63, name=LONGEST_NAMES["name"], node=LONGEST_NAMES["node_b"])
@given(namespace=dns_labels, name=dns_subdomains, node=dns_subdomains)
def test_compiled_comments_fit_every_backend_and_keep_the_owner_marker(namespace: str, name: str,
                                                                      node: str) -> None:
    state = build_state({"namespace": namespace, "name": name, "node_b": node})
    ruleset = compile(state, "node-a", Config())
    sizes = [len(rule.comment.encode()) for rules in ruleset.families for _, rule in rules.rules()]
    event(f"longest comment: {'128 bytes (cut)' if max(sizes) == 128 else 'under 128 bytes'}")
    assert max(sizes) <= NFT_COMMENT_MAX <= IPTABLES_COMMENT_MAX
    assert all(rule.comment.startswith("egress-rules:") for rules in ruleset.families for _, rule in rules.rules())
    check_outputs(ruleset, render_all(ruleset, ALL_FORMATS))


def with_comment(ruleset: RuleSet, comment: str) -> RuleSet:
    """``ruleset`` with every rule's comment replaced (a caller may build a RuleSet by hand)."""
    families = []
    for rules in ruleset.families:
        chains = tuple(attrs.evolve(c, rules=tuple(attrs.evolve(r, comment=comment) for r in c.rules))
                       for c in rules.chains)
        hooks = tuple(attrs.evolve(h, rule=attrs.evolve(h.rule, comment=comment)) for h in rules.hooks)
        families.append(attrs.evolve(rules, chains=chains, hooks=hooks))
    return attrs.evolve(ruleset, families=tuple(families))


BASE = compile(build_state({}), "node-a", build_config({}))


@example(comment="é" * 200)
@example(comment="a" * 127 + "€")
@example(comment="\U0001f600" * 33)
@given(comment=st.text(st.characters(codec="utf-8", blacklist_characters="\x00"), min_size=1, max_size=200))
def test_the_nft_backend_cuts_any_comment_at_a_character_boundary_within_128_bytes(comment: str) -> None:
    import json

    [output] = NftablesBackend().render(with_comment(BASE, comment))
    written = {c["add"]["rule"]["comment"] for c in json.loads(output.text)["nftables"] if "rule" in c.get("add", {})}
    assert written == {truncate_utf8(comment, NFT_COMMENT_MAX)}
    [text] = written
    assert len(text.encode()) <= NFT_COMMENT_MAX and comment.startswith(text)
    assert len(text.encode()) > NFT_COMMENT_MAX - 4 or text == comment


@given(comment=st.text(st.sampled_from("abc XYZ-:/.0"), min_size=1, max_size=600))
def test_the_iptables_backend_cuts_an_ascii_comment_at_255_bytes(comment: str) -> None:
    ruleset = with_comment(BASE, comment)
    [output] = IptablesBackend(Family.IPV4).render(ruleset)
    expected = f'--comment "{comment[:IPTABLES_COMMENT_MAX]}" '
    rules = [line for line in output.text.splitlines() if line.startswith(("-A ", "-I "))]
    assert rules and all(expected in line for line in rules)


# ------------------------------------------------------------------ convergence with the longest names


@example(values=LONGEST)
@given(values=st.fixed_dictionaries({"namespace": dns_labels, "name": dns_subdomains, "node_b": dns_subdomains}))
def test_a_plan_after_a_render_of_long_names_is_empty_on_both_datapaths(values: dict[str, Any]) -> None:
    """Regression: comments cut only by the backends never compared equal, so every plan replaced every rule."""
    state, config = build_state(values), build_config(values)
    for node in state.nodes:
        ruleset = compile(state, node.name, config)
        iptables_node = FakeNode()
        iptables_node.ip.devices.add(config.tunnel_device)
        iptables_node.apply(render_all(ruleset, APPLY_ORDER))
        result = plan(ruleset, iptables_node.observe(config))
        assert result.is_empty, result.drift
        nft_node = FakeNftNode()
        nft_node.ip.devices.add(config.tunnel_device)
        nft_node.apply(render_all(ruleset, ("nft", "iproute")))
        result = plan(ruleset, nft_node.observe(config))
        assert result.is_empty, result.drift


# ------------------------------------------------------------------ maxelem


@example(count=65536, limit=1 << 24)
@example(count=65537, limit=1 << 24)
@example(count=70_000, limit=100_000)
@example(count=(1 << 24) + 1, limit=1 << 24)
@given(count=st.integers(0, 1 << 29), limit=st.integers(65536, 1 << 28))
def test_maxelem_holds_the_entries_or_the_set_is_refused(count: int, limit: int) -> None:
    if count > limit:
        with pytest.raises(UnsupportedError, match="maxelem limit"):
            maxelem_for(count, limit, "set s")
        return
    maxelem = maxelem_for(count, limit, "set s")
    assert count <= maxelem <= limit
    assert maxelem == limit or (maxelem >= DEFAULT_MAXELEM and maxelem & (maxelem - 1) == 0)
    assert maxelem == DEFAULT_MAXELEM or maxelem // 2 < count


def spread(count: int, family: Family = Family.IPV4, start: int = 0) -> tuple[Cidr, ...]:
    """``count`` host prefixes no two of which are adjacent (so nothing collapses)."""
    base = 0x0A000000 if family is Family.IPV4 else 0xFD00_0000_0000_0000_0000_0000_0000_0000
    return tuple(Cidr.trusted(family, base + 2 * i, family.bits) for i in range(start, start + count))


def with_set_members(ruleset: RuleSet, name: str, members: tuple[Cidr, ...]) -> RuleSet:
    families = []
    for rules in ruleset.families:
        sets = tuple(attrs.evolve(s, members=members) if s.name == name else s for s in rules.sets)
        families.append(attrs.evolve(rules, sets=sets))
    return attrs.evolve(ruleset, families=tuple(families))


def big_state(count: int, start: int = 0) -> ClusterState:
    sources = [Endpoint(str(c), "node-a") for c in spread(count, start=start)]
    return ClusterState(
        nodes=[Node("node-a", tunnel_ipv4="172.31.0.1"), Node("node-b", tunnel_ipv4="172.31.0.2")],
        policies=[Policy(namespace="d", name="big", gateway_node="node-b", sources=sources,
                         egress_ip=EgressIP(ipv4="192.0.2.1"))])


def source_set(ruleset: RuleSet) -> IPSet:
    rules = ruleset.family(Family.IPV4)
    assert rules is not None
    [ipset] = [s for s in rules.sets if s.provenance.policy is not None]
    return ipset


V4 = Config(ipv6=False)


def test_a_set_past_the_default_maxelem_is_written_with_a_larger_one_and_loads() -> None:
    ruleset = compile(big_state(70_000), "node-a", V4)
    name = source_set(ruleset).name
    [output] = IpsetBackend().render(ruleset)
    creates = [line for line in output.text.splitlines() if line.startswith("create ")]
    assert f"create {name} hash:net family inet hashsize 1024 maxelem 131072 -exist" in creates
    assert "create egress-tmp-v4 hash:net family inet hashsize 1024 maxelem 131072" in creates
    node = FakeNode()
    node.apply((output,))
    assert node.ipset.sets[name].maxelem == 131072 and len(node.ipset.sets[name].members) == 70_000


def test_a_set_over_the_configured_limit_is_refused_by_every_renderer() -> None:
    config = Config(ipv6=False, ipset_maxelem_limit=65536)
    ruleset = compile(big_state(65_537), "node-a", config)
    with pytest.raises(UnsupportedError, match="65537 entries exceed the configured ipset maxelem limit 65536"):
        render_all(ruleset)
    with pytest.raises(UnsupportedError, match="maxelem limit"):
        plan(ruleset, FakeNode().observe(config))
    bad: Any
    for bad in (65535, (1 << 28) + 1, True, "65536"):
        with pytest.raises(InvalidInputError, match="ipset_maxelem_limit"):
            Config(ipset_maxelem_limit=bad)


def test_a_plan_grows_a_set_past_its_maxelem_with_a_scratch_set() -> None:
    node = FakeNode()
    small = compile(big_state(100), "node-a", V4)
    node.apply(render_all(small))
    name = source_set(small).name
    assert node.ipset.sets[name].maxelem == DEFAULT_MAXELEM
    large = compile(big_state(70_000), "node-a", V4)
    result = plan(large, node.observe(V4))
    assert any(isinstance(op, ReplaceSet) for op in result.sets_before)
    outputs = render_plan(result, V4)
    [before] = [o for o in outputs if o.name == "ipset-before.restore"]
    assert "create egress-tmp-v4 hash:net family inet hashsize 1024 maxelem 131072" in before.text
    assert f"swap egress-tmp-v4 {name}" in before.text and f"create {name} " not in before.text
    node.apply(outputs)
    assert node.ipset.sets[name].maxelem == 131072 and node.ipset.sets[name].members == set(source_set(large).members)


def test_a_full_set_changes_members_without_overflowing() -> None:
    """Regression: additions went before deletions, so a set at its maxelem reported "Hash is full"."""
    compiler = NodeCompiler(big_state(DEFAULT_MAXELEM), "node-a", V4)
    name = source_set(compiler.ruleset).name
    node = FakeNode()
    node.apply(render_all(compiler.ruleset))
    assert len(node.ipset.sets[name].members) == node.ipset.sets[name].maxelem == DEFAULT_MAXELEM
    # The planner, from the node's observed state.
    moved = compile(big_state(DEFAULT_MAXELEM, start=1), "node-a", V4)
    node.apply(render_plan(plan(moved, node.observe(V4)), V4))
    assert node.ipset.sets[name].members == set(source_set(moved).members)
    # The incremental path (one policy's endpoints change), from the previous RuleSet.
    node = FakeNode()
    node.apply(render_all(compiler.ruleset))
    first, last = spread(1)[0], spread(1, start=DEFAULT_MAXELEM)[0]
    update = compiler.update_endpoints(PolicyKey("d", "big"), add=[Endpoint(str(last), "node-a")],
                                       remove=[Endpoint(str(first), "node-a")])
    node.apply(render_plan(update.plan, V4))
    assert node.ipset.sets[name].members == set(source_set(update.current).members)
    assert first not in node.ipset.sets[name].members and last in node.ipset.sets[name].members
