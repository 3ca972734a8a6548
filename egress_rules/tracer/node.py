"""Evaluating one packet through one node's RuleSet, in the kernel's order.

A packet arriving on an interface takes the forward path: mangle and nat
PREROUTING, the route lookup, then mangle and filter FORWARD and mangle and
nat POSTROUTING (or mangle, filter and nat INPUT when it is for this node). A
packet the node sends itself takes the output path: route lookup, mangle, nat
and filter OUTPUT (a mark change in mangle OUTPUT routes it again), mangle and
nat POSTROUTING.

Built-in chains hold the RuleSet's hook rules at their positions and, in nat
POSTROUTING, the environment's CNI masquerade after them. iptables' traversal
is followed exactly (jump pushes a return point, goto does not, RETURN or the
end of a chain pops it, ACCEPT ends the table's built-in chain). Anything the
tracer does not know how to evaluate raises :class:`TraceError` instead of
being skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

import attrs

from egress_rules.errors import TraceError
from egress_rules.model.addresses import Cidr, Family, IPAddress
from egress_rules.model.ruleset import (
    Accept,
    BuiltinChain,
    Chain,
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
    NetfilterTable,
    OutInterfaceMatch,
    Return,
    Route,
    Rule,
    RuleSet,
    SetConnmark,
    SetMark,
    SetMatch,
    Snat,
)
from egress_rules.tracer.model import (
    LOCAL_TABLE,
    MAIN_TABLE,
    CniMasquerade,
    Disposition,
    Hook,
    IPRuleCheck,
    MainRoute,
    NodeEnvironment,
    NodeTrace,
    Outcome,
    Packet,
    PathKind,
    RouteKind,
    RoutingDecision,
    Step,
    Translation,
    Verdict,
)

MANGLE, FILTER, NAT = NetfilterTable.MANGLE, NetfilterTable.FILTER, NetfilterTable.NAT
PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING = (
    BuiltinChain.PREROUTING, BuiltinChain.INPUT, BuiltinChain.FORWARD, BuiltinChain.OUTPUT, BuiltinChain.POSTROUTING)

# The built-in chains each table has (iptables refuses the others).
VALID_HOOKS = {
    MANGLE: frozenset(BuiltinChain),
    FILTER: frozenset({INPUT, FORWARD, OUTPUT}),
    NAT: frozenset({PREROUTING, INPUT, OUTPUT, POSTROUTING}),
}
# The main rule's priority; ours must sort strictly between the local rule (0) and it.
MAIN_RULE_PRIORITY = 32766
# Rule evaluations per packet before the tracer gives up (a goto cycle would never end).
MAX_EVALUATIONS = 100_000

_Entry = Rule | CniMasquerade


@attrs.frozen
class _At:
    """Where a step happens: a built-in chain's traversal, the chain and the rule position in it."""

    hook: Hook
    chain: str
    position: int | None

_R = TypeVar("_R", Route, MainRoute)


def trace(ruleset: RuleSet, packet: Packet, env: NodeEnvironment, *, encapsulated: bool = False) -> NodeTrace:
    """Evaluate ``packet`` through ``ruleset`` on the node ``env`` describes.

    ``encapsulated`` marks a tunnel's outer packet: if its route points into the
    tunnel device itself, the vxlan driver drops it as a circular route before
    any OUTPUT hook runs. Raises :class:`TraceError` for anything it cannot
    evaluate exactly.
    """
    return _NodeTracer(ruleset, env, packet).run(encapsulated)


def _empty(family: Family) -> FamilyRuleSet:
    return FamilyRuleSet(family, (), (), (), (), ())


def _mark(value: int) -> str:
    return f"{value:#010x}"


class _NodeTracer:
    """The state of one packet on one node while its trace is computed."""

    def __init__(self, ruleset: RuleSet, env: NodeEnvironment, packet: Packet) -> None:
        if env.node != ruleset.node:
            raise TraceError(f"environment of {env.node}", f"does not describe node {ruleset.node} of the RuleSet")
        self.ruleset = ruleset
        self.env = env
        self.packet = packet
        self.family = packet.family
        self.rules = ruleset.family(packet.family) or _empty(packet.family)
        self.sets = {s.name: s for s in self.rules.sets}
        self.chains: dict[tuple[NetfilterTable, str], Chain] = {(c.table, c.name): c for c in self.rules.chains}
        self.tunnel = env.tunnel_device or ruleset.config.tunnel_device
        self.src = packet.src
        self.mark = packet.mark
        self.ct_mark = packet.ct_mark
        self.out_device: str | None = None
        self.steps: list[Step] = []
        self.routing: list[RoutingDecision] = []
        self.translation: Translation | None = None
        self.drop: str | None = None
        self.evaluations = 0
        self._check_hooks()

    # ------------------------------------------------------------ paths

    def run(self, encapsulated: bool) -> NodeTrace:
        if self.packet.in_interface is None:
            return self._output_path(encapsulated)
        return self._forward_path()

    def _forward_path(self) -> NodeTrace:
        for table, chain in ((MANGLE, PREROUTING), (NAT, PREROUTING)):
            self._stage(table, chain)
        decision = self._route()
        if decision.kind is RouteKind.UNREACHABLE:
            return self._finish(PathKind.FORWARD, f"no route to {self.packet.dst}")
        stages = ((MANGLE, INPUT), (FILTER, INPUT), (NAT, INPUT)) if decision.kind is RouteKind.LOCAL else (
            (MANGLE, FORWARD), (FILTER, FORWARD), (MANGLE, POSTROUTING), (NAT, POSTROUTING))
        for table, chain in stages:
            if self.drop is not None:
                break
            self._stage(table, chain)
        return self._finish(PathKind.FORWARD)

    def _output_path(self, encapsulated: bool) -> NodeTrace:
        decision = self._route()
        problem = self._unusable(decision, encapsulated)
        if problem is not None:
            return self._finish(PathKind.OUTPUT, problem)
        before = self.mark
        self._stage(MANGLE, OUTPUT)
        if self.mark != before and self.drop is None:
            # iptables' mangle OUTPUT routes a locally generated packet again when its mark changed.
            problem = self._unusable(self._route(), encapsulated)
            if problem is not None:
                return self._finish(PathKind.OUTPUT, problem)
        for table, chain in ((NAT, OUTPUT), (FILTER, OUTPUT), (MANGLE, POSTROUTING), (NAT, POSTROUTING)):
            if self.drop is not None:
                break
            self._stage(table, chain)
        return self._finish(PathKind.OUTPUT)

    def _unusable(self, decision: RoutingDecision, encapsulated: bool) -> str | None:
        if decision.kind is RouteKind.UNREACHABLE:
            return f"no route to {self.packet.dst}"
        if encapsulated and decision.device == self.tunnel:
            return (f"circular route: the tunnel's outer packet (mark {_mark(decision.mark)}) is routed into "
                    f"{self.tunnel} again; the vxlan driver drops it")
        return None

    def _finish(self, path: PathKind, drop: str | None = None) -> NodeTrace:
        drop = drop if drop is not None else self.drop
        decision = self.routing[-1] if self.routing else None
        if drop is not None:
            verdict = Verdict(Disposition.DROPPED, reason=drop)
            packet_out = None
        else:
            assert decision is not None, "every path that does not drop routes the packet"
            packet_out = attrs.evolve(self.packet, src=self.src, mark=self.mark, ct_mark=self.ct_mark)
            if decision.kind is RouteKind.LOCAL:
                verdict = Verdict(Disposition.DELIVERED, device=decision.device)
            else:
                verdict = Verdict(Disposition.FORWARDED, device=decision.device, next_hop=decision.next_hop)
        return NodeTrace(node=self.env.node, path=path, packet=self.packet, steps=tuple(self.steps),
                         routing=tuple(self.routing), translation=self.translation, verdict=verdict,
                         packet_out=packet_out)

    # ------------------------------------------------------------ routing

    def _route(self) -> RoutingDecision:
        dst, mark, family = self.packet.dst, self.mark, self.family
        for interface in self.env.interfaces:
            if dst in interface.addresses:
                decision = RoutingDecision(dst, mark, (), RouteKind.LOCAL, table=LOCAL_TABLE, device="lo")
                return self._decided(decision)
        checks: list[IPRuleCheck] = []
        for rule in sorted(self.rules.ip_rules, key=lambda r: r.priority):
            if rule.family is not family:
                raise TraceError(f"ip rule priority {rule.priority}", f"is {rule.family.label} in the "
                                 f"{family.label} rules")
            if not 0 < rule.priority < MAIN_RULE_PRIORITY:
                raise TraceError(f"ip rule priority {rule.priority}", "is not between the local rule (0) and the "
                                 f"main rule ({MAIN_RULE_PRIORITY}); its order against them is not modelled")
            # The kernel's fwmark test (fib_rule_match): (rule mark ^ packet mark) & mask == 0.
            if (rule.mark ^ mark) & rule.mask:
                checks.append(IPRuleCheck(rule, False, f"mark {_mark(mark)} & {_mark(rule.mask)} != "
                                                       f"{_mark(rule.mark & rule.mask)}"))
                continue
            route = _longest(((r.destination, r) for r in self.rules.routes if r.table == rule.table), dst,
                             f"table {rule.table}")
            if route is None:
                checks.append(IPRuleCheck(rule, False, f"mark matches, but table {rule.table} has no route to "
                                                       f"{dst}; next rule"))
                continue
            self._check_installable(route)
            checks.append(IPRuleCheck(rule, True, f"mark {_mark(mark)} matches; table {rule.table}"))
            decision = RoutingDecision(dst, mark, tuple(checks), RouteKind.POLICY, ip_rule=rule, table=rule.table,
                                       route=route, device=route.device, next_hop=route.via)
            return self._decided(decision)
        main = _longest(((r.destination, r) for r in self.env.main_routes if r.destination.family is family), dst,
                        "the main table")
        if main is None:
            return self._decided(RoutingDecision(dst, mark, tuple(checks), RouteKind.UNREACHABLE))
        decision = RoutingDecision(dst, mark, tuple(checks), RouteKind.MAIN, table=MAIN_TABLE, route=main,
                                   device=main.device, next_hop=main.via if main.via is not None else dst)
        return self._decided(decision)

    def _check_installable(self, route: Route) -> None:
        """Raise if the kernel would refuse ``route``: then what the node holds instead is not known."""
        subject = f"route {route.destination} via {route.via} dev {route.device} table {route.table} on {self.env.node}"
        if self.env.interface(route.device) is None:
            raise TraceError(subject, f"device {route.device} does not exist on the node")
        if route.via in self.env.local_addresses():
            raise TraceError(subject, f"next hop {route.via} is the node's own address; the kernel refuses it")
        # Without "onlink" the kernel accepts a next hop only if a connected route on the same device covers it.
        connected = _longest(((r.destination, r) for r in self.env.main_routes), route.via, "the main table")
        if connected is None or connected.device != route.device or connected.via is not None:
            raise TraceError(subject, f"next hop {route.via} is not on-link on {route.device} (no connected route "
                             f"on it covers the next hop), so the kernel refuses the route (\"Nexthop has invalid "
                             "gateway\" / \"No route to host\") and this RuleSet cannot be applied as is")

    def _decided(self, decision: RoutingDecision) -> RoutingDecision:
        decision = attrs.evolve(decision, at_step=len(self.steps))
        self.routing.append(decision)
        self.out_device = decision.device
        return decision

    # ------------------------------------------------------------ chains

    def _check_hooks(self) -> None:
        seen: dict[tuple[NetfilterTable, BuiltinChain], list[int]] = {}
        for hook in self.rules.hooks:
            if hook.chain not in VALID_HOOKS[hook.table]:
                raise TraceError(f"hook rule {hook.rule.comment!r}",
                                 f"{hook.table.value} has no built-in chain {hook.chain.value}")
            seen.setdefault((hook.table, hook.chain), []).append(hook.position)
        for (table, chain), positions in seen.items():
            if sorted(positions) != list(range(1, len(positions) + 1)):
                raise TraceError(f"{table.value} {chain.value}", f"hook positions {sorted(positions)} are not 1..k; "
                                 "the rules in the gaps are unknown")

    def _stage(self, table: NetfilterTable, chain: BuiltinChain) -> None:
        """Run one table's built-in chain on this hook (and the CNI's other-backend chain after nat POSTROUTING)."""
        hook = Hook(table, chain)
        entries: list[_Entry] = [h.rule for h in self.rules.hooks_of(table, chain)]
        cni = self.env.cni_masquerade if (table, chain) == (NAT, POSTROUTING) else None
        if cni is not None and cni.same_backend:
            entries.append(cni)
        other = cni if cni is not None and not cni.same_backend else None
        if not entries and other is None:
            return
        if table is NAT and self.packet.ct_direction is CtDirection.REPLY:
            self._event(hook, chain.value, Outcome.NAT_SKIPPED,
                        "the nat table sees only a connection's first packet; this one is a REPLY")
            return
        if entries:
            reached_cni = self._traverse(hook, entries)
            if cni is not None and cni.same_backend and not reached_cni and self.drop is None:
                self._record(_At(hook, chain.value, len(entries)), Outcome.NOT_REACHED, self.mark,
                             "an earlier rule ended this chain", foreign=cni.describe())
        if other is not None and self.drop is None:
            other_hook = Hook(table, chain, other_backend=True)
            if self.translation is not None:
                self._record(_At(other_hook, chain.value, 1), Outcome.NOT_REACHED, self.mark,
                             "the connection already has a source NAT: the first nat chain that translates wins",
                             foreign=other.describe())
            else:
                self._traverse(other_hook, [other])

    def _traverse(self, hook: Hook, entries: Sequence[_Entry]) -> bool:
        """Walk a built-in chain; returns whether the CNI rule (if among ``entries``) was evaluated."""
        stack: list[tuple[str, Sequence[_Entry], int]] = []
        name, rules, index = hook.chain.value, entries, 0
        reached_cni = False
        while True:
            self.evaluations += 1
            if self.evaluations > MAX_EVALUATIONS:
                raise TraceError(f"{hook.label}", f"more than {MAX_EVALUATIONS} rule evaluations: a chain cycle")
            if index >= len(rules):
                if not stack:
                    self._event(hook, name, Outcome.POLICY, "end of the built-in chain")
                    return reached_cni
                caller, caller_rules, caller_index = stack.pop()
                self._event(hook, name, Outcome.CHAIN_END, f"back to {caller}:{caller_index + 1}")
                name, rules, index = caller, caller_rules, caller_index
                continue
            entry = rules[index]
            at = _At(hook, name, index + 1)
            if isinstance(entry, CniMasquerade):
                reached_cni = True
                miss = entry.miss(self._current(), self._out_device(hook))
                if miss is not None:
                    self._record(at, Outcome.NO_MATCH, self.mark, miss, foreign=entry.describe())
                    index += 1
                    continue
                self._masquerade(at, None, entry.describe())
                return reached_cni
            miss = self._miss(entry)
            if miss is not None:
                self._record(at, Outcome.NO_MATCH, self.mark, miss, rule=entry)
                index += 1
                continue
            action = entry.action
            if isinstance(action, SetMark):
                before = self.mark
                self.mark = action.apply(before)
                self._record(at, Outcome.MARK, before,
                             f"set {_mark(action.value)}/{_mark(action.mask)}", rule=entry)
                index += 1
            elif isinstance(action, SetConnmark):
                before_ct = self.ct_mark
                self.ct_mark = action.apply(before_ct)
                self._record(at, Outcome.MARK, self.mark,
                             f"connection mark {_mark(before_ct)} -> set {_mark(action.value)}/{_mark(action.mask)}",
                             rule=entry)
                index += 1
            elif isinstance(action, Drop):
                self.drop = f"dropped by {entry.comment or 'a rule'} in {hook.label}"
                self._record(at, Outcome.DROP, self.mark, "final for this packet", rule=entry)
                return reached_cni
            elif isinstance(action, Accept):
                self._record(at, Outcome.ACCEPT, self.mark,
                             f"ends {hook.label} for this packet", rule=entry)
                return reached_cni
            elif isinstance(action, Return):
                if not stack:
                    self._record(at, Outcome.RETURN, self.mark,
                                 "in a built-in chain: its policy ACCEPT", rule=entry)
                    return reached_cni
                caller, caller_rules, caller_index = stack.pop()
                self._record(at, Outcome.RETURN, self.mark,
                             f"back to {caller}:{caller_index + 1}", rule=entry)
                name, rules, index = caller, caller_rules, caller_index
            elif isinstance(action, Jump):
                target = self._chain(hook, action.chain, entry)
                if action.chain == name or any(frame[0] == action.chain for frame in stack):
                    raise TraceError(f"rule {entry.comment!r}", f"jumps to {action.chain}, which is already on the "
                                     "call path (iptables refuses such loops)")
                self._record(at, Outcome.JUMP, self.mark, f"to {action.chain}", rule=entry)
                stack.append((name, rules, index + 1))
                name, rules, index = target.name, target.rules, 0
            elif isinstance(action, Goto):
                target = self._chain(hook, action.chain, entry)
                back = f"; its end returns to {stack[-1][0]}:{stack[-1][2] + 1}" if stack else \
                    "; its end is the built-in chain's policy"
                self._record(at, Outcome.GOTO, self.mark, f"to {action.chain}{back}", rule=entry)
                name, rules, index = target.name, target.rules, 0
            elif isinstance(action, Snat):
                self._check_nat(hook, entry, "SNAT", frozenset({POSTROUTING, INPUT}))
                if action.address.family is not self.family:
                    raise TraceError(f"rule {entry.comment!r}", f"SNAT to {action.address} in the {self.family.label} "
                                     "rules")
                self._translate(at, Outcome.SNAT, action.address, entry, None)
                return reached_cni
            elif isinstance(action, Masquerade):
                self._check_nat(hook, entry, "MASQUERADE", frozenset({POSTROUTING}))
                self._masquerade(at, entry, None)
                return reached_cni
            else:
                raise TraceError(f"rule {entry.comment!r}", f"unknown action {type(action).__name__}")

    def _miss(self, rule: Rule) -> str | None:
        """Why ``rule`` does not match (its first failing match, as iptables stops there); ``None`` if it matches."""
        for match in rule.matches:
            if isinstance(match, MarkMatch):
                if not match.matches(self.mark):
                    op = "==" if match.negate else "!="
                    return f"mark {_mark(self.mark)} & {_mark(match.mask)} {op} {_mark(match.value)}"
            elif isinstance(match, SetMatch):
                ipset = self.sets.get(match.set_name)
                if ipset is None:
                    raise TraceError(f"rule {rule.comment!r}", f"matches set {match.set_name}, which the "
                                     f"{self.family.label} rules do not define")
                if ipset.family is not self.family:
                    raise TraceError(f"rule {rule.comment!r}", f"matches {ipset.family.label} set {ipset.name} in the "
                                     f"{self.family.label} rules")
                address = self.src if match.direction is Direction.SRC else self.packet.dst
                inside = any(m.contains(address.value) for m in ipset.members)
                if inside == match.negate:
                    where = "in" if inside else "not in"
                    negated = " (negated match)" if match.negate else ""
                    return f"{match.direction.value} {address} {where} set {ipset.name}{negated}"
            elif isinstance(match, ConntrackDirectionMatch):
                if self.packet.ct_direction is not match.direction:
                    return f"ct direction is {self.packet.ct_direction.value}, not {match.direction.value}"
            elif isinstance(match, ConnmarkMatch):
                if not match.matches(self.ct_mark):
                    op = "==" if match.negate else "!="
                    return f"connection mark {_mark(self.ct_mark)} & {_mark(match.mask)} {op} {_mark(match.value)}"
            elif isinstance(match, OutInterfaceMatch):
                if self.out_device is None:
                    raise TraceError(f"rule {rule.comment!r}", "matches the out interface before the route lookup")
                if (self.out_device == match.name) == match.negate:
                    op = "is" if match.negate else "is not"
                    return f"out device {self.out_device} {op} {match.name}"
            else:
                raise TraceError(f"rule {rule.comment!r}", f"unknown match {type(match).__name__}")
        return None

    def _chain(self, hook: Hook, name: str, rule: Rule) -> Chain:
        chain = self.chains.get((hook.table, name))
        if chain is None:
            raise TraceError(f"rule {rule.comment!r}", f"targets chain {name}, which the {self.family.label} "
                             f"{hook.table.value} table does not define")
        return chain

    def _check_nat(self, hook: Hook, rule: Rule, target: str, chains: frozenset[BuiltinChain]) -> None:
        if hook.table is not NAT or hook.chain not in chains:
            valid = " or ".join(f"nat {c.value}" for c in sorted(chains, key=lambda c: c.value))
            raise TraceError(f"rule {rule.comment!r}", f"{target} is valid only under {valid}, reached from "
                             f"{hook.label}")

    def _masquerade(self, at: _At, rule: Rule | None, foreign: str | None) -> None:
        device = self._out_device(at.hook)
        interface = self.env.interface(device)
        address = None if interface is None else interface.primary(self.family)
        if address is None:
            # The kernel drops the packet when the out device has no address to masquerade to.
            self.drop = f"MASQUERADE: {device} has no {self.family.label} address"
            self._record(at, Outcome.DROP, self.mark, self.drop, rule=rule, foreign=foreign)
            return
        self._translate(at, Outcome.MASQUERADE, address, rule, foreign)

    def _translate(self, at: _At, outcome: Outcome, address: IPAddress, rule: Rule | None,
                   foreign: str | None) -> None:
        step = self._record(at, outcome, self.mark, f"src {self.src} -> {address}", rule=rule, foreign=foreign)
        self.src = address
        self.translation = Translation(address, step)

    def _out_device(self, hook: Hook) -> str:
        assert self.out_device is not None, f"{hook.label} runs after the route lookup"
        return self.out_device

    def _current(self) -> Packet:
        return attrs.evolve(self.packet, src=self.src, mark=self.mark)

    # ------------------------------------------------------------ recording

    def _record(self, at: _At, outcome: Outcome, mark_before: int, detail: str, *, rule: Rule | None = None,
                foreign: str | None = None) -> Step:
        step = Step(hook=at.hook, chain=at.chain, position=at.position, outcome=outcome, mark_before=mark_before,
                    mark_after=self.mark, detail=detail, rule=rule, foreign=foreign)
        self.steps.append(step)
        return step

    def _event(self, hook: Hook, chain: str, outcome: Outcome, detail: str) -> None:
        self._record(_At(hook, chain, None), outcome, self.mark, detail)


def _longest(routes: Iterable[tuple[Cidr, _R]], dst: IPAddress, where: str) -> _R | None:
    """The route with the longest prefix containing ``dst``."""
    best: tuple[Cidr, _R] | None = None
    for cidr, route in routes:
        if cidr.family is not dst.family or not cidr.contains(dst.value):
            continue
        if best is None or cidr.prefixlen > best[0].prefixlen:
            best = (cidr, route)
        elif cidr.prefixlen == best[0].prefixlen:
            raise TraceError(where, f"holds two routes to {cidr}; which one the kernel picks depends on metrics, "
                             "which are not modelled")
    return None if best is None else best[1]
