"""Structural checks of a RuleSet, shared by several test modules."""

from __future__ import annotations

from collections.abc import Mapping

from egress_rules.model.names import IPSET_NAME_MAX, IPTABLES_CHAIN_MAX
from egress_rules.model.ruleset import Goto, IPSet, Jump, NetfilterTable, Rule, RuleSet, SetMark, SetMatch


def structural_problems(ruleset: RuleSet) -> list[str]:
    """Every referenced set and chain declared, names within limits, hook positions 1..k, unique names."""
    problems = []
    for rules in ruleset.families:
        sets = {s.name: s for s in rules.sets}
        if len(sets) != len(rules.sets):
            problems.append(f"{rules.family}: duplicate set names")
        chains = {(c.table, c.name) for c in rules.chains}
        if len(chains) != len(rules.chains):
            problems.append(f"{rules.family}: duplicate chains")
        for ipset in rules.sets:
            if len(ipset.name) > IPSET_NAME_MAX:
                problems.append(f"set name too long: {ipset.name}")
            if any(m.family is not rules.family for m in ipset.members):
                problems.append(f"set {ipset.name} holds another family's prefix")
        for chain in rules.chains:
            if len(chain.name) > IPTABLES_CHAIN_MAX:
                problems.append(f"chain name too long: {chain.name}")
        placed = [(h.table, h.chain, h.rule) for h in rules.hooks]
        for table, _chain, rule in placed:
            problems.extend(_references(rule, table, sets, chains))
        for chain in rules.chains:
            for rule in chain.rules:
                problems.extend(_references(rule, chain.table, sets, chains))
        by_builtin: dict[object, list[int]] = {}
        for hook in rules.hooks:
            by_builtin.setdefault((hook.table, hook.chain), []).append(hook.position)
        for key, positions in by_builtin.items():
            if sorted(positions) != list(range(1, len(positions) + 1)):
                problems.append(f"hook positions of {key} are {positions}")
        tables = {r.table for r in rules.ip_rules}
        if tables != {r.table for r in rules.routes}:
            problems.append("ip rules and routes disagree on tables")
        marks_set = {r.action.value for _c, r in rules.rules() if isinstance(r.action, SetMark)}
        marks_routed = {r.mark for r in rules.ip_rules} | {ruleset.config.keep_mark}
        if not marks_set <= marks_routed:
            problems.append(f"marks set but not routed: {marks_set - marks_routed}")
    return problems


def _references(rule: Rule, table: NetfilterTable, sets: Mapping[str, IPSet],
                chains: set[tuple[NetfilterTable, str]]) -> list[str]:
    problems = []
    for match in rule.matches:
        if isinstance(match, SetMatch) and match.set_name not in sets:
            problems.append(f"undeclared set {match.set_name}")
    action = rule.action
    if isinstance(action, (Jump, Goto)) and (table, action.chain) not in chains:
        problems.append(f"jump to undeclared chain {action.chain} in {table}")
    return problems
