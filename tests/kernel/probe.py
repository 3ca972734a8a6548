"""One-shot reachability probes sent from inside a namespace.

As a script (stdlib only, run via ``ip netns exec``)::

    python3 probe.py {udp,tcp,icmp} DST PORT [--timeout S] [--attempts N] [--source ADDR]

it sends one UDP datagram (resent up to N times), one TCP connection, or an
ICMP echo, prints the reply (for the echo server: the source address it saw;
for ICMP: the address that answered) and exits 0; exits 3 with the reason on
stderr when nothing answered in time. :func:`probe` wraps that for tests.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Proto = Literal["udp", "tcp", "icmp"]
SCRIPT = Path(__file__).resolve()
NO_REPLY = 3


class NoReplyError(Exception):
    """Nothing (usable) came back within the time budget."""


def _family(dst: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(dst).version == 6 else socket.AF_INET


def _socket(dst: str, kind: socket.SocketKind, proto: int, source: str | None) -> socket.socket:
    sock = socket.socket(_family(dst), kind, proto)
    if source:
        sock.bind((source, 0))
    return sock


def probe_udp(dst: str, port: int, timeout: float, attempts: int, source: str | None) -> str:
    with _socket(dst, socket.SOCK_DGRAM, 0, source) as sock:
        sock.connect((dst, port))  # connected: ICMP errors surface, replies must come from dst
        for _ in range(attempts):
            sock.send(b"probe\n")
            ready, _, _ = select.select([sock], [], [], timeout / attempts)
            if ready:
                try:
                    return sock.recv(4096).decode().strip()
                except ConnectionRefusedError:
                    raise NoReplyError("udp: port unreachable") from None
        raise NoReplyError(f"udp: no reply after {attempts} attempts in {timeout}s")


def probe_tcp(dst: str, port: int, timeout: float, source: str | None) -> str:
    deadline = time.monotonic() + timeout
    with _socket(dst, socket.SOCK_STREAM, 0, source) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((dst, port))
            sock.sendall(b"probe\n")
            data = b""
            while b"\n" not in data:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (TimeoutError, ConnectionError, OSError) as exc:
            raise NoReplyError(f"tcp: {exc!r}") from None
        if not data:
            raise NoReplyError("tcp: connection closed without a reply")
        return data.decode().strip()


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def probe_icmp(dst: str, timeout: float, attempts: int, source: str | None) -> str:
    v6 = _family(dst) == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    request, reply = (128, 129) if v6 else (8, 0)
    ident = os.getpid() & 0xFFFF
    with _socket(dst, socket.SOCK_RAW, proto, source) as sock:
        for seq in range(1, attempts + 1):
            header = struct.pack("!BBHHH", request, 0, 0, ident, seq)
            payload = b"egress-rules-probe"
            # The kernel fills in the ICMPv6 checksum itself (pseudo-header).
            cksum = 0 if v6 else _checksum(header + payload)
            sock.sendto(struct.pack("!BBHHH", request, 0, cksum, ident, seq) + payload, (dst, 0))
            deadline = time.monotonic() + timeout / attempts
            while (left := deadline - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                packet, peer = sock.recvfrom(65535)
                if not v6:
                    packet = packet[(packet[0] & 0x0F) * 4 :]  # raw IPv4 includes the IP header
                if len(packet) < 8:
                    continue
                kind, _, _, got_ident, got_seq = struct.unpack("!BBHHH", packet[:8])
                if kind == reply and got_ident == ident and got_seq == seq:
                    return str(peer[0]).split("%", 1)[0]
        raise NoReplyError(f"icmp: no echo reply after {attempts} attempts in {timeout}s")


@dataclass(frozen=True)
class ProbeOutcome:
    """``reply`` is what came back, or None; ``reason`` says why not."""

    reply: str | None
    reason: str = ""


def run_probe(
    ns: str,
    dst: str,
    port: int,
    proto: Proto = "udp",
    *,
    timeout: float = 3.0,
    attempts: int = 3,
    source: str | None = None,
) -> ProbeOutcome:
    """Run this script inside ``ns`` and report what came back."""
    from .netns import CommandError, run  # package-relative; the script part is stdlib only

    argv = [
        sys.executable, str(SCRIPT), proto, dst, str(port),
        "--timeout", str(timeout), "--attempts", str(attempts),
    ]  # fmt: skip
    if source:
        argv += ["--source", source]
    proc = run(ns, *argv, timeout=timeout + 10, check=False)
    if proc.returncode == 0:
        return ProbeOutcome(proc.stdout.strip())
    if proc.returncode == NO_REPLY:
        return ProbeOutcome(None, proc.stderr.strip())
    raise CommandError(["ip", "netns", "exec", ns, *argv], proc.returncode, proc.stdout, proc.stderr)


def probe(
    ns: str,
    dst: str,
    port: int,
    proto: Proto = "udp",
    *,
    timeout: float = 3.0,
    attempts: int = 3,
    source: str | None = None,
) -> str | None:
    """What answered a probe from ``ns`` to ``dst``, or None on timeout/refusal."""
    return run_probe(ns, dst, port, proto, timeout=timeout, attempts=attempts, source=source).reply


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("proto", choices=("udp", "tcp", "icmp"))
    parser.add_argument("dst")
    parser.add_argument("port", type=int)
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--source")
    args = parser.parse_args(argv)
    try:
        if args.proto == "udp":
            answer = probe_udp(args.dst, args.port, args.timeout, args.attempts, args.source)
        elif args.proto == "tcp":
            answer = probe_tcp(args.dst, args.port, args.timeout, args.source)
        else:
            answer = probe_icmp(args.dst, args.timeout, args.attempts, args.source)
    except NoReplyError as exc:
        print(exc, file=sys.stderr)
        return NO_REPLY
    except OSError as exc:  # e.g. ENETUNREACH on send: the path is broken, not the probe
        print(f"{args.proto}: {exc!r}", file=sys.stderr)
        return NO_REPLY
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
