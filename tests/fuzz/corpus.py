"""What the parser fuzzers feed and to what: targets, their seed files, and mutations of the seeds.

A :class:`Target` is one entry point that reads text someone else wrote (a tool's
dump, Kubernetes resources, the library's JSON input) together with the only
exception type it may raise. Seeds are real dumps captured from the tools
(``tests/data/observed``), the adapter's examples, and the library's own input.

Mutations are driven by a :class:`Chooser`, so the same code serves hypothesis
(which shrinks a failure to a small input) and atheris (coverage-guided). They
work on text (truncation, line deletion, duplication and swapping, inserted
quotes, separators and Unicode, changed numbers, flipped bytes) and, for JSON
seeds, on the decoded tree (a value replaced by a random one or by another
value of the same document, keys and items deleted or duplicated).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from egress_rules.adapters import load_resource_text
from egress_rules.backends import APPLY_ORDER, render_all
from egress_rules.compiler import compile
from egress_rules.errors import EgressRulesError, ParseError
from egress_rules.model.addresses import Family
from egress_rules.model.config import Config
from egress_rules.model.schema import CompileInput, dump_input, load_input
from egress_rules.observed import (
    Ownership,
    parse_ip_routes,
    parse_ip_rules,
    parse_ipset_save,
    parse_iptables_save,
    parse_nft_list,
)
from tests import scenarios

ROOT = Path(__file__).resolve().parent.parent.parent
OBSERVED = ROOT / "tests" / "data" / "observed"
RESOURCES = (ROOT / "tests" / "data" / "egressgateway" / "apiserver-list.json",
             ROOT / "tests" / "data" / "egressgateway" / "multi-doc.yaml",
             ROOT / "examples" / "cluster" / "resources.json",
             ROOT / "examples" / "cluster" / "resources.yaml")
OWNERSHIP = Ownership(Config())


class Chooser(Protocol):
    """The source of every decision a mutation takes."""

    def integer(self, low: int, high: int) -> int:
        """An integer in ``low..high`` (both included)."""
        ...

    def text(self, max_size: int) -> str:
        """Any text of at most ``max_size`` characters."""
        ...


T = TypeVar("T")


def choice(chooser: Chooser, items: Sequence[T]) -> T:
    return items[chooser.integer(0, len(items) - 1)]


@dataclass(frozen=True)
class Target:
    """An entry point for outside text: ``run`` it; only ``allowed`` (or nothing) may come out."""

    name: str
    run: Callable[[str], object]
    seeds: tuple[str, ...]
    allowed: type[EgressRulesError]
    json_seeds: bool


def _input_and_compile(text: str) -> object:
    """The library's JSON input (decoded by the caller, as the CLI does), then a compile and render of one node."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None  # the caller's JSON decoder refused it: not the library's input
    item = load_input(document)
    nodes = [node.name for node in item.state.nodes]
    if nodes:
        ruleset = compile(item.state, nodes[0], item.config, marks=item.mark_allocator(),
                          tables=item.table_allocator(nodes[0]))
        render_all(ruleset, (*APPLY_ORDER, "nft"))
    return item


def _resources_and_compile(text: str) -> object:
    result = load_resource_text(text)
    item = result.compile_input
    for node in item.state.nodes[:1]:
        ruleset = compile(item.state, node.name, item.config, marks=item.mark_allocator(),
                          tables=item.table_allocator(node.name))
        render_all(ruleset, (*APPLY_ORDER, "nft"))
    return result


def input_seeds() -> tuple[str, ...]:
    """The library's JSON input for every scenario, with allocations, as text."""
    return tuple(json.dumps(dump_input(CompileInput(make(), node_marks={"node-a": 0x26000100},
                                                    routing_tables={"node-a": {"node-b": 3001}},
                                                    tables_in_use={"node-a": frozenset({3000})})))
                 for _, make in sorted(scenarios.SCENARIOS.items()) if _ != "hundred-policies")


def _read(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple((OBSERVED / name).read_text() for name in names)


IPTABLES_DUMPS = ("iptables-save.nft.txt", "iptables-save.legacy.txt", "ip6tables-save.nft.txt")
NFT_DUMPS = ("nft-list.json", "nft-list-table.json", "nft-forms.list.json", "nft-forms.input.json")

TARGETS: dict[str, Target] = {target.name: target for target in (
    Target("iptables-save", lambda t: parse_iptables_save(t, Family.IPV4, OWNERSHIP),
           _read(IPTABLES_DUMPS), ParseError, False),
    Target("ip6tables-save", lambda t: parse_iptables_save(t, Family.IPV6, OWNERSHIP),
           _read(IPTABLES_DUMPS), ParseError, False),
    Target("ipset-save", lambda t: parse_ipset_save(t, OWNERSHIP), _read(("ipset-save.txt",)), ParseError, False),
    Target("ip-rule-v4", lambda t: parse_ip_rules(t, Family.IPV4, OWNERSHIP),
           _read(("ip-rule.v4.json", "ip-rule.v6.json")), ParseError, True),
    Target("ip-rule-v6", lambda t: parse_ip_rules(t, Family.IPV6, OWNERSHIP),
           _read(("ip-rule.v6.json", "ip-rule.v4.json")), ParseError, True),
    Target("ip-route-v4", lambda t: parse_ip_routes(t, Family.IPV4, OWNERSHIP),
           _read(("ip-route.v4.json", "ip-route.v6.json")), ParseError, True),
    Target("ip-route-v6", lambda t: parse_ip_routes(t, Family.IPV6, OWNERSHIP),
           _read(("ip-route.v6.json", "ip-route.v4.json")), ParseError, True),
    Target("nft-list", lambda t: parse_nft_list(t, OWNERSHIP), _read(NFT_DUMPS), ParseError, True),
    Target("resources", _resources_and_compile, tuple(p.read_text() for p in RESOURCES), EgressRulesError, True),
    Target("input", _input_and_compile, input_seeds(), EgressRulesError, True),
)}

# ------------------------------------------------------------------ mutations

FRAGMENTS = (
    '"', "'", "\\", '\\"', "\n", "\r", "\r\n", "\x00", "\t", " ", "#", "*", ":", "/", "-", "!", "@", "&", "|",
    "{", "}", "[", "]", ",", "null", "true", '""', "[]", "{}",
    "\u2028", "\u2029", "\x85", "\x1c", "\x0b", "\xa0", "\u3000", "\u202e", "\u200f", "\ufeff", "\ud800",
    "\U0001f600", "é", "ǅ", "²", "١", "０", "K", "ſ",
    "-A ", "-I ", "-D ", "-N ", "COMMIT", "*nat\n", "*filter\n", "*mangle\n", ":X - [0:0]\n", "[0:0] ",
    "-m comment --comment ", "-m mark --mark ", "-m set --match-set ", "-j ACCEPT", "-j MARK --set-xmark ", "-g ",
    "! ", "-j SNAT --to-source ", "egress-rules:", '"egress-rules: x"', "EGRESSGATEWAY-MARK-REQUEST",
    "EGRESSGATEWAY-TO-26000100", "PREROUTING", "create ", "add ", "swap ", "destroy ", "hash:net ", "family inet ",
    "maxelem ", "egress-cluster-cidr-v4", "egress-src4-7a25c12f339d682eca0", "egress_rules", "metainfo",
    '"json_schema_version":1', '"nftables":', '"table":', '"chain":', '"rule":', '"set":', '"expr":', '"handle":',
    '{"payload":1}', '{"meta":{"key":"mark"}}', "---\n", "- ", "&a ", "*a ", "!!str ", "<<: ", "? ", "%YAML 1.1\n",
    "apiVersion: ", "kind: List\n", "items:\n", "metadata:\n", "  name: ",
)
NUMBERS = (
    "0", "-1", "1", "99", "230", "65536", "4294967295", "4294967296", "18446744073709551616", "9" * 5000, "0x",
    "0x1", "0xffffffff", "0x1ffffffff", "1e999", "1.5", "-0", "00", "NaN", "Infinity", "²", "١٢", "０", "",
)
_NUMBER = re.compile(r"\d+")


def mutate_text(text: str, chooser: Chooser) -> str:
    """One random edit of ``text``."""
    op = chooser.integer(0, 10)
    size = len(text)
    at = chooser.integer(0, size)
    lines = text.split("\n")
    if op == 0:  # truncation
        return text[:at]
    if op in (1, 2, 3):
        i, j = chooser.integer(0, len(lines) - 1), chooser.integer(0, len(lines) - 1)
        if op == 1:  # delete a run of lines
            del lines[min(i, j):max(i, j) + 1]
        elif op == 2:  # duplicate a line elsewhere
            lines.insert(j, lines[i])
        else:  # swap two lines
            lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines)
    if op == 4:  # insert a fragment
        return text[:at] + choice(chooser, FRAGMENTS) + text[at:]
    if op == 5:  # insert any text
        return text[:at] + chooser.text(12) + text[at:]
    if op == 6:  # change a number
        numbers = list(_NUMBER.finditer(text))
        if not numbers:
            return text
        found = choice(chooser, numbers)
        return text[:found.start()] + choice(chooser, NUMBERS) + text[found.end():]
    if op == 7:  # replace a character
        return text[:at] + choice(chooser, FRAGMENTS) + text[at + 1:]
    if op == 8:  # flip a byte of the UTF-8 form
        data = bytearray(text.encode("utf-8", "surrogatepass"))
        if not data:
            return text
        index = chooser.integer(0, len(data) - 1)
        data[index] ^= 1 << chooser.integer(0, 7)
        return bytes(data).decode("utf-8", "surrogateescape")
    end = chooser.integer(at, size)
    if op == 9:  # duplicate a slice
        return text[:end] + text[at:end] + text[end:]
    return text[:at] + text[end:]  # delete a slice


def random_json(chooser: Chooser, keys: list[str], leaves: list[Any], depth: int = 0) -> Any:
    """A JSON value; keys and leaves are often taken from the seed, so the value looks almost right."""
    kind = chooser.integer(0, 9 if depth < 3 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return bool(chooser.integer(0, 1))
    if kind == 2:
        return choice(chooser, (0, -1, 1, 2**31, 2**32, 2**64, 10**30, 0.5, -(2**63)))
    if kind == 3:
        return chooser.text(8)
    if kind in (4, 5):
        return choice(chooser, leaves) if leaves else None
    if kind in (6, 7):
        return [random_json(chooser, keys, leaves, depth + 1) for _ in range(chooser.integer(0, 3))]
    return {(choice(chooser, keys) if keys and chooser.integer(0, 3) else chooser.text(6)):
            random_json(chooser, keys, leaves, depth + 1) for _ in range(chooser.integer(0, 3))}


def _slots(document: Any) -> tuple[list[tuple[Any, Any]], list[str], list[Any]]:
    """Every (container, key-or-index) of ``document``, every key, every leaf value (iteratively: no recursion)."""
    slots: list[tuple[Any, Any]] = []
    keys: list[str] = []
    leaves: list[Any] = []
    pending = [document]
    while pending:
        node = pending.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            slots.append((node, key))
            if isinstance(key, str):
                keys.append(key)
            if isinstance(value, (dict, list)):
                pending.append(value)
            else:
                leaves.append(value)
    return slots, keys, leaves


def mutate_json(text: str, chooser: Chooser) -> str:
    """One random edit of the decoded document, encoded again; a text edit if ``text`` is not JSON."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return mutate_text(text, chooser)
    slots, keys, leaves = _slots(document)
    if not slots:
        return mutate_text(text, chooser)
    container, key = choice(chooser, slots)
    op = chooser.integer(0, 6)
    if op == 0:
        del container[key]
    elif op == 1:
        container[key] = random_json(chooser, keys, leaves)
    elif op == 2:  # a value from elsewhere in the document: the right shape in the wrong place
        other, other_key = choice(chooser, slots)
        container[key] = json.loads(json.dumps(other[other_key]))
    elif op == 3 and isinstance(container, list):
        container.insert(key, json.loads(json.dumps(container[key])))
    elif op == 4:
        container[key] = [container[key]] if not keys or chooser.integer(0, 1) else \
            {choice(chooser, keys): container[key]}
    elif op == 5 and isinstance(container[key], (int, float)) and not isinstance(container[key], bool):
        container[key] = choice(chooser, (str(container[key]), -container[key], container[key] + 1, 2**64, 0.5))
    else:
        container[key] = choice(chooser, FRAGMENTS) if chooser.integer(0, 1) else chooser.text(10)
    return json.dumps(document, ensure_ascii=bool(chooser.integer(0, 1)))


def mutate(target: Target, chooser: Chooser) -> str:
    """A seed of ``target`` after one edit (half of the time: it often still parses) or two to six.

    JSON seeds get mostly tree edits, text edits otherwise.
    """
    text = choice(chooser, target.seeds)
    for _ in range(1 if chooser.integer(0, 1) else chooser.integer(2, 6)):
        text = mutate_json(text, chooser) if target.json_seeds and chooser.integer(0, 2) else \
            mutate_text(text, chooser)
    return text


def check(target: Target, text: str) -> str:
    """Run ``target`` on ``text``: the outcome's name, or the exception it must not raise propagates.

    An allowed error must still be one printable line (it quotes the input).
    """
    try:
        target.run(text)
    except target.allowed as error:
        message = str(error)
        if not message.isprintable():
            raise AssertionError(f"{type(error).__name__} message is not one printable line: {message!r}") from error
        return type(error).__name__
    return "accepted"
