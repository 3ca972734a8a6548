"""The compiler's input: policies, their endpoints and destinations, nodes, cluster CIDRs.

All classes are frozen and validated on construction. Sequence fields accept any
iterable (stored as tuples) and address fields accept text (parsed strictly), so
``Policy(name="web", destinations=["192.0.2.0/24"], ...)`` works; anything that
is not valid raises an :class:`~egress_rules.errors.InvalidInputError` naming it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import attrs

from egress_rules.errors import DuplicateError, InvalidInputError
from egress_rules.model.addresses import Cidr, Family, IPAddress, parse_address, parse_cidr, require_family
from egress_rules.model.names import validate_dns_label, validate_dns_subdomain

PRIORITY_MAX = (1 << 64) - 1


def _cidr(value: Cidr | str) -> Cidr:
    return value if isinstance(value, Cidr) else parse_cidr(value)


def _cidrs(values: Iterable[Cidr | str]) -> tuple[Cidr, ...]:
    if isinstance(values, (str, bytes)):
        raise InvalidInputError(repr(values), "expected a list of CIDRs, got a single string")
    return tuple(v if isinstance(v, Cidr) else parse_cidr(v) for v in values)


def _address(value: IPAddress | str | None) -> IPAddress | None:
    if value is None or isinstance(value, IPAddress):
        return value
    return parse_address(value)


@functools.lru_cache(maxsize=1 << 16)
def _known_good_node_name(name: str) -> bool:
    """Whether ``name`` is a valid node name; cached, since a cluster has few nodes and many endpoints."""
    try:
        validate_dns_subdomain(name, "node")
    except InvalidInputError:
        return False
    return True


def _endpoints(values: Iterable[Endpoint]) -> tuple[Endpoint, ...]:
    result = tuple(values)
    for item in result:
        if not isinstance(item, Endpoint):
            raise InvalidInputError(repr(item), "a source must be an Endpoint")
    return result


@attrs.frozen(slots=True)
class Endpoint:
    """A source of a policy: a pod IP or a CIDR, with the node it runs on if known.

    An endpoint with no node is treated as possibly on every node.
    """

    cidr: Cidr = attrs.field(converter=_cidr)
    node: str | None = None

    def __attrs_post_init__(self) -> None:
        # The isinstance check first: the cache needs a hashable key, and a list must be an InvalidNameError.
        if self.node is not None and not (isinstance(self.node, str) and _known_good_node_name(self.node)):
            validate_dns_subdomain(self.node, f"endpoint {self.cidr} node")


@attrs.frozen
class EgressIP:
    """The address traffic leaves with: an IPv4 and/or IPv6 EIP, or the gateway node's own IP."""

    ipv4: IPAddress | None = attrs.field(default=None, converter=_address)
    ipv6: IPAddress | None = attrs.field(default=None, converter=_address)
    use_node_ip: bool = False

    def __attrs_post_init__(self) -> None:
        if self.ipv4 is not None:
            require_family(self.ipv4, Family.IPV4, "egress_ip.ipv4")
        if self.ipv6 is not None:
            require_family(self.ipv6, Family.IPV6, "egress_ip.ipv6")
        if type(self.use_node_ip) is not bool:
            raise InvalidInputError("egress_ip.use_node_ip", f"{self.use_node_ip!r} is not a boolean")
        if self.use_node_ip and (self.ipv4 or self.ipv6):
            raise InvalidInputError("egress_ip", "use_node_ip excludes explicit ipv4/ipv6 addresses")

    def address(self, family: Family) -> IPAddress | None:
        return self.ipv4 if family is Family.IPV4 else self.ipv6


@attrs.frozen(order=True)
class PolicyKey:
    """What identifies a policy: its namespace (``None`` for a cluster-scoped policy) and name."""

    namespace: str | None
    name: str

    def __str__(self) -> str:
        return self.name if self.namespace is None else f"{self.namespace}/{self.name}"

    @property
    def kind(self) -> str:
        return "clusterpolicy" if self.namespace is None else "policy"

    def sort_key(self) -> tuple[str, str]:
        # Cluster-scoped policies sort before namespaced ones of equal priority.
        return ("" if self.namespace is None else self.namespace, self.name)


@attrs.frozen
class Policy:
    """One egress policy as the compiler needs it.

    ``destinations`` empty means "everything outside the cluster CIDRs".
    Lower ``priority`` wins; ties are broken by namespace, then name.
    """

    name: str
    gateway_node: str
    egress_ip: EgressIP = attrs.field(factory=EgressIP)
    namespace: str | None = None
    priority: int = 1000
    sources: tuple[Endpoint, ...] = attrs.field(default=(), converter=_endpoints)
    destinations: tuple[Cidr, ...] = attrs.field(default=(), converter=_cidrs)

    def __attrs_post_init__(self) -> None:
        if self.namespace is not None:
            validate_dns_label(self.namespace, "policy namespace")
        validate_dns_subdomain(self.name, "policy name" if self.namespace is None
                               else f"policy in namespace {self.namespace} name")
        subject = f"{self.key.kind} {self.key}"
        validate_dns_subdomain(self.gateway_node, f"{subject} gateway_node")
        if type(self.priority) is not int or not 0 <= self.priority <= PRIORITY_MAX:
            raise InvalidInputError(f"{subject} priority", f"{self.priority!r} is not an integer in 0..2^64-1")
        if not isinstance(self.egress_ip, EgressIP):
            raise InvalidInputError(f"{subject} egress_ip", "must be an EgressIP")

    @property
    def key(self) -> PolicyKey:
        return PolicyKey(self.namespace, self.name)

    @property
    def precedence(self) -> tuple[int, str, str]:
        """Sort key: the first policy in this order wins on every node and backend."""
        return (self.priority, *self.key.sort_key())

    @property
    def subject(self) -> str:
        return f"{self.key.kind} {self.key}"


@attrs.frozen
class Node:
    """A cluster node and its tunnel addresses (the next hop other nodes route to)."""

    name: str = attrs.field()
    tunnel_ipv4: IPAddress | None = attrs.field(default=None, converter=_address)
    tunnel_ipv6: IPAddress | None = attrs.field(default=None, converter=_address)

    def __attrs_post_init__(self) -> None:
        validate_dns_subdomain(self.name, "node name")
        if self.tunnel_ipv4 is not None:
            require_family(self.tunnel_ipv4, Family.IPV4, f"node {self.name} tunnel_ipv4")
        if self.tunnel_ipv6 is not None:
            require_family(self.tunnel_ipv6, Family.IPV6, f"node {self.name} tunnel_ipv6")

    def tunnel_ip(self, family: Family) -> IPAddress | None:
        return self.tunnel_ipv4 if family is Family.IPV4 else self.tunnel_ipv6


@attrs.frozen
class ClusterCIDRs:
    """In-cluster address space, both families mixed: never sent to a gateway by an empty destSubnet."""

    pod: tuple[Cidr, ...] = attrs.field(default=(), converter=_cidrs)
    service: tuple[Cidr, ...] = attrs.field(default=(), converter=_cidrs)
    node: tuple[Cidr, ...] = attrs.field(default=(), converter=_cidrs)
    extra: tuple[Cidr, ...] = attrs.field(default=(), converter=_cidrs)

    def all(self, family: Family) -> tuple[Cidr, ...]:
        return tuple(c for c in (*self.pod, *self.service, *self.node, *self.extra) if c.family is family)


def _policies(values: Iterable[Policy]) -> tuple[Policy, ...]:
    return tuple(values)


def _nodes(values: Iterable[Node]) -> tuple[Node, ...]:
    return tuple(values)


@attrs.frozen
class ClusterState:
    """Everything the compiler reads about the cluster. Order of the tuples does not matter."""

    policies: tuple[Policy, ...] = attrs.field(default=(), converter=_policies)
    nodes: tuple[Node, ...] = attrs.field(default=(), converter=_nodes)
    cluster: ClusterCIDRs = attrs.field(factory=ClusterCIDRs)

    def __attrs_post_init__(self) -> None:
        seen_nodes: set[str] = set()
        tunnel_owner: dict[IPAddress, str] = {}
        for node in self.nodes:
            if not isinstance(node, Node):
                raise InvalidInputError(repr(node), "nodes must be Node objects")
            if node.name in seen_nodes:
                raise DuplicateError(f"node {node.name}", "listed twice")
            seen_nodes.add(node.name)
            for ip in (node.tunnel_ipv4, node.tunnel_ipv6):
                if ip is not None:
                    if ip in tunnel_owner:
                        raise DuplicateError(f"node {node.name}", f"tunnel IP {ip} is also node {tunnel_owner[ip]}'s")
                    tunnel_owner[ip] = node.name
        seen_keys: set[PolicyKey] = set()
        for policy in self.policies:
            if not isinstance(policy, Policy):
                raise InvalidInputError(repr(policy), "policies must be Policy objects")
            if policy.key in seen_keys:
                raise DuplicateError(policy.subject, "listed twice")
            seen_keys.add(policy.key)

    def node(self, name: str) -> Node | None:
        for node in self.nodes:
            if node.name == name:
                return node
        return None

