"""The compiler: cluster state + local node + allocators -> RuleSet.

Pure and deterministic: the same state in any order gives an equal RuleSet.
Policies are ordered by precedence ``(priority, namespace, name)``; the first
matching policy wins on every node, for marking and for SNAT alike:

* mangle ``MARK-REQUEST`` holds one rule per policy in precedence order. A
  policy whose gateway is another node ``goto``s that gateway's mark chain, so
  the rest of ``MARK-REQUEST`` is skipped (``MARK`` alone would not end the
  chain and the *last* match would win). A policy whose gateway is this node
  ``RETURN``s, so no lower-precedence policy can send its traffic elsewhere.
* nat ``SNAT-EIP`` holds this node's policies in precedence order; SNAT ends
  the chain, so the first match wins. Traffic already marked for the tunnel
  returns first: its gateway, not this node, translates it.

See ``docs/datapath.md`` for every rule and why it is there.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from egress_rules.allocators import MarkAllocator, TableAllocator
from egress_rules.compiler import naming
from egress_rules.errors import ConfigError, EIPNotServableError, NameCollisionError, UnknownNodeError
from egress_rules.gcpause import without_gc
from egress_rules.model.addresses import Cidr, Family, IPAddress, collapse
from egress_rules.model.cluster import ClusterState, Node, Policy
from egress_rules.model.config import DEFAULT_CONFIG, Config
from egress_rules.model.ruleset import (
    Accept,
    Action,
    BuiltinChain,
    Chain,
    ConnmarkMatch,
    ConntrackDirectionMatch,
    CtDirection,
    Direction,
    Drop,
    FamilyRuleSet,
    Goto,
    HookRule,
    IPRule,
    IPSet,
    Jump,
    MarkMatch,
    Masquerade,
    Match,
    NetfilterTable,
    OutInterfaceMatch,
    Provenance,
    Return,
    Role,
    Route,
    Rule,
    RuleSet,
    SetConnmark,
    SetMark,
    SetMatch,
    Snat,
)

_FAMILIES = (Family.IPV4, Family.IPV6)


@attrs.frozen
class _Resolved:
    """A policy with what the compiler derived for it."""

    policy: Policy
    gateway: Node
    families: tuple[Family, ...]
    local_is_gateway: bool


@without_gc
def compile(
    state: ClusterState,
    node: str,
    config: Config = DEFAULT_CONFIG,
    *,
    marks: MarkAllocator | None = None,
    tables: TableAllocator | None = None,
) -> RuleSet:
    """Compile the datapath of ``node``.

    ``marks`` carries the cluster's existing node-mark assignments and
    ``tables`` this node's existing routing-table assignments (and the tables
    other software uses); both default to empty allocators over the configured
    layout and range. Raises an :class:`~egress_rules.errors.EgressRulesError`
    subclass for any invalid input; never returns a partial result.
    """
    nodes = {n.name: n for n in state.nodes}
    if not isinstance(node, str) or node not in nodes:  # a list would be a TypeError (unhashable)
        raise UnknownNodeError(f"node {node}", "is not in the cluster state")
    mark_allocator = marks if marks is not None else MarkAllocator(config.mark_layout)
    if mark_allocator.layout != config.mark_layout:
        raise ConfigError("marks", "the mark allocator's layout differs from config.mark_layout")
    table_allocator = tables if tables is not None else TableAllocator(config.tables)
    if table_allocator.table_range != config.tables:
        raise ConfigError("tables", "the table allocator's range differs from config.tables")

    warnings: list[str] = []
    resolved = _resolve(state, node, nodes, config, warnings)
    node_marks = mark_allocator.allocate(nodes)
    local_node = nodes[node]
    remote_gateways = {r.gateway.name for r in resolved if not r.local_is_gateway
                       and any(local_node.tunnel_ip(f) is not None for f in r.families)}
    routing_tables = table_allocator.allocate(node, remote_gateways)

    builder = _FamilyBuilder(config=config, state=state, nodes=nodes, local=node, resolved=resolved,
                             node_marks=node_marks, routing_tables=routing_tables)
    families = tuple(builder.build(f) for f in _FAMILIES if _enabled(config, f))
    warnings.extend(node_warnings(nodes[node], resolved))
    _check_set_names(families)
    return RuleSet(
        node=node,
        config=config,
        families=families,
        node_marks=tuple(node_marks.items()),
        routing_tables=tuple(routing_tables.items()),
        warnings=tuple(warnings),
    )


def _enabled(config: Config, family: Family) -> bool:
    return config.ipv4 if family is Family.IPV4 else config.ipv6


def _resolve(state: ClusterState, local: str, nodes: dict[str, Node], config: Config,
             warnings: list[str]) -> list[_Resolved]:
    resolved = []
    for policy in sorted(state.policies, key=lambda p: p.precedence):
        gateway = nodes.get(policy.gateway_node)
        if gateway is None:
            raise UnknownNodeError(policy.subject, f"gateway node {policy.gateway_node} is not in the cluster state")
        families = policy_families(policy, gateway, config)
        warnings.extend(policy_warnings(policy, families, nodes))
        resolved.append(_Resolved(policy, gateway, families, gateway.name == local))
    return resolved


def node_warnings(local: Node, resolved: Sequence[_Resolved]) -> list[str]:
    """Families this node cannot tunnel in although policies need it to."""
    warnings = []
    for family in _FAMILIES:
        affected = [r.policy.subject for r in resolved
                    if family in r.families and not r.local_is_gateway and local.tunnel_ip(family) is None]
        if affected:
            warnings.append(f"node {local.name}: has no {family.label} tunnel address, so {family.label} traffic "
                            f"of its pods leaves without the egress IP of: {', '.join(affected)}")
    return warnings


def policy_warnings(policy: Policy, families: tuple[Family, ...], nodes: dict[str, Node]) -> list[str]:
    """What the caller should know about a policy that is not an error."""
    warnings = []
    if not families:
        warnings.append(f"{policy.subject}: has no egress IP yet; it gets no rules")
    unknown = sorted({e.node for e in policy.sources if e.node is not None and e.node not in nodes})
    if unknown:
        warnings.append(f"{policy.subject}: endpoints on unknown nodes {', '.join(unknown)} are treated as "
                        "remote to every node")
    return warnings


def local_sources(policy: Policy, family: Family, local: str, local_is_gateway: bool) -> tuple[Cidr, ...]:
    """The source set's members on ``local``: every endpoint on the gateway, else the local ones and the unplaced."""
    return collapse(e.cidr for e in policy.sources if e.cidr.family is family and (
        local_is_gateway or e.node is None or e.node == local))


def policy_families(policy: Policy, gateway: Node, config: Config) -> tuple[Family, ...]:
    """The families a policy gets rules in; an EIP family it cannot be routed in is an error."""
    eip = policy.egress_ip
    if eip.use_node_ip:
        families = tuple(f for f in _FAMILIES if _enabled(config, f) and gateway.tunnel_ip(f) is not None)
        if not families:
            raise EIPNotServableError(policy.subject, f"uses the node IP, but gateway node {gateway.name} has no "
                                      "tunnel address in an enabled family")
        return families
    result = []
    for family in _FAMILIES:
        address = eip.address(family)
        if address is None:
            continue
        if not _enabled(config, family):
            raise EIPNotServableError(policy.subject, f"has {family.label} egress IP {address}, but {family.label} "
                                      "is disabled in the config")
        if gateway.tunnel_ip(family) is None:
            raise EIPNotServableError(policy.subject, f"has {family.label} egress IP {address}, but gateway node "
                                      f"{gateway.name} has no {family.label} tunnel address to route it through")
        result.append(family)
    return tuple(result)


def _check_set_names(families: Sequence[FamilyRuleSet]) -> None:
    owner: dict[str, Provenance] = {}
    for family in families:
        for ipset in family.sets:
            first = owner.setdefault(ipset.name, ipset.provenance)
            if first is not ipset.provenance:
                raise NameCollisionError(f"set {ipset.name}", f"both {first.policy} and {ipset.provenance.policy} "
                                         "hash to this name; rename one of the policies")


class _FamilyBuilder:
    """Builds one family's FamilyRuleSet; holds what all families share."""

    def __init__(self, *, config: Config, state: ClusterState, nodes: dict[str, Node], local: str,
                 resolved: list[_Resolved], node_marks: dict[str, int], routing_tables: dict[str, int]) -> None:
        self.config = config
        self.state = state
        self.nodes = nodes
        self.local = local
        self.resolved = resolved
        self.node_marks = node_marks
        self.routing_tables = routing_tables
        layout = config.mark_layout
        self.keep = MarkMatch(config.keep_mark, layout.owned_mask)
        self.any_node_mark = MarkMatch(layout.prefix_value, layout.prefix_mask)

    def rule(self, matches: tuple[Match, ...], action: Action, provenance: Provenance) -> Rule:
        return Rule(matches, action, naming.comment(self.config, provenance), provenance)

    def build(self, family: Family) -> FamilyRuleSet:
        config, chains = self.config, self.config.chains
        active = [r for r in self.resolved if family in r.families]
        cluster_set = naming.cluster_set_name(config, family)
        sets = [IPSet(cluster_set, family, collapse(self.state.cluster.all(family)), Provenance(Role.CLUSTER_CIDRS))]

        mark_request: list[Rule] = []
        snat: list[Rule] = [
            self.rule((self.keep,), Return(), Provenance(Role.SKIP_TUNNELED)),
            # Marked for a gateway but not routed into the tunnel (its route is missing): the ordinary way.
            self.rule((self.any_node_mark,), Return(), Provenance(Role.SKIP_UNROUTED)),
        ]
        no_snat: list[Rule] = [self.rule((self.keep,), Accept(), Provenance(Role.NO_SNAT))]
        remote: set[str] = set()
        for item in active:
            policy, key = item.policy, item.policy.key
            src_name = naming.policy_set_name(config, Role.SOURCES, family, key)
            sources = local_sources(policy, family, self.local, item.local_is_gateway)
            sets.append(IPSet(src_name, family, sources, Provenance(Role.SOURCES, key)))
            if policy.destinations:
                dst_name = naming.policy_set_name(config, Role.DESTINATIONS, family, key)
                destinations = [c for c in policy.destinations if c.family is family]
                sets.append(IPSet(dst_name, family, collapse(destinations), Provenance(Role.DESTINATIONS, key)))
                dst_match = SetMatch(dst_name, Direction.DST)
            else:
                dst_match = SetMatch(cluster_set, Direction.DST, negate=True)
            matches: tuple[Match, ...] = (SetMatch(src_name, Direction.SRC), dst_match,
                                          ConntrackDirectionMatch(CtDirection.ORIGINAL))
            gateway = item.gateway.name
            if item.local_is_gateway:
                mark_request.append(self.rule(matches, Return(), Provenance(Role.LOCAL_GATEWAY, key, gateway)))
                eip = policy.egress_ip.address(family)
                action: Action = Masquerade() if eip is None else Snat(eip)
                snat.append(self.rule(matches, action, Provenance(Role.SNAT_EIP, key, gateway)))
            elif self.nodes[self.local].tunnel_ip(family) is None:
                # No tunnel address to route through: the traffic leaves the ordinary way, and no
                # lower-precedence policy may send it to another gateway instead.
                mark_request.append(self.rule(matches, Return(), Provenance(Role.NO_TUNNEL, key, gateway)))
            else:
                remote.add(gateway)
                target = chains.gateway_chain(self.node_marks[gateway])
                mark_request.append(self.rule(matches, Goto(target), Provenance(Role.MARK_REQUEST, key, gateway)))
                if config.weave_no_snat:
                    no_snat.append(self.rule(matches, Accept(), Provenance(Role.WEAVE_NO_SNAT, key, gateway)))

        owned = config.mark_layout.owned_mask
        gateway_chains = [
            Chain(NetfilterTable.MANGLE, chains.gateway_chain(self.node_marks[g]), (
                self.rule((), SetMark(self.node_marks[g], owned), Provenance(Role.MARK_GATEWAY, gateway=g)),))
            for g in sorted(remote, key=lambda g: self.node_marks[g])
        ]
        into_tunnel = OutInterfaceMatch(config.tunnel_device)
        owned_chains = (
            Chain(NetfilterTable.MANGLE, chains.reset_mark, (
                # Only a packet that really goes into the tunnel trades its node mark for the keep mark.
                self.rule((into_tunnel, self.any_node_mark), SetMark(config.keep_mark, owned),
                          Provenance(Role.RESET_MARK)),
                self.rule((into_tunnel, self.keep), SetConnmark(config.keep_mark, owned),
                          Provenance(Role.REMEMBER_TUNNELED)),
            )),
            Chain(NetfilterTable.MANGLE, chains.mark_request, tuple(mark_request)),
            *gateway_chains,
            Chain(NetfilterTable.NAT, chains.snat_eip, tuple(snat)),
            Chain(NetfilterTable.NAT, chains.no_snat, tuple(no_snat)),
        )
        keep_accept = self.rule((self.keep,), Accept(), Provenance(Role.KEEP_MARK))
        # A flow that went into the tunnel has no NAT binding on this node: should one of its packets ever
        # leave another way (the policy is gone, a route is missing), it would carry the pod's own address.
        # Drop such packets until the flow's conntrack entry is deleted.
        tunneled_flow_guard = self.rule(
            (ConntrackDirectionMatch(CtDirection.ORIGINAL),
             ConnmarkMatch(config.keep_mark, owned), MarkMatch(config.keep_mark, owned, negate=True)),
            Drop(), Provenance(Role.TUNNELED_FLOW_GUARD))
        hooks = (
            HookRule(NetfilterTable.MANGLE, BuiltinChain.PREROUTING, 1,
                     self.rule((), Jump(chains.mark_request), Provenance(Role.MARK_REQUEST))),
            HookRule(NetfilterTable.MANGLE, BuiltinChain.FORWARD, 1,
                     self.rule((), Jump(chains.reset_mark), Provenance(Role.RESET_MARK))),
            HookRule(NetfilterTable.MANGLE, BuiltinChain.POSTROUTING, 1, keep_accept),
            HookRule(NetfilterTable.FILTER, BuiltinChain.FORWARD, 1, tunneled_flow_guard),
            HookRule(NetfilterTable.FILTER, BuiltinChain.FORWARD, 2, keep_accept),
            HookRule(NetfilterTable.FILTER, BuiltinChain.OUTPUT, 1, keep_accept),
            # SNAT-EIP above NO-SNAT: the seed inserts both at position 1, SNAT-EIP last.
            HookRule(NetfilterTable.NAT, BuiltinChain.POSTROUTING, 1,
                     self.rule((), Jump(chains.snat_eip), Provenance(Role.SNAT_EIP))),
            HookRule(NetfilterTable.NAT, BuiltinChain.POSTROUTING, 2,
                     self.rule((), Jump(chains.no_snat), Provenance(Role.NO_SNAT))),
        )
        ip_rules, routes = [], []
        for gateway in sorted(remote, key=lambda g: self.routing_tables[g]):
            table = self.routing_tables[gateway]
            via = self.gateway_tunnel_ip(gateway, family)
            provenance = Provenance(Role.ROUTE_TO_GATEWAY, gateway=gateway)
            ip_rules.append(IPRule(family, config.ip_rule_priority, self.node_marks[gateway], owned, table,
                                   config.route_protocol, provenance))
            routes.append(Route(family, table, Cidr(family, 0, 0), via, config.tunnel_device,
                                config.route_protocol, provenance))
        return FamilyRuleSet(family, tuple(sets), owned_chains, hooks, tuple(ip_rules), tuple(routes))

    def gateway_tunnel_ip(self, gateway: str, family: Family) -> IPAddress:
        node = self.nodes[gateway]
        address = node.tunnel_ip(family)
        assert address is not None, "checked by policy_families"
        return address
