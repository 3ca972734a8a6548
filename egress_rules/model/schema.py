"""The library's own JSON input schema: plain data <-> model objects.

``load_input`` turns a decoded JSON document into a :class:`CompileInput`
(cluster state, config, existing allocations). Unknown keys are errors, not
ignored, so a misspelt setting never silently falls back to a default. Every
error names the path of the offending value (``policies[2].sources[0].cidr``).
``dump_input`` is the inverse and round-trips.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import attrs

from egress_rules.allocators import MarkAllocator, TableAllocator
from egress_rules.errors import EgressRulesError, InvalidInputError
from egress_rules.model.addresses import Cidr, parse_cidr
from egress_rules.model.cluster import ClusterCIDRs, ClusterState, EgressIP, Endpoint, Node, Policy
from egress_rules.model.config import ChainNames, Config, MarkLayout, MarkUser, TableRange

T = TypeVar("T")


@attrs.frozen
class CompileInput:
    """Everything ``compile`` needs besides the local node's name."""

    state: ClusterState
    config: Config = attrs.field(factory=Config)
    node_marks: Mapping[str, int] = attrs.field(factory=dict)
    # Per local node: gateway node -> table, and tables other software uses.
    routing_tables: Mapping[str, Mapping[str, int]] = attrs.field(factory=dict)
    tables_in_use: Mapping[str, frozenset[int]] = attrs.field(factory=dict)

    def mark_allocator(self) -> MarkAllocator:
        return MarkAllocator(self.config.mark_layout, self.node_marks)

    def table_allocator(self, node: str) -> TableAllocator:
        return TableAllocator(self.config.tables, self.routing_tables.get(node, {}),
                              self.tables_in_use.get(node, frozenset()))


def _at(path: str, build: Callable[[], T]) -> T:
    """Run ``build``; an error it raises gets ``path`` in front of its subject."""
    try:
        return build()
    except EgressRulesError as error:
        raise error.within(path) from None
    except (TypeError, ValueError) as error:
        raise InvalidInputError(path, str(error)) from None


def _object(value: object, path: str, allowed: set[str] | None = None,
            required: frozenset[str] = frozenset()) -> dict[str, Any]:
    """A JSON object; with ``allowed``, any other key is an error."""
    if not isinstance(value, dict):
        raise InvalidInputError(path, f"expected an object, got {type(value).__name__}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise InvalidInputError(path, f"unknown keys {', '.join(map(repr, unknown))}; "
                                    f"allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(value))
    if missing:
        raise InvalidInputError(path, f"missing keys {', '.join(map(repr, missing))}")
    return value


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInputError(path, f"expected a list, got {type(value).__name__}")
    return value


def _int(value: object, path: str) -> int:
    """An integer, or a string of one (``"0x12000000"`` is accepted for marks)."""
    if isinstance(value, bool):
        raise InvalidInputError(path, "expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            pass
    raise InvalidInputError(path, f"expected an integer, got {value!r}")


def _cidr_list(value: object, path: str) -> list[Cidr]:
    return [_at(f"{path}[{i}]", partial(parse_cidr, item)) for i, item in enumerate(_list(value, path))]


def _endpoint(value: object, path: str) -> Endpoint:
    obj = _object(value, path, {"cidr", "node"}, frozenset({"cidr"}))
    cidr = _at(f"{path}.cidr", lambda: parse_cidr(obj["cidr"]))
    return _at(path, lambda: Endpoint(cidr, obj.get("node")))


def _policy(value: object, path: str) -> Policy:
    fields = {"namespace", "name", "priority", "gateway_node", "egress_ip", "sources", "destinations"}
    obj = _object(value, path, fields, frozenset({"name", "gateway_node"}))
    eip = _object(obj.get("egress_ip", {}), f"{path}.egress_ip", {"ipv4", "ipv6", "use_node_ip"})
    egress_ip = _at(f"{path}.egress_ip", lambda: EgressIP(eip.get("ipv4"), eip.get("ipv6"),
                                                          eip.get("use_node_ip", False)))
    sources = [_endpoint(item, f"{path}.sources[{i}]")
               for i, item in enumerate(_list(obj.get("sources", []), f"{path}.sources"))]
    destinations = _cidr_list(obj.get("destinations", []), f"{path}.destinations")
    priority = _int(obj.get("priority", 1000), f"{path}.priority")
    return _at(path, lambda: Policy(namespace=obj.get("namespace"), name=obj["name"], priority=priority,
                                    gateway_node=obj["gateway_node"], egress_ip=egress_ip, sources=sources,
                                    destinations=destinations))


def _int_fields(value: object, path: str, allowed: set[str] | None) -> dict[str, int]:
    return {k: _int(v, f"{path}.{k}") for k, v in _object(value, path, allowed).items()}


_INT_SETTINGS = {"keep_mark", "ip_rule_priority", "route_protocol", "reserved_mark_bits", "ipset_maxelem_limit"}


def _config(value: object, path: str) -> Config:
    obj = _object(value, path, {f.name for f in attrs.fields(Config)})
    kwargs: dict[str, Any] = {}
    for key, item in obj.items():
        where = f"{path}.{key}"
        if key == "chains":
            names = _object(item, where, {f.name for f in attrs.fields(ChainNames)})
            kwargs[key] = _at(where, partial(ChainNames, **names))
        elif key == "mark_layout":
            layout = _int_fields(item, where, {f.name for f in attrs.fields(MarkLayout)})
            kwargs[key] = _at(where, partial(MarkLayout, **layout))
        elif key == "tables":
            span = _int_fields(item, where, {"start", "count"})
            kwargs[key] = _at(where, partial(TableRange, **span))
        elif key == "other_mark_users":
            known = {u.label: u for u in MarkUser}
            users = set()
            for i, label in enumerate(_list(item, where)):
                if not isinstance(label, str) or label not in known:
                    raise InvalidInputError(f"{where}[{i}]", f"{label!r} is not one of {', '.join(sorted(known))}")
                users.add(known[label])
            kwargs[key] = frozenset(users)
        elif key in _INT_SETTINGS:
            kwargs[key] = _int(item, where)
        else:
            kwargs[key] = item
    return _at(path, lambda: Config(**kwargs))


def load_config(data: object) -> Config:
    """A :class:`Config` from decoded JSON (the ``config`` section of the input schema)."""
    return _config(data, "config")


def dump_config(config: Config) -> dict[str, Any]:
    """The settings of ``config`` that differ from the defaults, in the input schema's form."""
    return _differences(attrs.asdict(config, recurse=True), attrs.asdict(Config(), recurse=True))


def _differences(value: dict[str, Any], default: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in value.items():
        if item == default[key]:
            continue
        if isinstance(item, dict):
            result[key] = _differences(item, default[key])
        elif isinstance(item, (set, frozenset)):
            result[key] = sorted(user.label for user in item)
        else:
            result[key] = item
    return result


def load_input(data: object) -> CompileInput:
    """Build a :class:`CompileInput` from decoded JSON; raises an error naming the offending path."""
    top = _object(data, "input", {"config", "cluster", "nodes", "policies", "node_marks", "routing_tables",
                                  "tables_in_use"})
    config = _config(top.get("config", {}), "config")
    cluster_obj = _object(top.get("cluster", {}), "cluster", {"pod", "service", "node", "extra"})
    cluster = ClusterCIDRs(**{k: _cidr_list(v, f"cluster.{k}") for k, v in cluster_obj.items()})
    nodes = []
    for i, item in enumerate(_list(top.get("nodes", []), "nodes")):
        node = _object(item, f"nodes[{i}]", {"name", "tunnel_ipv4", "tunnel_ipv6"}, frozenset({"name"}))
        nodes.append(_at(f"nodes[{i}]", partial(Node, node["name"], node.get("tunnel_ipv4"), node.get("tunnel_ipv6"))))
    policies = [_policy(item, f"policies[{i}]") for i, item in enumerate(_list(top.get("policies", []), "policies"))]
    state = _at("input", lambda: ClusterState(policies=policies, nodes=nodes, cluster=cluster))

    marks = {str(k): _int(v, f"node_marks.{k}") for k, v in _object(top.get("node_marks", {}), "node_marks").items()}
    routing_tables = {
        str(node): _int_fields(per, f"routing_tables.{node}", None)
        for node, per in _object(top.get("routing_tables", {}), "routing_tables").items()
    }
    in_use = {
        str(node): frozenset(_int(t, f"tables_in_use.{node}[{i}]")
                             for i, t in enumerate(_list(tables, f"tables_in_use.{node}")))
        for node, tables in _object(top.get("tables_in_use", {}), "tables_in_use").items()
    }
    result = CompileInput(state, config, marks, routing_tables, in_use)
    _at("node_marks", result.mark_allocator)
    return result


def dump_input(item: CompileInput) -> dict[str, Any]:
    """The JSON-ready form of ``item``; ``load_input(dump_input(x)) == x``."""
    state = item.state
    return {
        "config": dump_config(item.config),
        "cluster": {k: [str(c) for c in getattr(state.cluster, k)] for k in ("pod", "service", "node", "extra")},
        "nodes": [{"name": n.name,
                   **({"tunnel_ipv4": str(n.tunnel_ipv4)} if n.tunnel_ipv4 else {}),
                   **({"tunnel_ipv6": str(n.tunnel_ipv6)} if n.tunnel_ipv6 else {})} for n in state.nodes],
        "policies": [{
            **({"namespace": p.namespace} if p.namespace is not None else {}),
            "name": p.name, "priority": p.priority, "gateway_node": p.gateway_node,
            "egress_ip": {**({"ipv4": str(p.egress_ip.ipv4)} if p.egress_ip.ipv4 else {}),
                          **({"ipv6": str(p.egress_ip.ipv6)} if p.egress_ip.ipv6 else {}),
                          **({"use_node_ip": True} if p.egress_ip.use_node_ip else {})},
            "sources": [{"cidr": str(e.cidr), **({"node": e.node} if e.node else {})} for e in p.sources],
            "destinations": [str(c) for c in p.destinations],
        } for p in state.policies],
        "node_marks": {k: f"{v:#010x}" for k, v in sorted(item.node_marks.items())},
        "routing_tables": {k: dict(sorted(v.items())) for k, v in sorted(item.routing_tables.items())},
        "tables_in_use": {k: sorted(v) for k, v in sorted(item.tables_in_use.items())},
    }
