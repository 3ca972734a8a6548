"""The egressgateway resource adapter: field mapping, transitions, marks, errors, document forms."""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import egress_rules as er
from egress_rules.adapters import LoadResult, load_resource_text, load_resources
from egress_rules.adapters.documents import render_path
from egress_rules.errors import EgressRulesError, InvalidInputError, MarkConflictError, ResourceError
from egress_rules.model.cluster import PolicyKey
from egress_rules.model.config import DEFAULT_CONFIG

API = "egressgateway.spidernet.io/v1beta1"
DATA = Path(__file__).parent / "data" / "egressgateway"
Obj = dict[str, Any]


# --- builders: the smallest resources the upstream controller would write ----------------------------------------


def tunnel(node: str, ipv4: str | None = None, ipv6: str | None = None, *, mark: object = None,
           phase: str = "Ready") -> Obj:
    status: Obj = {"phase": phase, "tunnel": {k: v for k, v in (("ipv4", ipv4), ("ipv6", ipv6)) if v}}
    if mark is not None:
        status["mark"] = mark
    return {"apiVersion": API, "kind": "EgressTunnel", "metadata": {"name": node}, "spec": {}, "status": status}


def tunnels() -> list[Obj]:
    return [tunnel(f"node-{n}", f"172.31.0.{i}", f"fd11::{i}") for i, n in enumerate("abc", start=1)]


def policy(name: str = "web", namespace: str | None = "default", *, gateway: str = "default",
           node: str | None = "node-b", ipv4: str | None = "192.0.2.50", ipv6: str | None = None,
           use_node_ip: bool = False, subnets: list[str] | None = None, dest: list[str] | None = None,
           priority: int | None = None) -> Obj:
    applied: Obj = {"podSubnet": subnets} if subnets is not None else {"podSelector": {"matchLabels": {"app": name}}}
    spec: Obj = {"appliedTo": applied, "egressGatewayName": gateway,
                 "egressIP": {"allocatorPolicy": "default", "useNodeIP": use_node_ip}}
    if dest is not None:
        spec["destSubnet"] = dest
    if priority is not None:
        spec["priority"] = priority
    meta: Obj = {"name": name} if namespace is None else {"name": name, "namespace": namespace}
    kind = "EgressClusterPolicy" if namespace is None else "EgressPolicy"
    obj: Obj = {"apiVersion": API, "kind": kind, "metadata": meta, "spec": spec}
    eip = {k: v for k, v in (("ipv4", ipv4), ("ipv6", ipv6)) if v}
    if node is not None or eip:
        obj["status"] = {"eip": eip, **({"node": node} if node else {})}
    return obj


def endpoint_slice(policy_name: str, namespace: str | None = "default", *, endpoints: list[Obj],
                   name: str | None = None, label: bool = True, owner: bool = True) -> Obj:
    kind = "EgressClusterEndpointSlice" if namespace is None else "EgressEndpointSlice"
    owner_kind = "EgressClusterPolicy" if namespace is None else "EgressPolicy"
    meta: Obj = {"name": name or f"{policy_name}-abcde"}
    if namespace is not None:
        meta["namespace"] = namespace
    if label:
        meta["labels"] = {"spidernet.io/policy-name": policy_name}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": API, "controller": True, "blockOwnerDeletion": True,
                                    "kind": owner_kind, "name": policy_name, "uid": "0"}]
    return {"apiVersion": API, "kind": kind, "metadata": meta, "endpoints": endpoints}


def pod(node: str | None, ipv4: str, ipv6: str | None = None) -> Obj:
    entry: Obj = {"ipv4": [ipv4], "ns": "default", "pod": f"pod-{ipv4}"}
    if ipv6:
        entry["ipv6"] = [ipv6]
    if node:
        entry["node"] = node
    return entry


def cluster_info(name: str = "default") -> Obj:
    return {
        "apiVersion": API, "kind": "EgressClusterInfo", "metadata": {"name": name},
        "status": {
            "clusterIP": {"ipv4": ["10.96.0.0/12"], "ipv6": ["fd00:96::/108"]},
            "extraCidr": ["10.10.10.1", "fd00:aa::/64"],
            "nodeIP": {"node-a": {"ipv4": ["192.0.2.1"], "ipv6": ["2001:db8:1::1"]}},
            "podCIDR": {"default-ipv4-ippool": {"ipv4": ["10.244.0.0/16"]},
                        "default-ipv6-ippool": {"ipv6": ["fd00:244::/32"]}},
            "podCidrMode": "calico",
        },
    }


def gateway(name: str, *nodes: tuple[str, list[tuple[str | None, str | None, list[Obj]]]]) -> Obj:
    node_list = [{"name": node, "status": "Ready",
                  "eips": [{**({"ipv4": v4} if v4 else {}), **({"ipv6": v6} if v6 else {}), "policies": refs}
                           for v4, v6, refs in eips]}
                 for node, eips in nodes]
    return {"apiVersion": API, "kind": "EgressGateway", "metadata": {"name": name},
            "spec": {"nodeSelector": {"selector": {"matchLabels": {"egress": "true"}}}},
            "status": {"nodeList": node_list}}


def ref(name: str, namespace: str | None = "default") -> Obj:
    return {"name": name} if namespace is None else {"name": name, "namespace": namespace}


def kube_list(*items: Obj) -> Obj:
    return {"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": list(items)}


def load(*items: Obj, config: er.Config = DEFAULT_CONFIG, node_marks: dict[str, int] | None = None) -> LoadResult:
    return load_resources([kube_list(*tunnels(), cluster_info(), *items)], config, node_marks=node_marks)


def only_policy(result: LoadResult) -> er.Policy:
    (found,) = result.compile_input.state.policies
    return found


def warnings_about(result: LoadResult, needle: str) -> list[str]:
    return [w for w in result.warnings if needle in w]


# --- field mapping --------------------------------------------------------------------------------------------


def test_policy_fields_map_to_the_model() -> None:
    result = load(policy(ipv4="192.0.2.50", ipv6="2001:db8:1::50", dest=["203.0.113.0/24", "2001:db8:ff::/64"],
                         priority=7),
                  endpoint_slice("web", endpoints=[pod("node-a", "10.244.1.10", "fd00:244:1::10"),
                                                   pod("node-c", "10.244.3.10")]))
    assert result.warnings == ()
    assert only_policy(result) == er.Policy(
        namespace="default", name="web", gateway_node="node-b", priority=7,
        egress_ip=er.EgressIP(ipv4="192.0.2.50", ipv6="2001:db8:1::50"),
        sources=[er.Endpoint("10.244.1.10", "node-a"), er.Endpoint("10.244.3.10", "node-c"),
                 er.Endpoint("fd00:244:1::10", "node-a")],
        destinations=["203.0.113.0/24", "2001:db8:ff::/64"],
    )


def test_nodes_and_cluster_cidrs() -> None:
    state = load().compile_input.state
    assert state.nodes == (er.Node("node-a", "172.31.0.1", "fd11::1"), er.Node("node-b", "172.31.0.2", "fd11::2"),
                           er.Node("node-c", "172.31.0.3", "fd11::3"))
    assert state.cluster == er.ClusterCIDRs(pod=["10.244.0.0/16", "fd00:244::/32"],
                                            service=["10.96.0.0/12", "fd00:96::/108"],
                                            node=["192.0.2.1/32", "2001:db8:1::1/128"],
                                            extra=["10.10.10.1/32", "fd00:aa::/64"])


@pytest.mark.parametrize(("namespace", "priority", "expected"), [
    ("default", None, 1000), (None, None, 32768), ("default", 0, 1000), (None, 0, 32768), ("default", 5, 5),
    (None, 2**64 - 1, 2**64 - 1),
])
def test_priority_defaults(namespace: str | None, priority: int | None, expected: int) -> None:
    assert only_policy(load(policy(namespace=namespace, priority=priority))).priority == expected


def test_use_node_ip() -> None:
    result = load(policy(use_node_ip=True, ipv4=None))
    assert only_policy(result).egress_ip == er.EgressIP(use_node_ip=True)
    assert result.warnings == ()


def test_use_node_ip_ignores_status_eips_with_a_warning() -> None:
    result = load(policy(use_node_ip=True, ipv4="192.0.2.50"))
    assert only_policy(result).egress_ip == er.EgressIP(use_node_ip=True)
    assert warnings_about(result, "EgressPolicy default/web: uses the node IP; the EIPs in status are ignored")


def test_pod_subnet_sources_have_no_node() -> None:
    result = load(policy("ops", None, subnets=["10.244.3.0/24", "fd00:244:3::/64"]))
    assert only_policy(result).sources == (er.Endpoint("10.244.3.0/24"), er.Endpoint("fd00:244:3::/64"))


def test_cluster_policy_sources_come_from_cluster_endpoint_slices() -> None:
    result = load(policy("mon", None),
                  endpoint_slice("mon", None, endpoints=[pod("node-a", "10.244.1.30")]),
                  # Same policy name, namespaced slice: belongs to EgressPolicy default/mon, which is absent.
                  endpoint_slice("mon", "default", endpoints=[pod("node-a", "10.244.1.99")]))
    assert only_policy(result).sources == (er.Endpoint("10.244.1.30", "node-a"),)
    assert warnings_about(result, "EgressEndpointSlice default/mon-abcde: ignored: its EgressPolicy default/mon "
                                  "is not in the input")


def test_slices_of_a_policy_are_merged_and_deduplicated() -> None:
    result = load(policy(),
                  endpoint_slice("web", name="web-1", endpoints=[pod("node-a", "10.244.1.10"),
                                                                 pod("node-c", "10.244.3.10")]),
                  endpoint_slice("web", name="web-2", endpoints=[pod("node-a", "10.244.1.10"),
                                                                 pod(None, "10.244.2.10")]))
    assert only_policy(result).sources == (er.Endpoint("10.244.1.10", "node-a"), er.Endpoint("10.244.2.10"),
                                           er.Endpoint("10.244.3.10", "node-c"))


def test_slice_in_another_namespace_does_not_feed_a_same_named_policy() -> None:
    result = load(policy(), endpoint_slice("web", "team-x", endpoints=[pod("node-a", "10.244.1.50")]))
    assert only_policy(result).sources == ()
    assert warnings_about(result, "EgressEndpointSlice team-x/web-abcde: ignored")


def test_slice_owner_falls_back_to_the_controller_owner_reference() -> None:
    result = load(policy(), endpoint_slice("web", label=False, endpoints=[pod("node-a", "10.244.1.10")]))
    assert only_policy(result).sources == (er.Endpoint("10.244.1.10", "node-a"),)


def test_slice_without_owner_is_ignored_with_a_warning() -> None:
    result = load(policy(), endpoint_slice("web", label=False, owner=False, endpoints=[pod("node-a", "10.0.0.1")]))
    assert only_policy(result).sources == ()
    assert warnings_about(result, "EgressEndpointSlice default/web-abcde: ignored: it has no "
                                  "spidernet.io/policy-name label")


def test_slice_being_deleted_is_skipped() -> None:
    deleting = endpoint_slice("web", endpoints=[pod("node-a", "10.244.1.10")])
    deleting["metadata"]["deletionTimestamp"] = "2026-06-01T10:00:00Z"
    result = load(policy(), deleting)
    assert only_policy(result).sources == ()
    assert result.warnings == ()


# --- a cluster in transition ----------------------------------------------------------------------------------


def test_policy_without_status_is_skipped() -> None:
    result = load(policy(node=None, ipv4=None))
    assert result.compile_input.state.policies == ()
    assert result.skipped == (PolicyKey("default", "web"),)
    assert result.warnings == ("EgressPolicy default/web: skipped: no gateway node yet (status.node is empty)",)


def test_policy_with_node_but_no_eip_is_skipped() -> None:
    result = load(policy(ipv4=None))
    assert result.skipped == (PolicyKey("default", "web"),)
    assert warnings_about(result, "EgressPolicy default/web: skipped: no egress IP yet (status has none)")


def test_gateway_status_gives_the_node_when_the_policy_status_lacks_it() -> None:
    result = load(policy(node=None, ipv4=None),
                  gateway("default", ("node-c", [("192.0.2.51", "2001:db8:1::51", [ref("web")])])))
    assert result.warnings == ()
    found = only_policy(result)
    assert found.gateway_node == "node-c"
    assert found.egress_ip == er.EgressIP(ipv4="192.0.2.51", ipv6="2001:db8:1::51")


def test_gateway_status_wins_when_it_disagrees() -> None:
    result = load(policy(node="node-b", ipv4="192.0.2.50"),
                  gateway("default", ("node-c", [("192.0.2.51", None, [ref("web")])])))
    assert only_policy(result).gateway_node == "node-c"
    assert warnings_about(result, "EgressPolicy default/web: status says node node-b with 192.0.2.50, "
                                  "EgressGateway default status.nodeList[0].eips[0] says node node-c with 192.0.2.51")


def test_gateway_that_does_not_list_the_policy() -> None:
    result = load(policy(), gateway("default", ("node-c", [])))
    assert only_policy(result).gateway_node == "node-b"
    assert warnings_about(result, "EgressPolicy default/web: EgressGateway default does not list it")
    skipped = load(policy(node=None, ipv4=None), gateway("default"))
    assert skipped.warnings == ("EgressPolicy default/web: skipped: no gateway node yet (status.node is empty and "
                                "EgressGateway default does not list it)",)


def test_gateway_listings_elsewhere_are_ignored_with_a_warning() -> None:
    result = load(policy(), gateway("other", ("node-c", [("192.0.2.60", None, [ref("web"), ref("gone", None)])])))
    assert only_policy(result).gateway_node == "node-b"
    assert warnings_about(result, "EgressGateway other status.nodeList[0].eips[0]: names EgressPolicy default/web, "
                                  "whose spec.egressGatewayName is 'default'; ignored")
    assert warnings_about(result, "names EgressClusterPolicy gone, which is not in the input")


def test_gateway_node_without_tunnel_is_skipped() -> None:
    result = load(policy(node="node-z"))
    assert result.skipped == (PolicyKey("default", "web"),)
    assert warnings_about(result, "gateway node node-z has no EgressTunnel in the input")


def test_eip_family_the_gateway_cannot_route_is_dropped() -> None:
    items = [tunnel("node-a", "172.31.0.1", "fd11::1"), tunnel("node-b", "172.31.0.2"),
             policy(ipv4="192.0.2.50", ipv6="2001:db8:1::50"), policy("v6", ipv4=None, ipv6="2001:db8:1::51")]
    result = load_resources([kube_list(*items)])
    (kept,) = result.compile_input.state.policies
    assert kept.egress_ip == er.EgressIP(ipv4="192.0.2.50")
    assert result.skipped == (PolicyKey("default", "v6"),)
    assert warnings_about(result, "EgressPolicy default/web: IPv6 egress IP 2001:db8:1::50 is not used: gateway node "
                                  "node-b has no IPv6 tunnel address (EgressTunnel node-b status.tunnel.ipv6)")
    # The compiler would refuse the unroutable family; the adapter's input compiles on every node.
    for node in ("node-a", "node-b"):
        er.compile(result.compile_input.state, node)


def test_eip_family_disabled_in_the_config_is_dropped() -> None:
    result = load(policy(ipv4="192.0.2.50", ipv6="2001:db8:1::50"), config=er.Config(ipv6=False))
    assert only_policy(result).egress_ip == er.EgressIP(ipv4="192.0.2.50")
    assert warnings_about(result, "IPv6 egress IP 2001:db8:1::50 is not used: IPv6 is disabled in the config")


def test_node_ip_policy_whose_gateway_has_no_tunnel_address() -> None:
    result = load_resources([kube_list(tunnel("node-b"), policy(use_node_ip=True, ipv4=None))])
    assert result.skipped == (PolicyKey("default", "web"),)
    assert warnings_about(result, "uses the node IP, but gateway node node-b has no tunnel address")


def test_requested_eip_differs_from_the_allocated_one() -> None:
    obj = policy(ipv4="192.0.2.50")
    obj["spec"]["egressIP"]["ipv4"] = "192.0.2.55"
    result = load(obj)
    assert only_policy(result).egress_ip.ipv4 == er.parse_address("192.0.2.50")
    assert warnings_about(result, "spec.egressIP.ipv4 asks for 192.0.2.55, but status has 192.0.2.50")


def test_gateway_node_not_ready_is_a_warning_only() -> None:
    items = [tunnel("node-a", "172.31.0.1"), tunnel("node-b", "172.31.0.2", phase="HeartbeatTimeout"), policy()]
    result = load_resources([kube_list(*items)])
    assert only_policy(result).gateway_node == "node-b"
    assert warnings_about(result, "gateway node node-b is not Ready (EgressTunnel node-b status.phase "
                                  "HeartbeatTimeout)")


def test_cluster_info_other_than_default_is_ignored() -> None:
    other = cluster_info("custom")
    other["status"]["podCIDR"] = {"x": {"ipv4": ["10.0.0.0/8"]}}
    result = load(other)
    assert er.parse_cidr("10.0.0.0/8") not in result.compile_input.state.cluster.pod
    assert warnings_about(result, "EgressClusterInfo custom: ignored")


def test_missing_cluster_info_warns_only_when_a_policy_needs_it() -> None:
    with_dest = load_resources([kube_list(*tunnels(), policy(dest=["203.0.113.0/24"]))])
    assert with_dest.warnings == ()
    without = load_resources([kube_list(*tunnels(), policy())])
    assert warnings_about(without, "no EgressClusterInfo 'default' in the input")


# --- marks ----------------------------------------------------------------------------------------------------


def test_upstream_mark_that_fits_is_kept() -> None:
    result = load_resources([kube_list(tunnel("node-a", "172.31.0.1", mark="0x26000100"),
                                       tunnel("node-b", "172.31.0.2", mark="0X26ABCD00"))])
    assert result.compile_input.node_marks == {"node-a": 0x26000100, "node-b": 0x26ABCD00}
    assert result.warnings == ()
    ruleset = er.compile(result.compile_input.state, "node-a", marks=result.compile_input.mark_allocator())
    assert dict(ruleset.node_marks) == {"node-a": 0x26000100, "node-b": 0x26ABCD00}


def test_upstream_mark_that_does_not_fit_is_replaced_with_a_warning() -> None:
    result = load_resources([kube_list(tunnel("node-a", "172.31.0.1", mark="0x26a7c3e1"),
                                       tunnel("node-b", "172.31.0.2", mark="0x26000200"))])
    item = result.compile_input
    assert item.node_marks == {"node-b": 0x26000200}
    ruleset = er.compile(item.state, "node-b", marks=item.mark_allocator())
    assigned = ruleset.node_mark("node-a")
    assert assigned is not None and assigned != 0x26A7C3E1
    (warning,) = result.warnings
    assert warning.startswith("EgressTunnel node-a: status.mark 0x26a7c3e1 does not fit the configured node-mark "
                              "layout (prefix 0x26000000, value bits 0x00ffff00)")
    assert f"node node-a uses {assigned:#010x} instead (assigned by the library's allocator" in warning


def test_mark_layout_with_24_value_bits_honours_upstream_marks() -> None:
    config = er.Config(mark_layout=er.MarkLayout(value_shift=0, value_bits=24))
    result = load_resources([kube_list(tunnel("node-a", "172.31.0.1", mark="0x26a7c3e1"))], config)
    assert result.compile_input.node_marks == {"node-a": 0x26A7C3E1}
    assert result.warnings == ()


def test_duplicate_marks_keep_the_first_node_by_name() -> None:
    result = load_resources([kube_list(tunnel("node-c", "172.31.0.3", mark="0x26000100"),
                                       tunnel("node-a", "172.31.0.1", mark="0x26000100"))])
    assert result.compile_input.node_marks == {"node-a": 0x26000100}
    (warning,) = result.warnings
    assert warning.startswith("EgressTunnel node-c: status.mark 0x26000100 is also EgressTunnel node-a's, which "
                              "keeps it; node node-c uses 0x")


def test_previous_marks_are_kept_and_tunnel_marks_win() -> None:
    items = kube_list(tunnel("node-a", "172.31.0.1", mark="0x26a7c3e1"), tunnel("node-b", "172.31.0.2"),
                      tunnel("node-c", "172.31.0.3", mark="0x26000300"))
    first = load_resources([items])
    marks = dict(er.compile(first.compile_input.state, "node-a",
                            marks=first.compile_input.mark_allocator()).node_marks)
    again = load_resources([items], node_marks={**marks, "node-c": 0x26000400, "gone": 0x26000500})
    assert again.compile_input.node_marks == {**marks, "node-c": 0x26000300, "gone": 0x26000500}
    assert warnings_about(again, f"node node-a uses {marks['node-a']:#010x} instead (kept from node_marks)")
    clash = load_resources([items], node_marks={"node-b": 0x26000300})
    assert "node-b" not in clash.compile_input.node_marks
    assert warnings_about(clash, "node_marks.node-b: 0x26000300 is now EgressTunnel node-c's status.mark")
    with pytest.raises(MarkConflictError, match=r"node_marks\.node-b"):
        load_resources([items], node_marks={"node-b": 0x12000000})


def test_tunnel_without_mark_gets_one_silently() -> None:
    result = load_resources([kube_list(tunnel("node-a", "172.31.0.1"))])
    assert result.compile_input.node_marks == {}
    assert result.warnings == ()


# --- errors name the resource and the field ------------------------------------------------------------------


def _set(path: str, value: object) -> Callable[[Obj], None]:
    """A mutation: set the field at dotted ``path`` (list indexes as numbers) to ``value``; None deletes it."""
    def mutate(obj: Obj) -> None:
        parts: list[str | int] = [int(p) if p.isdigit() else p for p in path.split(".")]
        target: Any = obj
        for part in parts[:-1]:
            target = target[part]
        if value is None:
            del target[parts[-1]]
        else:
            target[parts[-1]] = value
    return mutate


def _error_cases() -> list[tuple[Obj, Callable[[Obj], None], str, str | None]]:
    web = policy(dest=["203.0.113.0/24", "2001:db8:ff::/64", "198.51.100.0/24"])
    ops = policy("ops", None, subnets=["10.244.3.0/24"])
    tun = tunnel("node-z", "172.31.0.26")
    gw = gateway("default", ("node-b", [("192.0.2.50", None, [ref("web")])]))
    info = cluster_info("custom")
    eps = endpoint_slice("web", endpoints=[pod("node-a", "10.244.1.10")])
    return [
        (web, _set("spec.destSubnet.2", "10.0.0.0/33"), "EgressPolicy default/web", "spec.destSubnet[2]"),
        (web, _set("spec.destSubnet", "10.0.0.0/8"), "EgressPolicy default/web", "spec.destSubnet"),
        (web, _set("spec.destSubnet.0", 10), "EgressPolicy default/web", "spec.destSubnet[0]"),
        (web, _set("spec.egressIP.ipv4", "2001:db8::1"), "EgressPolicy default/web", "spec.egressIP.ipv4"),
        (web, _set("spec.egressIP.useNodeIP", "yes"), "EgressPolicy default/web", "spec.egressIP.useNodeIP"),
        (web, _set("spec.egressIP", {"useNodeIP": True, "ipv4": "192.0.2.50"}), "EgressPolicy default/web",
         "spec.egressIP"),
        (web, _set("spec.egressIP.allocatorPolicy", 1), "EgressPolicy default/web", "spec.egressIP.allocatorPolicy"),
        (web, _set("spec.priority", -1), "EgressPolicy default/web", "spec.priority"),
        (web, _set("spec.priority", "high"), "EgressPolicy default/web", "spec.priority"),
        (web, _set("spec.priority", True), "EgressPolicy default/web", "spec.priority"),
        (web, _set("spec.priority", 2**64), "EgressPolicy default/web", "spec.priority"),
        (web, _set("spec.appliedTo", None), "EgressPolicy default/web", "spec.appliedTo"),
        (web, _set("spec.egressGatewayName", ["default"]), "EgressPolicy default/web", "spec.egressGatewayName"),
        (web, _set("spec", None), "EgressPolicy default/web", "spec"),
        (web, _set("spec", []), "EgressPolicy default/web", "spec"),
        (web, _set("status.eip.ipv4", "192.0.2.300"), "EgressPolicy default/web", "status.eip.ipv4"),
        (web, _set("status.eip", "192.0.2.50"), "EgressPolicy default/web", "status.eip"),
        (web, _set("status.node", 5), "EgressPolicy default/web", "status.node"),
        (web, _set("metadata.namespace", None), "EgressPolicy at documents[0].items[4]", "metadata.namespace"),
        (web, _set("metadata.namespace", "Team_X"), "EgressPolicy at documents[0].items[4]", "metadata.namespace"),
        (web, _set("metadata.name", None), "EgressPolicy at documents[0].items[4]", "metadata.name"),
        (web, _set("metadata.name", "Web"), "EgressPolicy at documents[0].items[4]", "metadata.name"),
        (web, _set("metadata", "web"), "EgressPolicy at documents[0].items[4]", "metadata"),
        (web, _set("apiVersion", "egressgateway.spidernet.io/v1"), "EgressPolicy at documents[0].items[4]",
         "apiVersion"),
        (web, _set("kind", None), "documents[0].items[4]", "kind"),
        (web, _set("apiVersion", 3), "documents[0].items[4]", "apiVersion"),
        (ops, _set("spec.appliedTo.podSubnet.0", "10.244.3.0/24x"), "EgressClusterPolicy ops",
         "spec.appliedTo.podSubnet[0]"),
        (ops, _set("metadata.namespace", "default"), "EgressClusterPolicy at documents[0].items[4]",
         "metadata.namespace"),
        (tun, _set("status.tunnel.ipv4", "fd11::26"), "EgressTunnel node-z", "status.tunnel.ipv4"),
        (tun, _set("status.tunnel.ipv6", "fd11::zz"), "EgressTunnel node-z", "status.tunnel.ipv6"),
        (tun, _set("status.tunnel.ipv4", "172.31.0.1"), "EgressTunnel node-z", "status.tunnel.ipv4"),
        (tun, _set("status.mark", "0xzz"), "EgressTunnel node-z", "status.mark"),
        (tun, _set("status.mark", "0x126000100"), "EgressTunnel node-z", "status.mark"),
        (tun, _set("status.mark", 2**32), "EgressTunnel node-z", "status.mark"),
        (tun, _set("status.phase", False), "EgressTunnel node-z", "status.phase"),
        (tun, _set("status.tunnel", [1]), "EgressTunnel node-z", "status.tunnel"),
        (gw, _set("status.nodeList.0.eips.0.ipv4", "192.0.2"), "EgressGateway default",
         "status.nodeList[0].eips[0].ipv4"),
        (gw, _set("status.nodeList.0.name", None), "EgressGateway default", "status.nodeList[0].name"),
        (gw, _set("status.nodeList.0.eips.0.policies.0", "web"), "EgressGateway default",
         "status.nodeList[0].eips[0].policies[0]"),
        (gw, _set("status.nodeList.0.eips.0.policies.0.name", None), "EgressGateway default",
         "status.nodeList[0].eips[0].policies[0].name"),
        (gw, _set("status.nodeList", {"node-b": {}}), "EgressGateway default", "status.nodeList"),
        (info, _set("status.podCIDR.default-ipv4-ippool.ipv4.0", "fd00::/64"), "EgressClusterInfo custom",
         "status.podCIDR.default-ipv4-ippool.ipv4[0]"),
        (info, _set("status.nodeIP.node-a.ipv4.0", "192.0.2.1/24"), "EgressClusterInfo custom",
         "status.nodeIP.node-a.ipv4[0]"),
        (info, _set("status.nodeIP.node-a", ["192.0.2.1"]), "EgressClusterInfo custom", "status.nodeIP.node-a"),
        (info, _set("status.clusterIP.ipv6.0", "10.96.0.0/12"), "EgressClusterInfo custom",
         "status.clusterIP.ipv6[0]"),
        (info, _set("status.extraCidr.0", "10.10.10.1/"), "EgressClusterInfo custom", "status.extraCidr[0]"),
        (eps, _set("endpoints.0.ipv4.0", "10.244.1.0/24"), "EgressEndpointSlice default/web-abcde",
         "endpoints[0].ipv4[0]"),
        (eps, _set("endpoints.0.ipv4", "10.244.1.10"), "EgressEndpointSlice default/web-abcde", "endpoints[0].ipv4"),
        (eps, _set("endpoints.0.node", "Node_A"), "EgressEndpointSlice default/web-abcde", "endpoints[0].node"),
        (eps, _set("endpoints.0", "10.244.1.10"), "EgressEndpointSlice default/web-abcde", "endpoints[0]"),
        (eps, _set("metadata.labels", {"spidernet.io/policy-name": 5}), "EgressEndpointSlice default/web-abcde",
         'metadata.labels["spidernet.io/policy-name"]'),
    ]


@pytest.mark.parametrize(("base", "mutate", "resource", "field"), _error_cases())
def test_errors_name_kind_namespace_name_and_field(base: Obj, mutate: Callable[[Obj], None], resource: str,
                                                   field: str | None) -> None:
    obj = copy.deepcopy(base)
    mutate(obj)
    with pytest.raises(ResourceError) as info:
        load(obj)
    error = info.value
    assert (error.resource, error.field) == (resource, field), str(error)
    assert str(error).startswith(f"{resource}: {field}: "), str(error)
    assert error.detail


def test_error_message_quotes_the_value() -> None:
    obj = policy(dest=["203.0.113.0/24", "2001:db8:ff::/64", "10.0.0.0/33"])
    with pytest.raises(ResourceError) as info:
        load(obj)
    assert str(info.value) == "EgressPolicy default/web: spec.destSubnet[2]: '10.0.0.0/33': prefix length 33 exceeds 32"
    assert isinstance(info.value, InvalidInputError)
    assert isinstance(info.value.__cause__, InvalidInputError)


def test_document_level_errors() -> None:
    with pytest.raises(ResourceError, match=r"^documents\[1\]: expected an object, got str"):
        load_resources([kube_list(), "EgressPolicy"])  # type: ignore[list-item]
    with pytest.raises(ResourceError, match=r"^List at documents\[0\]: items: expected a list"):
        load_resources([{"apiVersion": "v1", "kind": "List", "items": {}}])
    with pytest.raises(ResourceError, match=r"^EgressTunnel node-a: listed twice: at documents\[0\] and at "
                                            r"documents\[1\]\.items\[0\]"):
        load_resources([tunnel("node-a"), kube_list(tunnel("node-a"))])


def test_render_path() -> None:
    assert render_path(("spec", "destSubnet", 2)) == "spec.destSubnet[2]"
    assert render_path(("metadata", "labels", "app.kubernetes.io/name")) == 'metadata.labels["app.kubernetes.io/name"]'
    assert render_path(()) == ""


# --- document forms and kinds ---------------------------------------------------------------------------------


def test_unknown_kinds_are_counted_in_one_warning_each() -> None:
    pod_obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}}
    foreign = {**policy(), "apiVersion": "egress.example.com/v1"}
    future = {"apiVersion": API, "kind": "EgressNode", "metadata": {"name": "x"}}
    result = load_resources([kube_list(*tunnels(), pod_obj, pod_obj, foreign, future)])
    assert result.compile_input.state.policies == ()
    assert result.warnings == (
        f"ignored 1 egress.example.com/v1 EgressPolicy object: not one of the {API} kinds this adapter reads",
        f"ignored 1 {API} EgressNode object: not one of the {API} kinds this adapter reads",
        f"ignored 2 v1 Pod objects: not one of the {API} kinds this adapter reads",
    )


def test_single_objects_lists_and_nested_lists_give_the_same_input() -> None:
    items = [*tunnels(), cluster_info(), policy(), endpoint_slice("web", endpoints=[pod("node-a", "10.244.1.10")])]
    flat = load_resources(items)
    assert load_resources([kube_list(*items)]) == flat
    assert load_resources([kube_list(kube_list(*items[:2]), *items[2:])]) == flat
    assert load_resources([kube_list(*reversed(items))]) == flat


def test_typed_list_items_take_kind_from_the_list() -> None:
    result = load_resource_text((DATA / "apiserver-list.json").read_text())
    assert result.compile_input.node_marks == {"node-a": 0x26000100, "node-b": 0x26000200}
    assert [n.name for n in result.compile_input.state.nodes] == ["node-a", "node-b"]


def test_json_text_forms() -> None:
    items = [*tunnels(), policy(dest=["203.0.113.0/24"])]
    expected = load_resources(items)
    assert load_resource_text(json.dumps(kube_list(*items), indent=4)) == expected
    assert load_resource_text(json.dumps(items)) == expected
    assert load_resource_text("\ufeff  " + json.dumps(kube_list(*items))) == expected
    assert load_resource_text("").compile_input.state == er.ClusterState()
    with pytest.raises(InvalidInputError, match=r"^dump\.json: not valid JSON"):
        load_resource_text('{"kind": "List",', source="dump.json")


def test_yaml_without_pyyaml_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes "import yaml" fail
    with pytest.raises(EgressRulesError) as info:
        load_resource_text("apiVersion: v1\nkind: List\nitems: []\n", source="dump.yaml")
    assert str(info.value).startswith("dump.yaml: looks like YAML, but PyYAML is not installed")
    assert "pip install 'egress-rules[yaml]'" in str(info.value)
    assert "-o json" in str(info.value)


def test_yaml_multi_document() -> None:
    pytest.importorskip("yaml")
    result = load_resource_text((DATA / "multi-doc.yaml").read_text())
    assert result.compile_input.node_marks == {"node-a": 0x26000100, "node-b": 0x26000200}
    assert only_policy(result) == er.Policy(namespace="default", name="web", gateway_node="node-b",
                                            egress_ip=er.EgressIP(ipv4="192.0.2.50"),
                                            sources=[er.Endpoint("10.244.1.0/24")], destinations=["203.0.113.10/32"])
    assert result.warnings == (f"ignored 1 v1 Namespace object: not one of the {API} kinds this adapter reads",)


def test_yaml_list_equals_json_list() -> None:
    yaml = pytest.importorskip("yaml")
    items = [*tunnels(), cluster_info(), policy(ipv6="2001:db8:1::50"),
             endpoint_slice("web", endpoints=[pod("node-a", "10.244.1.10", "fd00:244:1::10")])]
    text = yaml.safe_dump(kube_list(*items))
    assert load_resource_text(text) == load_resources([kube_list(*items)])
    with pytest.raises(InvalidInputError, match=r"^r\.yaml: not valid YAML"):
        load_resource_text("items: [\n", source="r.yaml")
