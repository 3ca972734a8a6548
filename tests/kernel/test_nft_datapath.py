"""Packet tests on the nftables datapath: the shared case table with nft in place of iptables and ipset.

Every row of :data:`tests.kernel.cases.CASES` is sent as a real UDP or TCP
probe after each node's full nft render (``nft -j -f`` plus the same ``ip
-4/-6 -batch`` routing) is applied, next to the topology's CNI-style
MASQUERADE written with iptables-nft. Each case checks the source address
the receiver saw, the node the packet left the cluster from (by MAC) and
whether it crossed the egress tunnel, as the iptables packet tests do.

Also here: a cluster converged through the planner carries traffic and the
next plans are empty; removing a policy under a live flow with the plan's
conntrack commands; and the documented limit of nftables, that our filter
``accept`` cannot overrule an iptables-nft ``DROP`` later on the same hook
(the iptables datapath's ACCEPT at position 1 of FORWARD can).
"""

from __future__ import annotations

import json

import attrs
import pytest

from egress_rules.backends import NFT_APPLY_ORDER, render_all
from egress_rules.compiler import compile
from egress_rules.plan import plan, render_plan

from .cases import CASES, PacketCase, scenario_state
from .cluster import apply_state, eip_placement, place_eips, rulesets
from .datapath_support import PORT, Installed, flow_packets, probe
from .flows import Captured, FlowClient, FlowServer, settle
from .test_nft_support import (
    apply_nft_outputs,
    apply_nft_state,
    converge_nft_state,
    observe_nft_node,
)
from .topology import ADDRESSES, NODE_ROLES, TUNNEL_DEVICE, Family, NodeRole, Role, Topology

pytestmark = pytest.mark.kernel

FAMILIES: tuple[Family, ...] = (4, 6)


@pytest.fixture(scope="module")
def installed(topo: Topology) -> Installed:
    return Installed(topo, apply_nft_state)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_packet_case_on_nft(case: PacketCase, topo: Topology, installed: Installed,
                            servers: dict[Role, FlowServer], macs: dict[str, NodeRole]) -> None:
    installed.ensure(case.scenario)
    receiver = servers[case.receiver]
    watching = [receiver, *(servers[n] for n in NODE_ROLES)]
    settle(watching)
    marks = {id(server): server.mark() for server in watching}

    got = probe(topo, case.pod, case.destination, case.proto)
    settle(watching)  # the captures write asynchronously: the reply can come before the capture's line

    def since(server: FlowServer) -> list[Captured]:
        return server.captured()[marks[id(server)]:]

    assert got == case.expected_source, f"{case.why}: {case.receiver} saw {got}, want {case.expected_source}"
    arrived = flow_packets(since(receiver), case)
    assert arrived, "the receiver's capture saw nothing"
    assert {p.src for p in arrived} == {case.expected_source}, "some packets arrived with another source"
    if case.receiver == "ext":
        assert {macs.get(p.mac) for p in arrived} == {case.egress_node}, "left the cluster from the wrong node"
    tunnel_ends = {node for node in NODE_ROLES
                   if any(p.ifname == TUNNEL_DEVICE for p in flow_packets(since(servers[node]), case))}
    assert tunnel_ends == ({case.egress_node} if case.tunneled else set()), "tunnel use differs"


@pytest.mark.usefixtures("servers")  # the receivers answer on PORT
def test_a_cluster_converged_by_the_planner_carries_traffic(topo: Topology, installed: Installed) -> None:
    installed.invalidate()
    topo.reset()
    state = scenario_state("demo")
    first = converge_nft_state(topo, state)
    assert all(p.nft for p in first.values())
    again = converge_nft_state(topo, state)
    assert all(p.is_empty for p in again.values()), {n: p.drift for n, p in again.items()}
    assert probe(topo, "pod-a", "203.0.113.10", "tcp") == "192.0.2.50"
    assert probe(topo, "pod-a", "203.0.113.20", "udp") == "192.0.2.52"
    assert probe(topo, "pod-c", "2001:db8:ff::10", "udp") == "2001:db8:1::50"


@pytest.mark.parametrize("family", FAMILIES)
def test_removing_a_policy_under_a_live_flow(family: Family, topo: Topology, installed: Installed,
                                             servers: dict[Role, FlowServer]) -> None:
    installed.invalidate()
    topo.reset()
    state = scenario_state("dual-stack")
    converge_nft_state(topo, state)
    ext, eip = servers["ext"], ("192.0.2.50" if family == 4 else "2001:db8:1::50")
    node_a = ADDRESSES.node("node-a").underlay(family)
    with FlowClient(topo.ns("pod-a"), ADDRESSES.ext.internet(family)[0], PORT) as flow:
        assert [flow.udp(f"b{i}") for i in range(3)] == [eip] * 3
        ext.settle()
        mark = ext.mark()
        removed = attrs.evolve(state, policies=[])
        place_eips(topo, eip_placement(removed))
        deleted = {}
        for node, ruleset in rulesets(removed).items():
            outputs = render_plan(plan(ruleset, observe_nft_node(topo.ns(node), ruleset.config)), ruleset.config)
            deleted[node] = apply_nft_outputs(topo.ns(node), outputs)
        assert deleted["node-a"] >= 1 and deleted["node-b"] >= 1, deleted  # the flow's entries on both nodes
        assert [flow.udp(f"a{i}") for i in range(3)] == [node_a] * 3  # same socket, same source port
        ext.settle()
        after = {p.src for p in ext.captured()[mark:] if p.proto == "udp" and p.sport == flow.udp_port}
        assert after == {node_a}, "no packet may leave with the pod's own address or the old EIP"


@pytest.mark.usefixtures("servers")  # the receivers answer on PORT
@pytest.mark.parametrize("datapath", ["iptables", "nft"])
def test_a_foreign_forward_drop_overrules_our_accept_only_on_nft(datapath: str, topo: Topology,
                                                                 installed: Installed) -> None:
    """The documented limit: the keep-mark accept in filter FORWARD ends only our base chain on nft.

    On node-a the tunneled packet carries the keep mark in filter FORWARD. With
    iptables our ACCEPT sits at position 1 of FORWARD and the DROP appended after
    it is never reached; with nft our ``filter_forward`` (priority -1) accepts
    and iptables-nft's FORWARD (priority 0) still runs and drops it.
    """
    installed.invalidate()
    topo.reset()
    state = scenario_state("one-policy")
    if datapath == "nft":
        apply_nft_state(topo, state)
    else:
        apply_state(topo, state)
    assert probe(topo, "pod-a", "203.0.113.10", "udp") == "192.0.2.50"
    # Only the probe's flow: earlier tests may leave TCP retransmissions of broken connections behind.
    topo.run("node-a", "iptables", "-w", "5", "-t", "filter", "-A", "FORWARD", "-s", "10.244.1.10",
             "-d", "203.0.113.10", "-p", "udp", "--dport", str(PORT), "-j", "DROP")
    got = probe(topo, "pod-a", "203.0.113.10", "udp", timeout=1.0)
    counters = topo.run("node-a", "iptables", "-w", "5", "-t", "filter", "-L", "FORWARD", "-v", "-x", "-n").stdout
    dropped = next(int(line.split()[0]) for line in counters.splitlines() if "DROP" in line)
    if datapath == "iptables":
        assert (got, dropped) == ("192.0.2.50", 0)
    else:
        assert got is None and dropped > 0
        [output] = [o for o in render_all(compile(state, "node-a"), NFT_APPLY_ORDER) if o.name == "nftables.json"]
        assert any("IPv4 filter FORWARD" in note and "cannot stop a drop" in note for note in output.notes)


@pytest.mark.usefixtures("servers")  # the receivers answer on PORT
@pytest.mark.parametrize("statement", ["identity snat", "accept"])
def test_only_a_nat_binding_keeps_the_cni_masquerade_off_tunneled_traffic(statement: str, topo: Topology,
                                                                            installed: Installed) -> None:
    """Why the backend writes ``snat to ip saddr`` for the NO-SNAT accept: a plain accept ends only our nat
    chain, the CNI's iptables-nft MASQUERADE (priority 100) still rewrites the tunneled packet on node-a to
    the tunnel address, and the gateway's source set no longer matches it."""
    installed.invalidate()
    topo.reset()
    apply_nft_state(topo, scenario_state("one-policy"))
    listing = json.loads(topo.run("node-a", "nft", "-j", "list", "chain", "ip", "egress_rules",
                                  "EGRESSGATEWAY-NO-SNAT").stdout)["nftables"]
    [rule] = [item["rule"] for item in listing if "rule" in item]
    assert rule["expr"][-1] == {"snat": {"addr": {"payload": {"protocol": "ip", "field": "saddr"}}}}
    if statement == "accept":
        replaced = {**{k: rule[k] for k in ("family", "table", "chain", "handle")},
                    "expr": [*rule["expr"][:-1], {"accept": None}]}
        topo.run("node-a", "nft", "-j", "-f", "-", input=json.dumps({"nftables": [{"replace": {"rule": replaced}}]}))
    got = probe(topo, "pod-a", "203.0.113.10", "udp", timeout=1.0)
    assert got == ("192.0.2.50" if statement == "identity snat" else None)
