"""A fake ``ip``: ``-batch`` of rule add/del and route replace/del, and ``-j`` dumps."""

from __future__ import annotations

import json
import shlex
from typing import Any

import attrs

from egress_rules.model.addresses import Cidr, Family, parse_cidr
from tests.fakes.ipset import ToolError

_DEFAULT_RULES = {Family.IPV4: [(0, "local"), (32766, "main"), (32767, "default")],
                  Family.IPV6: [(0, "local"), (32766, "main")]}


@attrs.define
class FakeRule:
    priority: int
    fwmark: int | None
    fwmask: int | None
    table: str
    protocol: str | None
    extra: dict[str, Any] = attrs.field(factory=dict)

    def as_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {"priority": self.priority, "src": "all", **self.extra}
        if self.fwmark is not None:
            item["fwmark"] = f"{self.fwmark:#x}"
            if self.fwmask is not None and self.fwmask != 0xFFFFFFFF:
                item["fwmask"] = f"{self.fwmask:#x}"
        item["table"] = self.table
        if self.protocol is not None:
            item["protocol"] = self.protocol
        return item


@attrs.define
class FakeRoute:
    table: str
    dst: Cidr
    gateway: str | None
    dev: str | None
    protocol: str

    def as_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "unicast", "dst": "default" if self.dst.prefixlen == 0 else str(self.dst)}
        if self.gateway:
            item["gateway"] = self.gateway
        if self.dev:
            item["dev"] = self.dev
        if self.table != "main":
            item["table"] = self.table
        item["protocol"] = self.protocol
        item["flags"] = []
        return item


def _words_to_options(words: list[str]) -> dict[str, str]:
    return dict(zip(words[::2], words[1::2], strict=False))


def _selectors(options: dict[str, str]) -> dict[str, Any]:
    """``from``/``to`` of an ip rule as ``ip -j rule`` prints them (``src``/``srclen``, ``dst``/``dstlen``)."""
    selectors: dict[str, Any] = {}
    for option, key in (("from", "src"), ("to", "dst")):
        text = options.get(option, "all")
        if text != "all":
            cidr = parse_cidr(text)
            selectors[key] = cidr.address
            if not cidr.is_host:
                selectors[f"{key}len"] = cidr.prefixlen
    return selectors


class FakeIproute:
    """Rules and routes of both families; devices listed in ``devices`` exist."""

    def __init__(self, devices: tuple[str, ...] = ("eth0", "egress.vxlan")) -> None:
        self.devices = set(devices)
        self.rules: dict[Family, list[FakeRule]] = {
            f: [FakeRule(p, None, None, t, None) for p, t in _DEFAULT_RULES[f]] for f in Family}
        self.routes: dict[Family, list[FakeRoute]] = {f: [] for f in Family}

    def batch(self, family: Family, text: str) -> None:
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                self._command(family, shlex.split(line))
            except ToolError as error:
                raise ToolError(f"{error}\nCommand failed -:{number}") from None

    def _command(self, family: Family, words: list[str]) -> None:
        if words[:2] == ["rule", "add"] or words[:2] == ["rule", "del"]:
            options = _words_to_options(words[2:])
            mark_text = options.get("fwmark")
            mark = mask = None
            if mark_text:
                value, _, mask_text = mark_text.partition("/")
                mark, mask = int(value, 0), int(mask_text, 0) if mask_text else 0xFFFFFFFF
            rule = FakeRule(int(options.get("pref", options.get("priority", "0"))), mark, mask,
                            options.get("table", "main"), options.get("protocol"), _selectors(options))
            rules = self.rules[family]
            # As the kernel compares (add: "exists", del: what to delete), a from/to the command leaves out
            # matches any: "from all" collides with an existing "from 10.0.0.0/8" rule, not the other way round.
            same = [r for r in rules if (r.priority, r.fwmark, r.fwmask, r.table) ==
                    (rule.priority, rule.fwmark, rule.fwmask, rule.table)
                    and all(r.extra.get(k) == v for k, v in rule.extra.items())]
            if words[1] == "add":
                if same:
                    raise ToolError("RTNETLINK answers: File exists")
                rules.append(rule)
                rules.sort(key=lambda r: r.priority)
            else:
                if not same:
                    raise ToolError("RTNETLINK answers: No such file or directory")
                rules.remove(same[0])
        elif words[:2] in (["route", "replace"], ["route", "del"]):
            dst = Cidr(family, 0, 0) if words[2] == "default" else parse_cidr(words[2])
            if dst.family is not family:
                raise ToolError("Error: inet address is expected")
            options = _words_to_options(words[3:])
            table = options.get("table", "main")
            routes = self.routes[family]
            same_routes = [r for r in routes if r.table == table and r.dst == dst]
            if words[1] == "replace":
                if options.get("dev") not in self.devices:
                    raise ToolError(f"Cannot find device \"{options.get('dev')}\"")
                for old in same_routes:
                    routes.remove(old)
                routes.append(FakeRoute(table, dst, options.get("via"), options.get("dev"),
                                        options.get("proto", "boot")))
            else:
                if not same_routes:
                    raise ToolError("RTNETLINK answers: No such process")
                routes.remove(same_routes[0])
        else:
            raise ToolError(f'Object "{words[0]}" is unknown or the command is not supported')

    def rule_json(self, family: Family) -> str:
        return json.dumps([r.as_json() for r in self.rules[family]])

    def route_json(self, family: Family) -> str:
        return json.dumps([r.as_json() for r in sorted(self.routes[family], key=lambda r: (r.table, r.dst))])
