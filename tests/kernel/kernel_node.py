"""Driving one node namespace the way a user of the library would, with the real tools.

This module owns: applying a full render or a rendered plan (conntrack commands
included) inside a namespace, reading the node back (``iptables-save``,
``ipset save``, ``ip -j rule``/``route``), turning the dumps into an
:class:`~egress_rules.observed.ObservedState`, normalising dumps for
byte-for-byte comparisons, and an independent check of the loaded state
against the model that uses neither the planner nor the observed-state parsers.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from egress_rules.backends.base import Output
from egress_rules.backends.iptables import render_rule
from egress_rules.model.addresses import Cidr, Family
from egress_rules.model.cluster import Node
from egress_rules.model.config import Config
from egress_rules.model.ruleset import IPSet, RuleSet
from egress_rules.observed import ObservedState
from egress_rules.plan import Plan, plan, render_plan
from tests.fakes.node import observe_dumps

from .netns import CommandError, Namespace
from .netns import run as ns_run
from .topology import SAVE_COMMANDS

__all__ = [
    "DUMP_COMMANDS",
    "ConntrackResult",
    "Dumps",
    "Variant",
    "apply_outputs",
    "comparable",
    "converge_node",
    "dump_node",
    "foreign_snapshot",
    "model_mismatches",
    "node_namespace",
    "normalised",
    "observe_node",
    "set_entries",
]

Variant = Literal["nft", "legacy"]
Dumps = dict[str, str]

#: The dump keys of :func:`tests.fakes.node.observe_dumps` and the real command behind each.
DUMP_COMMANDS: Mapping[str, tuple[str, ...]] = {
    "iptables-save": SAVE_COMMANDS["iptables"],
    "ip6tables-save": SAVE_COMMANDS["ip6tables"],
    "ipset save": SAVE_COMMANDS["ipset"],
    "ip -4 -j rule": SAVE_COMMANDS["rule4"],
    "ip -6 -j rule": SAVE_COMMANDS["rule6"],
    "ip -4 -j route": SAVE_COMMANDS["route4"],
    "ip -6 -j route": SAVE_COMMANDS["route6"],
}
_RULE_KEYS = frozenset({"priority", "src", "fwmark", "fwmask", "table", "protocol"})  # what our ip rules print
_BUILTIN_CHAINS = frozenset({"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"})
_LEGACY = {"iptables-save": SAVE_COMMANDS["iptables-legacy"], "ip6tables-save": SAVE_COMMANDS["ip6tables-legacy"]}


@contextlib.contextmanager
def node_namespace(node: Node, *, tunnel_device: str = "egress.vxlan", onlink6: bool = False,
                   uplink: tuple[str, ...] = ()) -> Iterator[str]:
    """A fresh namespace standing in for ``node``: an ``eth0`` (a veth) and a tunnel device with the node's addresses.

    Enough for every output to load (routes need their next hop on-link on the
    tunnel device). ``onlink6`` adds the tunnel's IPv6 prefix as an on-link
    route when the node has no IPv6 tunnel address; ``uplink`` lists
    prefixes (``192.0.2.2/24``) for ``eth0``. Deleted on exit, also on failure.
    """
    with Namespace("load") as ns:
        commands = [
            "link add eth0 type veth peer name eth0-peer",
            "link set eth0 up",
            f"link add {tunnel_device} type vxlan id 100 dstport 7789",
            f"link set {tunnel_device} up",
        ]
        commands += [f"addr add {prefix} dev eth0{' nodad' if ':' in prefix else ''}" for prefix in uplink]
        if node.tunnel_ipv4 is not None:
            commands.append(f"addr add {node.tunnel_ipv4}/16 dev {tunnel_device}")
        if node.tunnel_ipv6 is not None:
            commands.append(f"addr add {node.tunnel_ipv6}/112 dev {tunnel_device} nodad")
        elif onlink6:
            commands.append(f"route add fd11::/112 dev {tunnel_device}")
        ns.ip("-batch", "-", input="\n".join(commands) + "\n")
        yield ns.name


def _argv(output: Output, variant: Variant) -> tuple[str, ...]:
    command = output.command
    legacy = variant == "legacy"
    if command.startswith("ipset restore"):
        return ("ipset", "restore")
    if command.startswith("iptables-restore"):
        return ("iptables-legacy-restore" if legacy else "iptables-restore", "--noflush")
    if command.startswith("ip6tables-restore"):
        return ("ip6tables-legacy-restore" if legacy else "ip6tables-restore", "--noflush")
    if command.startswith("ip -4 -batch"):
        return ("ip", "-4", "-batch", "-")
    if command.startswith("ip -6 -batch"):
        return ("ip", "-6", "-batch", "-")
    if command.startswith("nft -j -f"):
        return ("nft", "-j", "-f", "-")
    raise ValueError(f"do not know how to apply {output.name!r} ({command!r})")


@dataclass(frozen=True)
class ConntrackResult:
    """One line of ``conntrack.commands`` as run: its argv, exit status and what it printed."""

    argv: tuple[str, ...]
    returncode: int
    stderr: str

    @property
    def deleted(self) -> int:
        match = re.search(r"(\d+) flow entries have been deleted", self.stderr)
        return int(match.group(1)) if match else 0


def apply_outputs(ns: str, outputs: Iterable[Output], *, variant: Variant = "nft",
                  conntrack: bool = True) -> list[ConntrackResult]:
    """Apply a full render or a rendered plan in ``ns``, in the given order.

    ``conntrack.commands`` lines run one by one (exit 1 = nothing matched is
    fine); ``conntrack=False`` skips them (to show what they are for).
    Raises :class:`CommandError` on any tool failure.
    """
    results: list[ConntrackResult] = []
    for output in outputs:
        if output.name == "conntrack.commands":
            if not conntrack:
                continue
            for line in output.text.splitlines():
                argv = tuple(shlex.split(line))
                if not argv:
                    continue
                if argv[0] != "conntrack" or "-D" not in argv:
                    raise ValueError(f"unexpected conntrack command {line!r}")
                proc = ns_run(ns, *argv, check=False)
                if proc.returncode not in (0, 1):
                    raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
                results.append(ConntrackResult(argv, proc.returncode, proc.stderr))
            continue
        ns_run(ns, *_argv(output, variant), input=output.text)
    return results


def dump_node(ns: str, variant: Variant = "nft") -> Dumps:
    """What the real tools print in ``ns``, keyed like :func:`tests.fakes.node.observe_dumps` expects."""
    dumps = {}
    for key, argv in DUMP_COMMANDS.items():
        command = _LEGACY[key] if variant == "legacy" and key in _LEGACY else argv
        dumps[key] = ns_run(ns, *command).stdout
    return dumps


def observe_node(ns: str, config: Config, variant: Variant = "nft") -> ObservedState:
    return observe_dumps(dump_node(ns, variant), config)


def converge_node(ns: str, desired: RuleSet, *, variant: Variant = "nft",
                  conntrack: bool = True) -> tuple[Plan, tuple[Output, ...], list[ConntrackResult]]:
    """Observe ``ns`` with the real tools, plan, apply the rendered plan; returns what was done."""
    config = desired.config
    current = plan(desired, observe_node(ns, config, variant))
    outputs = render_plan(current, config)
    return current, outputs, apply_outputs(ns, outputs, variant=variant, conntrack=conntrack)


# ------------------------------------------------------------ normalisation

_COUNTERS = re.compile(r"\[\d+:\d+\]")
_INITVAL = re.compile(r" ?initval 0x[0-9a-f]+")


def normalised(dumps: Mapping[str, str]) -> Dumps:
    """Dumps without what changes by itself: dates, counters, ipset's random initval."""
    result = {}
    for key, text in dumps.items():
        if key.endswith("-save"):
            result[key] = "".join(f"{_COUNTERS.sub('[0:0]', line)}\n" for line in text.splitlines()
                                  if not line.startswith("#"))
        elif key == "ipset save":
            result[key] = _INITVAL.sub("", text)
        else:
            result[key] = text
    return result


def comparable(observed: ObservedState, *, kernel_routes: bool = True) -> dict[str, Any]:
    """``observed`` without what the kernel picks by itself or prints in its own order.

    Drops ipset's random ``initval`` and the order of tables, chains and sets;
    ``kernel_routes=False`` also drops routes in the main and local tables
    (connected and local routes the kernel adds for addresses).
    """
    iptables = {
        family: (dump.variant, {table.name: {chain.name: (chain.builtin, chain.policy, chain.owned,
                                                          tuple((r.text, r.owned, r.body) for r in chain.rules))
                                             for chain in table.chains}
                                for table in dump.tables})
        for family, dump in observed.iptables.items()
    }
    sets = {s.name: (s.set_type, s.owned, s.family, s.maxelem, tuple(_INITVAL.sub("", " ".join(s.options)).split()),
                     s.members, s.member_count) for s in observed.ipsets}
    routes = {family: tuple(sorted((r for r in items if kernel_routes or r.table not in (254, 255)), key=repr))
              for family, items in observed.routes.items()}
    return {"iptables": iptables, "ipsets": sets, "ip_rules": dict(observed.ip_rules), "routes": routes}


# ------------------------------------------------------------ independent check


def _iptables_chains(text: str) -> dict[str, dict[str, list[str]]]:
    """``{table: {chain: [rule text after '-A CHAIN ']}}`` from *-save text, counters dropped."""
    tables: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            current = tables.setdefault(line[1:], {})
        elif line.startswith(":") and current is not None:
            current.setdefault(line[1:].split()[0], [])
        elif line.startswith("-A ") and current is not None:
            chain, _, rest = line[3:].partition(" ")
            current.setdefault(chain, []).append(rest)
    return tables


def _ipset_entries(text: str) -> dict[str, tuple[str, frozenset[Any]]]:
    """``{set: (create line without initval, {ip_network})}`` from ``ipset save``."""
    sets: dict[str, tuple[str, set[Any]]] = {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0] == "create":
            sets[words[1]] = (_INITVAL.sub("", line), set())
        elif words and words[0] == "add":
            sets[words[1]][1].add(ipaddress.ip_network(words[2]))
    return {name: (header, frozenset(entries)) for name, (header, entries) in sets.items()}


def set_entries(ipset: IPSet) -> frozenset[Any]:
    """What ``hash:net`` must hold for ``ipset``: its members, a /0 written as two /1 halves."""
    entries: set[Any] = set()
    for member in ipset.members:
        network = ipaddress.ip_network(str(member))
        entries.update(network.subnets() if network.prefixlen == 0 else (network,))
    return frozenset(entries)


def _owned_chain(name: str, config: Config) -> bool:
    chains = config.chains
    return name in (chains.reset_mark, chains.mark_request, chains.no_snat, chains.snat_eip) or \
        name.startswith(chains.gateway_prefix)


def model_mismatches(dumps: Mapping[str, str], desired: RuleSet, *,
                     foreign_sets: Iterable[str] = ()) -> list[str]:
    """Differences between the node's dumps and ``desired``, checked from the text the tools print.

    Owned chains hold exactly ``render_rule`` of each model rule; hook rules
    are the first rules of their built-in chain in position order and no other
    rule in a built-in chain carries our comment; sets named like ours (except
    ``foreign_sets``) are exactly the model's, with its entries; ip rules and
    routes with our protocol are exactly the model's, once each.
    """
    config = desired.config
    marker = f'--comment "{config.owner}:'
    problems: list[str] = []
    for family in Family:
        rules = desired.family(family)
        key = "iptables-save" if family is Family.IPV4 else "ip6tables-save"
        saved = _iptables_chains(dumps[key])
        wanted_chains = {(c.table.value, c.name): [render_rule(r) for r in c.rules]
                         for c in (rules.chains if rules else ())}
        have_chains = {(table, name): body for table, chains in saved.items() for name, body in chains.items()
                       if _owned_chain(name, config)}
        for where in sorted(set(wanted_chains) | set(have_chains)):
            if wanted_chains.get(where) != have_chains.get(where):
                problems.append(f"{family.label} {where[0]} {where[1]}: have {have_chains.get(where)} "
                                f"want {wanted_chains.get(where)}")
        hooked = {(h.table.value, h.chain.value) for h in (rules.hooks if rules else ())}
        builtin = {(t, n) for t, chains in saved.items() for n in chains if n in _BUILTIN_CHAINS}
        for table, name in sorted(hooked | builtin):
            body = saved.get(table, {}).get(name)
            hooks = [render_rule(h.rule) for h in sorted(
                (h for h in (rules.hooks if rules else ()) if h.table.value == table and h.chain.value == name),
                key=lambda h: h.position)]
            if body is None:
                problems.append(f"{family.label} {table} {name}: chain missing, want hooks {hooks}")
                continue
            if body[:len(hooks)] != hooks:
                problems.append(f"{family.label} {table} {name}: first rules {body[:len(hooks)]} want {hooks}")
            extra = [r for r in body[len(hooks):] if marker in r]
            if extra:
                problems.append(f"{family.label} {table} {name}: our rules after the hooks: {extra}")

    sets = _ipset_entries(dumps["ipset save"])
    wanted_sets = {s.name: s for rules in desired.families for s in rules.sets}
    skip = set(foreign_sets)
    for name in sorted(set(sets) | set(wanted_sets)):
        if name in skip or not (name.startswith(config.set_prefix) or name in wanted_sets):
            continue
        ipset = wanted_sets.get(name)
        if ipset is None:
            problems.append(f"set {name} is on the node but not in the model")
            continue
        if name not in sets:
            problems.append(f"set {name} is missing")
            continue
        header, entries = sets[name]
        family_word = "inet" if ipset.family is Family.IPV4 else "inet6"
        if f" hash:net family {family_word} " not in header:
            problems.append(f"set {name}: {header!r} is not hash:net {family_word}")
        if entries != set_entries(ipset):
            problems.append(f"set {name}: have {sorted(map(str, entries))} want "
                            f"{sorted(map(str, set_entries(ipset)))}")

    protocol = str(config.route_protocol)
    for family in Family:
        rules = desired.family(family)
        ours = [r for r in json.loads(dumps[f"ip -{family.value} -j rule"]) if str(r.get("protocol")) == protocol]
        problems += [f"{family.label} ip rule with other selectors: {r}" for r in ours
                     if r.get("src") != "all" or set(r) - _RULE_KEYS]
        have_rules = sorted(
            (int(r["priority"]), int(r["fwmark"], 16), int(r.get("fwmask", "0xffffffff"), 16), int(r["table"]))
            for r in ours)
        want_rules = sorted((r.priority, r.mark, r.mask, r.table) for r in (rules.ip_rules if rules else ()))
        if have_rules != want_rules:
            problems.append(f"{family.label} ip rules: have {have_rules} want {want_rules}")
        have_routes = sorted(
            (int(r["table"]), r["dst"], r.get("gateway"), r.get("dev"))
            for r in json.loads(dumps[f"ip -{family.value} -j route"]) if str(r.get("protocol")) == protocol)
        want_routes = sorted((r.table, _route_dst(r.destination), str(r.via), r.device)
                             for r in (rules.routes if rules else ()))
        if have_routes != want_routes:
            problems.append(f"{family.label} routes: have {have_routes} want {want_routes}")
    return problems


def _route_dst(cidr: Cidr) -> str:
    return "default" if cidr.prefixlen == 0 else str(cidr)


def foreign_snapshot(dumps: Mapping[str, str], config: Config, owned_sets: Iterable[str]) -> dict[str, Any]:
    """Everything in the dumps that is not ours, independent of the library's parsers.

    iptables: every non-owned chain's rules that do not carry our comment (in
    order) and every built-in chain's policy; ipset: every set not in
    ``owned_sets`` with its entries; ip rules and routes without our protocol.
    """
    marker = f'--comment "{config.owner}:'
    snapshot: dict[str, Any] = {}
    for key in ("iptables-save", "ip6tables-save"):
        for table, chains in _iptables_chains(dumps[key]).items():
            for name, body in chains.items():
                if not _owned_chain(name, config):
                    snapshot[f"{key} {table} {name}"] = [r for r in body if marker not in r]
        snapshot[f"{key} policies"] = sorted(_COUNTERS.sub("", line).strip() for line in dumps[key].splitlines()
                                             if line.startswith(":") and not line.endswith("- [0:0]")
                                             and " - " not in line)
    owned = set(owned_sets)
    snapshot["ipset"] = {name: (header, sorted(map(str, entries)))
                         for name, (header, entries) in _ipset_entries(dumps["ipset save"]).items()
                         if name not in owned}
    protocol = str(config.route_protocol)
    for key in ("ip -4 -j rule", "ip -6 -j rule", "ip -4 -j route", "ip -6 -j route"):
        snapshot[key] = [item for item in json.loads(dumps[key]) if str(item.get("protocol")) != protocol]
    return snapshot
