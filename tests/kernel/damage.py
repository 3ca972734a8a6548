"""Foreign objects and damage, written as the texts the real tools read.

This module owns the "someone else touched the node" inputs of the reconcile
and fakes-vs-kernel tests: the foreign objects another tool (a CNI,
kube-proxy, an operator) leaves on a node, and each kind of damage to our
own objects. Every item is a list of ``(tool, text)`` so that the very same
text can be applied to a real namespace and to :class:`tests.fakes.FakeNode`.
Foreign iptables rules are written the way ``iptables-save`` prints them
(the fake stores rule text as given).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from egress_rules.compiler import compile
from egress_rules.model.addresses import Family
from egress_rules.model.ruleset import RuleSet
from tests.fakes import FakeNode
from tests.scenarios import overlapping

from .netns import run as ns_run

__all__ = [
    "DAMAGES", "FOREIGN", "FOREIGN_SETS", "LOOKALIKE_SET", "Step", "Tool", "apply_steps", "extra_selector",
    "stale_sets",
]

Tool = Literal["iptables", "ip6tables", "ipset", "ip4", "ip6"]
Step = tuple[Tool, str]

LOOKALIKE_SET = "egress-src4-0123456789abcdef012"  # named like ours, but its check does not verify
FOREIGN_SETS = ("kube-foreign", LOOKALIKE_SET)

#: What other software has on the node before we install.
FOREIGN: tuple[Step, ...] = (
    ("iptables", "*mangle\n"
                 '-I PREROUTING 1 -m comment --comment "cni: early accept" -m conntrack --ctstate ESTABLISHED '
                 "-j ACCEPT\nCOMMIT\n"
                 "*filter\n:KUBE-FORWARD - [0:0]\n-A FORWARD -j KUBE-FORWARD\n"
                 "-A KUBE-FORWARD -m mark --mark 0x4000/0x4000 -j ACCEPT\nCOMMIT\n"),
    ("ip6tables", "*filter\n-A FORWARD -s 2001:db8:dead::/48 -j DROP\nCOMMIT\n"),
    ("ipset", "create kube-foreign hash:net family inet6\nadd kube-foreign 2001:db8::/64\n"),
    ("ip4", "rule add fwmark 0x4000/0x4000 table 200 pref 100\n"
            "route replace default via 192.0.2.100 dev eth0 table 200 proto static\n"),
)


def stale_sets(desired: RuleSet) -> list[str]:
    """Owned set names of policies that are not in ``desired`` (from the overlapping scenario)."""
    wanted = {s.name for rules in desired.families for s in rules.sets}
    other = compile(overlapping(), desired.node)
    return sorted({s.name for rules in other.families for s in rules.sets if s.provenance.policy} - wanted)


def _first_member(desired: RuleSet) -> tuple[str, str]:
    for ipset in desired.families[0].sets:
        if ipset.provenance.policy is not None and ipset.members:
            return ipset.name, ipset.members[0].host_str()
    raise AssertionError("the desired rule set has no policy set with members")


def _table(desired: RuleSet) -> int:
    rules = desired.family(Family.IPV4)
    assert rules is not None and rules.routes, "the desired rule set routes to no gateway"
    return rules.routes[0].table


DAMAGES: dict[str, Callable[[RuleSet], Sequence[Step]]] = {
    "delete our rule": lambda _: [("iptables", "*mangle\n-D EGRESSGATEWAY-MARK-REQUEST 1\nCOMMIT\n")],
    "foreign rule between ours": lambda _: [(
        "iptables", "*nat\n-I POSTROUTING 2 -s 198.51.100.99/32 -m comment --comment intruder -j ACCEPT\nCOMMIT\n")],
    "foreign rule above ours": lambda _: [(
        "iptables", "*nat\n-I POSTROUTING 1 -s 198.51.100.98/32 -m comment --comment calico -j ACCEPT\nCOMMIT\n")],
    "stale and look-alike sets": lambda desired: [(
        "ipset", "".join(f"create {name} hash:net family inet\n" for name in stale_sets(desired))
        + f"create {LOOKALIKE_SET} hash:net family inet\nadd {LOOKALIKE_SET} 10.9.0.0/16\n")],
    "stale ip rule and route": lambda _: [(
        "ip4", "rule add fwmark 0x26123400/0xffffff00 table 3099 pref 99 protocol 230\n"
               "route replace default via 172.31.0.9 dev egress.vxlan table 3099 proto 230\n")],
    "duplicate hook jump": lambda _: [(
        "iptables", '*mangle\n-A PREROUTING -m comment --comment "egress-rules: mark request" '
                    "-j EGRESSGATEWAY-MARK-REQUEST\nCOMMIT\n")],
    "changed set member": lambda desired: [(
        "ipset", "del {0} {1}\nadd {0} 10.244.99.99\n".format(*_first_member(desired)))],
    "rule edited by hand": lambda _: [(
        "iptables", '*nat\n-R EGRESSGATEWAY-SNAT-EIP 2 -m comment --comment "egress-rules: hand edit" -j ACCEPT\n'
                    "COMMIT\n")],
    "wrong route": lambda desired: [(
        "ip4", f"route replace default via 172.31.0.9 dev egress.vxlan table {_table(desired)} proto 230\n")],
    "ipv6 hook deleted": lambda _: [("ip6tables", "*nat\n-D POSTROUTING 1\nCOMMIT\n")],
}


def extra_selector(desired: RuleSet) -> list[Step]:
    """A copy of our first IPv4 ip rule that also says ``from 10.0.0.0/8`` (ours by protocol, but not as wanted).

    Kept out of :data:`DAMAGES`: its repair needs the delete to name every selector (see test_reconcile).
    """
    rules = desired.family(Family.IPV4)
    assert rules is not None and rules.ip_rules, "the desired rule set has no IPv4 ip rule"
    rule = rules.ip_rules[0]
    return [("ip4", f"rule add from 10.0.0.0/8 fwmark {rule.mark:#x}/{rule.mask:#x} table {rule.table} "
                    f"pref {rule.priority} protocol {rule.protocol}\n")]

_REAL: dict[Tool, tuple[str, ...]] = {
    "iptables": ("iptables-restore", "--noflush"),
    "ip6tables": ("ip6tables-restore", "--noflush"),
    "ipset": ("ipset", "restore"),
    "ip4": ("ip", "-4", "-batch", "-"),
    "ip6": ("ip", "-6", "-batch", "-"),
}


def apply_steps(steps: Sequence[Step], *, ns: str | None = None, fake: FakeNode | None = None) -> None:
    """Apply each step with the real tool in ``ns`` and/or the fake tool of ``fake``."""
    for tool, text in steps:
        if ns is not None:
            ns_run(ns, *_REAL[tool], input=text)
        if fake is not None:
            if tool == "iptables":
                fake.iptables[Family.IPV4].restore(text)
            elif tool == "ip6tables":
                fake.iptables[Family.IPV6].restore(text)
            elif tool == "ipset":
                fake.ipset.restore(text)
            else:
                fake.ip.batch(Family.IPV4 if tool == "ip4" else Family.IPV6, text)
