"""``ip -batch`` text for policy routing, one output per family.

``ip -batch`` cannot switch family per line (``-6`` is not accepted inside a
batch and ``from ::/0`` is still read as IPv4), so IPv4 and IPv6 are separate
files applied with ``ip -4 -batch`` and ``ip -6 -batch``. Routes use
``replace`` (idempotent); ``ip rule add`` of an identical rule fails with
"File exists", so re-applying goes through the planner. Rules and routes carry
``protocol``, the ownership marker the planner recognises.
"""

from __future__ import annotations

from egress_rules.backends.base import Output
from egress_rules.model.addresses import Cidr, Family
from egress_rules.model.ruleset import FamilyRuleSet, IPRule, Route, RuleSet


def rule_args(rule: IPRule) -> str:
    return (f"fwmark {rule.mark:#x}/{rule.mask:#x} table {rule.table} pref {rule.priority} "
            f"protocol {rule.protocol}")


def route_destination(destination: Cidr) -> str:
    """A route's destination as ``ip route`` writes it (``default`` for a zero-length prefix)."""
    return "default" if destination.prefixlen == 0 else str(destination)


def route_args(route: Route) -> str:
    destination = route_destination(route.destination)
    return f"{destination} via {route.via} dev {route.device} table {route.table} proto {route.protocol}"


def command_for(family: Family) -> str:
    return f"ip -{family.value} -batch"


def render_family(ruleset: RuleSet, rules: FamilyRuleSet) -> str:
    lines = [f"# {ruleset.config.owner}: {rules.family.label} policy routing for node {ruleset.node}; "
             f"apply with: {command_for(rules.family)} FILE"]
    lines.extend(f"rule add {rule_args(rule)}" for rule in rules.ip_rules)
    lines.extend(f"route replace {route_args(route)}" for route in rules.routes)
    return "\n".join(lines) + "\n"


class IprouteBackend:
    """``ip -4 -batch`` and ``ip -6 -batch`` text."""

    name = "iproute"

    def render(self, ruleset: RuleSet) -> tuple[Output, ...]:
        return tuple(
            Output(f"iproute-{rules.family.suffix}.batch", f"{command_for(rules.family)} FILE",
                   render_family(ruleset, rules))
            for rules in ruleset.families
        )
