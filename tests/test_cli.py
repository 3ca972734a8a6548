"""The command line: outputs, files, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from egress_rules.cli.main import EXIT_INVALID, EXIT_OK, main
from egress_rules.model.schema import CompileInput, dump_input
from tests import scenarios


def test_demo_prints_every_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == EXIT_OK
    out = capsys.readouterr().out
    for name in ("ipset.restore", "iptables.rules", "ip6tables.rules", "iproute-v4.batch", "iproute-v6.batch",
                 "nftables.json"):
        assert f"# ==> {name} " in out
    assert "*mangle" in out and "swap egress-tmp-v4" in out and "route replace default via 172.31.0.2" in out


def test_compile_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps(dump_input(CompileInput(scenarios.dual_stack()))))
    assert main(["compile", "--state", str(state), "--node", "node-a", "--out", str(tmp_path / "out")]) == EXIT_OK
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["ip6tables.rules", "iproute-v4.batch", "iproute-v6.batch", "ipset.restore", "iptables.rules",
                     "nftables.json"]
    assert "iptables-restore --noflush" in capsys.readouterr().out


def test_single_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--format", "ip6tables"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.count("# ==> ") == 1 and "ip6tables.rules" in out


@pytest.mark.parametrize(("document", "message"), [
    ("{not json", "not valid JSON"),
    ('{"nodes": [{"name": "a"}], "policies": [{"name": "p", "gateway_node": "zz"}]}', "gateway node zz"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str], document: str,
                                          message: str) -> None:
    state = tmp_path / "state.json"
    state.write_text(document)
    assert main(["compile", "--state", str(state), "--node", "a"]) == EXIT_INVALID
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and message in captured.err


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", "--state", "/nonexistent/x.json", "--node", "a"]) == EXIT_INVALID
    assert "cannot read" in capsys.readouterr().err


def test_usage_error_exits_2() -> None:
    result = subprocess.run([sys.executable, "-m", "egress_rules.cli.main", "compile"], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "--state" in result.stderr


# ------------------------------------------------------------------ plan, collect, config, resources

BUNDLE_NAMES = {"iptables-save": "iptables-save.txt", "ip6tables-save": "ip6tables-save.txt",
                "ipset save": "ipset-save.txt", "ip -4 -j rule": "ip-rule-v4.json",
                "ip -6 -j rule": "ip-rule-v6.json", "ip -4 -j route": "ip-route-v4.json",
                "ip -6 -j route": "ip-route-v6.json"}


def _observed_dir(tmp_path: Path, node: object) -> Path:
    directory = tmp_path / "observed"
    directory.mkdir(exist_ok=True)
    for key, text in node.dumps().items():  # type: ignore[attr-defined]
        (directory / BUNDLE_NAMES[key]).write_text(text)
    return directory


def test_plan_exit_codes_and_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from egress_rules.backends import render_all
    from egress_rules.compiler import compile
    from tests.fakes import FakeNode

    state = tmp_path / "state.json"
    state.write_text(json.dumps(dump_input(CompileInput(scenarios.mixed_roles()))))
    node = FakeNode()
    args = ["plan", "--state", str(state), "--node", "node-b", "--observed", str(_observed_dir(tmp_path, node))]
    assert main(args) == 3
    captured = capsys.readouterr()
    assert "# ==> iptables.delta" in captured.out and "drift: missing" in captured.err
    node.apply(render_all(compile(scenarios.mixed_roles(), "node-b")))
    args[-1] = str(_observed_dir(tmp_path, node))
    assert main(args) == EXIT_OK
    assert capsys.readouterr().out == ""


def test_plan_reads_a_bundle_on_stdin(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from tests.fakes import FakeNode

    state = tmp_path / "state.json"
    state.write_text(json.dumps(dump_input(CompileInput(scenarios.one_policy()))))
    bundle = {BUNDLE_NAMES[k]: v for k, v in FakeNode().dumps().items()}
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(bundle)))
    assert main(["plan", "--state", str(state), "--node", "node-a", "--observed", "-"]) == 3
    assert "ipset-before.restore" in capsys.readouterr().out


def test_plan_names_missing_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps(dump_input(CompileInput(scenarios.one_policy()))))
    (tmp_path / "empty").mkdir()
    assert main(["plan", "--state", str(state), "--node", "node-a", "--observed", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "missing ip-route-v4.json" in err and "iptables-save > iptables-save.txt" in err


def test_collect_prints_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["collect", "--datapath", "nft", "--dir", "/tmp/x"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "nft -j list ruleset > /tmp/x/nft-ruleset.json" in out and "iptables-save" not in out


def test_settings_from_set_and_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text('{"tunnel_device": "vx0"}')
    assert main(["demo", "--config", str(settings), "--set", "tables.start=5000", "--set", "weave_no_snat=true",
                 "--format", "all"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "dev vx0 table 50" in out and "weave no snat" in out
    assert main(["demo", "--set", "tables.start=0"]) == EXIT_INVALID
    assert "config.tables.start" in capsys.readouterr().err
    assert main(["demo", "--set", "nonsense"]) == EXIT_INVALID


def test_compile_from_resources(capsys: pytest.CaptureFixture[str]) -> None:
    dump = Path(__file__).parent.parent / "examples" / "cluster" / "resources.json"
    assert main(["compile", "--resources", str(dump), "--node", "node-a", "--format", "iptables"]) == EXIT_OK
    assert "*mangle" in capsys.readouterr().out


def test_config_prints_the_effective_differences(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "--set", "keep_mark=0x13000000"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == {"keep_mark": 0x13000000}


def test_trace_explains_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "--src", "10.244.1.10", "--dst", "203.0.113.10", "--proto", "tcp", "--dport", "443",
                 "--brief"]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.rstrip().endswith("leaves with 192.0.2.50 (EIP of policy default/web via node-b)")
    assert "EGRESSGATEWAY-TO-" in out and "tunnel to node-b" in out


def test_trace_fail_on_leak_and_bad_packets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "--src", "10.244.1.10", "--dst", "2001:db8:ff::10"]) == EXIT_INVALID
    assert "different families" in capsys.readouterr().err
    assert main(["trace", "--src", "10.244.1.10", "--dst", "203.0.113.10", "--cni-other-backend",
                 "--fail-on-leak"]) == EXIT_OK


def test_trace_shows_the_tunnelled_flow_guard(capsys: pytest.CaptureFixture[str]) -> None:
    # A flow that went into the tunnel (connection keep mark) but is no longer marked: dropped, not leaked.
    assert main(["trace", "--src", "10.244.1.10", "--dst", "198.51.100.9", "--ct-mark", "0x12000000",
                 "--fail-on-leak"]) == 3
    out = capsys.readouterr().out
    assert "tunneled flow guard" in out and "LEAK" not in out
