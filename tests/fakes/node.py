"""A fake node: iptables (both families), ipset and ip, wired together as in the kernel."""

from __future__ import annotations

from egress_rules.backends.base import Output
from egress_rules.model.addresses import Family
from egress_rules.model.config import Config
from egress_rules.observed import (
    ObservedState,
    Ownership,
    parse_ip_routes,
    parse_ip_rules,
    parse_ipset_save,
    parse_iptables_save,
)
from tests.fakes.iproute import FakeIproute
from tests.fakes.ipset import FakeIpset, ToolError
from tests.fakes.iptables import FakeIptables


class FakeNode:
    def __init__(self) -> None:
        self.ipset = FakeIpset()
        self.iptables = {Family.IPV4: FakeIptables(), Family.IPV6: FakeIptables(ip6=True)}
        self.ip = FakeIproute()
        for tables in self.iptables.values():
            tables.set_exists = lambda name: name in self.ipset.sets
        self.ipset.is_referenced = lambda name: any(t.references_set(name) for t in self.iptables.values())

    def apply(self, outputs: tuple[Output, ...]) -> None:
        """Apply outputs of a render or a plan by the command each names."""
        for output in outputs:
            command = output.command
            if command.startswith("ipset restore"):
                self.ipset.restore(output.text)
            elif command.startswith("iptables-restore"):
                self.iptables[Family.IPV4].restore(output.text)
            elif command.startswith("ip6tables-restore"):
                self.iptables[Family.IPV6].restore(output.text)
            elif command.startswith("ip -4 -batch"):
                self.ip.batch(Family.IPV4, output.text)
            elif command.startswith("ip -6 -batch"):
                self.ip.batch(Family.IPV6, output.text)
            elif output.name == "conntrack.commands":
                continue
            else:
                raise ToolError(f"the fake node cannot apply {command!r}")

    def dumps(self) -> dict[str, str]:
        """What the real tools would print, by tool."""
        return {
            "iptables-save": self.iptables[Family.IPV4].save(),
            "ip6tables-save": self.iptables[Family.IPV6].save(),
            "ipset save": self.ipset.save(),
            "ip -4 -j rule": self.ip.rule_json(Family.IPV4),
            "ip -6 -j rule": self.ip.rule_json(Family.IPV6),
            "ip -4 -j route": self.ip.route_json(Family.IPV4),
            "ip -6 -j route": self.ip.route_json(Family.IPV6),
        }

    def observe(self, config: Config) -> ObservedState:
        return observe_dumps(self.dumps(), config)


def observe_dumps(dumps: dict[str, str], config: Config) -> ObservedState:
    """Parse the tools' output (real or fake) into an ObservedState."""
    own = Ownership(config)
    return ObservedState(
        iptables={Family.IPV4: parse_iptables_save(dumps["iptables-save"], Family.IPV4, own),
                  Family.IPV6: parse_iptables_save(dumps["ip6tables-save"], Family.IPV6, own)},
        ipsets=parse_ipset_save(dumps["ipset save"], own),
        ip_rules={f: parse_ip_rules(dumps[f"ip -{f.value} -j rule"], f, own) for f in Family},
        routes={f: parse_ip_routes(dumps[f"ip -{f.value} -j route"], f, own) for f in Family},
    )
