"""The example cluster dump (examples/cluster/) and the example agent loop (examples/agent_loop.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import egress_rules as er
from egress_rules.adapters import LoadResult, load_resource_text
from egress_rules.model.cluster import PolicyKey
from egress_rules.model.ruleset import Masquerade, Role, Snat

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "cluster"


@pytest.fixture(scope="module")
def loaded() -> LoadResult:
    return load_resource_text((EXAMPLE / "resources.json").read_text(), source="resources.json")


def test_example_is_a_kubectl_list_of_every_kind() -> None:
    dump = json.loads((EXAMPLE / "resources.json").read_text())
    assert (dump["apiVersion"], dump["kind"]) == ("v1", "List")
    assert {item["kind"] for item in dump["items"]} == {
        "EgressPolicy", "EgressClusterPolicy", "EgressGateway", "EgressTunnel", "EgressClusterInfo",
        "EgressEndpointSlice", "EgressClusterEndpointSlice"}


def test_example_policies(loaded: LoadResult) -> None:
    summary = {
        str(p.key): (p.gateway_node, p.priority, p.egress_ip.use_node_ip,
                     " ".join(str(a) for a in (p.egress_ip.ipv4, p.egress_ip.ipv6) if a),
                     " ".join(f"{e.cidr}@{e.node}" for e in p.sources), " ".join(map(str, p.destinations)))
        for p in loaded.compile_input.state.policies
    }
    assert summary == {
        "default/web": ("node-b", 100, False, "192.0.2.50 2001:db8:1::50",
                        "10.244.1.10/32@node-a 10.244.3.10/32@node-c fd00:244:1::10/128@node-a "
                        "fd00:244:3::10/128@node-c", "203.0.113.10/32 2001:db8:ff::10/128"),
        "default/batch": ("node-c", 200, False, "192.0.2.51",
                          "10.244.1.11/32@node-a fd00:244:1::11/128@node-a", ""),
        "team-x/override": ("node-c", 50, False, "192.0.2.52",
                            "10.244.1.12/32@node-a fd00:244:1::12/128@node-a", "203.0.113.20/32"),
        "ops": ("node-b", 300, True, "", "10.244.3.0/24@None fd00:244:3::/64@None",
                "203.0.113.20/32 2001:db8:ff::20/128"),
        "monitoring": ("node-b", 32768, False, "192.0.2.50 2001:db8:1::50",
                       "10.244.1.30/32@node-a 10.244.2.30/32@node-b 10.244.3.30/32@node-c "
                       "fd00:244:1::30/128@node-a fd00:244:2::30/128@node-b fd00:244:3::30/128@node-c",
                       "198.51.100.10/32 2001:db8:ff::30/128"),
    }
    assert loaded.skipped == (PolicyKey("default", "pending"),)


def test_example_nodes_cluster_and_marks(loaded: LoadResult) -> None:
    item = loaded.compile_input
    assert item.state.nodes == tuple(er.Node(f"node-{n}", f"172.31.0.{i}", f"fd11::{i}")
                                     for i, n in enumerate("abc", start=1))
    assert item.state.cluster.pod == (er.parse_cidr("10.244.0.0/16"), er.parse_cidr("fd00:244::/32"))
    assert len(item.state.cluster.node) == 6
    # node-b's upstream mark happens to fit 0x26VVVV00; node-a's and node-c's (low byte set) do not.
    assert item.node_marks == {"node-b": 0x26D41200}
    ruleset = er.compile(item.state, "node-a", item.config, marks=item.mark_allocator())
    for node in ("node-a", "node-c"):
        mark = ruleset.node_mark(node)
        assert mark is not None
        assert [w for w in loaded.warnings if w.startswith(f"EgressTunnel {node}:") and f"{mark:#010x}" in w]
    assert [w for w in loaded.warnings if "default/pending: skipped: no gateway node yet" in w]
    assert len(loaded.warnings) == 3


def test_example_compiles_on_every_node(loaded: LoadResult) -> None:
    item = loaded.compile_input
    snat: dict[str, set[tuple[str, str]]] = {}
    for node in ("node-a", "node-b", "node-c"):
        ruleset = er.compile(item.state, node, item.config, marks=item.mark_allocator(),
                             tables=item.table_allocator(node))
        assert ruleset.warnings == ()
        assert er.render_all(ruleset)
        for family in ruleset.families:
            for chain in family.chains:
                for rule in chain.rules:
                    if rule.provenance.role is Role.SNAT_EIP:
                        action = rule.action
                        to = str(action.address) if isinstance(action, Snat) else \
                            "node IP" if isinstance(action, Masquerade) else "?"
                        snat.setdefault(node, set()).add((str(rule.provenance.policy), to))
    assert snat == {
        "node-b": {("default/web", "192.0.2.50"), ("default/web", "2001:db8:1::50"), ("ops", "node IP"),
                   ("monitoring", "192.0.2.50"), ("monitoring", "2001:db8:1::50")},
        "node-c": {("default/batch", "192.0.2.51"), ("team-x/override", "192.0.2.52")},
    }


def test_example_loads_the_same_in_any_order(loaded: LoadResult) -> None:
    dump = json.loads((EXAMPLE / "resources.json").read_text())
    dump["items"].reverse()
    assert load_resource_text(json.dumps(dump)) == loaded


def test_example_yaml_matches_the_json(loaded: LoadResult) -> None:
    pytest.importorskip("yaml")
    assert load_resource_text((EXAMPLE / "resources.yaml").read_text()) == loaded


def test_agent_loop_runs_and_keeps_its_output_stable() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "agent_loop.py"), "--node", "node-a", "--iterations", "2",
         "--interval", "0", str(EXAMPLE / "resources.json")],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "### iteration 1: node node-a, 5 policies, 1 skipped" in out
    assert "# ==> iptables.rules (apply with: iptables-restore --noflush)" in out
    assert "### iteration 2" in out and out.endswith("# nothing to apply\n")
    assert "warning: EgressPolicy default/pending: skipped" in done.stderr
    # The second iteration keeps the marks the first one assigned.
    assert "kept from node_marks" in done.stderr


def test_agent_loop_reports_errors() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "agent_loop.py"), "--node", "node-z", str(EXAMPLE / "resources.json")],
        capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == "error: node node-z: is not in the cluster state"
