"""Stand-in for the L7 proxies: accept what TPROXY delivers on the proxy ports, and say what arrived.

Run inside the node namespace (``ip netns exec NODE python3 tproxy_listener.py --port 10000 ...
--log FILE``). For every port it binds TCP and UDP sockets on 127.0.0.1 and ::1 (the ``--on-ip`` of
our TPROXY rules, as Cilium uses, reference/iptables.md §6.2) with ``IP_TRANSPARENT``, which TPROXY
requires of the receiving socket (Linux Documentation/networking/tproxy.rst). TCP connections are
accepted and closed — the probe only asks that a connection is established; UDP datagrams are
echoed from their *original* destination (``IP_RECVORIGDSTADDR`` + a transparent socket bound to
it), so the prober's connected socket accepts the answer. Each delivery is appended to the log as
``proto port src dst dport`` so tests can check which flows were redirected where.

Prints ``ready`` once bound; exits when stdin reaches EOF. Standard library only, no package
imports (it runs by file path in an isolated interpreter, like listener.py).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import selectors
import socket
import struct
import sys
from typing import TextIO

IP_TRANSPARENT = 19  # linux/in.h
IP_RECVORIGDSTADDR = 20
IPV6_TRANSPARENT = 75  # linux/in6.h
IPV6_RECVORIGDSTADDR = 74
SOL_IPV6 = 41


def _transparent(family: socket.AddressFamily, kind: socket.SocketKind) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET:
        sock.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
    else:
        sock.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)
    return sock


def _orig_dst(ancdata: list[tuple[int, int, bytes]]) -> tuple[str, int] | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_IP and kind == IP_RECVORIGDSTADDR:
            port = struct.unpack("!H", data[2:4])[0]
            return str(ipaddress.IPv4Address(data[4:8])), port
        if level == SOL_IPV6 and kind == IPV6_RECVORIGDSTADDR:
            port = struct.unpack("!H", data[2:4])[0]
            return str(ipaddress.IPv6Address(data[8:24])), port
    return None


class Proxy:
    """Every bound socket and the log."""

    def __init__(self, ports: list[int], log: TextIO) -> None:
        self.log = log
        self.sel = selectors.DefaultSelector()
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            for port in ports:
                tcp = _transparent(family, socket.SOCK_STREAM)
                tcp.bind((address, port))
                tcp.listen(4096)
                tcp.setblocking(False)
                self.sel.register(tcp, selectors.EVENT_READ, ("tcp", port))
                udp = _transparent(family, socket.SOCK_DGRAM)
                if family == socket.AF_INET:
                    udp.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
                else:
                    udp.setsockopt(SOL_IPV6, IPV6_RECVORIGDSTADDR, 1)
                udp.bind((address, port))
                udp.setblocking(False)
                self.sel.register(udp, selectors.EVENT_READ, ("udp", port))

    def record(self, proto: str, port: int, src: str, dst: str, dport: int) -> None:
        self.log.write(f"{proto} {port} {src} {dst} {dport}\n")
        self.log.flush()

    def accept_all(self, sock: socket.socket, port: int) -> None:
        while True:
            try:
                conn, peer = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            dst, dport = conn.getsockname()[:2]  # a TPROXY'd socket's local address is the original one
            self.record("tcp", port, peer[0], dst, dport)
            conn.close()

    def echo_all(self, sock: socket.socket, port: int) -> None:
        while True:
            try:
                data, ancdata, _, peer = sock.recvmsg(65535, 1024)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            orig = _orig_dst(ancdata)
            if orig is None:
                continue
            self.record("udp", port, peer[0], orig[0], orig[1])
            try:
                reply = _transparent(sock.family, socket.SOCK_DGRAM)
                reply.bind(orig)
                reply.sendto(data, peer[:2] if sock.family == socket.AF_INET else peer)
                reply.close()
            except OSError as err:
                self.log.write(f"error udp reply {orig} -> {peer}: {err}\n")
                self.log.flush()

    def serve(self) -> int:
        self.sel.register(sys.stdin, selectors.EVENT_READ, ("stdin", 0))
        print("ready", flush=True)
        while True:
            for key, _ in self.sel.select():
                kind, port = key.data
                if kind == "stdin":
                    if not os.read(sys.stdin.fileno(), 4096):
                        return 0
                    continue
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if kind == "tcp":
                    self.accept_all(sock, port)
                else:
                    self.echo_all(sock, port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Transparent stand-in proxy for TPROXY'd flows.")
    parser.add_argument("--port", type=int, action="append", default=[], help="proxy port (repeatable)")
    parser.add_argument("--log", required=True, help="file to append deliveries to")
    args = parser.parse_args(argv)
    with open(args.log, "a", encoding="utf-8") as log:
        try:
            proxy = Proxy(args.port, log)
        except OSError as err:
            print(f"error: cannot bind: {err}", flush=True)
            return 1
        return proxy.serve()


if __name__ == "__main__":
    sys.exit(main())
