"""What the library owns, decided by explicit markers only, never by guessing.

* iptables: the configured chain names, gateway chains named by a valid node
  mark, and rules in built-in chains whose comment starts with ``<owner>:``.
* ipset: the cluster and scratch sets by exact name, and policy sets whose
  name carries a valid ownership check (so another tool's ``egress-...`` set is not ours).
* ip rules and routes: the configured ``protocol`` number.
"""

from __future__ import annotations

import re

import attrs

from egress_rules.compiler import naming
from egress_rules.model.config import Config

# Names ``ip`` prints instead of numbers (/etc/iproute2/rt_protos on Debian 12).
RT_PROTOCOL_NAMES = {
    "unspec": 0, "redirect": 1, "kernel": 2, "boot": 3, "static": 4, "gated": 8, "ra": 9, "mrt": 10, "zebra": 11,
    "bird": 12, "dnrouted": 13, "xorp": 14, "ntk": 15, "dhcp": 16, "keepalived": 18, "babel": 42, "openr": 99,
    "bgp": 186, "isis": 187, "ospf": 188, "rip": 189, "eigrp": 192,
}


def protocol_number(value: object) -> int | None:
    """The numeric routing protocol of an ``ip -j`` ``protocol`` field, if it has one."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        if value.isascii() and value.isdigit():  # not '²', and never more digits than int() accepts
            return int(value) if len(value) <= 10 else None
        if value.startswith("0x"):
            try:
                return int(value, 16)
            except ValueError:
                return None
        return RT_PROTOCOL_NAMES.get(value)
    return None


@attrs.frozen
class Ownership:
    """Ownership tests for one configuration."""

    config: Config

    @property
    def marker(self) -> str:
        return f"{self.config.owner}:"

    def owns_chain(self, name: str) -> bool:
        chains = self.config.chains
        if name in (chains.reset_mark, chains.mark_request, chains.no_snat, chains.snat_eip):
            return True
        suffix = name[len(chains.gateway_prefix):]
        if not name.startswith(chains.gateway_prefix) or not re.fullmatch(r"[0-9A-F]{8}", suffix):
            return False
        return self.config.mark_layout.value_of(int(suffix, 16)) is not None

    def owns_comment(self, comment: str | None) -> bool:
        return comment is not None and comment.startswith(self.marker)

    def owns_set(self, name: str) -> bool:
        return naming.is_owned_set(self.config, name)

    def owns_protocol(self, value: object) -> bool:
        return protocol_number(value) == self.config.route_protocol
