"""A node's observed state as a bundle of the tools' outputs, by file name.

The planner needs what several tools print. A bundle names each output by a
fixed file name, so a directory of files (or one JSON object mapping those
names to text) is enough to plan; :func:`collect_commands` prints the shell
commands that write such a directory on a node.
"""

from __future__ import annotations

from collections.abc import Mapping

from egress_rules.errors import InvalidInputError
from egress_rules.model.addresses import Family
from egress_rules.model.config import Config
from egress_rules.observed.iproute import parse_ip_routes, parse_ip_rules
from egress_rules.observed.ipset import parse_ipset_save
from egress_rules.observed.iptables import parse_iptables_save
from egress_rules.observed.nft import parse_nft_list
from egress_rules.observed.ownership import Ownership
from egress_rules.observed.state import ObservedState

DATAPATHS = ("iptables", "nft")

def _families(config: Config) -> list[Family]:
    return [f for f in (Family.IPV4, Family.IPV6) if (config.ipv4 if f is Family.IPV4 else config.ipv6)]


def bundle_files(datapath: str, config: Config) -> dict[str, str]:
    """The files a bundle for ``datapath`` holds (for the enabled families), and the command that writes each."""
    if datapath not in DATAPATHS:
        raise InvalidInputError("datapath", f"{datapath!r} is not one of {', '.join(DATAPATHS)}")
    files: dict[str, str] = {}
    if datapath == "iptables":
        for family in _families(config):
            tool = "iptables-save" if family is Family.IPV4 else "ip6tables-save"
            files[f"{tool}.txt"] = tool
        files["ipset-save.txt"] = "ipset save"
    else:
        files["nft-ruleset.json"] = "nft -j list ruleset"
    for family in _families(config):
        files[f"ip-rule-{family.suffix}.json"] = f"ip -{family.value} -j rule show"
        files[f"ip-route-{family.suffix}.json"] = f"ip -{family.value} -j route show table all"
    return files


def collect_commands(datapath: str, config: Config, directory: str = "observed") -> str:
    """Shell commands that write a bundle for ``datapath`` into ``directory`` (run them as root on the node)."""
    lines = [f"mkdir -p {directory}"]
    lines += [f"{command} > {directory}/{name}" for name, command in bundle_files(datapath, config).items()]
    return "\n".join(lines) + "\n"


def load_bundle(files: Mapping[str, str], datapath: str, config: Config) -> ObservedState:
    """Parse a bundle (file name -> text) into an :class:`ObservedState`; every expected file must be there."""
    expected = bundle_files(datapath, config)
    missing = sorted(set(expected) - set(files))
    if missing:
        raise InvalidInputError("observed state", f"missing {', '.join(missing)} (write them with: "
                                f"{'; '.join(expected[name] + ' > ' + name for name in missing)})")
    own = Ownership(config)
    families = _families(config)
    rules = {f: parse_ip_rules(files[f"ip-rule-{f.suffix}.json"], f, own, f"ip-rule-{f.suffix}.json")
             for f in families}
    routes = {f: parse_ip_routes(files[f"ip-route-{f.suffix}.json"], f, own, f"ip-route-{f.suffix}.json")
              for f in families}
    if datapath == "nft":
        return ObservedState(ip_rules=rules, routes=routes,
                             nft=parse_nft_list(files["nft-ruleset.json"], own, "nft-ruleset.json"))
    dumps = {Family.IPV4: "iptables-save.txt", Family.IPV6: "ip6tables-save.txt"}
    return ObservedState(
        iptables={f: parse_iptables_save(files[dumps[f]], f, own, dumps[f]) for f in families},
        ipsets=parse_ipset_save(files["ipset-save.txt"], own, "ipset-save.txt"),
        ip_rules=rules,
        routes=routes,
    )
