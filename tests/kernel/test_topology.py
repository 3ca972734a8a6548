"""Self-tests: the simulated cluster behaves like one before any egress rule exists."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Literal

import pytest

from . import netns
from .echo_server import plain_address
from .gate import REQUIRE_ENV, require_kernel
from .netns import CommandError, Namespace
from .probe import Proto
from .topology import ADDRESSES, TUNNEL_DEVICE, Family, NodeRole, PodRole, Topology

kernel = pytest.mark.kernel
FAMILIES: tuple[Family, ...] = (4, 6)
IptablesTool = Literal["iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy"]
IPTABLES: tuple[IptablesTool, ...] = ("iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy")
DUMPS: tuple[IptablesTool | Literal["ipset"], ...] = (*IPTABLES, "ipset")


def _effective(text: str) -> set[str]:
    """Rules, sets and non-default chains in *-save output.

    Ignores comments (timestamps) and empty built-in chains with an ACCEPT
    policy: a legacy xtables table stays registered in the namespace once used,
    so "empty table" is as reset as it gets.
    """
    return {
        line
        for line in text.splitlines()
        if line
        and not line.startswith(("#", "*"))
        and line != "COMMIT"
        and not (line.startswith(":") and " ACCEPT " in line)
    }


# ------------------------------------------------------------- no kernel needed


def test_gate_skips_when_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "kernel_tests_available", lambda: (False, "no netns here"))
    with pytest.raises(pytest.skip.Exception, match="no netns here"):
        require_kernel(environ={})
    with pytest.raises(pytest.skip.Exception):
        require_kernel(environ={REQUIRE_ENV: "0"})


def test_gate_fails_when_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "kernel_tests_available", lambda: (False, "no netns here"))
    with pytest.raises(pytest.fail.Exception, match="no netns here"):
        require_kernel(environ={REQUIRE_ENV: "1"})
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception):
        require_kernel()


def test_gate_passes_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns, "kernel_tests_available", lambda: (True, ""))
    require_kernel(environ={REQUIRE_ENV: "1"})
    require_kernel(environ={})


def test_echo_server_reports_plain_ipv4() -> None:
    assert plain_address("::ffff:192.0.2.1") == "192.0.2.1"
    assert plain_address("2001:db8:1::1") == "2001:db8:1::1"
    assert plain_address("fe80::1%eth0") == "fe80::1"


# ------------------------------------------------------------------ netns layer


@kernel
def test_run_error_carries_command_rc_and_output() -> None:
    with Namespace("unit") as ns:
        with pytest.raises(CommandError) as err:
            ns.run("sh", "-c", "echo to-out; echo to-err >&2; exit 3")
        text = str(err.value)
        assert "sh -c" in text and "rc=3" in text and "to-out" in text and "to-err" in text
        with pytest.raises(CommandError, match="timed out"):
            ns.run("sleep", "5", timeout=0.3)
        assert ns.run("true", check=False).returncode == 0


@kernel
def test_namespace_delete_kills_processes_inside() -> None:
    ns = Namespace("unit")
    with ns:
        # ip netns exec execs sleep, so the pid is the one inside the namespace
        proc = subprocess.Popen(["ip", "netns", "exec", ns.name, "sleep", "60"])
        try:
            deadline = time.monotonic() + 5
            while proc.pid not in netns.namespace_pids(ns.name):
                assert time.monotonic() < deadline, "sleep never showed up in the namespace"
                time.sleep(0.05)
        except BaseException:
            proc.kill()
            raise
    assert proc.wait(timeout=5) != 0  # killed by the teardown
    assert ns.name not in netns.list_namespaces()


# -------------------------------------------------------------------- topology


@kernel
@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("family", FAMILIES)
def test_pod_egress_is_masqueraded_to_node(clean_topology: Topology, family: Family, proto: Proto) -> None:
    got = clean_topology.probe_outcome("pod-a", proto=proto, family=family)
    assert got.reply == ADDRESSES.node("node-a").underlay(family), got.reason


@kernel
@pytest.mark.parametrize("pod", ["pod-a2", "pod-b", "pod-c"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_pod_leaves_via_its_own_node(clean_topology: Topology, pod: PodRole, family: Family) -> None:
    node = ADDRESSES.pod(pod).node
    dst = ADDRESSES.ext.internet(family)[1]
    assert clean_topology.probe(pod, dst) == ADDRESSES.node(node).underlay(family)


@kernel
@pytest.mark.parametrize("family", FAMILIES)
def test_pod_to_pod_across_nodes_is_routed_not_masqueraded(clean_topology: Topology, family: Family) -> None:
    src, dst = ADDRESSES.pod("pod-a"), ADDRESSES.pod("pod-b")
    assert clean_topology.probe("pod-a", dst.ip(family), "icmp") == dst.ip(family)
    entries = clean_topology.conntrack(
        "node-a", "-L", "-f", f"ipv{family}", "-s", src.ip(family), "-d", dst.ip(family)
    ).stdout
    # reply tuple still addressed to the pod itself: no NAT inside the cluster
    assert f"src={dst.ip(family)} dst={src.ip(family)}" in entries


@kernel
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("peer", ["node-b", "node-c"])
def test_vxlan_tunnel_carries_both_families(clean_topology: Topology, peer: NodeRole, family: Family) -> None:
    target = ADDRESSES.node(peer).tunnel(family)
    assert clean_topology.ping("node-a", target)
    fdb = clean_topology.run("node-a", "bridge", "fdb", "show", "dev", TUNNEL_DEVICE).stdout
    assert f"dst {ADDRESSES.node(peer).underlay4}" in fdb


@kernel
def test_ext_has_no_route_to_pods(topology: Topology) -> None:
    for pod in ADDRESSES.pods:
        for family in FAMILIES:
            route = topology.ip("ext", "route", "get", pod.ip(family), check=False)
            assert route.returncode != 0, route.stdout


@kernel
@pytest.mark.parametrize("eip", ["192.0.2.50", "2001:db8:1::50"])
def test_eip_on_node_is_reachable_from_ext(clean_topology: Topology, eip: str) -> None:
    clean_topology.add_eip("node-b", eip)
    assert clean_topology.probe("ext", eip, "icmp") == eip
    # pod traffic is still masqueraded to the node address, not the EIP
    family: Family = 6 if ":" in eip else 4
    assert clean_topology.probe("pod-b", family=family) == ADDRESSES.node("node-b").underlay(family)
    clean_topology.del_eip("node-b", eip)
    assert not clean_topology.ping("ext", eip, timeout=1.0)


@kernel
@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize("family", FAMILIES)
def test_without_masquerade_probe_reports_no_reply(clean_topology: Topology, family: Family, proto: Proto) -> None:
    clean_topology.del_masquerade("node-a")
    assert clean_topology.probe("pod-a", proto=proto, family=family, timeout=1.0) is None
    # a pod on another node is unaffected
    assert clean_topology.probe("pod-b", proto=proto, family=family) is not None


@kernel
def test_conntrack_sees_the_probe(clean_topology: Topology) -> None:
    assert clean_topology.probe("pod-a") is not None
    out = clean_topology.conntrack("node-a", "-L", "-p", "udp", "--dport", "7777").stdout
    assert "src=10.244.1.10" in out and "dst=192.0.2.1" in out


@kernel
def test_apply_save_and_reset_roundtrip(clean_topology: Topology) -> None:
    topo = clean_topology
    baseline = {tool: _effective(topo.save("node-a", tool)) for tool in DUMPS}
    rules4, rules6 = topo.save("node-a", "rule4"), topo.save("node-a", "rule6")
    filter_rules = "*filter\n:EGRT-T - [0:0]\n-A OUTPUT -j EGRT-T\n-A EGRT-T -j RETURN\nCOMMIT\n"
    for iptables in IPTABLES:
        topo.apply("node-a", iptables, filter_rules)
        assert "EGRT-T" in topo.save("node-a", iptables)
    topo.apply("node-a", "ipset", "create egrt-t hash:ip family inet\nadd egrt-t 10.244.1.10\n")
    assert "add egrt-t 10.244.1.10" in topo.save("node-a", "ipset")
    nft = {"nftables": [{"add": {"table": {"family": "inet", "name": "egrt_t"}}}]}
    topo.apply("node-a", "nft", json.dumps(nft))
    assert "egrt_t" in topo.save("node-a", "nft")
    policy_routing = "rule add priority 100 fwmark 0x10 lookup 100\nroute add default via {} table 100\n"
    topo.apply("node-a", "ip4", policy_routing.format("192.0.2.2"))
    topo.apply("node-a", "ip6", policy_routing.format("2001:db8:1::2"))
    assert any(r.get("table") == "100" for r in json.loads(topo.save("node-a", "route4")))
    assert any(r.get("table") == "100" for r in json.loads(topo.save("node-a", "route6")))
    assert any(r.get("priority") == 100 for r in json.loads(topo.save("node-a", "rule6")))

    topo.reset_node("node-a")
    for tool in DUMPS:
        assert _effective(topo.save("node-a", tool)) == baseline[tool], tool
    assert topo.save("node-a", "rule4") == rules4
    assert topo.save("node-a", "rule6") == rules6
    for routes in (topo.save("node-a", "route4"), topo.save("node-a", "route6")):
        tables = {r.get("table", "main") for r in json.loads(routes)}
        assert tables <= {"main", "local"}, tables
    assert "egrt_t" not in topo.save("node-a", "nft")
    assert topo.probe("pod-a") == "192.0.2.1"


@kernel
def test_apply_failure_raises_with_tool_stderr(topology: Topology) -> None:
    with pytest.raises(CommandError) as err:
        topology.apply("node-a", "iptables", "*filter\n-A NOPE -j ACCEPT\nCOMMIT\n")
    assert "iptables-restore" in str(err.value)
    assert err.value.stderr.strip()


@kernel
def test_legacy_variant_parallel_build_and_teardown(topology: Topology) -> None:
    other = Topology(masquerade=False, iptables="legacy", rp_filter=2)
    names = set(other.namespaces.values())
    assert not names & set(topology.namespaces.values())
    with other:
        assert other.build_seconds is not None
        for family in FAMILIES:
            # No masquerade: ext receives the pod address it cannot route back to.
            assert other.probe("pod-a", family=family, timeout=1.0) is None
            assert other.probe("pod-a", proto="tcp", family=family, timeout=1.0) is None
        other.add_masquerade("node-a")
        assert "MASQUERADE" in other.save("node-a", "iptables-legacy")
        assert other.probe("pod-a", family=6) == "2001:db8:1::1"
        assert other.probe("pod-a", proto="tcp") == "192.0.2.1"
        sysctl = other.run("node-b", "sysctl", "-n", "net.ipv4.conf.all.rp_filter").stdout
        assert sysctl.strip() == "2"
        echo = other.echo_process
        assert echo is not None and echo.poll() is None
    assert echo.poll() is not None
    assert not names & set(netns.list_namespaces())
    other.destroy()  # idempotent
