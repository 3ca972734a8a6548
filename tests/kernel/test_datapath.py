"""Packet tests: real probes through the namespace cluster, the kernel as the referee.

Every row of :data:`tests.kernel.cases.CASES` is sent as a real UDP or TCP
probe after each node's full render is applied. The receiver (ext, or a pod
or node for in-cluster destinations) answers with the source it saw, a
capture on the receiver records every packet that arrived, and a capture on
every node records what came out of the egress tunnel, so each case checks
the source address, the node it left from (by MAC) and whether it was
tunneled. Also here: re-applying through the planner, changing policies
under live flows (with and without the conntrack commands), iptables-legacy
next to iptables-nft, and strict rp_filter.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable

import attrs
import pytest

from egress_rules.backends import render_all
from egress_rules.model.cluster import ClusterState
from egress_rules.model.config import DEFAULT_CONFIG as CONFIG
from egress_rules.plan import DriftKind, plan, render_plan

from .cases import CASES, PacketCase, scenario_state
from .cluster import apply_state, converge_state, eip_placement, place_eips, rulesets
from .datapath_support import PORT, Installed, flow_packets, probe
from .flows import Captured, FlowClient, FlowServer, settle
from .kernel_node import apply_outputs, converge_node, dump_node, normalised, observe_node
from .topology import ADDRESSES, NODE_ROLES, TUNNEL_DEVICE, UNDERLAY_DEVICE, Family, NodeRole, Role, Topology

pytestmark = pytest.mark.kernel

CLUSTER4, CLUSTER6 = ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("fd00:244::/32")
FAMILIES: tuple[Family, ...] = (4, 6)


def is_pod_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip in (CLUSTER4 if ip.version == 4 else CLUSTER6)


@pytest.fixture(scope="module")
def installed(topo: Topology) -> Installed:
    return Installed(topo, apply_state)


# ---------------------------------------------------------------- the case table


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_packet_case(case: PacketCase, topo: Topology, installed: Installed, servers: dict[Role, FlowServer],
                     macs: dict[str, NodeRole]) -> None:
    installed.ensure(case.scenario)
    receiver = servers[case.receiver]
    watching = [receiver, *(servers[n] for n in NODE_ROLES)]
    settle(watching)
    marks = {id(server): server.mark() for server in watching}

    got = probe(topo, case.pod, case.destination, case.proto)

    def since(server: FlowServer) -> list[Captured]:
        return server.captured()[marks[id(server)]:]

    receiver.wait_for(lambda caps: bool(flow_packets(caps, case)), marks[id(receiver)])
    if case.tunneled and case.egress_node is not None:
        witness = servers[case.egress_node]
        witness.wait_for(lambda caps: any(p.ifname == TUNNEL_DEVICE for p in flow_packets(caps, case)),
                         marks[id(witness)])
    settle(watching)

    assert got == case.expected_source, f"{case.why}: {case.receiver} saw {got}, want {case.expected_source}"
    arrived = flow_packets(since(receiver), case)
    assert arrived, "the receiver's capture saw nothing"
    assert {p.src for p in arrived} == {case.expected_source}, "some packets arrived with another source"
    if case.receiver == "ext":
        assert {macs.get(p.mac) for p in arrived} == {case.egress_node}, "left the cluster from the wrong node"
    tunnel_ends = {node for node in NODE_ROLES
                   if any(p.ifname == TUNNEL_DEVICE for p in flow_packets(since(servers[node]), case))}
    assert tunnel_ends == ({case.egress_node} if case.tunneled else set()), "tunnel use differs"


def test_reapplying_through_the_planner_changes_and_duplicates_nothing(
        topo: Topology, installed: Installed) -> None:
    for name in ("demo", "mixed-roles", "dual-stack"):
        state = installed.fresh(name)
        before = {node: normalised(dump_node(topo.ns(node))) for node in NODE_ROLES}
        again = converge_state(topo, state)
        assert again.all_empty, {n: p.drift for n, p in again.plans.items()}
        assert all(outputs == () for outputs in again.outputs.values())
        assert {node: normalised(dump_node(topo.ns(node))) for node in NODE_ROLES} == before

        # The full render is a first install: applied twice it duplicates the hook jumps.
        # The planner sees that and puts back exactly the single-install state.
        for node, ruleset in rulesets(state).items():
            apply_outputs(topo.ns(node), [o for o in render_all(ruleset) if "tables-restore" in o.command])
        plans = {node: converge_node(topo.ns(node), ruleset)[0] for node, ruleset in rulesets(state).items()}
        assert all(DriftKind.DUPLICATE in {d.kind for d in p.drift} for p in plans.values())
        assert {node: normalised(dump_node(topo.ns(node))) for node in NODE_ROLES} == before
        assert converge_state(topo, state).all_empty
    assert probe(topo, "pod-a", "203.0.113.10", "udp") == "192.0.2.50"


# ---------------------------------------------------------------- changes under live flows


def _without_policies(state: ClusterState) -> ClusterState:
    return attrs.evolve(state, policies=[])


def _gateway_moved(state: ClusterState, gateway: str) -> ClusterState:
    return attrs.evolve(state, policies=[attrs.evolve(p, gateway_node=gateway) for p in state.policies])


def _arrived_at(destination: str) -> Callable[[list[Captured]], bool]:
    return lambda packets: any(p.dst == destination for p in packets)


def _leaks(packets: list[Captured]) -> list[Captured]:
    return [p for p in packets if is_pod_address(p.src)]


@pytest.mark.parametrize("family", FAMILIES)
def test_removing_a_policy_under_a_live_flow(family: Family, topo: Topology, installed: Installed,
                                             servers: dict[Role, FlowServer]) -> None:
    state = installed.fresh("dual-stack")
    ext, eip = servers["ext"], ("192.0.2.50" if family == 4 else "2001:db8:1::50")
    node_a = ADDRESSES.node("node-a").underlay(family)
    try:
        with FlowClient(topo.ns("pod-a"), ADDRESSES.ext.internet(family)[0], PORT) as flow:
            assert [flow.udp(f"b{i}") for i in range(3)] == [eip] * 3
            assert flow.tcp("t0") == eip
            ext.settle()
            mark = ext.mark()
            done = converge_state(topo, _without_policies(state))
            deleted = {node: sum(r.deleted for r in results) for node, results in done.conntrack.items()}
            assert deleted["node-a"] >= 2 and deleted["node-b"] >= 2, deleted  # the UDP and TCP flows

            assert [flow.udp(f"a{i}") for i in range(3)] == [node_a] * 3  # same socket, same source port
            assert flow.tcp("t1") is None  # the connection cannot survive losing its EIP
            ext.wait_for(lambda caps: sum(p.sport == flow.udp_port for p in caps) >= 3
                         and any(p.sport == flow.tcp_port for p in caps), mark)
            ext.settle()
            after = [p for p in ext.captured()[mark:] if p.dport == PORT]
            assert not _leaks(after), f"the pod's own address reached ext: {_leaks(after)}"
            assert {p.src for p in after if p.proto == "udp" and p.sport == flow.udp_port} == {node_a}
            assert {p.src for p in after if p.proto == "tcp" and p.sport == flow.tcp_port} <= {eip, node_a}
    finally:
        installed.invalidate()


@pytest.mark.parametrize("family", FAMILIES)
def test_moving_the_gateway_and_eip_under_a_live_flow(family: Family, topo: Topology, installed: Installed,
                                                      servers: dict[Role, FlowServer],
                                                      macs: dict[str, NodeRole]) -> None:
    state = installed.fresh("dual-stack")
    ext, eip = servers["ext"], ("192.0.2.50" if family == 4 else "2001:db8:1::50")
    try:
        with FlowClient(topo.ns("pod-a"), ADDRESSES.ext.internet(family)[0], PORT) as flow:
            assert [flow.udp(f"b{i}") for i in range(3)] == [eip] * 3
            assert flow.tcp("t0") == eip
            ext.settle()
            mark = ext.mark()
            converge_state(topo, _gateway_moved(state, "node-c"))

            assert [flow.udp(f"a{i}") for i in range(3)] == [eip] * 3
            assert flow.tcp("t1") == eip  # same EIP, same port: ext keeps the same connection
            ext.wait_for(lambda caps: sum(p.sport == flow.udp_port for p in caps) >= 3
                         and any(p.sport == flow.tcp_port for p in caps), mark)
            ext.settle()
            after = [p for p in ext.captured()[mark:] if p.dport == PORT]
            assert not _leaks(after), f"the pod's own address reached ext: {_leaks(after)}"
            flow_packets = [p for p in after if p.sport in (flow.udp_port, flow.tcp_port)]
            assert flow_packets and {p.src for p in flow_packets} == {eip}
            assert {macs.get(p.mac) for p in flow_packets} == {"node-c"}, "the flow did not move to node-c"
    finally:
        installed.invalidate()


@pytest.mark.parametrize("family", FAMILIES)
def test_before_the_conntrack_commands_run_the_guard_drops_instead_of_leaking(
        family: Family, topo: Topology, installed: Installed, servers: dict[Role, FlowServer]) -> None:
    """Between the rule change and the conntrack commands a tunnelled flow has no NAT binding: without the
    tunnelled-flow guard its packets would leave with the pod's address. They are dropped, and the flow
    recovers (with the node's address) once the commands ran."""
    state = installed.fresh("dual-stack")
    ext, node_address = servers["ext"], ADDRESSES.node("node-a").underlay(family)
    try:
        with FlowClient(topo.ns("pod-a"), ADDRESSES.ext.internet(family)[0], PORT) as flow:
            assert flow.udp("b0") is not None
            ext.settle()
            mark = ext.mark()
            done = converge_state(topo, _without_policies(state), conntrack=False)
            [commands] = [o for o in done.outputs["node-a"] if o.name == "conntrack.commands"]
            assert flow.udp("a0", timeout=0.5) is None
            ext.settle()
            seen = [p for p in ext.captured()[mark:] if p.proto == "udp" and p.sport == flow.udp_port]
            assert seen == [], f"the flow reached ext before its conntrack entries were deleted: {seen}"
            apply_outputs(topo.ns("node-a"), [commands])
            assert flow.udp("a1") == node_address
    finally:
        installed.invalidate()


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "library: conntrack.commands delete the flow's ORIGINAL-direction entries only once; a reply that is "
    "still in flight when the source node has flushed recreates the entry reversed (ext -> pod), the pod's "
    "packets then travel in the REPLY direction, '--ctdir ORIGINAL' no longer matches and they leave "
    "with the pod's own address until the flow idles out"))
def test_a_reply_in_flight_during_the_change_does_not_leak_the_pod_address(
        topo: Topology, installed: Installed, servers: dict[Role, FlowServer]) -> None:
    state = installed.fresh("dual-stack")
    ext = servers["ext"]
    try:
        with FlowClient(topo.ns("pod-a"), "203.0.113.10", PORT) as flow:
            assert flow.udp("b0") == "192.0.2.50"
            flow.late("late0", 1.0)  # ext answers in 1 s, through node-b, which still has the policy
            ext.settle()
            mark = ext.mark()
            removed = _without_policies(state)
            # The source node converges first (nodes converge independently).
            converge_node(topo.ns("node-a"), rulesets(removed)["node-a"])
            time.sleep(1.5)  # the late reply crosses node-b (de-NAT) and node-a (new entry) to the pod
            converge_state(topo, removed)
            results = [flow.udp(f"a{i}", timeout=0.5) for i in range(2)]
            ext.wait_for(lambda caps: sum(p.sport == flow.udp_port for p in caps) >= 2, mark)
            ext.settle()
            leaks = _leaks([p for p in ext.captured()[mark:] if p.dport == PORT])
            assert not leaks, f"{len(leaks)} packets with the pod's address reached ext; replies {results}"
    finally:
        installed.invalidate()


def test_a_cluster_cidr_change_under_a_live_flow_does_not_leak_the_pod_address(
        topo: Topology, installed: Installed, servers: dict[Role, FlowServer]) -> None:
    state = installed.fresh("empty-destinations")
    ext = servers["ext"]
    try:
        with FlowClient(topo.ns("pod-a"), "203.0.113.10", PORT) as flow:
            assert flow.udp("b0") == "192.0.2.50"
            ext.settle()
            mark = ext.mark()
            # 203.0.113.0/24 becomes cluster address space: the policy no longer covers it.
            grown = attrs.evolve(state.cluster, extra=(*state.cluster.extra, "203.0.113.0/24"))
            done = converge_state(topo, attrs.evolve(state, cluster=grown))
            assert not done.all_empty
            replies = [flow.udp(f"a{i}", timeout=0.5) for i in range(2)]
            ext.wait_for(lambda caps: sum(p.sport == flow.udp_port for p in caps) >= 2, mark)
            ext.settle()
            leaks = _leaks([p for p in ext.captured()[mark:] if p.dport == PORT])
            assert not leaks, f"{len(leaks)} packets with the pod's address reached ext; replies {replies}"
            assert replies == ["192.0.2.1"] * 2
    finally:
        installed.invalidate()


@pytest.mark.parametrize("step", ["full render", "first install by plan", "gateway move by plan"])
def test_every_apply_step_is_leak_free(step: str, topo: Topology, installed: Installed,
                                       servers: dict[Role, FlowServer]) -> None:
    """New flows from pod-a, sent after each output of node-a is applied (in order), never leak its address."""
    ext, state = servers["ext"], scenario_state("dual-stack")
    installed.invalidate()
    try:
        if step != "gateway move by plan":
            topo.reset()
            target = scenario_state("dual-stack")
            nodes: tuple[NodeRole, ...] = ("node-b", "node-c")
        else:
            installed.fresh("dual-stack")
            target = _gateway_moved(state, "node-c")
            nodes = ("node-c", "node-b")  # the new gateway is ready before the source node changes
        place_eips(topo, eip_placement(target))
        compiled = rulesets(target)
        for node in nodes:
            converge_node(topo.ns(node), compiled[node])
        if step == "full render":
            outputs = render_all(compiled["node-a"])
        else:
            outputs = render_plan(plan(compiled["node-a"], observe_node(topo.ns("node-a"), CONFIG)), CONFIG)
        names = [o.name.split(".")[0] for o in outputs]
        if "iproute-v4" in names and "iptables" in names:
            assert names.index("iproute-v4") < names.index("iptables"), names
        leaks: dict[str, list[str]] = {}
        for output in outputs:
            apply_outputs(topo.ns("node-a"), [output])
            for family in FAMILIES:
                settle([ext])
                mark = ext.mark()
                destination = ADDRESSES.ext.internet(family)[0]
                probe(topo, "pod-a", destination, "udp", timeout=0.5)
                ext.wait_for(_arrived_at(destination), mark, timeout=1.0)
                settle([ext])
                leaked = sorted({p.src for p in _leaks(ext.captured()[mark:]) if p.dport == PORT})
                if leaked:
                    leaks.setdefault(output.name, []).extend(leaked)
        assert not leaks, f"new flows left with the pod's address after these outputs: {leaks}"
    finally:
        installed.invalidate()


# ---------------------------------------------------------------- other kernels' rules next to ours


@pytest.mark.parametrize("order", ["legacy-nat-first", "nft-nat-first"])
def test_legacy_cni_masquerade_next_to_our_nft_rules(order: str) -> None:
    """Our rules via iptables-nft, the CNI's MASQUERADE via iptables-legacy: both nat tables run.

    Our NO-SNAT ACCEPT ends only the nft nat chain, so on the source node the
    legacy MASQUERADE still rewrites tunneled traffic to the node's tunnel
    address, and the gateway's source set no longer matches: remote-gateway
    traffic leaves with the tunnel address and gets no answer. On the gateway
    node itself, the nat table registered last runs first: the EIP wins only
    if our nft nat table was registered after the legacy one.
    """
    with Topology(iptables="legacy", masquerade=order == "legacy-nat-first") as topo:
        apply_state(topo, scenario_state("dual-stack"))
        if order == "nft-nat-first":
            for node in NODE_ROLES:
                topo.add_masquerade(node)  # legacy nat registered after our nft nat
        for node in NODE_ROLES:
            assert "MASQUERADE" in topo.save(node, "iptables-legacy")
            assert "MASQUERADE" not in topo.save(node, "iptables")
        with FlowServer(topo.ns("ext"), PORT) as ext:
            for family in FAMILIES:
                dst = ADDRESSES.ext.internet(family)[0]
                eip = "192.0.2.50" if family == 4 else "2001:db8:1::50"
                mark = ext.mark()
                assert probe(topo, "pod-a", dst, "udp", timeout=1.0) is None
                ext.settle()
                seen = {p.src for p in ext.captured()[mark:] if p.dport == PORT}
                assert seen == {ADDRESSES.node("node-a").tunnel(family)}, "remote gateway: source-node masquerade"
                local = probe(topo, "pod-b", dst, "udp")
                expected = eip if order == "legacy-nat-first" else ADDRESSES.node("node-b").underlay(family)
                assert local == expected, "on the gateway, the nat table registered last decides"
                # traffic outside any policy is masqueraded as usual
                assert probe(topo, "pod-a2", dst, "tcp") == ADDRESSES.node("node-a").underlay(family)


def test_strict_rp_filter_on_the_gateway_drops_tunneled_traffic(topo: Topology, installed: Installed) -> None:
    """IPv4 only (IPv6 has no rp_filter): the tunneled packet arrives on egress.vxlan, the route back
    to the pod points at the uplink (host-gw), so strict mode on the gateway drops it; loose mode does not."""
    installed.fresh("dual-stack")
    devices = ("all", "default", "lo", UNDERLAY_DEVICE, "cni0", TUNNEL_DEVICE)

    def rp_filter(node: NodeRole, mode: int) -> None:
        topo.run(node, "sysctl", "-q", "-w", *(f"net/ipv4/conf/{d}/rp_filter={mode}" for d in devices))

    def dropped(node: NodeRole) -> int:
        """TcpExt IPReversePathFilter from the namespace's /proc/net/netstat."""
        lines = [line.split() for line in topo.run(node, "cat", "/proc/net/netstat").stdout.splitlines()]
        names, values = (ln for ln in lines if ln[0] == "TcpExt:")
        return int(values[names.index("IPReversePathFilter")])

    try:
        rp_filter("node-a", 1)
        assert probe(topo, "pod-a", "203.0.113.10", "udp") == "192.0.2.50", "strict on the source node is fine"
        rp_filter("node-a", 0)
        rp_filter("node-b", 1)
        before = dropped("node-b")
        assert probe(topo, "pod-a", "203.0.113.10", "udp", timeout=1.0) is None
        assert dropped("node-b") > before, "node-b's reverse-path filter dropped it"
        assert probe(topo, "pod-b", "203.0.113.10", "udp") == "192.0.2.50", "the gateway's own pod is fine"
        assert probe(topo, "pod-a", "2001:db8:ff::10", "udp") == "2001:db8:1::50", "IPv6 has no rp_filter"
        rp_filter("node-b", 2)
        assert probe(topo, "pod-a", "203.0.113.10", "udp") == "192.0.2.50", "loose mode passes"
    finally:
        for node in ("node-a", "node-b"):
            rp_filter(node, 0)
        installed.invalidate()


def test_eip_placement_follows_the_state(topo: Topology, installed: Installed) -> None:
    """The harness itself: EIPs land on their gateway's uplink and move with it."""
    state = installed.fresh("mixed-roles")
    try:
        def eips(node: NodeRole) -> set[str]:
            text = topo.ip(node, "-o", "addr", "show", "dev", UNDERLAY_DEVICE).stdout
            return {w.split("/")[0] for w in text.split() if w.endswith(("/32", "/128"))}

        assert (eips("node-b"), eips("node-c")) == ({"192.0.2.50"}, {"192.0.2.60"})
        place_eips(topo, {("node-c", "192.0.2.50")})
        assert (eips("node-a"), eips("node-b"), eips("node-c")) == (set(), set(), {"192.0.2.50"})
        assert state.policies
    finally:
        installed.invalidate()
