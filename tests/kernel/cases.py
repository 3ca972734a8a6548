"""The table of packet cases: what each pod's packet must leave (or arrive) with, per scenario.

One shared, data-only table so that every referee runs the same cases: the
kernel tier (:mod:`tests.kernel.test_datapath`) sends real probes through the
namespace cluster, and the tracer can evaluate the same rows against the
compiled model. Importable without root: no namespaces, no subprocesses.

Expected values are written by hand from the scenarios' policies (precedence,
destSubnet, gateway, EIP or node IP); nothing here runs the compiler.

``scenario_state(name)`` gives the scenario a case names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from egress_rules.model.cluster import ClusterState
from tests.scenarios import SCENARIOS

from .topology import ADDRESSES, Family, NodeRole, PodRole, Role

__all__ = ["CASES", "PacketCase", "external_cases", "scenario_state"]

Proto = Literal["udp", "tcp"]


@dataclass(frozen=True)
class PacketCase:
    """A packet from ``pod`` to ``destination`` and what the receiver must see.

    ``expected_source``: the source address the receiver sees (an EIP, a node
    address after the CNI masquerade, or the pod's own address inside the
    cluster). ``egress_node``: the node whose uplink the packet leaves the
    cluster from (None for destinations inside the cluster). ``tunneled``:
    whether the packet crosses the egress tunnel. ``receiver``: the role that
    owns ``destination`` (``ext`` for the outside world).
    """

    scenario: str
    pod: PodRole
    destination: str
    proto: Proto
    expected_source: str
    egress_node: NodeRole | None
    tunneled: bool
    why: str
    receiver: Role = "ext"

    @property
    def family(self) -> Family:
        return 6 if ipaddress.ip_address(self.destination).version == 6 else 4

    @property
    def source(self) -> str:
        """The pod's own address in the case's family."""
        return ADDRESSES.pod(self.pod).ip(self.family)

    @property
    def source_node(self) -> NodeRole:
        return ADDRESSES.pod(self.pod).node

    @property
    def id(self) -> str:
        return f"{self.scenario}:{self.pod}->{self.destination}/{self.proto}"


Row = tuple[str, PodRole, str, str, NodeRole | None, bool, Role, str]

# scenario, pod, destination, expected source, egress node, tunneled, receiver, why
_TABLE: tuple[Row, ...] = (
    ("one-policy", "pod-a", "203.0.113.10", "192.0.2.50", "node-b", True, "ext", "in policy, dst in destSubnet"),
    ("one-policy", "pod-a", "203.0.113.20", "192.0.2.1", "node-a", False, "ext", "dst outside destSubnet"),
    ("one-policy", "pod-a2", "203.0.113.10", "192.0.2.1", "node-a", False, "ext", "pod not in the policy"),
    ("one-policy", "pod-b", "203.0.113.10", "192.0.2.2", "node-b", False, "ext", "on the gateway, not in policy"),
    ("one-policy", "pod-a", "2001:db8:ff::10", "2001:db8:1::1", "node-a", False, "ext", "no IPv6 egress IP"),

    ("dual-stack", "pod-a", "203.0.113.10", "192.0.2.50", "node-b", True, "ext", "remote gateway"),
    ("dual-stack", "pod-a", "2001:db8:ff::10", "2001:db8:1::50", "node-b", True, "ext", "remote gateway, IPv6 EIP"),
    ("dual-stack", "pod-b", "203.0.113.10", "192.0.2.50", "node-b", False, "ext", "pod on the gateway itself"),
    ("dual-stack", "pod-b", "2001:db8:ff::10", "2001:db8:1::50", "node-b", False, "ext", "pod on the gateway itself"),
    ("dual-stack", "pod-a", "203.0.113.20", "192.0.2.1", "node-a", False, "ext", "dst outside destSubnet"),
    ("dual-stack", "pod-a", "2001:db8:ff::20", "2001:db8:1::1", "node-a", False, "ext", "dst outside destSubnet"),
    ("dual-stack", "pod-a2", "203.0.113.10", "192.0.2.1", "node-a", False, "ext", "pod not in the policy"),
    ("dual-stack", "pod-a2", "2001:db8:ff::10", "2001:db8:1::1", "node-a", False, "ext", "pod not in the policy"),
    ("dual-stack", "pod-c", "203.0.113.10", "192.0.2.3", "node-c", False, "ext", "pod not in the policy"),
    ("dual-stack", "pod-c", "2001:db8:ff::10", "2001:db8:1::3", "node-c", False, "ext", "pod not in the policy"),

    ("empty-destinations", "pod-a", "203.0.113.10", "192.0.2.50", "node-b", True, "ext", "all outside traffic"),
    ("empty-destinations", "pod-a", "203.0.113.20", "192.0.2.50", "node-b", True, "ext", "all outside traffic"),
    ("empty-destinations", "pod-a", "2001:db8:ff::10", "2001:db8:1::50", "node-b", True, "ext", "all outside traffic"),
    ("empty-destinations", "pod-a", "2001:db8:ff::20", "2001:db8:1::50", "node-b", True, "ext", "all outside traffic"),
    ("empty-destinations", "pod-a2", "203.0.113.20", "192.0.2.1", "node-a", False, "ext", "pod not in the policy"),
    ("empty-destinations", "pod-a2", "2001:db8:ff::20", "2001:db8:1::1", "node-a", False, "ext", "pod not in policy"),
    ("empty-destinations", "pod-a", "10.244.2.10", "10.244.1.10", None, False, "pod-b", "a pod is never redirected"),
    ("empty-destinations", "pod-a", "fd00:244:2::10", "fd00:244:1::10", None, False, "pod-b",
     "a pod is never redirected"),
    ("empty-destinations", "pod-a", "192.0.2.2", "192.0.2.1", None, False, "node-b",
     "a node is never redirected (the CNI masquerade applies)"),
    ("empty-destinations", "pod-a", "2001:db8:1::2", "2001:db8:1::1", None, False, "node-b",
     "a node is never redirected (the CNI masquerade applies)"),

    ("node-ip", "pod-a", "203.0.113.10", "192.0.2.2", "node-b", True, "ext", "the gateway's node address"),
    ("node-ip", "pod-a", "2001:db8:ff::10", "2001:db8:1::2", "node-b", True, "ext", "the gateway's node address"),
    ("node-ip", "pod-a", "203.0.113.20", "192.0.2.1", "node-a", False, "ext", "dst outside destSubnet"),
    ("node-ip", "pod-a", "2001:db8:ff::20", "2001:db8:1::1", "node-a", False, "ext", "dst outside destSubnet"),

    ("mixed-roles", "pod-a", "203.0.113.10", "192.0.2.50", "node-b", True, "ext", "web via node-b"),
    ("mixed-roles", "pod-a", "203.0.113.20", "192.0.2.60", "node-c", True, "ext", "api via node-c"),
    ("mixed-roles", "pod-b", "203.0.113.10", "192.0.2.50", "node-b", False, "ext", "node-b is web's gateway"),
    ("mixed-roles", "pod-b", "203.0.113.20", "192.0.2.60", "node-c", True, "ext", "node-b is not api's gateway"),
    ("mixed-roles", "pod-c", "203.0.113.20", "192.0.2.3", "node-c", False, "ext", "on api's gateway, no policy"),
    ("mixed-roles", "pod-a", "2001:db8:ff::10", "2001:db8:1::1", "node-a", False, "ext", "no IPv6 egress IP"),

    ("overlapping", "pod-a", "203.0.113.10", "192.0.2.60", "node-c", True, "ext", "first (priority 100) wins"),
    ("overlapping", "pod-a", "203.0.113.20", "192.0.2.50", "node-b", True, "ext", "only second covers .20"),
    ("overlapping", "pod-a2", "203.0.113.10", "192.0.2.1", "node-a", False, "ext", "pod in neither policy"),
    ("overlapping", "pod-a", "2001:db8:ff::10", "2001:db8:1::1", "node-a", False, "ext", "no IPv6 egress IP"),

    ("demo", "pod-a", "203.0.113.10", "192.0.2.50", "node-b", True, "ext", "web"),
    ("demo", "pod-a", "2001:db8:ff::10", "2001:db8:1::50", "node-b", True, "ext", "web, IPv6 EIP"),
    ("demo", "pod-a", "203.0.113.20", "192.0.2.52", "node-c", True, "ext", "override (priority 50)"),
    ("demo", "pod-a", "2001:db8:ff::20", "2001:db8:1::1", "node-a", False, "ext", "override has no IPv6 EIP"),
    ("demo", "pod-a2", "203.0.113.10", "192.0.2.51", "node-c", True, "ext", "batch: empty destSubnet"),
    ("demo", "pod-a2", "203.0.113.20", "192.0.2.51", "node-c", True, "ext", "batch: empty destSubnet"),
    ("demo", "pod-a2", "2001:db8:ff::10", "2001:db8:1::1", "node-a", False, "ext", "batch has no IPv6 EIP"),
    ("demo", "pod-b", "203.0.113.10", "192.0.2.2", "node-b", False, "ext", "pod in no policy"),
    ("demo", "pod-c", "203.0.113.10", "192.0.2.50", "node-b", True, "ext", "web (pod-c is a source)"),
    ("demo", "pod-c", "2001:db8:ff::10", "2001:db8:1::50", "node-b", True, "ext", "web (pod-c is a source)"),
    ("demo", "pod-c", "203.0.113.20", "192.0.2.2", "node-b", True, "ext", "ops: node IP, CIDR source"),
    ("demo", "pod-c", "2001:db8:ff::20", "2001:db8:1::2", "node-b", True, "ext", "ops: node IP, CIDR source"),
)


def _rows() -> list[PacketCase]:
    protos: tuple[Proto, ...] = ("udp", "tcp")
    return [PacketCase(scenario, pod, destination, proto, expected, egress, tunneled, why, receiver)
            for scenario, pod, destination, expected, egress, tunneled, receiver, why in _TABLE
            for proto in protos]


#: Every packet case, grouped by scenario (so a runner applies each scenario once).
CASES: tuple[PacketCase, ...] = tuple(sorted(_rows(), key=lambda c: (c.scenario, c.family, c.pod, c.destination,
                                                                       c.proto)))


def external_cases() -> tuple[PacketCase, ...]:
    return tuple(c for c in CASES if c.receiver == "ext")


def scenario_state(name: str) -> ClusterState:
    """The named scenario of :data:`tests.scenarios.SCENARIOS` (its addresses are the topology's)."""
    return SCENARIOS[name]()
