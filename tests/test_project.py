"""The project's promises to a newcomer: the README's commands and what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)[:2]


def test_readme_starts_with_the_two_commands() -> None:
    demo, tests = readme_commands()
    assert "egress-rules demo" in demo and "pip install" in demo
    assert "pytest" in tests and "pip install" in tests
    assert (ROOT / "README.md").read_text().index("```sh") < 40


def test_ci_runs_the_readme_test_command() -> None:
    _, tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), "the test command in .ci/run must be the README's, verbatim"
    for package in ("iptables", "ipset", "nftables", "iproute2"):
        assert package in ci
    assert "apt-get update" in ci
