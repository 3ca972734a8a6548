"""Reader of the spidernet-io/egressgateway custom resources (``egressgateway.spidernet.io/v1beta1``).

Owns the mapping from what ``kubectl get ... -o json`` (or ``-o yaml``) prints for
EgressPolicy, EgressClusterPolicy, EgressGateway, EgressTunnel, EgressClusterInfo,
EgressEndpointSlice and EgressClusterEndpointSlice to the library's input, a
:class:`~egress_rules.model.schema.CompileInput`, plus warnings about what could
not be used as given. ``docs/resources.md`` maps every field and explains each rule:

* malformed data (a bad address, a field of the wrong type, an unsupported
  version of this API group) raises :class:`~egress_rules.errors.ResourceError`
  naming the resource and the field;
* a cluster in transition (a policy with no gateway node or no EIP yet, a
  gateway node with no tunnel address in the EIP's family, an upstream node
  mark that does not fit the configured layout) gives a warning, and the
  policy or mark is left out, so one half-set-up object never stops a node
  agent from compiling everything else;
* objects of other API groups and unknown kinds are ignored with a warning.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

import attrs

from egress_rules.adapters.documents import Fields, Located, decode_text, flatten, render_path
from egress_rules.allocators import MarkAllocator
from egress_rules.errors import MarkConflictError, ResourceError, one_line
from egress_rules.model.addresses import Cidr, Family, IPAddress, parse_address, parse_cidr, require_family
from egress_rules.model.cluster import (
    PRIORITY_MAX,
    ClusterCIDRs,
    ClusterState,
    EgressIP,
    Endpoint,
    Node,
    Policy,
    PolicyKey,
)
from egress_rules.model.config import DEFAULT_CONFIG, MARK_MAX, Config, MarkLayout
from egress_rules.model.names import validate_dns_label, validate_dns_subdomain
from egress_rules.model.schema import CompileInput

GROUP = "egressgateway.spidernet.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"

EGRESS_POLICY = "EgressPolicy"
EGRESS_CLUSTER_POLICY = "EgressClusterPolicy"
EGRESS_GATEWAY = "EgressGateway"
EGRESS_TUNNEL = "EgressTunnel"
EGRESS_CLUSTER_INFO = "EgressClusterInfo"
EGRESS_ENDPOINT_SLICE = "EgressEndpointSlice"
EGRESS_CLUSTER_ENDPOINT_SLICE = "EgressClusterEndpointSlice"
KINDS = frozenset({EGRESS_POLICY, EGRESS_CLUSTER_POLICY, EGRESS_GATEWAY, EGRESS_TUNNEL, EGRESS_CLUSTER_INFO,
                   EGRESS_ENDPOINT_SLICE, EGRESS_CLUSTER_ENDPOINT_SLICE})
NAMESPACED_KINDS = frozenset({EGRESS_POLICY, EGRESS_ENDPOINT_SLICE})

# The label the upstream controller puts on every endpoint slice: the name of the policy it belongs to.
POLICY_NAME_LABEL = "spidernet.io/policy-name"
# Upstream's cluster-policy proposal: unset priority means 1000 for a policy, 32768 for a cluster policy.
DEFAULT_PRIORITY = {EGRESS_POLICY: 1000, EGRESS_CLUSTER_POLICY: 32768}
# The upstream controller maintains exactly one EgressClusterInfo, by this name.
CLUSTER_INFO_NAME = "default"
TUNNEL_READY = "Ready"

_SLICE_POLICY_KIND = {EGRESS_ENDPOINT_SLICE: EGRESS_POLICY, EGRESS_CLUSTER_ENDPOINT_SLICE: EGRESS_CLUSTER_POLICY}
_FAMILIES = (Family.IPV4, Family.IPV6)
_FAMILY_KEYS = (("ipv4", Family.IPV4), ("ipv6", Family.IPV6))
_HEX_MARK = re.compile(r"(?:0[xX])?([0-9a-fA-F]{1,8})\Z")

A = TypeVar("A", IPAddress, Cidr)


@attrs.frozen
class LoadResult:
    """What :func:`load_resources` read.

    ``compile_input`` is the library's input; ``warnings`` say, one line each and
    naming the resource, what was ignored or could not be used as given;
    ``skipped`` are the policies of the input that got no rules (no gateway node
    or egress IP yet, or none that its gateway node can serve).
    """

    compile_input: CompileInput
    warnings: tuple[str, ...] = ()
    skipped: tuple[PolicyKey, ...] = ()


@attrs.frozen
class _Placement:
    """Where a policy's traffic leaves, as one resource states it: the gateway node and the EIPs."""

    node: str | None
    ipv4: IPAddress | None
    ipv6: IPAddress | None
    source: str

    def same_as(self, other: _Placement) -> bool:
        return (self.node, self.ipv4, self.ipv6) == (other.node, other.ipv4, other.ipv6)

    def describe(self) -> str:
        eips = ", ".join(str(a) for a in (self.ipv4, self.ipv6) if a is not None) or "no EIP"
        return f"node {self.node or '(none)'} with {eips}"


@attrs.frozen
class _PolicyRecord:
    label: str
    key: PolicyKey
    gateway: str | None
    use_node_ip: bool
    requested: tuple[IPAddress | None, IPAddress | None]
    pod_subnets: tuple[Endpoint, ...]
    destinations: tuple[Cidr, ...]
    priority: int
    status: _Placement


@attrs.frozen
class _Listing:
    """One policy named in an EgressGateway's ``status.nodeList[].eips[].policies[]``."""

    gateway: str
    key: PolicyKey
    placement: _Placement


@attrs.frozen
class _TunnelRecord:
    label: str
    node: Node
    mark: int | None
    phase: str | None


@attrs.frozen
class _SliceRecord:
    label: str
    policy_kind: str
    policy: PolicyKey | None
    endpoints: tuple[Endpoint, ...]


@attrs.define
class _Collected:
    """Every resource read so far, by kind: the one mutable accumulator, local to one load."""

    policies: dict[PolicyKey, _PolicyRecord] = attrs.field(factory=dict)
    listings: list[_Listing] = attrs.field(factory=list)
    gateway_names: set[str] = attrs.field(factory=set)
    tunnels: dict[str, _TunnelRecord] = attrs.field(factory=dict)
    cluster_infos: dict[str, ClusterCIDRs] = attrs.field(factory=dict)
    slices: list[_SliceRecord] = attrs.field(factory=list)
    ignored: Counter[tuple[str, str]] = attrs.field(factory=Counter)


def load_resource_text(text: str, config: Config = DEFAULT_CONFIG, *, node_marks: Mapping[str, int] | None = None,
                       source: str = "resources") -> LoadResult:
    """:func:`load_resources` of JSON text, or of YAML text (needs the ``yaml`` extra).

    ``source`` names the text in errors (a file name, say).
    """
    return _load(decode_text(text, source), config, node_marks)


def load_resources(documents: Iterable[Mapping[str, Any]], config: Config = DEFAULT_CONFIG, *,
                   node_marks: Mapping[str, int] | None = None) -> LoadResult:
    """Build the library's input from decoded egressgateway resources.

    Each document is one object or a List of them (kubectl's ``kind: List`` or an
    API server's ``EgressPolicyList``). ``node_marks`` are node marks assigned
    before (a previous ``RuleSet.node_marks``): they are kept for nodes whose
    EgressTunnel gives no usable mark, so that allocated marks never move.

    Raises :class:`~egress_rules.errors.ResourceError` (naming kind, namespace,
    name and field) for malformed resources; never returns a partial result.
    """
    return _load(documents, config, node_marks)


def _load(documents: Iterable[object], config: Config, node_marks: Mapping[str, int] | None) -> LoadResult:
    collected = _Collected()
    seen: dict[tuple[str, str | None, str], str] = {}
    for item in flatten(documents):
        _read(item, collected, seen)

    warnings: list[str] = [
        f"ignored {count} {api_version} {kind} object{'s' if count > 1 else ''}: "
        f"not one of the {API_VERSION} kinds this adapter reads"
        for (api_version, kind), count in sorted(collected.ignored.items())
    ]
    tunnels = [collected.tunnels[name] for name in sorted(collected.tunnels)]
    _check_tunnel_addresses(tunnels)
    marks = _node_marks(tunnels, config.mark_layout, node_marks or {}, warnings)
    cluster, has_cluster_info = _cluster(collected.cluster_infos, warnings)

    sources = _slice_sources(collected, warnings)
    listed = _gateway_listings(collected, warnings)
    policies: list[Policy] = []
    skipped: list[PolicyKey] = []
    for key in sorted(collected.policies, key=PolicyKey.sort_key):
        record = collected.policies[key]
        policy = _policy(record, listings=listed, collected=collected, sources=sources.get(key, ()), config=config,
                         warnings=warnings)
        if policy is None:
            skipped.append(key)
        else:
            policies.append(policy)
    if not has_cluster_info and any(not p.destinations for p in policies):
        warnings.append(f"no {EGRESS_CLUSTER_INFO} {CLUSTER_INFO_NAME!r} in the input: the cluster CIDRs are empty, "
                        "so policies without destSubnet send in-cluster traffic to their gateway as well")

    state = ClusterState(policies=policies, nodes=[t.node for t in tunnels], cluster=cluster)
    # Warnings quote status fields verbatim; each must stay one line (see LoadResult).
    return LoadResult(CompileInput(state, config, marks), tuple(one_line(w) for w in warnings), tuple(skipped))


# --- reading one object ---------------------------------------------------------------------------------------


def _read(item: Located, collected: _Collected, seen: dict[tuple[str, str | None, str], str]) -> None:
    group, _, version = item.api_version.rpartition("/")
    if group == GROUP and version != VERSION:
        # Ours, but a version whose fields this adapter does not know: reading it as v1beta1 could be wrong.
        raise ResourceError(f"{item.kind} at {item.where}", "apiVersion",
                            f"{item.api_version!r} is not supported: this adapter reads {API_VERSION}")
    if group != GROUP or item.kind not in KINDS:
        collected.ignored[(item.api_version, item.kind)] += 1
        return
    fields, namespace, name = _identity(item)
    identity = (item.kind, namespace, name)
    if identity in seen:
        raise ResourceError(fields.resource, None, f"listed twice: at {seen[identity]} and at {item.where}")
    seen[identity] = item.where

    if item.kind in (EGRESS_POLICY, EGRESS_CLUSTER_POLICY):
        record = _read_policy(fields, item.kind, PolicyKey(namespace, name))
        collected.policies[record.key] = record
    elif item.kind == EGRESS_GATEWAY:
        collected.gateway_names.add(name)
        collected.listings.extend(_read_gateway(fields, name))
    elif item.kind == EGRESS_TUNNEL:
        collected.tunnels[name] = _read_tunnel(fields, name)
    elif item.kind == EGRESS_CLUSTER_INFO:
        collected.cluster_infos[name] = _read_cluster_info(fields)
    else:
        slice_record = _read_slice(fields, item.kind, namespace)
        if slice_record is not None:
            collected.slices.append(slice_record)


def _identity(item: Located) -> tuple[Fields, str | None, str]:
    """Check ``metadata.name`` / ``metadata.namespace``; the fields, labelled ``Kind namespace/name``."""
    fields = Fields(f"{item.kind} at {item.where}", item.obj)
    name = fields.required_string("metadata", "name")
    fields.at(("metadata", "name"), partial(validate_dns_subdomain, name, "name"), detail_only=True)
    namespace = fields.string("metadata", "namespace")
    if item.kind in NAMESPACED_KINDS:
        if namespace is None:
            fields.fail(("metadata", "namespace"), f"missing: {item.kind} is namespaced")
        fields.at(("metadata", "namespace"), partial(validate_dns_label, namespace, "namespace"), detail_only=True)
        return Fields(f"{item.kind} {namespace}/{name}", item.obj), namespace, name
    if namespace is not None:
        fields.fail(("metadata", "namespace"), f"{item.kind} is cluster-scoped, but has namespace {namespace!r}")
    return Fields(f"{item.kind} {name}", item.obj), None, name


def _of_family(parse: Callable[[str], A], family: Family) -> Callable[[str], A]:
    """``parse``, then insist on ``family`` (the upstream ``ipv4``/``ipv6`` field pairs are per family)."""
    def run(text: str) -> A:
        value = parse(text)
        require_family(value, family, repr(text))
        return value
    return run


def _host(text: str) -> Cidr:
    """A single address (not a CIDR) as a host prefix."""
    return parse_address(text).as_cidr()


def _address(fields: Fields, key: str, family: Family) -> IPAddress | None:
    text = fields.string(key)
    return None if text is None else fields.at((key,), partial(_of_family(parse_address, family), text))


def _read_policy(fields: Fields, kind: str, key: PolicyKey) -> _PolicyRecord:
    if fields.mapping("spec") is None:
        fields.fail(("spec",), "missing")
    spec = fields.child("spec")
    egress_ip = spec.child("egressIP")
    use_node_ip = bool(egress_ip.boolean("useNodeIP"))
    requested = (_address(egress_ip, "ipv4", Family.IPV4), _address(egress_ip, "ipv6", Family.IPV6))
    if use_node_ip and requested != (None, None):
        egress_ip.fail((), "useNodeIP: true excludes ipv4 and ipv6")
    egress_ip.string("allocatorPolicy")  # Type-checked only: EIP allocation is the upstream controller's job.
    if spec.mapping("appliedTo") is None:
        spec.fail(("appliedTo",), "missing")
    applied = spec.child("appliedTo")
    pod_subnets = tuple(Endpoint(c) for c in applied.parsed(("podSubnet",), parse_cidr))
    destinations = tuple(spec.parsed(("destSubnet",), parse_cidr))
    priority = spec.integer("priority")
    if priority is not None and not 0 <= priority <= PRIORITY_MAX:
        spec.fail(("priority",), f"{priority} is not in 0..2^64-1")
    status = fields.child("status")
    eip = status.child("eip")
    placement = _Placement(status.string("node"), _address(eip, "ipv4", Family.IPV4),
                           _address(eip, "ipv6", Family.IPV6), "status")
    return _PolicyRecord(
        label=fields.resource, key=key, gateway=spec.string("egressGatewayName"),
        use_node_ip=use_node_ip, requested=requested, pod_subnets=pod_subnets, destinations=destinations,
        # Upstream's priority is a Go uint64 with omitempty: 0 and unset are the same, and mean the default.
        priority=priority or DEFAULT_PRIORITY[kind], status=placement,
    )


def _read_gateway(fields: Fields, name: str) -> list[_Listing]:
    listings = []
    for node_entry in fields.items("status", "nodeList"):
        node = node_entry.required_string("name")
        for eip_entry in node_entry.items("eips"):
            ipv4 = _address(eip_entry, "ipv4", Family.IPV4)
            ipv6 = _address(eip_entry, "ipv6", Family.IPV6)
            for ref in eip_entry.items("policies"):
                key = PolicyKey(ref.string("namespace"), ref.required_string("name"))
                source = f"{fields.resource} {render_path(eip_entry.base)}"
                listings.append(_Listing(name, key, _Placement(node, ipv4, ipv6, source)))
    return listings


def _read_tunnel(fields: Fields, name: str) -> _TunnelRecord:
    status = fields.child("status")
    tunnel = status.child("tunnel")
    ipv4 = _address(tunnel, "ipv4", Family.IPV4)
    ipv6 = _address(tunnel, "ipv6", Family.IPV6)
    node = fields.at(("metadata", "name"), partial(Node, name, ipv4, ipv6))
    return _TunnelRecord(fields.resource, node, _mark(status), status.string("phase"))


def _mark(status: Fields) -> int | None:
    """``status.mark``: upstream writes ``"0x"`` and hex digits; an unquoted YAML hex number arrives as an int."""
    value = status.get("mark")
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MARK_MAX:
        return value
    match = _HEX_MARK.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        status.fail(("mark",), f"{value!r} is not a 32-bit mark in hexadecimal (such as '0x26000100')")
    return int(match.group(1), 16)


def _read_cluster_info(fields: Fields) -> ClusterCIDRs:
    status = fields.child("status")

    def pair(entry: Fields, parse: Callable[[str], Cidr]) -> list[Cidr]:
        return [c for key, family in _FAMILY_KEYS for c in entry.parsed((key,), _of_family(parse, family))]

    pod = [c for _, entry in status.entries("podCIDR") for c in pair(entry, parse_cidr)]
    service = pair(status.child("clusterIP"), parse_cidr)
    node = [c for _, entry in status.entries("nodeIP") for c in pair(entry, _host)]
    # extraCidr mixes families and takes single addresses too ("10.10.10.1" in the upstream docs).
    extra = status.parsed(("extraCidr",), parse_cidr)
    return ClusterCIDRs(pod=pod, service=service, node=node, extra=extra)


def _read_slice(fields: Fields, kind: str, namespace: str | None) -> _SliceRecord | None:
    if fields.get("metadata", "deletionTimestamp") is not None:
        return None  # Being deleted: the upstream agent skips such slices too.
    policy_kind = _SLICE_POLICY_KIND[kind]
    owner = fields.string("metadata", "labels", POLICY_NAME_LABEL)
    if owner is None:
        # The label is what the upstream agent reads; the controller's ownerReference says the same.
        for ref in fields.items("metadata", "ownerReferences"):
            if ref.string("kind") == policy_kind and ref.boolean("controller") \
                    and (ref.string("apiVersion") or "").rpartition("/")[0] == GROUP:
                owner = ref.required_string("name")
                break
    endpoints: list[Endpoint] = []
    for entry in fields.items("endpoints"):
        node = entry.string("node")
        if node is not None:
            entry.at(("node",), partial(validate_dns_subdomain, node, "node"), detail_only=True)
        for key, family in _FAMILY_KEYS:
            endpoints.extend(Endpoint(c, node) for c in entry.parsed((key,), _of_family(_host, family)))
    policy = None if owner is None else PolicyKey(namespace, owner)
    return _SliceRecord(fields.resource, policy_kind, policy, tuple(endpoints))


# --- putting it together ----------------------------------------------------------------------------------------


def _check_tunnel_addresses(tunnels: list[_TunnelRecord]) -> None:
    owner: dict[IPAddress, str] = {}
    for tunnel in tunnels:
        for key, family in _FAMILY_KEYS:
            address = tunnel.node.tunnel_ip(family)
            if address is None:
                continue
            if address in owner:
                raise ResourceError(tunnel.label, f"status.tunnel.{key}",
                                    f"{address} is also {EGRESS_TUNNEL} {owner[address]}'s tunnel address")
            owner[address] = tunnel.node.name


def _node_marks(tunnels: list[_TunnelRecord], layout: MarkLayout, previous: Mapping[str, int],
                warnings: list[str]) -> dict[str, int]:
    """The existing node-mark assignments: upstream marks that fit the layout, then ``previous`` ones.

    A mark that does not fit, or that a node earlier by name already holds, is
    left out (with a warning naming both marks): the library's allocator gives
    that node a mark, the same one on every node agent as long as the existing
    assignments are the same.
    """
    kept: dict[str, int] = {}
    owner: dict[int, str] = {}
    rejected: list[tuple[_TunnelRecord, int, str]] = []
    fields = f"prefix {layout.prefix_value:#010x}, value bits {layout.value_mask:#010x}"
    for tunnel in tunnels:
        mark, node = tunnel.mark, tunnel.node.name
        if mark is None:
            continue
        if layout.value_of(mark) is None:
            rejected.append((tunnel, mark, f"does not fit the configured node-mark layout ({fields})"))
        elif mark in owner:
            rejected.append((tunnel, mark, f"is also {EGRESS_TUNNEL} {owner[mark]}'s, which keeps it"))
        else:
            kept[node] = mark
            owner[mark] = node
    for node, mark in sorted(previous.items()):
        if type(mark) is not int or layout.value_of(mark) is None:
            raise MarkConflictError(f"node_marks.{node}", f"{mark!r} is not a node mark of the layout ({fields})")
        if node in kept:
            continue  # The cluster's own record of this node's mark wins.
        if mark in owner:
            warnings.append(f"node_marks.{node}: {mark:#010x} is now {EGRESS_TUNNEL} {owner[mark]}'s status.mark; "
                            f"node {node} gets another mark")
            continue
        kept[node] = mark
        owner[mark] = node
    if rejected:
        assigned = MarkAllocator(layout, kept).allocate(t.node.name for t in tunnels)
        for tunnel, mark, reason in rejected:
            node = tunnel.node.name
            how = "kept from node_marks" if node in kept else \
                "assigned by the library's allocator; pass RuleSet.node_marks back as node_marks to keep it"
            warnings.append(f"{tunnel.label}: status.mark {mark:#010x} {reason}; node {node} uses "
                            f"{assigned[node]:#010x} instead ({how})")
    return kept


def _cluster(infos: Mapping[str, ClusterCIDRs], warnings: list[str]) -> tuple[ClusterCIDRs, bool]:
    for name in sorted(infos):
        if name != CLUSTER_INFO_NAME:
            warnings.append(f"{EGRESS_CLUSTER_INFO} {name}: ignored; the upstream controller maintains only "
                            f"{CLUSTER_INFO_NAME!r}")
    if CLUSTER_INFO_NAME in infos:
        return infos[CLUSTER_INFO_NAME], True
    return ClusterCIDRs(), False


def _slice_sources(collected: _Collected, warnings: list[str]) -> dict[PolicyKey, tuple[Endpoint, ...]]:
    found: dict[PolicyKey, set[Endpoint]] = {}
    for record in sorted(collected.slices, key=lambda r: r.label):
        policy = collected.policies.get(record.policy) if record.policy is not None else None
        if record.policy is None:
            warnings.append(f"{record.label}: ignored: it has no {POLICY_NAME_LABEL} label and no controller "
                            f"ownerReference to an {record.policy_kind}")
        elif policy is None:
            warnings.append(f"{record.label}: ignored: its {record.policy_kind} {record.policy} is not in the input")
        else:
            found.setdefault(record.policy, set()).update(record.endpoints)
    return {key: tuple(sorted(endpoints, key=lambda e: (e.cidr, e.node or ""))) for key, endpoints in found.items()}


def _gateway_listings(collected: _Collected, warnings: list[str]) -> dict[PolicyKey, list[_Listing]]:
    """The listings of each policy in the EgressGateway its spec names; listings elsewhere are warned about."""
    result: dict[PolicyKey, list[_Listing]] = {}
    for listing in sorted(collected.listings, key=lambda item: (item.gateway, item.placement.source)):
        policy = collected.policies.get(listing.key)
        where = listing.placement.source
        if policy is None:
            kind = EGRESS_CLUSTER_POLICY if listing.key.namespace is None else EGRESS_POLICY
            warnings.append(f"{where}: names {kind} {listing.key}, which is not in the input; ignored")
        elif policy.gateway != listing.gateway:
            warnings.append(f"{where}: names {policy.label}, whose spec.egressGatewayName is "
                            f"{policy.gateway!r}; ignored")
        else:
            result.setdefault(listing.key, []).append(listing)
    return result


def _placement(record: _PolicyRecord, listings: Mapping[PolicyKey, list[_Listing]], gateway_names: set[str],
               warnings: list[str]) -> _Placement:
    """Where the policy's EIP is: its EgressGateway's status if that lists it, else the policy's own status.

    The upstream controller writes the EgressGateway's status first and copies it
    into the policy's; the upstream agent reads only the former.
    """
    label, status = record.label, record.status
    found = sorted(listings.get(record.key, []), key=lambda item: item.placement.node or "")
    if not found:
        if record.gateway in gateway_names and status.node is not None:
            warnings.append(f"{label}: {EGRESS_GATEWAY} {record.gateway} does not list it; using status.node "
                            f"({status.describe()})")
        return status
    chosen = found[0].placement
    if len(found) > 1:
        warnings.append(f"{label}: listed {len(found)} times in {EGRESS_GATEWAY} {record.gateway} status; using "
                        f"{chosen.source} ({chosen.describe()})")
    if status.node is not None and not status.same_as(chosen):
        warnings.append(f"{label}: status says {status.describe()}, {chosen.source} says {chosen.describe()}; "
                        f"using the {EGRESS_GATEWAY}'s")
    return chosen


def _policy(record: _PolicyRecord, *, listings: Mapping[PolicyKey, list[_Listing]], collected: _Collected,
            sources: tuple[Endpoint, ...], config: Config, warnings: list[str]) -> Policy | None:
    """The model's Policy for ``record``, or ``None`` (with a warning) if it cannot get rules yet."""
    label = record.label
    placement = _placement(record, listings, collected.gateway_names, warnings)
    if placement.node is None:
        listed = f" and {EGRESS_GATEWAY} {record.gateway} does not list it" \
            if record.gateway in collected.gateway_names else ""
        warnings.append(f"{label}: skipped: no gateway node yet (status.node is empty{listed})")
        return None
    tunnel = collected.tunnels.get(placement.node)
    if tunnel is None:
        warnings.append(f"{label}: skipped: its gateway node {placement.node} has no {EGRESS_TUNNEL} in the input")
        return None
    gateway = tunnel.node
    enabled = {Family.IPV4: config.ipv4, Family.IPV6: config.ipv6}
    if record.use_node_ip:
        if placement.ipv4 is not None or placement.ipv6 is not None:
            warnings.append(f"{label}: uses the node IP; the EIPs in {placement.source} are ignored")
        if not any(enabled[f] and gateway.tunnel_ip(f) is not None for f in _FAMILIES):
            warnings.append(f"{label}: skipped: it uses the node IP, but gateway node {gateway.name} has no tunnel "
                            "address in an enabled family")
            return None
        egress_ip = EgressIP(use_node_ip=True)
    else:
        if placement.ipv4 is None and placement.ipv6 is None:
            warnings.append(f"{label}: skipped: no egress IP yet ({placement.source} has none)")
            return None
        served: dict[Family, IPAddress] = {}
        for (key, family), address, requested in zip(_FAMILY_KEYS, (placement.ipv4, placement.ipv6),
                                                     record.requested, strict=True):
            if address is None:
                continue
            if requested is not None and requested != address:
                warnings.append(f"{label}: spec.egressIP.{key} asks for {requested}, but {placement.source} has "
                                f"{address}; using {address}")
            if not enabled[family]:
                warnings.append(f"{label}: {family.label} egress IP {address} is not used: {family.label} is "
                                "disabled in the config")
            elif gateway.tunnel_ip(family) is None:
                warnings.append(f"{label}: {family.label} egress IP {address} is not used: gateway node "
                                f"{gateway.name} has no {family.label} tunnel address ({tunnel.label} "
                                f"status.tunnel.{key})")
            else:
                served[family] = address
        if not served:
            warnings.append(f"{label}: skipped: none of its egress IPs can be served")
            return None
        egress_ip = EgressIP(served.get(Family.IPV4), served.get(Family.IPV6))
    if tunnel.phase != TUNNEL_READY:
        warnings.append(f"{label}: gateway node {gateway.name} is not Ready ({tunnel.label} status.phase "
                        f"{tunnel.phase or '(empty)'}); its rules are compiled all the same")
    endpoints = tuple(sorted({*record.pod_subnets, *sources}, key=lambda e: (e.cidr, e.node or "")))
    return Policy(namespace=record.key.namespace, name=record.key.name, gateway_node=gateway.name,
                  egress_ip=egress_ip, priority=record.priority, sources=endpoints,
                  destinations=record.destinations)
