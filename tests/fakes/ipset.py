"""A fake ``ipset``: ``restore`` (line by line, not atomic) and ``save``."""

from __future__ import annotations

from collections.abc import Callable

import attrs

from egress_rules.model.addresses import Cidr, Family, parse_cidr


class ToolError(Exception):
    """What a real tool would print on stderr before exiting non-zero."""


@attrs.define
class FakeSet:
    set_type: str
    family: str
    hashsize: int
    maxelem: int
    members: set[Cidr]


class FakeIpset:
    """Holds sets; ``is_referenced`` is asked before a destroy (iptables rules naming the set)."""

    def __init__(self) -> None:
        self.sets: dict[str, FakeSet] = {}
        self.is_referenced: Callable[[str], bool] = lambda _name: False

    def restore(self, text: str) -> None:
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if line:
                try:
                    self._line(line.split())
                except ToolError as error:
                    raise ToolError(f"Error in line {number}: {error}") from None

    def _line(self, words: list[str]) -> None:
        exist = "-exist" in words
        words = [w for w in words if w != "-exist"]
        command, name = words[0], words[1] if len(words) > 1 else ""
        if len(name) > 31:
            raise ToolError(f"setname '{name}' is longer than 31 characters")
        if command == "create":
            options = dict(zip(words[3::2], words[4::2], strict=False))
            new = FakeSet(words[2], options.get("family", "inet"), int(options.get("hashsize", 1024)),
                          int(options.get("maxelem", 65536)), set())
            old = self.sets.get(name)
            if old is not None:
                if not exist:
                    raise ToolError("Set cannot be created: set with the same name already exists")
                if old.set_type != new.set_type or old.maxelem != new.maxelem:
                    raise ToolError("Set cannot be created: set with the same name already exists")
                return
            self.sets[name] = new
        elif command in ("add", "del"):
            ipset = self._get(name)
            cidr = parse_cidr(words[2])
            family = Family.IPV4 if ipset.family == "inet" else Family.IPV6
            if cidr.family is not family or cidr.prefixlen == 0:
                raise ToolError("The value of the CIDR parameter of the IP address is invalid")
            if command == "add":
                if cidr in ipset.members and not exist:
                    raise ToolError("Element cannot be added to the set: it's already added")
                if len(ipset.members) >= ipset.maxelem and cidr not in ipset.members:
                    raise ToolError("Hash is full, cannot add more elements")
                ipset.members.add(cidr)
            else:
                if cidr not in ipset.members and not exist:
                    raise ToolError("Element cannot be deleted from the set: it's not added")
                ipset.members.discard(cidr)
        elif command == "swap":
            first, second = self._get(name), self._get(words[2])
            if first.set_type != second.set_type or first.family != second.family:
                raise ToolError("The sets cannot be swapped: their type does not match")
            self.sets[name], self.sets[words[2]] = second, first
        elif command == "destroy":
            if name not in self.sets:
                if exist:
                    return
                raise ToolError("The set with the given name does not exist")
            if self.is_referenced(name):
                raise ToolError("Set cannot be destroyed: it is in use by a kernel component")
            del self.sets[name]
        elif command == "flush":
            self._get(name).members.clear()
        else:
            raise ToolError(f"Unknown command {command}")

    def _get(self, name: str) -> FakeSet:
        if name not in self.sets:
            raise ToolError("The set with the given name does not exist")
        return self.sets[name]

    def save(self) -> str:
        lines = []
        for name, ipset in self.sets.items():
            lines.append(f"create {name} {ipset.set_type} family {ipset.family} hashsize {ipset.hashsize} "
                         f"maxelem {ipset.maxelem} bucketsize 12 initval 0x5eed5eed")
            lines.extend(f"add {name} {m.host_str()}" for m in sorted(ipset.members))
        return "".join(f"{line}\n" for line in lines)
