"""A fake ``iptables-restore --noflush`` and ``iptables-save`` (nf_tables variant).

Table blocks are atomic: an error discards the block and keeps earlier ones,
as the real tool does. Rule text is stored as given (the library writes the
forms ``iptables-save`` prints).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from egress_rules.observed.words import split_words
from tests.fakes.ipset import ToolError

BUILTIN = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}
TARGETS = {"ACCEPT", "DROP", "RETURN", "MARK", "SNAT", "DNAT", "MASQUERADE", "CONNMARK", "LOG", "REJECT"}

Chains = dict[str, list[str]]


class FakeIptables:
    """One family's tables; ``set_exists`` is asked for every ``--match-set``."""

    def __init__(self, ip6: bool = False) -> None:
        self.ip6 = ip6
        self.tables: dict[str, Chains] = {}
        self.set_exists: Callable[[str], bool] = lambda _name: True

    def _table(self, name: str) -> Chains:
        if name not in BUILTIN:
            raise ToolError(f"can't initialize iptables table `{name}': Table does not exist")
        if name not in self.tables:
            self.tables[name] = {chain: [] for chain in BUILTIN[name]}
        return self.tables[name]

    def restore(self, text: str) -> None:
        current: str | None = None
        work: Chains = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            try:
                if line.startswith("*"):
                    current = line[1:]
                    work = copy.deepcopy(self._table(current))
                elif current is None:
                    raise ToolError("no table specified")
                elif line == "COMMIT":
                    self.tables[current] = work
                    current = None
                elif line.startswith(":"):
                    name = line[1:].split()[0]
                    if len(name) > 28:
                        raise ToolError(f"chain name `{name}' too long (must be under 29 chars)")
                    if name not in BUILTIN[current]:
                        work[name] = []  # declaring a user chain creates or flushes it
                else:
                    self._command(work, split_words(line) or [])
            except ToolError as error:
                raise ToolError(f"line {number} failed: {error}") from None
        if current is not None:
            raise ToolError("COMMIT expected at line end of input")

    def _command(self, chains: Chains, words: list[str]) -> None:
        flag, chain, rest = words[0], words[1], words[2:]
        if chain not in chains:
            raise ToolError(f"Chain '{chain}' does not exist")
        rules = chains[chain]
        if flag == "-A":
            rules.append(self._rule(chains, rest))
        elif flag == "-I":
            position = int(rest[0])
            if not 1 <= position <= len(rules) + 1:
                raise ToolError("Index of insertion too big.")
            rules.insert(position - 1, self._rule(chains, rest[1:]))
        elif flag == "-R":
            position = int(rest[0])
            if not 1 <= position <= len(rules):
                raise ToolError("Index of replacement too big.")
            rules[position - 1] = self._rule(chains, rest[1:])
        elif flag == "-D":
            if len(rest) != 1 or not rest[0].isdigit():
                raise ToolError("the fake deletes by position only")
            position = int(rest[0])
            if not 1 <= position <= len(rules):
                raise ToolError("Index of deletion too big.")
            del rules[position - 1]
        elif flag == "-F":
            rules.clear()
        elif flag == "-X":
            if rules:
                raise ToolError("Directory not empty")
            if any(_target(r) == chain for rs in chains.values() for r in rs):
                raise ToolError("Too many links")
            del chains[chain]
        else:
            raise ToolError(f"unknown option {flag}")

    def _rule(self, chains: Chains, words: list[str]) -> str:
        for i, word in enumerate(words):
            if word == "--match-set" and not self.set_exists(words[i + 1]):
                raise ToolError(f"Set {words[i + 1]} doesn't exist.")
            if word in ("-j", "-g") and words[i + 1] not in TARGETS and words[i + 1] not in chains:
                raise ToolError(f"Couldn't load target `{words[i + 1]}'")
        return " ".join(f'"{w}"' if " " in w else w for w in words)

    def references_set(self, name: str) -> bool:
        return any(f"--match-set {name} " in rule for chains in self.tables.values()
                   for rules in chains.values() for rule in rules)

    def save(self) -> str:
        variant = "ip6tables" if self.ip6 else "iptables"
        lines = []
        for table in sorted(self.tables):
            chains = self.tables[table]
            lines.append(f"# Generated by {variant}-save v1.8.9 (nf_tables) on Thu Jan  1 00:00:00 1970")
            lines.append(f"*{table}")
            builtin = list(BUILTIN[table])
            user = sorted(c for c in chains if c not in BUILTIN[table])
            lines.extend(f":{c} ACCEPT [0:0]" for c in builtin)
            lines.extend(f":{c} - [0:0]" for c in user)
            for chain in (*builtin, *user):
                lines.extend(f"-A {chain} {rule}" for rule in chains[chain])
            lines.append("COMMIT")
            lines.append("# Completed on Thu Jan  1 00:00:00 1970")
        return "".join(f"{line}\n" for line in lines)


def _target(rule: str) -> str | None:
    words = split_words(rule) or []
    for i, word in enumerate(words[:-1]):
        if word in ("-j", "-g"):
            return words[i + 1]
    return None
