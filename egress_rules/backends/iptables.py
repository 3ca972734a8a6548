"""``iptables-restore`` / ``ip6tables-restore`` text for one family.

The output is a first install for ``iptables-restore --noflush``: owned chains
are declared (which creates them, or flushes them if they exist) and filled;
hook rules are inserted into built-in chains with ``-I CHAIN N`` in ascending
position order so they end up as the chain's first rules in that order. Each
table block is committed atomically; blocks are mangle, filter, nat. Re-applying
this text inserts the hook rules again: use the planner to reconcile a node.

Rule text uses the forms ``iptables-save`` prints back (``--set-xmark V/M``,
``--mark V/M``), so a save of the applied rules compares equal after removing counters.
"""

from __future__ import annotations

from egress_rules.backends.base import Output
from egress_rules.backends.text import quoted_comment
from egress_rules.errors import UnsupportedError
from egress_rules.model.addresses import Family
from egress_rules.model.ruleset import (
    Accept,
    Action,
    ConnmarkMatch,
    ConntrackDirectionMatch,
    Drop,
    FamilyRuleSet,
    Goto,
    Jump,
    MarkMatch,
    Masquerade,
    Match,
    OutInterfaceMatch,
    Return,
    Rule,
    RuleSet,
    SetConnmark,
    SetMark,
    SetMatch,
    Snat,
)

COMMENT_MAX_BYTES = 255


def render_match(match: Match) -> str:
    if isinstance(match, MarkMatch):
        neg = "! " if match.negate else ""
        return f"-m mark {neg}--mark {match.value:#x}/{match.mask:#x}"
    if isinstance(match, SetMatch):
        neg = "! " if match.negate else ""
        return f"-m set {neg}--match-set {match.set_name} {match.direction.value}"
    if isinstance(match, ConntrackDirectionMatch):
        return f"-m conntrack --ctdir {match.direction.value}"
    if isinstance(match, ConnmarkMatch):
        neg = "! " if match.negate else ""
        return f"-m connmark {neg}--mark {match.value:#x}/{match.mask:#x}"
    if isinstance(match, OutInterfaceMatch):
        return f"{'! ' if match.negate else ''}-o {match.name}"
    raise UnsupportedError(f"match {match!r}", "the iptables backend cannot express it")


def render_action(action: Action) -> str:
    if isinstance(action, SetMark):
        return f"-j MARK --set-xmark {action.value:#x}/{action.mask:#x}"
    if isinstance(action, SetConnmark):
        return f"-j CONNMARK --set-xmark {action.value:#x}/{action.mask:#x}"
    if isinstance(action, Accept):
        return "-j ACCEPT"
    if isinstance(action, Drop):
        return "-j DROP"
    if isinstance(action, Return):
        return "-j RETURN"
    if isinstance(action, Jump):
        return f"-j {action.chain}"
    if isinstance(action, Goto):
        return f"-g {action.chain}"
    if isinstance(action, Snat):
        return f"-j SNAT --to-source {action.address}"
    if isinstance(action, Masquerade):
        return "-j MASQUERADE"
    raise UnsupportedError(f"action {action!r}", "the iptables backend cannot express it")


def render_rule(rule: Rule) -> str:
    """The rule's arguments after ``-A CHAIN``, in the order ``iptables-save`` prints them.

    Interface matches first (they are part of the rule's header), then the
    comment, the other matches in the model's order, and the target.
    """
    parts = [render_match(m) for m in rule.matches if isinstance(m, OutInterfaceMatch)]
    if rule.comment:
        parts.append(f"-m comment --comment {quoted_comment(rule.comment, COMMENT_MAX_BYTES, 'iptables')}")
    parts.extend(render_match(m) for m in rule.matches if not isinstance(m, OutInterfaceMatch))
    parts.append(render_action(rule.action))
    return " ".join(parts)


def render_family(ruleset: RuleSet, rules: FamilyRuleSet, command: str) -> str:
    lines = [f"# {ruleset.config.owner}: {rules.family.label} rules for node {ruleset.node}; "
             f"apply with: {command}"]
    for table in rules.tables():
        chains = [c for c in rules.chains if c.table is table]
        lines.append(f"*{table.value}")
        lines.extend(f":{chain.name} - [0:0]" for chain in chains)
        for chain in chains:
            lines.extend(f"-A {chain.name} {render_rule(rule)}" for rule in chain.rules)
        hooks = sorted((h for h in rules.hooks if h.table is table), key=lambda h: (h.chain.value, h.position))
        lines.extend(f"-I {hook.chain.value} {hook.position} {render_rule(hook.rule)}" for hook in hooks)
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def tool_name(family: Family) -> str:
    """``iptables`` or ``ip6tables``: the prefix of the family's restore and save commands."""
    return "iptables" if family is Family.IPV4 else "ip6tables"


class IptablesBackend:
    """``iptables-restore`` text (IPv4) or ``ip6tables-restore`` text (IPv6)."""

    def __init__(self, family: Family) -> None:
        self.family = family

    @property
    def name(self) -> str:
        return tool_name(self.family)

    def render(self, ruleset: RuleSet) -> tuple[Output, ...]:
        rules = ruleset.family(self.family)
        if rules is None:
            return ()
        command = f"{self.name}-restore --noflush"
        return (Output(f"{self.name}.rules", command, render_family(ruleset, rules, command)),)
