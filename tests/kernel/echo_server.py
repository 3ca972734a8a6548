"""Source-address echo server run inside the external host's namespace.

Usage: ``python3 echo_server.py PORT``. Listens on UDP and TCP ``[::]:PORT``
dual-stack and answers every datagram / connection with the source address it
saw, as text plus a newline (IPv4 as plain dotted quad, never ``::ffff:``).
TCP: reads one line, answers one line, closes. Prints ``ready`` once both
sockets listen, nothing else on stdout; runs until killed. Stdlib only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import sys
import threading
from collections.abc import Callable

PKTINFO_SIZE = 20  # struct in6_pktinfo: 16-byte address + 4-byte ifindex


def plain_address(host: str) -> str:
    """``::ffff:192.0.2.1`` -> ``192.0.2.1``; drops a ``%scope`` suffix."""
    addr = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def serve_udp(sock: socket.socket) -> None:
    while True:
        _, ancillary, _, peer = sock.recvmsg(4096, socket.CMSG_SPACE(PKTINFO_SIZE))
        reply = (plain_address(peer[0]) + "\n").encode()
        # Answer from the address the datagram was sent to (an address on lo,
        # an EIP...): a wildcard socket would otherwise pick the source by
        # route, and the client's NAT/conntrack would not match the reply.
        cmsgs = [
            (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, data[:16] + bytes(4))
            for level, kind, data in ancillary
            if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO
        ]
        # No route back (e.g. an un-NATed pod source) is normal: the client times out.
        with contextlib.suppress(OSError):
            sock.sendmsg([reply], cmsgs, 0, peer)


def handle_tcp(conn: socket.socket, peer: str) -> None:
    with conn:
        try:
            conn.settimeout(5)
            data = b""
            while b"\n" not in data and len(data) < 4096:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            conn.sendall((plain_address(peer) + "\n").encode())
        except OSError:
            pass


def serve_tcp(sock: socket.socket) -> None:
    while True:
        conn, peer = sock.accept()
        threading.Thread(target=handle_tcp, args=(conn, peer[0]), daemon=True).start()


def guarded(serve: Callable[[socket.socket], None], sock: socket.socket) -> None:
    try:
        serve(sock)
    finally:
        os._exit(1)  # a dead half must not leave a server that looks alive


def dual_stack(kind: socket.SocketKind, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    return sock


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: echo_server.py PORT", file=sys.stderr)
        return 2
    port = int(argv[0])
    udp = dual_stack(socket.SOCK_DGRAM, port)
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    tcp = dual_stack(socket.SOCK_STREAM, port)
    tcp.listen(64)
    threads = [
        threading.Thread(target=guarded, args=(serve_udp, udp), daemon=True),
        threading.Thread(target=guarded, args=(serve_tcp, tcp), daemon=True),
    ]
    for thread in threads:
        thread.start()
    print("ready", flush=True)
    for thread in threads:
        thread.join()
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
