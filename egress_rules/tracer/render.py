"""Text rendering of node and cluster traces: one line per step, then a one-line summary.

A step line reads ``hook  chain:position  mark before->after  what happened  (why the rule exists)``.
Misses (rules that did not match, and the reason) are shown by default because
they answer "why not the policy I expected"; ``misses=False`` leaves them out.
"""

from __future__ import annotations

from egress_rules.model.ruleset import Provenance, Route
from egress_rules.tracer.model import (
    ClusterOutcome,
    ClusterTrace,
    Disposition,
    MainRoute,
    NodeTrace,
    Outcome,
    RouteKind,
    RoutingDecision,
    SourceKind,
    Step,
)

_INDENT = "    "


def describe_provenance(provenance: Provenance) -> str:
    """``mark request, policy default/web, via node-b``: why an object exists."""
    parts = [provenance.role.value]
    if provenance.policy is not None:
        parts.append(f"{provenance.policy.kind} {provenance.policy}")
    if provenance.gateway is not None:
        parts.append(f"via {provenance.gateway}" if provenance.policy is not None else f"gateway {provenance.gateway}")
    return ", ".join(parts)


def _step(step: Step) -> str:
    where = step.chain if step.position is None else f"{step.chain}:{step.position}"
    why = ""
    if step.rule is not None:
        why = f"  ({describe_provenance(step.rule.provenance)})"
    elif step.foreign is not None:
        why = f"  ({step.foreign})"
    marks = f"{step.mark_before:#010x}->{step.mark_after:#010x}"
    return f"{step.hook.label:<31} {where:<32} {marks}  {step.outcome.value}: {step.detail}{why}"


def _route(route: Route | MainRoute) -> str:
    if isinstance(route, MainRoute):
        return route.describe()
    return f"{route.destination} via {route.via} dev {route.device}"


def _routing(decision: RoutingDecision, misses: bool) -> list[str]:
    lines = []
    for check in decision.checks:
        if misses or check.matched:
            rule = check.rule
            lines.append(f"{'routing':<31} {f'ip rule {rule.priority}':<32} {decision.mark:#010x}  "
                         f"{'match' if check.matched else 'no match'}: fwmark {rule.mark:#x}/{rule.mask:#x} lookup "
                         f"{rule.table}: {check.detail}  ({describe_provenance(rule.provenance)})")
    if decision.kind is RouteKind.LOCAL:
        result = f"local table: {decision.dst} is this node's address"
    elif decision.kind is RouteKind.UNREACHABLE:
        result = f"no route to {decision.dst}"
    else:
        assert decision.route is not None
        table = "main table" if decision.kind is RouteKind.MAIN else f"table {decision.table}"
        result = f"{table}: {_route(decision.route)}"
    lines.append(f"{'routing':<31} {'route':<32} {decision.mark:#010x}  {result}")
    return lines


def format_node_trace(trace: NodeTrace, *, misses: bool = True) -> str:
    """A node trace as text, one line per step and per route lookup, then the verdict."""
    packet = trace.packet
    arrival = f"in {packet.in_interface}" if packet.in_interface is not None else "sent by the node"
    lines = [f"{trace.node}: {packet.describe()}, {arrival}, mark {packet.mark:#010x}, "
             f"ct {packet.ct_direction.value} ({trace.path.value} path)"]
    for item in _interleave(trace):
        if isinstance(item, Step):
            if misses or item.outcome not in (Outcome.NO_MATCH, Outcome.NOT_REACHED):
                lines.append(_INDENT + _step(item))
        else:
            lines.extend(_INDENT + line for line in _routing(item, misses))
    lines.append(_INDENT + "=> " + _verdict(trace))
    return "\n".join(lines)


def _interleave(trace: NodeTrace) -> list[Step | RoutingDecision]:
    """Steps and route lookups in the order they happened."""
    items: list[Step | RoutingDecision] = []
    lookups = list(trace.routing)
    for index, step in enumerate(trace.steps):
        while lookups and lookups[0].at_step <= index:
            items.append(lookups.pop(0))
        items.append(step)
    items.extend(lookups)
    return items


def _verdict(trace: NodeTrace) -> str:
    verdict = trace.verdict
    if verdict.disposition is Disposition.DROPPED:
        return f"dropped: {verdict.reason}"
    out = trace.packet_out
    assert out is not None
    leaving = f"as {out.describe()}, mark {out.mark:#010x}"
    if verdict.disposition is Disposition.DELIVERED:
        return f"delivered locally {leaving}"
    via = f" via {verdict.next_hop}" if verdict.next_hop is not None else ""
    return f"forwarded out {verdict.device}{via} {leaving}"


def summary(trace: ClusterTrace) -> str:
    """One line: the source address the destination sees, and why."""
    if trace.outcome is ClusterOutcome.DROPPED:
        return f"never arrives: {trace.reason}"
    source = trace.final_source
    policy = trace.policy
    if trace.source_kind is SourceKind.EIP:
        assert policy is not None
        why = f"EIP of {policy.kind} {policy} via {trace.nat_node}"
    elif trace.source_kind is SourceKind.GATEWAY_NODE_IP:
        assert policy is not None
        why = f"{trace.nat_node}'s address via MASQUERADE: {policy.kind} {policy} uses the gateway node's IP"
    elif trace.source_kind is SourceKind.CNI_MASQUERADE:
        why = f"{trace.nat_node}'s address via the CNI masquerade"
    else:
        why = "the original source, not translated"
        if trace.leak:
            why += "; a LEAK: the destination is outside the cluster CIDRs"
    if trace.outcome is ClusterOutcome.LEFT_CLUSTER:
        return f"leaves with {source} ({why})"
    return f"arrives with {source} ({why}); {trace.reason}"


def format_cluster_trace(trace: ClusterTrace, *, misses: bool = True) -> str:
    """A cluster trace as text: every hop (with the tunnel's outer packet), then the summary line."""
    packet = trace.packet
    lines = [f"trace {packet.describe()} ({packet.family.label}) from {trace.source_node}"]
    for index, hop in enumerate(trace.hops, start=1):
        node_text = format_node_trace(hop.trace, misses=misses)
        lines.append(f"[{index}] " + node_text.replace("\n", "\n" + " " * (len(str(index)) + 3)))
        if hop.encapsulation is not None:
            outer = format_node_trace(hop.encapsulation, misses=misses)
            pad = " " * (len(str(index)) + 3)
            lines.append(f"{pad}tunnel to {hop.next_node}, outer packet: " + outer.replace("\n", "\n" + pad))
        elif hop.next_node is not None:
            lines.append(" " * (len(str(index)) + 3) + f"underlay to {hop.next_node}")
    lines.append(summary(trace))
    return "\n".join(lines)
