"""The compiler's output: a typed, backend-neutral rule set for one node.

A :class:`RuleSet` holds, per IP family, the sets, the owned chains with their
rules, the hook rules placed into built-in chains (with their exact positions),
the ip rules and the routes. Matches and actions are data, not backend syntax;
each backend serializes them, the tracer evaluates them, the planner diffs them.
Every rule, set, ip rule and route carries its :class:`Provenance`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

import attrs

from egress_rules.model.addresses import Cidr, Family, IPAddress
from egress_rules.model.cluster import PolicyKey
from egress_rules.model.config import Config


class NetfilterTable(enum.Enum):
    """An iptables table; the value is its name. Ordered as backends emit them."""

    MANGLE = "mangle"
    FILTER = "filter"
    NAT = "nat"


def decision_chains(config: Config) -> tuple[tuple[NetfilterTable, str], ...]:
    """The chains whose rules decide a flow's egress: mangle mark-request and nat SNAT-EIP."""
    return ((NetfilterTable.MANGLE, config.chains.mark_request), (NetfilterTable.NAT, config.chains.snat_eip))


class BuiltinChain(enum.Enum):
    PREROUTING = "PREROUTING"
    INPUT = "INPUT"
    FORWARD = "FORWARD"
    OUTPUT = "OUTPUT"
    POSTROUTING = "POSTROUTING"


class Direction(enum.Enum):
    """Which packet address a set match looks at."""

    SRC = "src"
    DST = "dst"


class CtDirection(enum.Enum):
    ORIGINAL = "ORIGINAL"
    REPLY = "REPLY"


# ---------------------------------------------------------------- matches


@attrs.frozen
class MarkMatch:
    """``packet mark & mask == value`` (or ``!=`` when negated)."""

    value: int
    mask: int
    negate: bool = False

    def matches(self, mark: int) -> bool:
        return ((mark & self.mask) == self.value) != self.negate


@attrs.frozen
class SetMatch:
    """The packet's source or destination address is (or is not) in the named set."""

    set_name: str
    direction: Direction
    negate: bool = False


@attrs.frozen
class ConntrackDirectionMatch:
    """The packet travels in the given direction of its conntrack entry."""

    direction: CtDirection


@attrs.frozen
class OutInterfaceMatch:
    """The packet leaves by device ``name`` (known once it is routed: FORWARD, OUTPUT, POSTROUTING)."""

    name: str
    negate: bool = False


@attrs.frozen
class ConnmarkMatch:
    """``connection mark & mask == value`` (or ``!=`` when negated): state kept with the conntrack entry."""

    value: int
    mask: int
    negate: bool = False

    def matches(self, mark: int) -> bool:
        return ((mark & self.mask) == self.value) != self.negate


Match = MarkMatch | SetMatch | ConntrackDirectionMatch | OutInterfaceMatch | ConnmarkMatch

# ---------------------------------------------------------------- actions


@attrs.frozen
class SetMark:
    """``mark = (mark & ~mask) | value``: writes only the bits of ``mask``. Does not end traversal."""

    value: int
    mask: int

    def __attrs_post_init__(self) -> None:
        if self.value & ~self.mask:
            raise ValueError(f"mark value {self.value:#x} has bits outside its mask {self.mask:#x}")

    def apply(self, mark: int) -> int:
        return (mark & ~self.mask & 0xFFFFFFFF) | self.value


@attrs.frozen
class SetConnmark:
    """``connection mark = (mark & ~mask) | value``, like :class:`SetMark` for the conntrack entry."""

    value: int
    mask: int

    def __attrs_post_init__(self) -> None:
        if self.value & ~self.mask:
            raise ValueError(f"connmark value {self.value:#x} has bits outside its mask {self.mask:#x}")

    def apply(self, mark: int) -> int:
        return (mark & ~self.mask & 0xFFFFFFFF) | self.value


@attrs.frozen
class Drop:
    """Drop the packet (final, whatever other tables would say)."""


@attrs.frozen
class Accept:
    """End the current base chain with ACCEPT (other tables' chains still run)."""


@attrs.frozen
class Return:
    """Leave the current chain; continue after the rule that jumped here."""


@attrs.frozen
class Jump:
    """Enter ``chain``; when it ends without a verdict, continue after this rule."""

    chain: str


@attrs.frozen
class Goto:
    """Enter ``chain``; when it ends, continue after the rule that *jumped to this chain*.

    Used for first-match-wins among non-terminating actions: the rest of the
    current chain is skipped.
    """

    chain: str


@attrs.frozen
class Snat:
    """Source NAT to ``address`` (terminating in the nat table)."""

    address: IPAddress


@attrs.frozen
class Masquerade:
    """Source NAT to the outgoing interface's primary address."""


Action = SetMark | SetConnmark | Accept | Drop | Return | Jump | Goto | Snat | Masquerade

# ---------------------------------------------------------------- provenance and objects


class Role(enum.Enum):
    """Why an object exists; stable words used in comments and docs."""

    KEEP_MARK = "keep mark"
    RESET_MARK = "reset node mark"
    REMEMBER_TUNNELED = "remember tunneled flow"
    TUNNELED_FLOW_GUARD = "tunneled flow guard"
    SKIP_UNROUTED = "skip unrouted"
    MARK_REQUEST = "mark request"
    MARK_GATEWAY = "mark for gateway"
    LOCAL_GATEWAY = "local gateway"
    NO_TUNNEL = "no tunnel"
    NO_SNAT = "no snat"
    SNAT_EIP = "snat eip"
    SKIP_TUNNELED = "skip tunneled"
    WEAVE_NO_SNAT = "weave no snat"
    SOURCES = "sources"
    DESTINATIONS = "destinations"
    CLUSTER_CIDRS = "cluster cidrs"
    ROUTE_TO_GATEWAY = "route to gateway"


@attrs.frozen(order=True)
class Provenance:
    """Where an object comes from: a policy (or ``None`` for base datapath), and/or a gateway node."""

    role: Role = attrs.field(order=lambda r: r.value)
    policy: PolicyKey | None = attrs.field(default=None, order=lambda p: (p is not None, p))
    gateway: str | None = attrs.field(default=None, order=lambda g: g or "")

    @property
    def is_base(self) -> bool:
        return self.policy is None


@attrs.frozen
class RuleBody:
    """What a rule does in the kernel: matches, action and comment, without provenance.

    Two rules with equal bodies are the same kernel rule; the planner compares bodies.
    """

    matches: tuple[Match, ...]
    action: Action
    comment: str


@attrs.frozen
class Rule:
    """Matches (all must hold), one action, and the comment that marks it as ours."""

    matches: tuple[Match, ...]
    action: Action
    comment: str
    provenance: Provenance

    @property
    def body(self) -> RuleBody:
        return RuleBody(self.matches, self.action, self.comment)


@attrs.frozen
class Chain:
    """A chain this library owns (created, filled and removed only by us)."""

    table: NetfilterTable
    name: str
    rules: tuple[Rule, ...]


@attrs.frozen
class HookRule:
    """A rule inserted into a built-in chain at ``position`` (1 = top) among the chain's rules.

    Hooks into the same built-in chain have distinct positions 1..k: after an
    install they are the first k rules of that chain, in position order.
    """

    table: NetfilterTable
    chain: BuiltinChain
    position: int
    rule: Rule


@attrs.frozen
class IPSet:
    """A named set of prefixes of one family (``hash:net`` / an nft interval set)."""

    name: str
    family: Family
    members: tuple[Cidr, ...]
    provenance: Provenance


@attrs.frozen
class IPRule:
    """``ip rule``: packets whose ``mark & mask == mark`` look up ``table``."""

    family: Family
    priority: int
    mark: int
    mask: int
    table: int
    protocol: int
    provenance: Provenance


@attrs.frozen
class Route:
    """A route in a policy-routing table: ``destination via next_hop dev device table table``."""

    family: Family
    table: int
    destination: Cidr
    via: IPAddress
    device: str
    protocol: int
    provenance: Provenance


@attrs.frozen
class FamilyRuleSet:
    """Everything one IP family needs on the node."""

    family: Family
    sets: tuple[IPSet, ...]
    chains: tuple[Chain, ...]
    hooks: tuple[HookRule, ...]
    ip_rules: tuple[IPRule, ...]
    routes: tuple[Route, ...]

    def set(self, name: str) -> IPSet | None:
        for ipset in self.sets:
            if ipset.name == name:
                return ipset
        return None

    def chain(self, table: NetfilterTable, name: str) -> Chain | None:
        for chain in self.chains:
            if chain.table is table and chain.name == name:
                return chain
        return None

    def hooks_of(self, table: NetfilterTable, chain: BuiltinChain) -> tuple[HookRule, ...]:
        return tuple(sorted((h for h in self.hooks if h.table is table and h.chain is chain),
                            key=lambda h: h.position))

    def tables(self) -> tuple[NetfilterTable, ...]:
        """Netfilter tables this family touches, in emission order."""
        used = {c.table for c in self.chains} | {h.table for h in self.hooks}
        return tuple(t for t in NetfilterTable if t in used)

    def rules(self) -> Iterator[tuple[str, Rule]]:
        """Every rule with the name of the chain holding it (hooks first)."""
        for hook in self.hooks:
            yield hook.chain.value, hook.rule
        for chain in self.chains:
            for rule in chain.rules:
                yield chain.name, rule


@attrs.frozen
class RuleSet:
    """The compiled datapath of one node.

    ``node_marks`` (every node's mark) and ``routing_tables`` (the table this node
    uses for each gateway node) are the allocators' results: feed them back into
    the next compile so that assignments never move.
    """

    node: str
    config: Config
    families: tuple[FamilyRuleSet, ...]
    node_marks: tuple[tuple[str, int], ...]
    routing_tables: tuple[tuple[str, int], ...]
    warnings: tuple[str, ...] = ()

    def family(self, family: Family) -> FamilyRuleSet | None:
        for item in self.families:
            if item.family is family:
                return item
        return None

    def node_mark(self, node: str) -> int | None:
        return dict(self.node_marks).get(node)
