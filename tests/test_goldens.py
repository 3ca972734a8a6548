"""Golden files: every backend's output for every scenario and node.

Regenerate with ``pytest tests/test_goldens.py --update-goldens`` and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from egress_rules.backends import APPLY_ORDER, render_all
from egress_rules.backends.base import Output
from egress_rules.compiler import compile
from tests.scenarios import SCENARIOS

GOLDENS = Path(__file__).parent / "goldens"
NODES = ("node-a", "node-b", "node-c")


def check_goldens(directory: Path, outputs: tuple[Output, ...], update: bool) -> None:
    """Compare ``outputs`` with the files in ``directory``, or rewrite them when ``update``."""
    if update:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.iterdir():
            stale.unlink()
        for output in outputs:
            (directory / output.name).write_text(output.text)
        return
    expected = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
    assert sorted(o.name for o in outputs) == expected, "outputs differ from goldens; run with --update-goldens"
    where = directory.relative_to(GOLDENS)
    for output in outputs:
        assert output.text == (directory / output.name).read_text(), f"{where}/{output.name}"


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("node", NODES)
def test_golden(scenario: str, node: str, update_goldens: bool) -> None:
    outputs = render_all(compile(SCENARIOS[scenario](), node), (*APPLY_ORDER, "nft"))
    check_goldens(GOLDENS / scenario / node, outputs, update_goldens)


EXAMPLE = Path(__file__).parent.parent / "examples" / "cluster" / "resources.json"


@pytest.mark.parametrize("node", NODES)
def test_golden_of_the_example_resource_dump(node: str, update_goldens: bool) -> None:
    """The example cluster's kubectl dump, read by the resource adapter, compiled for each node."""
    from egress_rules.adapters import load_resource_text

    item = load_resource_text(EXAMPLE.read_text(), source=str(EXAMPLE)).compile_input
    ruleset = compile(item.state, node, item.config, marks=item.mark_allocator(), tables=item.table_allocator(node))
    outputs = render_all(ruleset, (*APPLY_ORDER, "nft"))
    check_goldens(GOLDENS / "example-resources" / node, outputs, update_goldens)
