"""``egress-rules``: compile policies for a node and print or write the outputs.

Exit codes: 0 success; 1 invalid input (one line on stderr naming the object at
fault); 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from egress_rules.backends import APPLY_ORDER, Output, render_all
from egress_rules.compiler import compile
from egress_rules.demo import DEMO_NODE, demo_state
from egress_rules.errors import EgressRulesError
from egress_rules.model.schema import CompileInput, load_input

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2

ALL_FORMATS = (*APPLY_ORDER, "nft")
FORMATS = (*ALL_FORMATS, "all")


def _formats(value: str) -> tuple[str, ...]:
    return ALL_FORMATS if value == "all" else (value,)


def _emit(outputs: Sequence[Output], out_dir: Path | None) -> None:
    if out_dir is None:
        for output in outputs:
            sys.stdout.write(f"# ==> {output.name} (apply with: {output.command})\n{output.text}\n")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for output in outputs:
        (out_dir / output.name).write_text(output.text)
        sys.stdout.write(f"{out_dir / output.name}\t{output.command}\n")


def _compile_and_emit(item: CompileInput, node: str, fmt: str, out_dir: Path | None) -> None:
    ruleset = compile(item.state, node, item.config, marks=item.mark_allocator(),
                      tables=item.table_allocator(node))
    outputs = render_all(ruleset, _formats(fmt))
    for warning in (*ruleset.warnings, *(note for output in outputs for note in output.notes)):
        sys.stderr.write(f"egress-rules: warning: {warning}\n")
    _emit(outputs, out_dir)


def _read_json(path: str) -> object:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise EgressRulesError(path, f"cannot read: {error.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise EgressRulesError(path, f"not valid JSON: {error}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egress-rules",
        description="Compile Kubernetes egress-gateway policies into iptables, ipset, nftables and ip-rule text for "
                    "one node. Nothing is applied: the outputs are printed (or written with --out) for you to "
                    "apply, either ipset + iptables + ip6tables + iproute, or nft + iproute.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", choices=FORMATS, default="all",
                       help="which output to produce (default: all). Apply ONE datapath: ipset, iptables, "
                            "ip6tables, iproute in that order; or nft, then iproute")
        p.add_argument("--out", type=Path, metavar="DIR",
                       help="write one file per output into DIR (names: ipset.restore, iptables.rules, "
                            "ip6tables.rules, iproute-v4.batch, iproute-v6.batch, nftables.json) instead of printing")

    demo = sub.add_parser("demo", help="compile the built-in three-node dual-stack demo cluster",
                          description="Compile the built-in demo cluster (nodes node-a, node-b, node-c; four "
                                      "policies) for one node and print every output.")
    demo.add_argument("--node", default=DEMO_NODE, help=f"the local node (default: {DEMO_NODE})")
    common(demo)

    comp = sub.add_parser("compile", help="compile a cluster state file for one node",
                          description="Compile the library's JSON input (see docs/input-schema.md) for one node.")
    comp.add_argument("--state", required=True, metavar="FILE", help="input JSON file, or - for stdin")
    comp.add_argument("--node", required=True, help="the local node")
    common(comp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            _compile_and_emit(CompileInput(demo_state()), args.node, args.format, args.out)
        else:
            _compile_and_emit(load_input(_read_json(args.state)), args.node, args.format, args.out)
    except EgressRulesError as error:
        sys.stderr.write(f"egress-rules: error: {error}\n")
        return EXIT_INVALID
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
