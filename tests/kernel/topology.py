"""A simulated Kubernetes cluster built from network namespaces.

Layout (every role is its own namespace, named ``egrt-<token>-<role>``)::

                      sw: bridge br0 (underlay L2, 192.0.2.0/24, 2001:db8:1::/64)
          +--------------+--------------+--------------+
        node-a         node-b         node-c          ext (.100; "internet"
        .1 / ::1       .2 / ::2       .3 / ::3         addresses on lo, runs
        cni0           cni0           cni0             the echo server)
       /     \\          |              |
    pod-a  pod-a2      pod-b          pod-c

Nodes route each other's pod CIDRs via the peer's underlay address (host-gw
CNI), masquerade pod traffic leaving the cluster CIDR (like a CNI does), and
share a vxlan device ``egress.vxlan`` (the egress tunnel). ext has no route to
pod CIDRs, so it only ever answers node addresses or EIPs.

Pods sit on a per-node bridge ``cni0`` (like the bridge/flannel CNIs) so that a
node can hold two pods in one /24.

Nothing here touches the root namespace: see :mod:`.netns`.
"""

from __future__ import annotations

import ipaddress
import json
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, get_args

from .netns import DEFAULT_TIMEOUT, CommandError, Namespace, new_run_token, stop_process
from .netns import ip as ns_ip
from .netns import run as ns_run
from .probe import ProbeOutcome, Proto, run_probe

__all__ = [
    "ADDRESSES",
    "APPLY_COMMANDS",
    "ECHO_PORT",
    "FAMILIES",
    "NODE_ROLES",
    "POD_BRIDGE",
    "POD_ROLES",
    "ROLES",
    "SAVE_COMMANDS",
    "TUNNEL_DEVICE",
    "TUNNEL_PORT",
    "TUNNEL_VNI",
    "UNDERLAY_DEVICE",
    "ApplyTool",
    "ClusterAddresses",
    "ExtAddresses",
    "Family",
    "IptablesVariant",
    "NodeAddresses",
    "NodeRole",
    "PodAddresses",
    "PodRole",
    "Role",
    "SaveTool",
    "Topology",
]

NodeRole = Literal["node-a", "node-b", "node-c"]
PodRole = Literal["pod-a", "pod-a2", "pod-b", "pod-c"]
Role = Literal["sw", "ext", "node-a", "node-b", "node-c", "pod-a", "pod-a2", "pod-b", "pod-c"]
Family = Literal[4, 6]
IptablesVariant = Literal["nft", "legacy"]

ROLES: tuple[Role, ...] = get_args(Role)
FAMILIES: tuple[Family, ...] = (4, 6)
NODE_ROLES: tuple[NodeRole, ...] = get_args(NodeRole)
POD_ROLES: tuple[PodRole, ...] = get_args(PodRole)

UNDERLAY_DEVICE = "eth0"  # in nodes, ext and pods
POD_BRIDGE = "cni0"
TUNNEL_DEVICE = "egress.vxlan"
TUNNEL_VNI = 100
TUNNEL_PORT = 7789
ECHO_PORT = 7777
ECHO_SERVER = Path(__file__).resolve().with_name("echo_server.py")


@dataclass(frozen=True)
class NodeAddresses:
    role: NodeRole
    pod: PodRole  # the node's main pod (node-a also has pod-a2)
    underlay4: str
    underlay6: str
    tunnel4: str
    tunnel6: str
    pod_cidr4: str
    pod_cidr6: str
    pod_gateway4: str  # node side of the pod network (on cni0)
    pod_gateway6: str

    def underlay(self, family: Family) -> str:
        return self.underlay4 if family == 4 else self.underlay6

    def tunnel(self, family: Family) -> str:
        return self.tunnel4 if family == 4 else self.tunnel6

    def pod_cidr(self, family: Family) -> str:
        return self.pod_cidr4 if family == 4 else self.pod_cidr6


@dataclass(frozen=True)
class PodAddresses:
    role: PodRole
    node: NodeRole
    ip4: str
    ip6: str

    def ip(self, family: Family) -> str:
        return self.ip4 if family == 4 else self.ip6


@dataclass(frozen=True)
class ExtAddresses:
    underlay4: str
    underlay6: str
    internet4: tuple[str, ...]  # on ext's lo; what pods talk to
    internet6: tuple[str, ...]

    def underlay(self, family: Family) -> str:
        return self.underlay4 if family == 4 else self.underlay6

    def internet(self, family: Family) -> tuple[str, ...]:
        return self.internet4 if family == 4 else self.internet6


@dataclass(frozen=True)
class ClusterAddresses:
    nodes: tuple[NodeAddresses, ...]
    pods: tuple[PodAddresses, ...]
    ext: ExtAddresses
    underlay_cidr4: str = "192.0.2.0/24"
    underlay_cidr6: str = "2001:db8:1::/64"
    cluster_cidr4: str = "10.244.0.0/16"
    # Not /48: fd00:244::/48 does not contain fd00:244:1::/64 (the node index
    # sits in the third group), so a /48 masquerade would never match.
    cluster_cidr6: str = "fd00:244::/32"
    tunnel_cidr4: str = "172.31.0.0/16"
    tunnel_cidr6: str = "fd11::/112"

    def node(self, role: str) -> NodeAddresses:
        for node in self.nodes:
            if node.role == role:
                return node
        raise KeyError(f"no node {role!r}; nodes are {[n.role for n in self.nodes]}")

    def pod(self, role: str) -> PodAddresses:
        for pod in self.pods:
            if pod.role == role:
                return pod
        raise KeyError(f"no pod {role!r}; pods are {[p.role for p in self.pods]}")

    def cluster_cidr(self, family: Family) -> str:
        return self.cluster_cidr4 if family == 4 else self.cluster_cidr6


def _node(role: NodeRole, pod: PodRole, n: int) -> NodeAddresses:
    return NodeAddresses(
        role=role,
        pod=pod,
        underlay4=f"192.0.2.{n}",
        underlay6=f"2001:db8:1::{n}",
        tunnel4=f"172.31.0.{n}",
        tunnel6=f"fd11::{n}",
        pod_cidr4=f"10.244.{n}.0/24",
        pod_cidr6=f"fd00:244:{n}::/64",
        pod_gateway4=f"10.244.{n}.1",
        pod_gateway6=f"fd00:244:{n}::1",
    )


ADDRESSES = ClusterAddresses(
    nodes=(_node("node-a", "pod-a", 1), _node("node-b", "pod-b", 2), _node("node-c", "pod-c", 3)),
    pods=(
        PodAddresses("pod-a", "node-a", "10.244.1.10", "fd00:244:1::10"),
        PodAddresses("pod-a2", "node-a", "10.244.1.11", "fd00:244:1::11"),
        PodAddresses("pod-b", "node-b", "10.244.2.10", "fd00:244:2::10"),
        PodAddresses("pod-c", "node-c", "10.244.3.10", "fd00:244:3::10"),
    ),
    ext=ExtAddresses(
        underlay4="192.0.2.100",
        underlay6="2001:db8:1::100",
        internet4=("203.0.113.10", "203.0.113.20"),
        internet6=("2001:db8:ff::10", "2001:db8:ff::20"),
    ),
)

ApplyTool = Literal[
    "iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy",
    "ipset", "ip4", "ip6", "nft", "nft-text",
]  # fmt: skip
SaveTool = Literal[
    "iptables", "ip6tables", "iptables-legacy", "ip6tables-legacy",
    "ipset", "rule4", "rule6", "route4", "route6", "nft", "nft-text",
]  # fmt: skip

#: stdin-driven command behind each ``apply`` tool.
APPLY_COMMANDS: Mapping[ApplyTool, tuple[str, ...]] = {
    "iptables": ("iptables-restore", "--noflush"),
    "ip6tables": ("ip6tables-restore", "--noflush"),
    "iptables-legacy": ("iptables-legacy-restore", "--noflush"),
    "ip6tables-legacy": ("ip6tables-legacy-restore", "--noflush"),
    "ipset": ("ipset", "restore"),
    "ip4": ("ip", "-4", "-batch", "-"),
    "ip6": ("ip", "-6", "-batch", "-"),
    "nft": ("nft", "-j", "-f", "-"),
    "nft-text": ("nft", "-f", "-"),
}

#: command behind each ``save`` tool; the ``rule*``, ``route*`` and ``nft`` ones print JSON.
SAVE_COMMANDS: Mapping[SaveTool, tuple[str, ...]] = {
    "iptables": ("iptables-save",),
    "ip6tables": ("ip6tables-save",),
    "iptables-legacy": ("iptables-legacy-save",),
    "ip6tables-legacy": ("ip6tables-legacy-save",),
    "ipset": ("ipset", "save"),
    "rule4": ("ip", "-4", "-j", "rule"),
    "rule6": ("ip", "-6", "-j", "rule"),
    "route4": ("ip", "-4", "-j", "route", "show", "table", "all"),
    "route6": ("ip", "-6", "-j", "route", "show", "table", "all"),
    "nft": ("nft", "-j", "list", "ruleset"),
    "nft-text": ("nft", "list", "ruleset"),
}

_IPTABLES: Mapping[tuple[IptablesVariant, Family], str] = {
    ("nft", 4): "iptables",
    ("nft", 6): "ip6tables",
    ("legacy", 4): "iptables-legacy",
    ("legacy", 6): "ip6tables-legacy",
}
_LEGACY_TABLES = ("raw", "mangle", "nat", "filter", "security")
_DEFAULT_RULES: Mapping[Family, tuple[tuple[str, str], ...]] = {
    4: (("32766", "main"), ("32767", "default")),
    6: (("32766", "main"),),
}


def _family(address: str) -> Family:
    return 6 if ipaddress.ip_network(address, strict=False).version == 6 else 4


def _sysctl(ns: str, settings: Mapping[str, str | int]) -> None:
    # Slash-separated keys so that device names with dots (egress.vxlan) work.
    ns_run(ns, "sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items()))


class Topology:
    """Builds the cluster on ``__enter__`` (or :meth:`build`), removes it on exit.

    ``rp_filter`` is written to ``net.ipv4.conf.{all,default,<dev>}.rp_filter``
    on the nodes. It defaults to 0 (off) because egress traffic is asymmetric:
    a reply to an EIP comes back to the gateway node over the underlay and is
    forwarded to the source node over the tunnel, or reaches a node on an
    interface its route back does not use; strict mode (1) drops such packets
    and would make tests fail for reasons unrelated to the rules under test.

    ``masquerade`` adds the CNI-style masquerade (pod CIDR leaving the cluster
    CIDR) with ``iptables`` = "nft" (iptables-nft) or "legacy".
    """

    addrs: ClusterAddresses = ADDRESSES

    def __init__(
        self,
        *,
        rp_filter: int = 0,
        masquerade: bool = True,
        iptables: IptablesVariant = "nft",
        echo_port: int = ECHO_PORT,
        token: str | None = None,
    ) -> None:
        if iptables not in ("nft", "legacy"):
            raise ValueError(f"iptables must be 'nft' or 'legacy', not {iptables!r}")
        self.rp_filter = rp_filter
        self.masquerade = masquerade
        self.iptables: IptablesVariant = iptables
        self.echo_port = echo_port
        self.token = token or new_run_token()
        self._ns: dict[Role, Namespace] = {r: Namespace(r, self.token) for r in ROLES}
        self._echo: subprocess.Popen[str] | None = None
        self._echo_log: IO[str] | None = None
        self._eips: set[tuple[NodeRole, str]] = set()
        self.build_seconds: float | None = None

    # ----------------------------------------------------------------- naming

    @property
    def namespaces(self) -> Mapping[Role, str]:
        """Namespace name for every role."""
        return {role: ns.name for role, ns in self._ns.items()}

    def ns(self, role: Role) -> str:
        try:
            return self._ns[role].name
        except KeyError:
            raise KeyError(f"unknown role {role!r}; roles are {ROLES}") from None

    # -------------------------------------------------------------- lifecycle

    def __enter__(self) -> Topology:
        self.build()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()

    def build(self) -> None:
        """Create everything; on any failure (or interrupt) remove what exists."""
        start = time.monotonic()
        try:
            self._build()
        except BaseException:
            self.destroy()
            raise
        self.build_seconds = time.monotonic() - start

    def destroy(self) -> None:
        """Stop the echo server and delete every namespace; safe to call twice."""
        errors: list[BaseException] = []
        self._stop_echo()
        # Pods first so their veth peers vanish with them; sw last.
        for role in reversed(ROLES):
            try:
                self._ns[role].delete()
            except Exception as exc:
                errors.append(exc)
        self._eips.clear()
        if errors:
            raise RuntimeError(f"topology teardown left errors: {errors}")

    def _build(self) -> None:
        a = self.addrs
        for ns in self._ns.values():
            ns.create()
        # Defaults must be in place before links exist so new devices inherit
        # them; accept_dad=0 plus "nodad" keeps addresses usable immediately.
        base = {
            "net/ipv6/conf/all/accept_dad": 0,
            "net/ipv6/conf/default/accept_dad": 0,
            "net/ipv4/conf/all/rp_filter": 0,
            "net/ipv4/conf/default/rp_filter": 0,
        }
        for role in ROLES:
            settings: dict[str, str | int] = dict(base)
            if role in NODE_ROLES:
                settings |= {
                    "net/ipv4/ip_forward": 1,
                    "net/ipv6/conf/all/forwarding": 1,
                    "net/ipv4/conf/all/rp_filter": self.rp_filter,
                    "net/ipv4/conf/default/rp_filter": self.rp_filter,
                }
            _sysctl(self.ns(role), settings)

        # Underlay: bridge in sw, one veth per node/ext, created from sw.
        sw = [
            # Snooping off: without an MLD querier it eventually drops ND multicast.
            "link add br0 type bridge stp_state 0 mcast_snooping 0",
            "link set br0 up",
        ]
        uplinks: tuple[Role, ...] = (*NODE_ROLES, "ext")
        for role in uplinks:
            port = f"p-{role}"
            sw += [
                f"link add {port} type veth peer name {UNDERLAY_DEVICE} netns {self.ns(role)}",
                f"link set {port} master br0 up",
            ]
        self._batch("sw", sw)

        ext = a.ext
        ext_cmds = [
            f"addr add {ext.underlay4}/24 dev {UNDERLAY_DEVICE}",
            f"addr add {ext.underlay6}/64 dev {UNDERLAY_DEVICE} nodad",
            f"link set {UNDERLAY_DEVICE} up",
        ]
        ext_cmds += [f"addr add {x}/32 dev lo" for x in ext.internet4]
        ext_cmds += [f"addr add {x}/128 dev lo nodad" for x in ext.internet6]
        self._batch("ext", ext_cmds)

        for node in a.nodes:
            self._build_node(node)
        for pod in a.pods:
            node = a.node(pod.node)
            self._batch(
                pod.role,
                [
                    f"addr add {pod.ip4}/24 dev {UNDERLAY_DEVICE}",
                    f"addr add {pod.ip6}/64 dev {UNDERLAY_DEVICE} nodad",
                    f"link set {UNDERLAY_DEVICE} up",
                    f"route add default via {node.pod_gateway4}",
                    f"route add default via {node.pod_gateway6}",
                ],
            )
        for node in a.nodes:
            devices = ("lo", UNDERLAY_DEVICE, POD_BRIDGE, TUNNEL_DEVICE)
            _sysctl(
                self.ns(node.role),
                {f"net/ipv4/conf/{d}/rp_filter": self.rp_filter for d in devices},
            )
            if self.masquerade:
                self.add_masquerade(node.role)
        self._start_echo()

    def _build_node(self, node: NodeAddresses) -> None:
        a = self.addrs
        cmds = [
            f"addr add {node.underlay4}/24 dev {UNDERLAY_DEVICE}",
            f"addr add {node.underlay6}/64 dev {UNDERLAY_DEVICE} nodad",
            f"link set {UNDERLAY_DEVICE} up",
            f"route add default via {a.ext.underlay4}",
            f"route add default via {a.ext.underlay6}",
            f"link add {POD_BRIDGE} type bridge stp_state 0 mcast_snooping 0",
            f"addr add {node.pod_gateway4}/24 dev {POD_BRIDGE}",
            f"addr add {node.pod_gateway6}/64 dev {POD_BRIDGE} nodad",
            f"link set {POD_BRIDGE} up",
        ]
        for pod in a.pods:
            if pod.node == node.role:
                veth = f"veth-{pod.role}"
                cmds += [
                    f"link add {veth} type veth peer name {UNDERLAY_DEVICE} netns {self.ns(pod.role)}",
                    f"link set {veth} master {POD_BRIDGE} up",
                ]
        for peer in a.nodes:  # host-gw CNI routing
            if peer.role != node.role:
                cmds += [
                    f"route add {peer.pod_cidr4} via {peer.underlay4}",
                    f"route add {peer.pod_cidr6} via {peer.underlay6}",
                ]
        cmds += [
            f"link add {TUNNEL_DEVICE} type vxlan id {TUNNEL_VNI} dstport {TUNNEL_PORT}"
            f" local {node.underlay4} dev {UNDERLAY_DEVICE} nolearning",
            f"addr add {node.tunnel4}/16 dev {TUNNEL_DEVICE}",
            f"addr add {node.tunnel6}/112 dev {TUNNEL_DEVICE} nodad",
            f"link set {TUNNEL_DEVICE} up",
        ]
        self._batch(node.role, cmds)
        # With nolearning and no multicast group, the all-zero entries are the
        # only way broadcast (ARP), multicast (ND) and unknown unicast get out.
        fdb = [
            f"fdb append 00:00:00:00:00:00 dev {TUNNEL_DEVICE} dst {peer.underlay4}"
            for peer in a.nodes
            if peer.role != node.role
        ]
        ns_run(self.ns(node.role), "bridge", "-batch", "-", input="\n".join(fdb) + "\n")

    def _batch(self, role: Role, commands: list[str]) -> None:
        self.ip(role, "-batch", "-", input="\n".join(commands) + "\n")

    def _start_echo(self) -> None:
        # Lives as long as the server (closed in _stop_echo), so no `with`.
        self._echo_log = tempfile.TemporaryFile("w+")  # noqa: SIM115
        argv = ["ip", "netns", "exec", self.ns("ext"), sys.executable, str(ECHO_SERVER)]
        self._echo = subprocess.Popen(
            [*argv, str(self.echo_port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._echo_log,
            text=True,
        )
        assert self._echo.stdout is not None
        ready, _, _ = select.select([self._echo.stdout], [], [], DEFAULT_TIMEOUT)
        line = self._echo.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self._echo_log.seek(0)
            raise CommandError(argv, self._echo.poll(), line, self._echo_log.read(), timeout=None)

    def _stop_echo(self) -> None:
        proc, self._echo = self._echo, None
        if proc is not None:
            stop_process(proc)
        if self._echo_log is not None:
            self._echo_log.close()
            self._echo_log = None

    @property
    def echo_process(self) -> subprocess.Popen[str] | None:
        """The echo server process in ext (None before build / after destroy)."""
        return self._echo

    def echo_server_log(self) -> str:
        """What the echo server wrote to stderr (tracebacks), for debugging."""
        if self._echo_log is None:
            return ""
        # A fresh open: seeking our handle would move the offset the server
        # writes at (the descriptor is shared with the child).
        return Path(f"/proc/self/fd/{self._echo_log.fileno()}").read_text()

    # ---------------------------------------------------------------- running

    def run(
        self,
        role: Role,
        *argv: str,
        input: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the role's namespace."""
        return ns_run(self.ns(role), *argv, input=input, timeout=timeout, check=check)

    def ip(
        self,
        role: Role,
        *args: str,
        input: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """``ip -n <role's namespace> ARGS``."""
        return ns_ip(self.ns(role), *args, input=input, timeout=timeout, check=check)

    def apply(self, role: Role, tool: ApplyTool, text: str) -> None:
        """Pipe ``text`` into the tool (see :data:`APPLY_COMMANDS`) inside the namespace.

        Raises :class:`CommandError` (with the tool's stderr) on failure.
        """
        if tool not in APPLY_COMMANDS:
            raise ValueError(f"unknown apply tool {tool!r}; use one of {list(APPLY_COMMANDS)}")
        self.run(role, *APPLY_COMMANDS[tool], input=text)

    def save(self, role: Role, tool: SaveTool) -> str:
        """Output of the dump command behind ``tool`` (see :data:`SAVE_COMMANDS`)."""
        if tool not in SAVE_COMMANDS:
            raise ValueError(f"unknown save tool {tool!r}; use one of {list(SAVE_COMMANDS)}")
        return self.run(role, *SAVE_COMMANDS[tool]).stdout

    def conntrack(self, role: Role, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``conntrack ARGS`` in the namespace (``-D``/``-G`` exit 1 when nothing matches)."""
        return self.run(role, "conntrack", *args, check=check)

    def probe_outcome(
        self,
        role: Role,
        dst: str | None = None,
        proto: Proto = "udp",
        family: Family | None = None,
        *,
        port: int | None = None,
        timeout: float = 3.0,
        attempts: int = 3,
        source: str | None = None,
    ) -> ProbeOutcome:
        """Like :meth:`probe`, but says why nothing came back."""
        if dst is None:
            dst = self.addrs.ext.internet(family or 4)[0]
        elif family is not None and _family(dst) != family:
            raise ValueError(f"{dst} is not an IPv{family} address")
        return run_probe(
            self.ns(role),
            dst,
            self.echo_port if port is None else port,
            proto,
            timeout=timeout,
            attempts=attempts,
            source=source,
        )

    def probe(
        self,
        role: Role,
        dst: str | None = None,
        proto: Proto = "udp",
        family: Family | None = None,
        *,
        port: int | None = None,
        timeout: float = 3.0,
        attempts: int = 3,
        source: str | None = None,
    ) -> str | None:
        """Send a probe from ``role`` (usually a pod) and return what answered.

        udp/tcp to the echo server: the source address ext saw. icmp: the
        address that sent the echo reply. None when nothing came back in time.
        ``dst`` defaults to ext's first internet address of ``family`` (4).
        """
        return self.probe_outcome(
            role, dst, proto, family, port=port, timeout=timeout, attempts=attempts, source=source
        ).reply

    def ping(self, role: Role, dst: str, *, timeout: float = 2.0, attempts: int = 2) -> bool:
        """ICMP echo from ``role`` to ``dst`` (no ping binary needed)."""
        return self.probe(role, dst, "icmp", timeout=timeout, attempts=attempts) is not None

    # ------------------------------------------------------- node state helpers

    def add_eip(self, node: NodeRole, address: str) -> None:
        """Add ``address`` (/32 or /128) to the node's underlay device.

        IPv6 EIPs get ``preferred_lft 0`` (deprecated): still owned and answered
        for, but never picked as a source address, so MASQUERADE and locally
        generated traffic keep using the node address.
        """
        family = _family(address)
        cmd = ["addr", "add", f"{address}/{32 if family == 4 else 128}", "dev", UNDERLAY_DEVICE]
        if family == 6:
            cmd += ["nodad", "preferred_lft", "0"]
        self.ip(node, *cmd)
        self._eips.add((node, address))

    def del_eip(self, node: NodeRole, address: str) -> None:
        prefix = 32 if _family(address) == 4 else 128
        self.ip(node, "addr", "del", f"{address}/{prefix}", "dev", UNDERLAY_DEVICE)
        self._eips.discard((node, address))

    def _masquerade_rule(self, node: NodeRole, op: str, family: Family, variant: IptablesVariant) -> None:
        cidr = self.addrs.cluster_cidr(family)
        rule = ["-t", "nat", op, "POSTROUTING", "-s", cidr, "!", "-d", cidr, "-j", "MASQUERADE"]
        self.run(node, _IPTABLES[(variant, family)], "-w", "5", *rule)

    def add_masquerade(self, node: NodeRole, iptables: IptablesVariant | None = None) -> None:
        """Append the CNI masquerade rule (v4 and v6) on ``node``."""
        for family in FAMILIES:
            self._masquerade_rule(node, "-A", family, iptables or self.iptables)

    def del_masquerade(self, node: NodeRole, iptables: IptablesVariant | None = None) -> None:
        for family in FAMILIES:
            self._masquerade_rule(node, "-D", family, iptables or self.iptables)

    def reset_node(self, node: NodeRole) -> None:
        """Put a node's packet-handling state back to what :meth:`build` left.

        Flushes the whole nft ruleset (this also empties iptables-nft), every
        iptables-legacy table, all ipsets, ip rules back to the defaults, every
        routing table other than main/local, EIPs added via :meth:`add_eip`,
        conntrack; then re-adds the masquerade. Routes added to the main table
        are not undone.
        """
        for owner, address in sorted(self._eips):
            if owner == node:
                self.del_eip(node, address)
        self.run(node, "nft", "flush", "ruleset")
        for family in FAMILIES:
            legacy = _IPTABLES[("legacy", family)]
            tables = [
                line[1:].strip()
                for line in self.run(node, f"{legacy}-save").stdout.splitlines()
                if line.startswith("*")
            ]
            if tables:
                # restore without --noflush empties each table and drops user chains
                text = "".join(f"*{t}\nCOMMIT\n" for t in tables if t in _LEGACY_TABLES)
                self.run(node, f"{legacy}-restore", input=text)
                self._reset_legacy_policies(node, legacy, tables)
        self._destroy_ipsets(node)
        for family in FAMILIES:
            f = f"-{family}"
            self.ip(node, f, "rule", "flush")
            for prio, table in _DEFAULT_RULES[family]:
                self.ip(node, f, "rule", "add", "priority", prio, "lookup", table)
            routes = json.loads(self.ip(node, f, "-j", "route", "show", "table", "all").stdout)
            for table in sorted({str(r.get("table", "main")) for r in routes} - {"main", "local"}):
                self.ip(node, f, "route", "flush", "table", table)
        if self.masquerade:
            self.add_masquerade(node)
        for family_name in ("ipv4", "ipv6"):
            self.conntrack(node, "-F", "-f", family_name)

    def _reset_legacy_policies(self, node: NodeRole, legacy: str, tables: list[str]) -> None:
        for table in tables:
            for line in self.run(node, legacy, "-w", "5", "-t", table, "-S").stdout.splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "-P" and parts[2] != "ACCEPT":
                    self.run(node, legacy, "-w", "5", "-t", table, "-P", parts[1], "ACCEPT")

    def _destroy_ipsets(self, node: NodeRole) -> None:
        # nf_tables releases set references from a workqueue after the flush,
        # so "in use by a kernel component" can linger briefly: retry, bounded.
        deadline = time.monotonic() + 5
        while True:
            proc = self.run(node, "ipset", "destroy", check=False)
            if proc.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if proc.returncode != 0:
            raise CommandError(["ipset", "destroy"], proc.returncode, proc.stdout, proc.stderr)

    def reset(self) -> None:
        """:meth:`reset_node` on every node."""
        for node in self.addrs.nodes:
            self.reset_node(node.role)
