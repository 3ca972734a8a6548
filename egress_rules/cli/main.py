"""``egress-rules``: compile, plan and explain a node's egress datapath from the command line.

Nothing is ever applied: outputs are printed, or written with ``--out``, for
you to apply in the order given. Exit codes: 0 success (for ``plan``: nothing
to do); 1 invalid input, one line on stderr naming the object at fault; 2
usage error; 3 ``plan`` found changes to apply.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from egress_rules.adapters import load_resource_text
from egress_rules.backends import APPLY_ORDER, Output, render_all
from egress_rules.compiler import compile
from egress_rules.demo import DEMO_NODE, demo_state
from egress_rules.errors import EgressRulesError
from egress_rules.model.ruleset import CtDirection, RuleSet
from egress_rules.model.schema import CompileInput, dump_config, load_config, load_input
from egress_rules.observed.bundle import DATAPATHS, bundle_files, collect_commands, load_bundle
from egress_rules.plan import plan, render_plan
from egress_rules.tracer import ClusterOutcome, Packet, example_environments, format_cluster_trace, trace_cluster
from egress_rules.tracer.example import POD_BRIDGE

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_CHANGES = 3

ALL_FORMATS = (*APPLY_ORDER, "nft")
FORMATS = (*ALL_FORMATS, "all")

EPILOG = """\
exit status: 0 success (plan: nothing to do), 1 invalid input, 2 usage error, 3 plan found changes
(trace --fail-on-leak: the packet leaked or was dropped).

examples:
  egress-rules demo --node node-b
  egress-rules compile --state cluster.json --node node-a --out /tmp/egress
  egress-rules compile --resources dump.yaml --node node-a --set tunnel_device=flannel.1 --format nft
  egress-rules collect --datapath iptables > collect.sh      # run on the node, as root
  egress-rules plan --state cluster.json --node node-a --observed observed/
  egress-rules trace --node node-a --src 10.244.1.10 --dst 203.0.113.10 --proto tcp --dport 443
"""


def _formats(value: str) -> tuple[str, ...]:
    return ALL_FORMATS if value == "all" else (value,)


def _write(outputs: Sequence[Output], out_dir: Path | None) -> None:
    """Print the outputs, or write them all; every output is already rendered, so nothing is half written."""
    for output in outputs:
        for note in output.notes:
            sys.stderr.write(f"egress-rules: warning: {output.name}: {note}\n")
    if out_dir is None:
        for output in outputs:
            sys.stdout.write(f"# ==> {output.name} (apply with: {output.command})\n{output.text}\n")
        return
    # Each file is written under a scratch name and renamed only once every file is written: a write that
    # fails (a full disk, a directory in the way) leaves no mix of new and old files behind.
    staged: list[tuple[Path, Path]] = []
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for output in outputs:
            scratch, final = out_dir / f".{output.name}.{os.getpid()}.tmp", out_dir / output.name
            if final.is_dir():  # the rename would fail after others were done
                raise EgressRulesError(str(final), "is a directory; no output was written")
            staged.append((scratch, final))
            scratch.write_text(output.text)
        for scratch, final in staged:
            scratch.replace(final)
    except OSError as error:
        raise EgressRulesError(str(out_dir), f"cannot write the outputs: {error}") from None
    finally:
        for scratch, _ in staged:
            scratch.unlink(missing_ok=True)
    for output in outputs:
        sys.stdout.write(f"{out_dir / output.name}\t{output.command}\n")


def _read_text(path: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as error:
        raise EgressRulesError(path, f"cannot read: {error.strerror}") from None
    except UnicodeDecodeError:
        raise EgressRulesError(path, "is not UTF-8 text") from None


def _read_json(path: str) -> object:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise EgressRulesError(path, f"not valid JSON: {error}") from None
    except (RecursionError, ValueError):
        # Nesting deeper than the decoder can follow, or a number too long to convert.
        raise EgressRulesError(path, "JSON nested too deeply or with a number too long to read") from None


def _set_value(target: dict[str, Any], assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise EgressRulesError(f"--set {assignment}", "expected KEY=VALUE, e.g. tables.start=5000")
    try:
        value: Any = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    *parents, leaf = key.split(".")
    for part in parents:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise EgressRulesError(f"--set {assignment}", f"{part} is not a group of settings")
    target[leaf] = value


def _config_data(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    data = dict(base)
    if args.config:
        loaded = _read_json(args.config)
        if not isinstance(loaded, dict):
            raise EgressRulesError(args.config, "expected a JSON object of settings")
        data.update(loaded)
    for assignment in args.set or ():
        _set_value(data, assignment)
    return data


def _input(args: argparse.Namespace) -> CompileInput:
    """The compile input from --state or --resources, with --config and --set applied."""
    if getattr(args, "resources", None):
        config = load_config(_config_data(args, {}))
        result = load_resource_text(_read_text(args.resources), config, source=args.resources)
        for warning in result.warnings:
            sys.stderr.write(f"egress-rules: warning: {warning}\n")
        return result.compile_input
    if getattr(args, "state", None):
        document = _read_json(args.state)
        if isinstance(document, dict) and (args.config or args.set):
            document = {**document, "config": _config_data(args, document.get("config", {}))}
        return load_input(document)
    state = demo_state()
    return CompileInput(state, load_config(_config_data(args, {})))


def _compile(item: CompileInput, node: str) -> RuleSet:
    ruleset = compile(item.state, node, item.config, marks=item.mark_allocator(), tables=item.table_allocator(node))
    for warning in ruleset.warnings:
        sys.stderr.write(f"egress-rules: warning: {warning}\n")
    return ruleset


def _observed_bundle(path: str, datapath: str, item: CompileInput) -> dict[str, str]:
    names = bundle_files(datapath, item.config)
    if path == "-":
        document = _read_json("-")
        if not isinstance(document, dict) or not all(isinstance(v, str) for v in document.values()):
            raise EgressRulesError("-", "expected a JSON object mapping file names to the tools' output")
        return {str(k): v for k, v in document.items()}
    directory = Path(path)
    if not directory.is_dir():
        raise EgressRulesError(path, "is not a directory (write one with: egress-rules collect)")
    return {name: _read_text(str(directory / name)) for name in names if (directory / name).exists()}


def cmd_compile(args: argparse.Namespace) -> int:
    item = _input(args)
    _write(render_all(_compile(item, args.node), _formats(args.format)), args.out)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    item = _input(args)
    desired = _compile(item, args.node)
    observed = load_bundle(_observed_bundle(args.observed, args.datapath, item), args.datapath, item.config)
    result = plan(desired, observed)
    for note in result.notes:
        sys.stderr.write(f"egress-rules: note: {note}\n")
    for drift in result.drift:
        sys.stderr.write(f"egress-rules: drift: {drift}\n")
    outputs = render_plan(result, item.config)
    _write(outputs, args.out)
    return EXIT_CHANGES if outputs else EXIT_OK


def cmd_trace(args: argparse.Namespace) -> int:
    item = _input(args)
    rulesets = {n.name: compile(item.state, n.name, item.config, marks=item.mark_allocator(),
                                tables=item.table_allocator(n.name)) for n in item.state.nodes}
    if args.node not in rulesets:
        raise EgressRulesError(f"node {args.node}", "is not in the cluster state")
    envs = example_environments(item.state, item.config, cni_same_backend=not args.cni_other_backend)
    packet = Packet(args.src, args.dst, protocol=args.proto, sport=args.sport, dport=args.dport,
                    in_interface=None if args.local else args.in_interface, mark=args.mark, ct_mark=args.ct_mark,
                    ct_direction=CtDirection.REPLY if args.reply else CtDirection.ORIGINAL)
    result = trace_cluster(rulesets, envs, args.node, packet)
    sys.stdout.write(format_cluster_trace(result, misses=not args.brief) + "\n")
    if args.fail_on_leak and (result.leak or result.outcome is ClusterOutcome.DROPPED):
        return EXIT_CHANGES
    return EXIT_OK


def cmd_collect(args: argparse.Namespace) -> int:
    config = load_config(_config_data(args, {}))
    sys.stdout.write(collect_commands(args.datapath, config, args.dir))
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    item = _input(args)
    sys.stdout.write(json.dumps(dump_config(item.config), indent=2, sort_keys=True) + "\n")
    return EXIT_OK


def _add_config_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="JSON object of settings (the input schema's 'config')")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override one setting, e.g. tunnel_device=egress.vxlan, tables.start=5000, "
                        "keep_mark=0x12000000, ipv6=false (repeatable; applied after --config)")


def _add_input_options(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--state", metavar="FILE", help="the library's JSON input (docs/input-schema.md), - for stdin")
    source.add_argument("--resources", metavar="FILE",
                        help="kubectl get ... -o json|yaml of the egressgateway resources, - for stdin")
    p.add_argument("--node", required=True, help="the local node: the node the output is for")
    _add_config_options(p)


def _add_output_options(p: argparse.ArgumentParser, formats: bool = True) -> None:
    if formats:
        p.add_argument("--format", choices=FORMATS, default="all",
                       help="which output (default: all). Apply ONE datapath: ipset, iproute, iptables, "
                            "ip6tables, in that order; or iproute, then nft")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="write one file per output into DIR instead of printing (file names: ipset.restore, "
                        "iptables.rules, ip6tables.rules, iproute-v4.batch, iproute-v6.batch, nftables.json; "
                        "for plan: *.delta, ipset-before/after.restore, conntrack.commands)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egress-rules",
        description="Compile Kubernetes egress-gateway policies into the Linux datapath of one node: "
                    "iptables-restore text (IPv4, IPv6), ipset restore text, nftables JSON and ip -batch text. "
                    "Nothing is applied; you apply the outputs, in the order they are printed (ipset, iproute, "
                    "iptables, ip6tables; or iproute, nft).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="compile the built-in demo cluster",
                          description="Compile the built-in demo cluster (dual-stack nodes node-a, node-b, "
                                      "node-c; four policies) for one node and print every output.")
    demo.add_argument("--node", default=DEMO_NODE, help=f"the local node (default: {DEMO_NODE})")
    _add_config_options(demo)
    _add_output_options(demo)
    demo.set_defaults(run=cmd_compile)

    comp = sub.add_parser("compile", help="compile a cluster for one node (full install)",
                          description="Compile for one node. The output is a first install: re-applying it "
                                      "duplicates hook rules; use 'plan' to reconcile a node that has rules.")
    _add_input_options(comp)
    _add_output_options(comp)
    comp.set_defaults(run=cmd_compile)

    pl = sub.add_parser("plan", help="the minimal changes that bring a node to the desired state",
                        description="Compare the desired state with what the node has (the tools' output, "
                                    "collected with the commands 'egress-rules collect' prints) and print the "
                                    "changes, or nothing. Foreign rules, sets and routes are never touched.")
    _add_input_options(pl)
    pl.add_argument("--observed", required=True, metavar="DIR",
                    help="directory of the tools' output (see 'collect'), or - for a JSON object mapping those "
                         "file names to text on stdin")
    pl.add_argument("--datapath", choices=DATAPATHS, default="iptables",
                    help="which datapath the node uses (default: iptables)")
    _add_output_options(pl, formats=False)
    pl.set_defaults(run=cmd_plan)

    tr = sub.add_parser("trace", help="explain which address a packet leaves the cluster with, and why",
                        description="Follow one packet from a pod through every rule, ip rule and route of its "
                                    "node, through the egress tunnel and the gateway node, to where it leaves. "
                                    "Interfaces, node addresses and the CNI's masquerade come from an example "
                                    "environment (docs/tracer.md); the rules are the ones compiled for your input.")
    source = tr.add_mutually_exclusive_group()
    source.add_argument("--state", metavar="FILE", help="the library's JSON input (default: the demo cluster)")
    source.add_argument("--resources", metavar="FILE", help="kubectl get ... -o json|yaml of the resources")
    tr.add_argument("--node", default=DEMO_NODE, help=f"the node the packet starts on (default: {DEMO_NODE})")
    tr.add_argument("--src", required=True, help="source address (a pod's IP)")
    tr.add_argument("--dst", required=True, help="destination address")
    tr.add_argument("--proto", choices=("udp", "tcp", "icmp"), default="udp")
    tr.add_argument("--sport", type=int)
    tr.add_argument("--dport", type=int)
    tr.add_argument("--in-interface", default=POD_BRIDGE,
                    help=f"device the packet arrives on (default: {POD_BRIDGE}, the example's pod bridge)")
    tr.add_argument("--local", action="store_true", help="the node itself sends the packet (output path)")
    tr.add_argument("--mark", type=lambda v: int(v, 0), default=0, help="packet mark on arrival (default 0)")
    tr.add_argument("--ct-mark", type=lambda v: int(v, 0), default=0,
                    help="the connection's mark on the first node (default 0: a new connection; the keep mark "
                         "0x12000000: a flow that already went into the tunnel)")
    tr.add_argument("--reply", action="store_true", help="a packet of the reply direction (conntrack REPLY)")
    tr.add_argument("--cni-other-backend", action="store_true",
                    help="the CNI's masquerade lives in the other iptables backend (legacy vs nft)")
    tr.add_argument("--brief", action="store_true", help="leave out rules that did not match")
    tr.add_argument("--fail-on-leak", action="store_true",
                    help="exit 3 if the packet is dropped or leaves with the pod's own address")
    _add_config_options(tr)
    tr.set_defaults(run=cmd_trace)

    col = sub.add_parser("collect", help="print the commands that collect a node's state for 'plan'",
                         description="Print shell commands that save what 'plan --observed DIR' reads. "
                                     "Run them on the node as root.")
    col.add_argument("--datapath", choices=DATAPATHS, default="iptables")
    col.add_argument("--dir", default="observed", help="directory to write (default: observed)")
    _add_config_options(col)
    col.set_defaults(run=cmd_collect)

    cfg = sub.add_parser("config", help="print the effective settings that differ from the defaults")
    cfg.add_argument("--state", metavar="FILE")
    cfg.add_argument("--resources", metavar="FILE")
    _add_config_options(cfg)
    cfg.set_defaults(run=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except EgressRulesError as error:
        sys.stderr.write(f"egress-rules: error: {error}\n")
        return EXIT_INVALID
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); that is not an error of ours.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - replaces the broken stream until exit
        return EXIT_OK
    return code


if __name__ == "__main__":
    sys.exit(main())
