"""Fixtures and helpers shared by the packet tests of both datapaths (iptables and nftables).

The fixtures reach the test modules through ``conftest.py``; both datapaths
run the same cluster, the same receivers and the same probes, and differ only
in how the rules are installed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from egress_rules.model.cluster import ClusterState

from .cases import PacketCase, scenario_state
from .flows import Captured, FlowServer
from .gate import require_kernel
from .probe import Proto
from .topology import NODE_ROLES, UNDERLAY_DEVICE, NodeRole, Role, Topology

PORT = 7778  # every receiver serves (and captures) here; the topology's echo server keeps 7777


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    require_kernel()
    with Topology() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def servers(topo: Topology) -> Iterator[dict[Role, FlowServer]]:
    """A serving capture on ext (uplink), on pod-b, and on every node (all interfaces: the tunnel witness)."""
    started: dict[Role, FlowServer] = {}
    where: list[tuple[Role, str]] = [("ext", UNDERLAY_DEVICE), ("pod-b", UNDERLAY_DEVICE)]
    where += [(node, "any") for node in NODE_ROLES]
    try:
        for role, device in where:
            started[role] = FlowServer(topo.ns(role), PORT, device).__enter__()
        yield started
    finally:
        for server in started.values():
            server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def macs(topo: Topology) -> dict[str, NodeRole]:
    """Each node's uplink MAC: what ext sees as the Ethernet source of a packet the node sent."""
    found = {}
    for node in NODE_ROLES:
        link = json.loads(topo.ip(node, "-j", "link", "show", UNDERLAY_DEVICE).stdout)[0]
        found[str(link["address"])] = node
    return found


class Installed:
    """Which scenario's full render is on the module's cluster; reinstalls on a clean cluster when asked for another.

    ``apply`` installs a scenario on clean nodes: the iptables or the nftables datapath.
    """

    def __init__(self, topo: Topology, apply: Callable[[Topology, ClusterState], object]) -> None:
        self.topo = topo
        self.apply = apply
        self.name: str | None = None

    def ensure(self, name: str) -> None:
        if self.name != name:
            self.fresh(name)

    def fresh(self, name: str) -> ClusterState:
        self.name = None
        self.topo.reset()  # flushes every ruleset (ours too) and re-adds the CNI masquerade
        state = scenario_state(name)
        self.apply(self.topo, state)
        self.name = name
        return state

    def invalidate(self) -> None:
        self.name = None


def probe(topo: Topology, pod: Role, destination: str, proto: Proto, timeout: float = 2.0) -> str | None:
    """The source address the receiver saw, or None if nothing came back in ``timeout``."""
    reply = topo.probe(pod, destination, proto, port=PORT, timeout=timeout)
    return reply.split()[0] if reply else None


def flow_packets(captured: list[Captured], case: PacketCase) -> list[Captured]:
    """The captured packets of ``case``'s probe."""
    return [p for p in captured if p.proto == case.proto and p.dport == PORT and p.dst == case.destination]
