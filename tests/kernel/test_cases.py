"""The packet-case table itself (no root needed): well-formed, and consistent with the scenarios it names."""

from __future__ import annotations

import ipaddress

from tests.scenarios import SCENARIOS

from .cases import CASES, external_cases, scenario_state
from .topology import ADDRESSES, NODE_ROLES


def test_case_ids_are_unique_and_cover_the_scenarios() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
    # hundred-policies has no topology pod among its sources (and its first EIP is ext's address)
    assert {c.scenario for c in CASES} == set(SCENARIOS) - {"hundred-policies"}
    protos: dict[tuple[str, str, str], set[str]] = {}
    for case in CASES:
        protos.setdefault((case.scenario, case.pod, case.destination), set()).add(case.proto)
    assert all(p == {"udp", "tcp"} for p in protos.values())


def test_expected_sources_are_what_the_scenario_can_produce() -> None:
    for case in CASES:
        state = scenario_state(case.scenario)
        assert ipaddress.ip_address(case.expected_source).version == case.family, case.id
        if case.receiver != "ext":
            assert case.egress_node is None and not case.tunneled, case.id
            continue
        assert case.egress_node in NODE_ROLES, case.id
        eips = {str(a): p.gateway_node for p in state.policies for a in (p.egress_ip.ipv4, p.egress_ip.ipv6) if a}
        node_address = ADDRESSES.node(case.egress_node).underlay(case.family)
        if case.expected_source in eips:
            assert eips[case.expected_source] == case.egress_node, f"{case.id}: an EIP leaves from its gateway"
        else:
            assert case.expected_source == node_address, f"{case.id}: otherwise the egress node's address"
        if case.egress_node == case.source_node:
            assert not case.tunneled, case.id
        else:
            assert case.tunneled, f"{case.id}: leaving from another node means the tunnel"


def test_cluster_destinations_belong_to_their_receiver() -> None:
    for case in CASES:
        if case.receiver == "ext":
            assert case.destination in ADDRESSES.ext.internet(case.family)
        elif case.receiver in NODE_ROLES:
            assert case.destination == ADDRESSES.node(case.receiver).underlay(case.family)
        else:
            assert case.destination == ADDRESSES.pod(case.receiver).ip(case.family)
    assert len(external_cases()) < len(CASES)


def test_scenario_endpoints_are_topology_pods() -> None:
    pods = {pod.ip(f) for pod in ADDRESSES.pods for f in (4, 6)}
    for name, make in SCENARIOS.items():
        if name == "hundred-policies":
            continue
        for policy in make().policies:
            for endpoint in policy.sources:
                network = ipaddress.ip_network(str(endpoint.cidr))
                if network.prefixlen == network.max_prefixlen:
                    assert str(network.network_address) in pods, f"{name} {policy.name}: {endpoint.cidr}"
