"""Coverage-guided fuzzing of the parsers and input loaders with atheris (libFuzzer).

Run from the repository root (atheris needs ``pip install atheris``; it is not
a test dependency)::

    python -m tests.fuzz.fuzz_parsers --target nft-list --runs 200000
    python -m tests.fuzz.fuzz_parsers --target all --runs 20000 -- -max_len=65536

``--target`` is one of :data:`tests.fuzz.corpus.TARGETS` or ``all`` (each
target in turn, ``--runs`` inputs each). Every input is a seed of the target
(the real dumps in ``tests/data/observed``, the adapter's examples, the
library's input) mutated by :func:`tests.fuzz.corpus.mutate`, with atheris
choosing the mutations from its coverage feedback. Any exception other than
the target's allowed error (``ParseError``, or ``EgressRulesError`` for the
loaders), or an allowed error whose message is not one printable line, stops
the run with the input that caused it (libFuzzer writes it to ``crash-*``).
The exit status is 0 when every run passed. Arguments after ``--`` go to
libFuzzer as they are.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from typing import Any

TARGET_NAMES = ("input", "ip-route-v4", "ip-route-v6", "ip-rule-v4", "ip-rule-v6", "ip6tables-save", "ipset-save",
                "iptables-save", "nft-list", "resources")


class _Provider:
    """A :class:`tests.fuzz.corpus.Chooser` over atheris' FuzzedDataProvider."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider

    def integer(self, low: int, high: int) -> int:
        return int(self.provider.ConsumeIntInRange(low, high))

    def text(self, max_size: int) -> str:
        return str(self.provider.ConsumeUnicode(self.provider.ConsumeIntInRange(0, max_size)))


def fuzz(atheris: Any, name: str, runs: int, libfuzzer_args: list[str]) -> None:
    """Fuzz one target in this process (libFuzzer exits when the runs are done or on the first failure)."""
    with atheris.instrument_imports(include=["egress_rules", "tests.fuzz"]):
        corpus = importlib.import_module("tests.fuzz.corpus")
    target = corpus.TARGETS[name]

    def one_input(data: bytes) -> None:
        text = corpus.mutate(target, _Provider(atheris.FuzzedDataProvider(data)))
        try:
            corpus.check(target, text)
        except BaseException:
            sys.stderr.write(f"\n=== {name} failed on this text (keep it as an @example once fixed):\n{text!r}\n")
            raise

    atheris.Setup([sys.argv[0], f"-runs={runs}", *libfuzzer_args], one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--target", default="all", choices=[*TARGET_NAMES, "all"])
    parser.add_argument("--runs", type=int, default=10_000, help="inputs per target (default: 10000)")
    parser.add_argument("libfuzzer", nargs="*", help="arguments for libFuzzer, after --")
    args = parser.parse_args(argv)
    try:
        atheris = importlib.import_module("atheris")
    except ImportError:
        sys.stderr.write("atheris is not installed: pip install atheris\n")
        return 2
    if args.target != "all":
        fuzz(atheris, args.target, args.runs, args.libfuzzer)
        return 0
    # libFuzzer fuzzes one function per process and exits when done: one child process per target.
    for name in TARGET_NAMES:
        print(f"== {name}", flush=True)
        command = [sys.executable, "-m", "tests.fuzz.fuzz_parsers", "--target", name, "--runs", str(args.runs),
                   "--", *args.libfuzzer]
        if subprocess.run(command, check=False).returncode != 0:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
