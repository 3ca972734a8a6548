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
