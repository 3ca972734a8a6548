"""Writing a plan for the tools: restore and batch deltas, and conntrack commands.

Outputs, in apply order: ``ipset-before.restore``, ``iproute-v4.delta``,
``iproute-v6.delta`` (routes and rules for gateways about to be used),
``iptables.delta``, ``ip6tables.delta``, ``nftables.delta.json`` (the
nftables datapath's one atomic batch, see :mod:`egress_rules.plan.nft`),
``iproute-v4-after.delta``, ``iproute-v6-after.delta`` (routing of gateways
no longer used), ``ipset-after.restore``, ``conntrack.commands``. An output
with nothing to do is left out; a plan with nothing to do renders to nothing.
"""

from __future__ import annotations

import json

from egress_rules.backends.base import Output
from egress_rules.backends.iproute import command_for, route_args, route_destination, rule_args
from egress_rules.backends.ipset import COMMAND as IPSET_COMMAND
from egress_rules.backends.ipset import create_line, maxelem_for, render_set
from egress_rules.backends.iptables import render_rule, tool_name
from egress_rules.compiler import naming
from egress_rules.errors import UnsupportedError
from egress_rules.model.config import Config
from egress_rules.plan.model import (
    AddIPRule,
    AddMembers,
    AppendRule,
    CreateChain,
    CreateSet,
    DeleteChain,
    DeleteIPRule,
    DeleteMembers,
    DeleteRoute,
    DeleteRule,
    DestroySet,
    FlushChain,
    InsertRule,
    IptablesDelta,
    Plan,
    ReplaceRoute,
    ReplaceRule,
    ReplaceSet,
    RouteDelta,
    RouteOp,
    SetOp,
    TableOp,
)
from egress_rules.plan.nft import render_nft_batch
from egress_rules.plan.planner import ipset_entries


def _table_op(op: TableOp) -> str:
    if isinstance(op, CreateChain):
        return f":{op.chain} - [0:0]"
    if isinstance(op, AppendRule):
        return f"-A {op.chain} {render_rule(op.rule)}"
    if isinstance(op, InsertRule):
        return f"-I {op.chain} {op.position} {render_rule(op.rule)}"
    if isinstance(op, ReplaceRule):
        return f"-R {op.chain} {op.position} {render_rule(op.rule)}"
    if isinstance(op, DeleteRule):
        return f"-D {op.chain} {op.position}"
    if isinstance(op, FlushChain):
        return f"-F {op.chain}"
    if isinstance(op, DeleteChain):
        return f"-X {op.chain}"
    raise TypeError(f"unknown iptables operation {op!r}")


def render_iptables_delta(delta: IptablesDelta) -> str:
    lines = []
    for table in delta.tables:
        lines.append(f"*{table.table.value}")
        lines.extend(_table_op(op) for op in table.ops)
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _set_ops(ops: tuple[SetOp, ...], config: Config) -> list[str]:
    lines: list[str] = []
    for op in ops:
        if isinstance(op, CreateSet):
            entries = sorted(ipset_entries(op.ipset))
            maxelem = maxelem_for(len(entries), config.ipset_maxelem_limit, f"set {op.ipset.name}")
            lines.append(create_line(op.ipset.name, op.ipset, maxelem, exist=False))
            lines.extend(f"add {op.ipset.name} {entry.host_str()}" for entry in entries)
        elif isinstance(op, ReplaceSet):
            temporary = naming.temporary_set_name(config, op.ipset.family)
            lines.append(f"destroy {temporary} -exist")
            # The existing set may differ in size limit, so it is not re-declared here: swap needs only type and family.
            lines.extend(line for line in render_set(op.ipset, temporary, config.ipset_maxelem_limit)
                         if not line.startswith(f"create {op.ipset.name} "))
        elif isinstance(op, AddMembers):
            lines.extend(f"add {op.name} {m.host_str()} -exist" for m in op.members)
        elif isinstance(op, DeleteMembers):
            lines.extend(f"del {op.name} {m.host_str()} -exist" for m in op.members)
        elif isinstance(op, DestroySet):
            lines.append(f"destroy {op.name}")
        else:
            raise TypeError(f"unknown ipset operation {op!r}")
    return lines


def _route_op(op: RouteOp) -> str:
    if isinstance(op, AddIPRule):
        return f"rule add {rule_args(op.rule)}"
    if isinstance(op, DeleteIPRule):
        mark = "" if op.mark is None else f" fwmark {op.mark:#x}/{op.mask or 0xFFFFFFFF:#x}"
        table = "" if op.table is None else f" table {op.table}"
        return f"rule del pref {op.priority}{rule_selectors(op.selectors)}{mark}{table} protocol {op.protocol}"
    if isinstance(op, ReplaceRoute):
        return f"route replace {route_args(op.route)}"
    if isinstance(op, DeleteRoute):
        return f"route del {route_destination(op.destination)} table {op.table} proto {op.protocol}"
    raise TypeError(f"unknown routing operation {op!r}")


# ``ip -j rule`` keys, and how ``ip rule`` names them; flags have no value.
_ADDRESS_SELECTORS = {"src": ("from", "srclen"), "dst": ("to", "dstlen")}
_VALUE_SELECTORS = {"tos": "tos", "iif": "iif", "oif": "oif", "ipproto": "ipproto", "sport": "sport",
                    "dport": "dport"}
_FLAG_SELECTORS = {"not": "not", "l3mdev": "l3mdev"}
_IGNORED_SELECTORS = {"srclen", "dstlen", "iif_detached", "oif_detached", "action"}


def rule_selectors(selectors: tuple[tuple[str, str], ...]) -> str:
    """The selectors of an observed rule as ``ip rule`` arguments (with a leading space), so a delete names it.

    A selector ``ip rule`` has no argument for would make the delete match
    another rule, so it is an error rather than left out.
    """
    values = {key: json.loads(value) for key, value in selectors}
    words: list[str] = []
    for key, value in sorted(values.items()):
        if key in _ADDRESS_SELECTORS:
            keyword, length_key = _ADDRESS_SELECTORS[key]
            if value != "all":
                length = values.get(length_key)
                words.append(f"{keyword} {value}" + (f"/{length}" if isinstance(length, int) else ""))
        elif key in _VALUE_SELECTORS:
            words.append(f"{_VALUE_SELECTORS[key]} {value}")
        elif key in _FLAG_SELECTORS:
            if value:
                words.append(_FLAG_SELECTORS[key])
        elif key not in _IGNORED_SELECTORS:
            raise UnsupportedError(f"ip rule selector {key}", "cannot be named in an ip rule delete")
    for word in words:
        if any(c.isspace() or c in "\"'#;\\" for c in word.split(" ", 1)[-1]):
            raise UnsupportedError(f"ip rule selector {word!r}", "has characters ip -batch would misread")
    return "".join(f" {word}" for word in words)


def render_routing_delta(delta: RouteDelta) -> str:
    return "\n".join(_route_op(op) for op in delta.ops) + "\n"


def render_plan(plan: Plan, config: Config) -> tuple[Output, ...]:
    """The plan's outputs in apply order; empty for an empty plan. Nothing is returned if any part fails."""
    outputs: list[Output] = []
    if plan.sets_before:
        outputs.append(Output("ipset-before.restore", IPSET_COMMAND, "\n".join(_set_ops(plan.sets_before, config))
                              + "\n"))
    for routing in plan.routing:
        outputs.append(Output(f"iproute-{routing.family.suffix}.delta", f"{command_for(routing.family)} FILE",
                              render_routing_delta(routing)))
    for delta in plan.iptables:
        name = tool_name(delta.family)
        outputs.append(Output(f"{name}.delta", f"{name}-restore --noflush", render_iptables_delta(delta)))
    if plan.nft:
        outputs.append(Output("nftables.delta.json", "nft -j -f", render_nft_batch(plan.nft, config)))
    for routing in plan.routing_after:
        outputs.append(Output(f"iproute-{routing.family.suffix}-after.delta", f"{command_for(routing.family)} FILE",
                              render_routing_delta(routing)))
    if plan.sets_after:
        outputs.append(Output("ipset-after.restore", IPSET_COMMAND, "\n".join(_set_ops(plan.sets_after, config))
                              + "\n"))
    if plan.conntrack:
        outputs.append(Output("conntrack.commands", "each line is one command; exit status 1 means no entry matched",
                              "\n".join(" ".join(f.argv()) for f in plan.conntrack) + "\n"))
    return tuple(outputs)
