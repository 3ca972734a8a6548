"""The library next to the kernel tools, in one run on one machine.

For each size P it builds the gateway node's scenario (untimed), then times:

* library: compile + render of the iptables datapath (ipset, iptables, ip6tables,
  iproute), and the nft render, each as the median of several runs;
* kernel: applying those outputs in a fresh throwaway network namespace
  (``ipset restore`` + ``iptables-restore``, and ``nft -j -f``), median of runs;
* the naive f-string floor for the same lines, and output sizes against it;
* peak memory of compile + render (tracemalloc), to show it is linear in P.

It prints one table and the ratio library-time / kernel-time, the figure the
performance targets are stated in. Needs root and the tools for the kernel
columns; without them those columns say "n/a". Never touches the root
namespace: every apply runs inside ``ip netns exec`` of a namespace it creates
and deletes.

Usage: ``python -m benchmarks.side_by_side [P ...] [--runs N]``
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Callable
from pathlib import Path

from benchmarks import generate, naive
from egress_rules.backends import APPLY_ORDER, BACKENDS, render_all
from egress_rules.compiler import compile
from egress_rules.model.cluster import ClusterState

TIMEOUT = 300


def median_seconds(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        gc.collect()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def kernel_available() -> bool:
    tools = ("ip", "ipset", "iptables-restore", "nft")
    return os.geteuid() == 0 and all(shutil.which(t) for t in tools)


def _netns(*argv: str, stdin: Path | None = None, ns: str) -> None:
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as source:
        subprocess.run(["ip", "netns", "exec", ns, *argv], stdin=source, check=True, timeout=TIMEOUT,
                       capture_output=True)


def kernel_apply_seconds(files: dict[str, Path], commands: list[tuple[str, ...]], runs: int) -> float:
    """Median time to apply ``commands`` (argv, file key) in fresh namespaces; setup is not timed."""
    times = []
    for _ in range(runs):
        ns = f"egr-bench-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
        try:
            subprocess.run(["ip", "-n", ns, "link", "add", "egress.vxlan", "type", "vxlan", "id", "100",
                            "dstport", "7789"], check=True, timeout=30)
            started = time.perf_counter()
            for *argv, key in commands:
                _netns(*argv, stdin=files[key], ns=ns)
            times.append(time.perf_counter() - started)
        finally:
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)
    return statistics.median(times)


def peak_memory(state: ClusterState) -> int:
    tracemalloc.start()
    try:
        render_all(compile(state, generate.GATEWAY_NODE), (*APPLY_ORDER, "nft"))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure(policies: int, runs: int, kernel: bool) -> dict[str, float | int | str]:
    document = generate.state_dict(policies)
    state = generate.state(policies)
    ruleset = compile(state, generate.GATEWAY_NODE)
    row: dict[str, float | int | str] = {"P": policies}
    row["compile+render"] = median_seconds(lambda: render_all(compile(state, generate.GATEWAY_NODE)), runs)
    row["compile"] = median_seconds(lambda: compile(state, generate.GATEWAY_NODE), runs)
    row["nft render"] = median_seconds(lambda: BACKENDS["nft"].render(ruleset), runs)
    row["f-string floor"] = median_seconds(lambda: (naive.ipset_text(document), naive.iptables_text(document)), runs)
    outputs = {o.name: o.text for o in render_all(ruleset, (*APPLY_ORDER, "nft"))}
    row["ipset bytes"] = len(outputs["ipset.restore"])
    row["naive ipset bytes"] = len(naive.ipset_text(document))
    row["naive atomic ipset bytes"] = len(naive.ipset_swap_text(document))
    row["iptables bytes"] = len(outputs["iptables.rules"])
    row["naive iptables bytes"] = len(naive.iptables_text(document))
    row["nft bytes"] = len(outputs["nftables.json"])
    row["peak memory MiB"] = round(peak_memory(state) / 2**20, 1)
    if kernel:
        with tempfile.TemporaryDirectory() as tmp:
            files = {}
            for name, text in outputs.items():
                files[name] = Path(tmp, name)
                files[name].write_text(text)
            row["kernel ipset+iptables"] = kernel_apply_seconds(
                files, [("ipset", "restore", "ipset.restore"), ("iptables-restore", "--noflush", "iptables.rules"),
                        ("ip6tables-restore", "--noflush", "ip6tables.rules")], max(1, runs // 2))
            row["kernel nft"] = kernel_apply_seconds(files, [("nft", "-j", "-f", "-", "nftables.json")],
                                                     max(1, runs // 2))
        row["ratio iptables"] = f"{float(row['compile+render']) / float(row['kernel ipset+iptables']):.1%}"
        row["ratio nft"] = f"{float(row['nft render']) / float(row['kernel nft']):.1%}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1000, 5000])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    kernel = kernel_available()
    rows = [measure(p, args.runs, kernel) for p in args.sizes]
    keys = list(rows[0])
    for key in keys:
        cells = []
        for row in rows:
            value = row.get(key, "n/a")
            cells.append(f"{value:.4f}" if isinstance(value, float) else str(value))
        print(f"{key:26s} " + " ".join(f"{c:>14s}" for c in cells))
    if not kernel:
        print("kernel columns need root and ip, ipset, iptables-restore, nft")


if __name__ == "__main__":
    main()
