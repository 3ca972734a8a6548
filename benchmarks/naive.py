"""The naive equivalent the library is measured against: f-strings, no validation, no model.

It writes the same sets and the same policy rules for a gateway node as the
library does (including comments), straight from the input dicts, so its time
is the floor of what Python needs to produce those lines, and its size is the
size of output without redundant lines.
"""

from __future__ import annotations

import hashlib
from typing import Any


def _name(kind: str, policy: dict[str, Any]) -> str:
    digest = hashlib.sha256(f"{policy.get('namespace')}/{policy['name']}".encode()).hexdigest()
    return f"egress-{kind}4-{digest[:19]}"


def ipset_text(document: dict[str, Any]) -> str:
    """create + add per set, as a first install would write it (no scratch set, no swap)."""
    lines = []
    for policy in document["policies"]:
        for kind, entries in (("src", [s["cidr"] for s in policy["sources"]]), ("dst", policy["destinations"])):
            name = _name(kind, policy)
            lines.append(f"create {name} hash:net family inet hashsize 1024 maxelem 65536")
            lines.extend(f"add {name} {entry}" for entry in entries)
    return "\n".join(lines) + "\n"


def ipset_swap_text(document: dict[str, Any]) -> str:
    """The same sets, each replaced atomically through a scratch set (what an in-place update needs)."""
    lines = []
    for policy in document["policies"]:
        for kind, entries in (("src", [s["cidr"] for s in policy["sources"]]), ("dst", policy["destinations"])):
            name = _name(kind, policy)
            lines.append(f"create {name} hash:net family inet hashsize 1024 maxelem 65536 -exist")
            lines.append("create egress-tmp-v4 hash:net family inet hashsize 1024 maxelem 65536")
            lines.extend(f"add egress-tmp-v4 {entry}" for entry in entries)
            lines += [f"swap egress-tmp-v4 {name}", "destroy egress-tmp-v4"]
    return "\n".join(lines) + "\n"


# The rules every node carries, as the library writes them (not per policy).
_BASE_MANGLE = [
    ":EGRESSGATEWAY-RESET-MARK - [0:0]", ":EGRESSGATEWAY-MARK-REQUEST - [0:0]",
    '-A EGRESSGATEWAY-RESET-MARK -o egress.vxlan -m comment --comment "egress-rules: reset node mark" '
    "-m mark --mark 0x26000000/0xff000000 -j MARK --set-xmark 0x12000000/0xffffff00",
    '-A EGRESSGATEWAY-RESET-MARK -o egress.vxlan -m comment --comment "egress-rules: remember tunneled flow" '
    "-m mark --mark 0x12000000/0xffffff00 -j CONNMARK --set-xmark 0x12000000/0xffffff00",
    '-I FORWARD 1 -m comment --comment "egress-rules: reset node mark" -j EGRESSGATEWAY-RESET-MARK',
    '-I POSTROUTING 1 -m comment --comment "egress-rules: keep mark" -m mark --mark 0x12000000/0xffffff00 -j ACCEPT',
    '-I PREROUTING 1 -m comment --comment "egress-rules: mark request" -j EGRESSGATEWAY-MARK-REQUEST',
]
_BASE_FILTER = [
    '-I FORWARD 1 -m comment --comment "egress-rules: tunneled flow guard" -m conntrack --ctdir ORIGINAL '
    "-m connmark --mark 0x12000000/0xffffff00 -m mark ! --mark 0x12000000/0xffffff00 -j DROP",
    '-I FORWARD 2 -m comment --comment "egress-rules: keep mark" -m mark --mark 0x12000000/0xffffff00 -j ACCEPT',
    '-I OUTPUT 1 -m comment --comment "egress-rules: keep mark" -m mark --mark 0x12000000/0xffffff00 -j ACCEPT',
]
_BASE_NAT = [
    ":EGRESSGATEWAY-SNAT-EIP - [0:0]", ":EGRESSGATEWAY-NO-SNAT - [0:0]",
    '-A EGRESSGATEWAY-SNAT-EIP -m comment --comment "egress-rules: skip tunneled" '
    "-m mark --mark 0x12000000/0xffffff00 -j RETURN",
    '-A EGRESSGATEWAY-SNAT-EIP -m comment --comment "egress-rules: skip unrouted" '
    "-m mark --mark 0x26000000/0xff000000 -j RETURN",
    '-A EGRESSGATEWAY-NO-SNAT -m comment --comment "egress-rules: no snat" -m mark --mark 0x12000000/0xffffff00 '
    "-j ACCEPT",
    '-I POSTROUTING 1 -m comment --comment "egress-rules: snat eip" -j EGRESSGATEWAY-SNAT-EIP',
    '-I POSTROUTING 2 -m comment --comment "egress-rules: no snat" -j EGRESSGATEWAY-NO-SNAT',
]


def iptables_text(document: dict[str, Any]) -> str:
    """The base rules plus one mark-request and one SNAT rule per policy, with the same matches and comments."""
    mangle, nat = list(_BASE_MANGLE), list(_BASE_NAT)
    for policy in document["policies"]:
        key = f"{policy['namespace']}/{policy['name']}"
        match = (f"-m set --match-set {_name('src', policy)} src -m set --match-set {_name('dst', policy)} dst "
                 "-m conntrack --ctdir ORIGINAL")
        mangle.append(f'-A EGRESSGATEWAY-MARK-REQUEST -m comment --comment "egress-rules: local gateway policy '
                      f'{key} via {policy["gateway_node"]}" {match} -j RETURN')
        nat.append(f'-A EGRESSGATEWAY-SNAT-EIP -m comment --comment "egress-rules: snat eip policy {key} via '
                   f'{policy["gateway_node"]}" {match} -j SNAT --to-source {policy["egress_ip"]["ipv4"]}')
    return "\n".join(["*mangle", *mangle, "COMMIT", "*filter", *_BASE_FILTER, "COMMIT", "*nat", *nat, "COMMIT"]) + "\n"
