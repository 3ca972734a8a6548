"""Long-lived flows and a packet capture, for tests that change rules under traffic.

As a script (stdlib only, run via ``ip netns exec``):

``python3 flows.py serve PORT DEVICE``
    answers UDP datagrams and TCP lines on ``[::]:PORT`` with ``SRC SEQ``
    (the source address it saw; a datagram ``late:SECONDS:SEQ`` is answered
    after SECONDS), and captures every IPv4/IPv6 packet that
    arrives on ``DEVICE`` (``any``: every interface) with an AF_PACKET
    socket, so packets no socket would accept, e.g. from an unroutable pod
    address or of a TCP connection the host does not know, are seen too.
    Prints ``ready``, then one line per captured packet:
    ``cap PROTO SRC SPORT DST DPORT SRCMAC IFNAME``.

``python3 flows.py client DST PORT``
    (in a pod) keeps ONE UDP socket (one source port) and ONE TCP connection
    open and reads commands on stdin: ``udp SEQ`` / ``tcp SEQ`` send one
    message on the flow and print ``udp SEQ REPLY`` (``-`` when nothing came
    back in time), ``late SEQ SECONDS`` asks the server to answer only after
    SECONDS (a reply that is still in flight while rules change), ``stream SECONDS RATE`` sends on the UDP flow at RATE
    datagrams/s and prints ``stream SENT {reply: count}``, ``quit`` exits.
    Prints ``ready UDP_PORT TCP_PORT`` once both are open.

:class:`FlowServer` and :class:`FlowClient` drive these from tests, every wait bounded.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

SCRIPT = Path(__file__).resolve()
ETH_P_ALL = 0x0003
PACKET_HOST = 0  # addressed to this host; the vxlan floods copies to every node (PACKET_OTHERHOST elsewhere)
PKTINFO_SIZE = 20
PROTOCOLS = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}

# ------------------------------------------------------------------ script side


def _plain(host: str) -> str:
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def _parse_frame(frame: bytes) -> tuple[str, str, int, str, int] | None:
    """(proto, src, sport, dst, dport) of an Ethernet frame carrying IPv4/IPv6, else None."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    packet = frame[14:]
    if ethertype == 0x0800 and len(packet) >= 20:
        header = (packet[0] & 0x0F) * 4
        number = packet[9]
        src, dst = socket.inet_ntop(socket.AF_INET, packet[12:16]), socket.inet_ntop(socket.AF_INET, packet[16:20])
        payload = packet[header:]
    elif ethertype == 0x86DD and len(packet) >= 40:
        number = packet[6]
        src, dst = socket.inet_ntop(socket.AF_INET6, packet[8:24]), socket.inet_ntop(socket.AF_INET6, packet[24:40])
        payload = packet[40:]
    else:
        return None
    sport = dport = 0
    if number in (6, 17) and len(payload) >= 4:
        sport, dport = struct.unpack("!HH", payload[:4])
    return PROTOCOLS.get(number, str(number)), src, sport, dst, dport


def _capture(device: str, out: IO[str], lock: threading.Lock) -> None:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    if device != "any":
        sock.bind((device, 0))
    while True:
        frame, address = sock.recvfrom(65535)
        if address[2] != PACKET_HOST:
            continue
        parsed = _parse_frame(frame)
        if parsed is None:
            continue
        proto, src, sport, dst, dport = parsed
        mac = frame[6:12].hex(":")
        with lock:
            out.write(f"cap {proto} {src} {sport} {dst} {dport} {mac} {address[0]}\n")
            out.flush()


def _serve_udp(sock: socket.socket) -> None:
    while True:
        data, ancillary, _, peer = sock.recvmsg(4096, socket.CMSG_SPACE(PKTINFO_SIZE))
        cmsgs = [
            (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, item[:16] + bytes(4))
            for level, kind, item in ancillary
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO
        ]
        seq = data.decode(errors="replace").strip()
        reply = f"{_plain(peer[0])} {seq}\n".encode()
        delay = 0.0
        if seq.startswith("late:"):  # late:SECONDS:SEQ -> answer after SECONDS (a reply still in flight)
            _, seconds, seq = seq.split(":", 2)
            delay, reply = float(seconds), f"{_plain(peer[0])} {seq}\n".encode()
        if delay:
            threading.Timer(delay, _send, args=(sock, reply, cmsgs, peer)).start()
        else:
            _send(sock, reply, cmsgs, peer)


def _send(sock: socket.socket, reply: bytes, cmsgs: list[tuple[int, int, bytes]], peer: tuple[str, int]) -> None:
    with contextlib.suppress(OSError):  # no route back (un-NATed pod source) is normal
        sock.sendmsg([reply], cmsgs, 0, peer)


def _serve_tcp_connection(conn: socket.socket, peer: str) -> None:
    with conn, contextlib.suppress(OSError):
        conn.settimeout(120)
        buffer = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                conn.sendall(f"{_plain(peer)} {line.decode(errors='replace').strip()}\n".encode())


def _serve_tcp(sock: socket.socket) -> None:
    while True:
        conn, peer = sock.accept()
        threading.Thread(target=_serve_tcp_connection, args=(conn, peer[0]), daemon=True).start()


def _guarded(target: object, *args: object) -> None:
    try:
        target(*args)  # type: ignore[operator]
    finally:
        os._exit(1)  # a dead part must not leave a server that looks alive


def serve(port: int, device: str) -> int:
    lock = threading.Lock()
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    for sock in (udp, tcp):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    tcp.listen(16)
    threads = [
        threading.Thread(target=_guarded, args=(_capture, device, sys.stdout, lock), daemon=True),
        threading.Thread(target=_guarded, args=(_serve_udp, udp), daemon=True),
        threading.Thread(target=_guarded, args=(_serve_tcp, tcp), daemon=True),
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.1)  # let the capture socket bind before announcing readiness
    with lock:
        print("ready", flush=True)
    for thread in threads:
        thread.join()
    return 1


def _family(dst: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(dst).version == 6 else socket.AF_INET


def _udp_round(sock: socket.socket, seq: str, timeout: float) -> str:
    sock.send(f"{seq}\n".encode())
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        try:
            reply = sock.recv(4096).decode().split()
        except OSError:
            return "-"
        if len(reply) == 2 and reply[1] == seq:
            return reply[0]
    return "-"


def _tcp_round(sock: socket.socket | None, seq: str, timeout: float) -> str:
    if sock is None:
        return "-closed"
    try:
        sock.settimeout(timeout)
        sock.sendall(f"{seq}\n".encode())
        data = b""
        while b"\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return "-eof"
            data += chunk
    except TimeoutError:
        return "-timeout"
    except OSError as exc:
        return f"-{type(exc).__name__}"
    words = data.decode().split()
    return words[0] if len(words) == 2 and words[1] == seq else "-garbled"


def _stream(sock: socket.socket, seconds: float, rate: float) -> tuple[int, dict[str, int]]:
    replies: dict[str, int] = {}
    sent = 0
    start = time.monotonic()
    interval = 1.0 / rate
    while time.monotonic() - start < seconds:
        with contextlib.suppress(OSError):
            sock.send(f"s{sent}\n".encode())
        sent += 1
        wake = start + sent * interval
        while (left := wake - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            try:
                words = sock.recv(4096).decode().split()
            except OSError:
                continue
            if words:
                replies[words[0]] = replies.get(words[0], 0) + 1
    return sent, replies


def client(dst: str, port: int) -> int:
    udp = socket.socket(_family(dst), socket.SOCK_DGRAM)
    udp.connect((dst, port))
    tcp: socket.socket | None = socket.socket(_family(dst), socket.SOCK_STREAM)
    assert tcp is not None
    # Close with a reset: a FIN on a path a test broke would be retransmitted into the next tests.
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    tcp.settimeout(3)
    try:
        tcp.connect((dst, port))
    except OSError as exc:
        print(f"error tcp connect: {exc!r}", flush=True)
        return 2
    print(f"ready {udp.getsockname()[1]} {tcp.getsockname()[1]}", flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        if words[0] == "udp":
            print(f"udp {words[1]} {_udp_round(udp, words[1], float(words[2]) if len(words) > 2 else 1.0)}",
                  flush=True)
        elif words[0] == "tcp":
            reply = _tcp_round(tcp, words[1], float(words[2]) if len(words) > 2 else 1.0)
            if reply.startswith("-") and tcp is not None:
                tcp.close()
                tcp = None  # a broken connection stays broken; later rounds say so
            print(f"tcp {words[1]} {reply}", flush=True)
        elif words[0] == "late":
            with contextlib.suppress(OSError):
                udp.send(f"late:{words[2]}:{words[1]}\n".encode())
            print(f"late {words[1]} sent", flush=True)
        elif words[0] == "stream":
            sent, replies = _stream(udp, float(words[1]), float(words[2]))
            print(f"stream {sent} {json.dumps(replies, sort_keys=True)}", flush=True)
        else:
            print(f"error unknown command {words[0]!r}", flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "serve":
        return serve(int(argv[1]), argv[2])
    if len(argv) == 3 and argv[0] == "client":
        return client(argv[1], int(argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


# ------------------------------------------------------------------ test side


@dataclass(frozen=True)
class Captured:
    """One packet the server's capture saw arrive."""

    proto: str
    src: str
    sport: int
    dst: str
    dport: int
    mac: str
    ifname: str


def _popen(ns: str, *args: str, stdin: int | IO[str] | None, stdout: int | IO[str],
           stderr: int | IO[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, str(SCRIPT), *args],
        stdin=stdin, stdout=stdout, stderr=stderr, text=True,
    )


class FlowServer:
    """The serve half in namespace ``ns``; :meth:`captured` lists what arrived so far.

    ``device`` is where the capture listens (``any`` for every interface).
    """

    def __init__(self, ns: str, port: int, device: str = "eth0") -> None:
        self.ns, self.port, self.device = ns, port, device
        self._log: IO[str] | None = None
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> FlowServer:
        self._log = tempfile.TemporaryFile("w+")  # closed in __exit__
        # stderr (a traceback) goes to the log too: a pipe nobody reads could fill up and stall the server.
        self._proc = _popen(self.ns, "serve", str(self.port), self.device, stdin=subprocess.DEVNULL,
                            stdout=self._log, stderr=self._log)
        try:
            deadline = time.monotonic() + 10
            while "ready" not in self._text():
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"flow server in {self.ns} did not start: {self._text()}")
                time.sleep(0.02)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc is not None:
            from .netns import stop_process  # package-relative; the script part is stdlib only

            stop_process(self._proc)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _text(self) -> str:
        assert self._log is not None
        return Path(f"/proc/self/fd/{self._log.fileno()}").read_text()

    def captured(self) -> list[Captured]:
        packets = []
        for line in self._text().splitlines():
            words = line.split()
            if len(words) == 8 and words[0] == "cap":
                packets.append(Captured(words[1], words[2], int(words[3]), words[4], int(words[5]), words[6],
                                        words[7]))
        return packets

    def settle(self, quiet: float = 0.05, limit: float = 1.0) -> None:
        """Wait (at most ``limit`` s) until nothing new was captured for ``quiet`` s."""
        settle([self], quiet, limit)

    def mark(self) -> int:
        """A position in the capture; ``captured()[mark:]`` is what arrived after it."""
        return len(self.captured())

    def wait_for(self, predicate: Callable[[list[Captured]], bool], since: int = 0, timeout: float = 3.0) -> bool:
        """Wait (at most ``timeout`` s) until ``predicate(captured()[since:])`` holds; whether it did.

        The capture runs in its own thread: a packet can be answered before it is logged.
        """
        deadline = time.monotonic() + timeout
        while not predicate(self.captured()[since:]):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def settle(servers: Iterable[FlowServer], quiet: float = 0.05, limit: float = 1.0) -> None:
    """Wait (at most ``limit`` s) until none of ``servers`` captured anything new for ``quiet`` s."""
    watched = list(servers)
    deadline = time.monotonic() + limit
    counts = [len(server._text()) for server in watched]
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = [len(server._text()) for server in watched]
        if now == counts:
            return
        counts = now


class FlowClient:
    """The client half in a pod namespace: one UDP flow and one TCP connection to ``dst``."""

    def __init__(self, ns: str, dst: str, port: int) -> None:
        self.ns, self.dst, self.port = ns, dst, port
        self._proc: subprocess.Popen[str] | None = None
        self._errors: IO[str] | None = None
        self.udp_port = self.tcp_port = 0

    def __enter__(self) -> FlowClient:
        self._errors = tempfile.TemporaryFile("w+")  # closed in __exit__
        self._proc = _popen(self.ns, "client", self.dst, str(self.port), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=self._errors)
        try:
            words = self._read(10).split()
            if len(words) != 3 or words[0] != "ready":
                raise RuntimeError(f"flow client did not start: {' '.join(words)}")
            self.udp_port, self.tcp_port = int(words[1]), int(words[2])
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._proc is not None:
            if self._proc.poll() is None and self._proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self._proc.stdin.write("quit\n")
                    self._proc.stdin.flush()
            from .netns import stop_process  # package-relative; the script part is stdlib only

            stop_process(self._proc)
            self._proc = None
        if self._errors is not None:
            self._errors.close()
            self._errors = None

    def _read(self, timeout: float) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(f"flow client in {self.ns} said nothing for {timeout}s")
        line = self._proc.stdout.readline()
        if not line:
            errors = ""
            if self._errors is not None:
                self._errors.seek(0)
                errors = self._errors.read()
            raise RuntimeError(f"flow client in {self.ns} exited: {errors}")
        return line.strip()

    def send(self, command: str) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()

    def udp(self, seq: str, timeout: float = 1.0) -> str | None:
        """Send ``seq`` on the UDP flow; the source address ext saw, or None."""
        self.send(f"udp {seq} {timeout}")
        words = self._read(timeout + 5).split()
        return None if words[2] == "-" else words[2]

    def tcp(self, seq: str, timeout: float = 1.0) -> str | None:
        """Send ``seq`` on the TCP connection; the source address ext saw, or None (broken)."""
        self.send(f"tcp {seq} {timeout}")
        words = self._read(timeout + 5).split()
        return None if words[2].startswith("-") else words[2]

    def late(self, seq: str, seconds: float) -> None:
        """Send ``seq`` on the UDP flow; the server answers only after ``seconds``."""
        self.send(f"late {seq} {seconds}")
        self._read(5)

    def start_stream(self, seconds: float, rate: float) -> float:
        """Start sending on the UDP flow in the background; returns how long it runs."""
        self.send(f"stream {seconds} {rate}")
        return seconds

    def stream_result(self, timeout: float) -> tuple[int, dict[str, int]]:
        words = self._read(timeout).split(" ", 2)
        replies: dict[str, int] = json.loads(words[2])
        return int(words[1]), replies


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
