"""Hostile-but-valid outputs, and outputs at every limit, load into the real tools.

Each test works in throwaway network namespaces of its own (``egrt-<token>-...``,
deleted on exit, also on failure), never in the root namespace, and every
command is bounded by a timeout. What is loaded:

* full renders of clusters whose names and settings are at their maximum
  length or of unusual but valid shape: ``iptables-restore --test`` and
  ``ip6tables-restore --test`` (nf_tables and legacy), then ``ipset restore``,
  the real iptables loads, ``nft -j -c -f`` then ``nft -j -f``, ``ip -batch``;
  read back with the tools, a plan on either datapath is empty (the kernel
  holds exactly the model, comments at their byte limits included);
* comments at exactly the backends' byte limits, and one byte over, to show
  the limits are the tools' own;
* sets at and past ipset's default ``maxelem``: a 70 000-entry set loads with
  the maxelem the backend wrote, the planner grows a smaller set into it by a
  scratch set and ``swap`` (which needs only the same type and family), and a
  full set changes members without overflowing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest

from egress_rules.backends import APPLY_ORDER, render_all
from egress_rules.backends.base import Output
from egress_rules.backends.ipset import DEFAULT_MAXELEM
from egress_rules.backends.iptables import COMMENT_MAX_BYTES as IPTABLES_COMMENT_MAX
from egress_rules.backends.nftables import COMMENT_MAX_BYTES as NFT_COMMENT_MAX
from egress_rules.compiler import compile
from egress_rules.model.addresses import Family
from egress_rules.model.cluster import ClusterState, Node
from egress_rules.model.config import Config
from egress_rules.model.ruleset import RuleSet
from egress_rules.observed import (
    ObservedState,
    Ownership,
    parse_ip_routes,
    parse_ip_rules,
    parse_ipset_save,
    parse_iptables_save,
    parse_nft_list,
)
from egress_rules.plan import plan, render_plan
from tests.test_hardening_limits import LONGEST, big_state, source_set, with_comment
from tests.test_hardening_render import build_config, build_state, check_outputs

from .netns import CommandError, Namespace

pytestmark = pytest.mark.kernel

TIMEOUT = 60.0  # a 70 000-line ipset restore takes well under a second; this only bounds a hang

# Valid values of unusual shape: digits first, dots, dashes and underscores wherever allowed.
ODD: dict[str, Any] = {
    "namespace": "0-0", "name": "1.a-b.2", "cluster_policy": "9", "node_a": "a.b-0", "node_b": "0.0.0.0",
    "node_c": "c--c.9", "owner": "0._-x", "set_prefix": "S.-_", "reset_mark": "a.B-c_D",
    "mark_request": "m.r-1_", "no_snat": "N-._", "snat_eip": "s.E", "gateway_prefix": "g.w-_",
    "tunnel_device": "_.-0", "nft_table": "t_0",
}
SAMPLES = {"longest": LONGEST, "odd": ODD, "defaults": {}}


@contextmanager
def node_namespace(node: Node, tunnel_device: str) -> Iterator[Namespace]:
    """A namespace with a tunnel device carrying ``node``'s tunnel addresses (the routes' next hops are on-link)."""
    with Namespace("hard") as ns:
        commands = [f"link add {tunnel_device} type vxlan id 100 dstport 7789", f"link set {tunnel_device} up"]
        if node.tunnel_ipv4 is not None:
            commands.append(f"addr add {node.tunnel_ipv4}/16 dev {tunnel_device}")
        if node.tunnel_ipv6 is not None:
            commands.append(f"addr add {node.tunnel_ipv6}/112 dev {tunnel_device} nodad")
        ns.ip("-batch", "-", input="\n".join(commands) + "\n")
        yield ns


_ARGV = {
    "ipset restore": ("ipset", "restore"),
    "iptables-restore": ("iptables-restore", "--noflush"),
    "ip6tables-restore": ("ip6tables-restore", "--noflush"),
    "ip -4 -batch": ("ip", "-4", "-batch", "-"),
    "ip -6 -batch": ("ip", "-6", "-batch", "-"),
    "nft -j -f": ("nft", "-j", "-f", "-"),
}


def apply(ns: Namespace, outputs: Iterable[Output]) -> None:
    """Apply a render or a plan in order; conntrack commands are left out (no flows here)."""
    for output in outputs:
        if output.name == "conntrack.commands":
            continue
        [argv] = [argv for prefix, argv in _ARGV.items() if output.command.startswith(prefix)]
        ns.run(*argv, input=output.text, timeout=TIMEOUT)


def observe(ns: Namespace, config: Config, *, nft: bool = False, legacy: bool = False) -> ObservedState:
    own = Ownership(config)
    rules = {f: parse_ip_rules(ns.run("ip", f"-{f.value}", "-j", "rule").stdout, f, own) for f in Family}
    routes = {f: parse_ip_routes(ns.run("ip", f"-{f.value}", "-j", "route", "show", "table", "all").stdout, f, own)
              for f in Family}
    if nft:
        return ObservedState(nft=parse_nft_list(ns.run("nft", "-j", "list", "ruleset").stdout, own),
                             ip_rules=rules, routes=routes)
    saves = {Family.IPV4: "iptables-legacy-save" if legacy else "iptables-save",
             Family.IPV6: "ip6tables-legacy-save" if legacy else "ip6tables-save"}
    return ObservedState(
        iptables={f: parse_iptables_save(ns.run(tool, timeout=TIMEOUT).stdout, f, own) for f, tool in saves.items()},
        ipsets=parse_ipset_save(ns.run("ipset", "save", timeout=TIMEOUT).stdout, own),
        ip_rules=rules, routes=routes)


def _outputs(ruleset: RuleSet) -> dict[str, Output]:
    return {o.name: o for o in render_all(ruleset, (*APPLY_ORDER, "nft"))}


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_hostile_but_valid_renders_load_and_read_back_as_the_model(sample: str) -> None:
    values = SAMPLES[sample]
    state, config = build_state(values), build_config(values)
    for node in state.nodes[:2]:
        ruleset = compile(state, node.name, config)
        outputs = _outputs(ruleset)
        check_outputs(ruleset, outputs.values())
        iptables = [outputs[n] for n in ("iptables.rules", "ip6tables.rules")]
        with node_namespace(node, config.tunnel_device) as ns:
            apply(ns, [outputs["ipset.restore"]])  # the set matches need their sets, even for --test
            for output in iptables:
                tool = output.command.split()[0]
                for variant in (tool, tool.replace("tables-restore", "tables-legacy-restore")):
                    ns.run(variant, "--test", "--noflush", input=output.text, timeout=TIMEOUT)
            ns.run("nft", "-j", "-c", "-f", "-", input=outputs["nftables.json"].text, timeout=TIMEOUT)
            apply(ns, [*iptables, outputs["iproute-v4.batch"], outputs["iproute-v6.batch"]])
            for output in iptables:  # the same text through the legacy tools, read back separately
                ns.run(output.command.split()[0].replace("tables-restore", "tables-legacy-restore"), "--noflush",
                       input=output.text, timeout=TIMEOUT)
            apply(ns, [outputs["nftables.json"]])
            for how in ({}, {"legacy": True}, {"nft": True}):
                result = plan(ruleset, observe(ns, config, **how))
                assert result.is_empty, (sample, node.name, how, result.drift)


def _rule_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("-A ")]


def test_comments_at_the_byte_limits_load_and_longer_ones_are_not_stored_whole() -> None:
    """The backends' limits are the tools' own: iptables keeps 255 bytes (it cuts more silently, byte-wise,
    so a plan would never find the comment it wrote), and nft's text syntax refuses more than 128."""
    with Namespace("cmt") as ns:
        at_limit = "a b" * (IPTABLES_COMMENT_MAX // 3)  # with spaces, so iptables-save quotes it
        assert len(at_limit) == IPTABLES_COMMENT_MAX
        for tool, save in (("iptables-restore", "iptables-save"), ("iptables-legacy-restore", "iptables-legacy-save")):
            for chain, comment in (("C", at_limit), ("D", at_limit + "y")):
                ns.run(tool, "--noflush", input=f"*filter\n:{chain} - [0:0]\n-A {chain} -m comment --comment "
                                                 f'"{comment}" -j ACCEPT\nCOMMIT\n', timeout=TIMEOUT)
            saved = _rule_lines(ns.run(save).stdout)
            assert saved == [f'-A C -m comment --comment "{at_limit}" -j ACCEPT',
                             f'-A D -m comment --comment "{at_limit}" -j ACCEPT'], saved
        for comment in ("n" * NFT_COMMENT_MAX, "é" * (NFT_COMMENT_MAX // 2), "a" * (NFT_COMMENT_MAX - 1) + "€"):
            ruleset = with_comment(compile(build_state({}), "node-a", build_config({})), comment)
            [output] = render_all(ruleset, ("nft",))
            ns.run("nft", "-j", "-f", "-", input=output.text, timeout=TIMEOUT)
            listed = json.loads(ns.run("nft", "-j", "list", "ruleset").stdout)["nftables"]
            stored = {item["rule"].get("comment") for item in listed
                      if "rule" in item and item["rule"]["table"] == ruleset.config.nft_table}
            cut = comment.encode()[:NFT_COMMENT_MAX].decode(errors="ignore")
            assert stored == {cut} and len(cut.encode()) <= NFT_COMMENT_MAX
        # nft's text syntax refuses a longer comment (its JSON input does not check): a listing of our
        # table must stay loadable as text, so the backend keeps to 128 bytes.
        too_long = 'table ip cmt_check { chain c { accept comment "' + "z" * (NFT_COMMENT_MAX + 1) + '" } }\n'
        with pytest.raises(CommandError, match="comment too long"):
            ns.run("nft", "-c", "-f", "-", input=too_long, timeout=TIMEOUT)


# ------------------------------------------------------------------ maxelem

V4 = Config(ipv6=False)
NODE_A = Node("node-a", tunnel_ipv4="172.31.0.1")


def set_header(ns: Namespace, name: str) -> Mapping[str, str]:
    """``ipset list -t NAME`` as a mapping (Header is split into its words)."""
    lines = ns.run("ipset", "list", "-t", name).stdout.splitlines()
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    words = fields["Header"].split()
    return {**fields, **dict(zip(words[::2], words[1::2], strict=False))}


def _load_full(ns: Namespace, state: ClusterState) -> RuleSet:
    ruleset = compile(state, "node-a", V4)
    apply(ns, render_all(ruleset))
    return ruleset


def test_a_set_past_the_default_maxelem_loads_with_the_maxelem_written() -> None:
    with node_namespace(NODE_A, V4.tunnel_device) as ns:
        ruleset = _load_full(ns, big_state(70_000))
        header = set_header(ns, source_set(ruleset).name)
        assert header["maxelem"] == "131072" and header["Number of entries"] == "70000"
        assert plan(ruleset, observe(ns, V4)).is_empty


def test_a_set_exactly_at_the_default_maxelem_loads_and_changes_members_without_overflowing() -> None:
    """The planner deletes members before it adds: a full set has no room for an addition first.

    (Adding first made ``ipset restore`` fail with "Hash is full" on the fake and, not every time, on
    kernel 6.18, whose count of a set's elements is not always exact; ``test_hardening_limits`` has the
    deterministic regression test.)
    """
    with node_namespace(NODE_A, V4.tunnel_device) as ns:
        full = _load_full(ns, big_state(DEFAULT_MAXELEM))
        name = source_set(full).name
        assert set_header(ns, name)["maxelem"] == str(DEFAULT_MAXELEM)
        moved = compile(big_state(DEFAULT_MAXELEM, start=1), "node-a", V4)
        apply(ns, render_plan(plan(moved, observe(ns, V4)), V4))
        header = set_header(ns, name)
        assert header["maxelem"] == str(DEFAULT_MAXELEM) and header["Number of entries"] == str(DEFAULT_MAXELEM)
        assert plan(moved, observe(ns, V4)).is_empty


def test_a_plan_grows_a_set_past_its_maxelem_by_swapping_in_a_scratch_set() -> None:
    with node_namespace(NODE_A, V4.tunnel_device) as ns:
        small = _load_full(ns, big_state(100))
        name = source_set(small).name
        assert set_header(ns, name)["maxelem"] == str(DEFAULT_MAXELEM)
        large = compile(big_state(70_000), "node-a", V4)
        outputs = render_plan(plan(large, observe(ns, V4)), V4)
        assert any(f"swap egress-tmp-v4 {name}" in o.text for o in outputs)
        apply(ns, outputs)  # the swap happens while iptables rules name the set
        header = set_header(ns, name)
        assert header["maxelem"] == "131072" and header["Number of entries"] == "70000"
        assert int(header["References"]) > 0
        assert plan(large, observe(ns, V4)).is_empty


def test_swap_needs_the_same_type_and_family_only() -> None:
    """What the scratch-set swap relies on, in the kernel: maxelem and hashsize may differ; family and type not."""
    with Namespace("swap") as ns:
        script = ("create a hash:net family inet hashsize 1024 maxelem 65536\n"
                  "create b hash:net family inet hashsize 4096 maxelem 262144\n"
                  "create c hash:net family inet6\ncreate d hash:ip family inet\n")
        ns.run("ipset", "restore", input=script)
        ns.run("ipset", "swap", "a", "b")
        assert set_header(ns, "a")["maxelem"] == "262144"
        for other in ("c", "d"):
            with pytest.raises(CommandError, match="type does not match"):
                ns.run("ipset", "swap", "a", other)


def test_the_full_ipset_render_does_not_change_an_existing_sets_maxelem() -> None:
    """Why the planner swaps: ``create -exist`` refuses an existing set whose maxelem differs.

    A full render re-applied after a set crossed 65536 entries stops at that set's ``create`` line (sets
    before it in the file already replaced); plan instead (see docs/security.md).
    """
    with node_namespace(NODE_A, V4.tunnel_device) as ns:
        _load_full(ns, big_state(100))
        [ipset_output] = [o for o in render_all(compile(big_state(70_000), "node-a", V4)) if o.name == "ipset.restore"]
        with pytest.raises(CommandError, match="set with the same name already exists"):
            ns.run("ipset", "restore", input=ipset_output.text, timeout=TIMEOUT)
