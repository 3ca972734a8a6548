"""``ipset restore`` text for both families.

``ipset restore`` applies line by line, so a set is never filled in place: each
set is created if missing, then a scratch set is filled and swapped in
(``swap`` is atomic and works while iptables references the set), then the
scratch set is destroyed. ``hash:net`` rejects ``/0``, so a zero-length prefix
is written as its two halves. Sets must exist before iptables rules name them:
apply this output first.
"""

from __future__ import annotations

from egress_rules.backends.base import Output
from egress_rules.compiler import naming
from egress_rules.errors import UnsupportedError
from egress_rules.model.addresses import Family, split_zero_prefix
from egress_rules.model.ruleset import IPSet, RuleSet

DEFAULT_MAXELEM = 65536
HASHSIZE = 1024
COMMAND = "ipset restore"


def family_keyword(family: Family) -> str:
    return "inet" if family is Family.IPV4 else "inet6"


def maxelem_for(count: int, limit: int, subject: str) -> int:
    """ipset's default maxelem, or the next power of two that holds ``count`` entries."""
    if count > limit:
        raise UnsupportedError(subject, f"{count} entries exceed the configured ipset maxelem limit {limit}")
    maxelem = DEFAULT_MAXELEM
    while maxelem < count:
        maxelem *= 2
    return min(maxelem, limit)


def create_line(name: str, ipset: IPSet, maxelem: int, exist: bool) -> str:
    suffix = " -exist" if exist else ""
    return (f"create {name} hash:net family {family_keyword(ipset.family)} hashsize {HASHSIZE} "
            f"maxelem {maxelem}{suffix}")


def render_set(ipset: IPSet, temporary: str, limit: int) -> list[str]:
    """Lines that make the kernel set ``ipset.name`` hold exactly ``ipset.members``."""
    entries = split_zero_prefix(ipset.members)
    maxelem = maxelem_for(len(entries), limit, f"set {ipset.name}")
    lines = [create_line(ipset.name, ipset, maxelem, exist=True),
             create_line(temporary, ipset, maxelem, exist=False)]
    lines.extend(f"add {temporary} {entry.host_str()}" for entry in entries)
    lines.append(f"swap {temporary} {ipset.name}")
    lines.append(f"destroy {temporary}")
    return lines


class IpsetBackend:
    """``ipset restore`` text: every set of every family, each replaced atomically."""

    name = "ipset"

    def render(self, ruleset: RuleSet) -> tuple[Output, ...]:
        config = ruleset.config
        lines = [f"# {config.owner}: sets for node {ruleset.node}; apply with: {COMMAND} (before iptables)"]
        for rules in ruleset.families:
            temporary = naming.temporary_set_name(config, rules.family)
            lines.append(f"destroy {temporary} -exist")
            for ipset in rules.sets:
                lines.extend(render_set(ipset, temporary, config.ipset_maxelem_limit))
        return (Output("ipset.restore", COMMAND, "\n".join(lines) + "\n"),)
