"""No partial output: an error anywhere gives one typed error and nothing to apply.

A rule file is applied as a whole; half of one (or some of the files of a
render) would leave a node between two datapaths. So ``render_all``,
``render_plan`` and the CLI either produce every output or raise a single
:class:`~egress_rules.errors.EgressRulesError`, and the CLI writes no file
into ``--out`` unless it can write them all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import attrs
import pytest

from egress_rules.backends import APPLY_ORDER, render_all
from egress_rules.backends.nftables import NftablesBackend
from egress_rules.cli.main import main
from egress_rules.compiler import compile
from egress_rules.errors import UnsupportedError
from egress_rules.model.addresses import Family
from egress_rules.model.config import Config
from egress_rules.model.ruleset import Accept, NetfilterTable, RuleSet
from egress_rules.model.schema import CompileInput, dump_input
from egress_rules.plan import plan, render_plan
from tests.fakes.node import FakeNode
from tests.test_hardening_limits import big_state
from tests.test_hardening_render import build_config, build_state

ALL = (*APPLY_ORDER, "nft")


def _ruleset() -> RuleSet:
    return compile(build_state({}), "node-a", build_config({}))


def _last_ip6_rule_changed(ruleset: RuleSet, **changes: Any) -> RuleSet:
    """The ruleset with the last rule of the IPv6 nat chains changed: rendered late in every order."""
    families = []
    for rules in ruleset.families:
        if rules.family is not Family.IPV6:
            families.append(rules)
            continue
        chains = [attrs.evolve(chain, rules=(*chain.rules[:-1], attrs.evolve(chain.rules[-1], **changes)))
                  if chain.table is NetfilterTable.NAT and chain.rules else chain for chain in rules.chains]
        families.append(attrs.evolve(rules, chains=tuple(chains)))
    return attrs.evolve(ruleset, families=tuple(families))


@attrs.frozen
class Teleport:
    """An action no backend knows."""


@pytest.mark.parametrize(("changes", "formats"), [
    ({"comment": 'x" -j ACCEPT\n-A INPUT -j DROP'}, APPLY_ORDER),  # the iptables backend cannot quote it
    ({"comment": "a\ud800"}, ALL),  # no UTF-8 form
    ({"comment": "nul\x00"}, ("iproute", "nft")),  # nft refuses the whole batch
    ({"action": Teleport()}, APPLY_ORDER),
    ({"action": Teleport()}, ("nft",)),
])
def test_a_bad_rule_anywhere_makes_the_whole_render_one_typed_error(changes: dict[str, Any],
                                                                    formats: tuple[str, ...]) -> None:
    ruleset = _last_ip6_rule_changed(_ruleset(), **changes)
    assert render_all(_ruleset(), formats)  # the same formats render without the change
    with pytest.raises(UnsupportedError) as info:
        render_all(ruleset, formats)
    assert str(info.value).isprintable()


def test_strict_nft_refuses_instead_of_noting() -> None:
    ruleset = _ruleset()
    assert any(isinstance(h.rule.action, Accept) for r in ruleset.families for h in r.hooks)
    with pytest.raises(UnsupportedError, match="keep-mark accepts"):
        NftablesBackend(strict=True).render(ruleset)


def test_a_set_over_the_limit_stops_the_render_and_the_plan() -> None:
    config = Config(ipv6=False, ipset_maxelem_limit=65536)
    ruleset = compile(big_state(65_537), "node-a", config)
    for formats in (APPLY_ORDER, ("iptables", "iproute", "ipset")):
        with pytest.raises(UnsupportedError, match="maxelem limit"):
            render_all(ruleset, formats)
    with pytest.raises(UnsupportedError, match="maxelem limit"):
        render_plan(plan(ruleset, FakeNode().observe(config)), config)


# ------------------------------------------------------------------ the CLI


def _state_file(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "state.json"
    document = dump_input(CompileInput(big_state(count), Config(ipv6=False, ipset_maxelem_limit=65536)))
    path.write_text(json.dumps(document))
    return path


def test_the_cli_writes_nothing_when_a_render_fails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["compile", "--state", str(_state_file(tmp_path, 65_537)), "--node", "node-a", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert captured.err.count("\n") == 1 and "maxelem limit" in captured.err
    assert not out.exists()


def test_the_cli_writes_all_files_or_none(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: a file that could not be written (here a directory in the way) left the earlier ones written."""
    out = tmp_path / "out"
    (out / "iptables.rules").mkdir(parents=True)
    (out / "ipset.restore").write_text("old\n")
    code = main(["demo", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == ""
    assert "egress-rules: error:" in captured.err and "Traceback" not in captured.err
    assert sorted(os.listdir(out)) == ["ipset.restore", "iptables.rules"]
    assert (out / "ipset.restore").read_text() == "old\n"  # untouched, not the new render
    (out / "iptables.rules").rmdir()
    assert main(["demo", "--out", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["ip6tables.rules", "iproute-v4.batch", "iproute-v6.batch", "ipset.restore",
                                       "iptables.rules", "nftables.json"]  # and no scratch file left behind
    assert (out / "ipset.restore").read_text() != "old\n"


def test_the_cli_reports_an_unwritable_out_directory_as_one_line(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["demo", "--out", str(blocker / "sub")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("egress-rules: warning:")]
    assert len(errors) == 1 and errors[0].startswith("egress-rules: error:") and "Not a directory" in errors[0]
