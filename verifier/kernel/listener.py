"""Serve TCP/UDP (and SCTP where the kernel has it) on many ports in one light process per namespace.

Run inside a testbed namespace (``ip netns exec NS python3 listener.py --addr A --tcp 80,81
--udp 53``). Binds every (address, port) pair, prints ``ready`` on stdout, then: TCP/SCTP
connections are accepted and closed at once (reaching the listener is all a probe asks); every
UDP datagram is echoed back to its sender from the address it was sent to (per-address sockets,
so a probe's connected UDP socket accepts the reply).

Exits when stdin reaches EOF, so listeners die with the testbed process even if it is
SIGKILLed. Standard library only and no package imports: it starts in a few milliseconds and
runs by file path without ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import sys

IPPROTO_SCTP = 132
BACKLOG = 4096


def _ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p.strip()]


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _stream(address: str, port: int, proto: int) -> socket.socket:
    sock = socket.socket(_family(address), socket.SOCK_STREAM, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def _datagram(address: str, port: int) -> socket.socket:
    sock = socket.socket(_family(address), socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.setblocking(False)
    return sock


def serve(addresses: list[str], tcp: list[int], udp: list[int], sctp: list[int]) -> int:
    """Bind everything, say ``ready``, serve until stdin closes. Returns the exit code."""
    sel = selectors.DefaultSelector()
    try:
        for address in addresses:
            for port in tcp:
                sel.register(_stream(address, port, 0), selectors.EVENT_READ, "accept")
            for port in sctp:
                sel.register(_stream(address, port, IPPROTO_SCTP), selectors.EVENT_READ, "accept")
            for port in udp:
                sel.register(_datagram(address, port), selectors.EVENT_READ, "echo")
    except OSError as err:
        print(f"error: cannot bind: {err}", flush=True)
        return 1
    sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if key.data == "stdin":
                if not os.read(sys.stdin.fileno(), 4096):
                    return 0
                continue
            assert isinstance(sock, socket.socket)
            if key.data == "accept":
                _accept_all(sock)
            else:
                _echo_all(sock)


def _accept_all(sock: socket.socket) -> None:
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # e.g. ECONNABORTED: the client gave up first
            continue
        conn.close()


def _echo_all(sock: socket.socket) -> None:
    while True:
        try:
            data, peer = sock.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # an ICMP error queued on the socket by an earlier reply
            continue
        with contextlib.suppress(OSError):
            sock.sendto(data, peer)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve TCP/UDP/SCTP ports for netpolc probes.")
    parser.add_argument("--addr", action="append", default=[], help="local address to bind (repeatable)")
    parser.add_argument("--tcp", type=_ports, default=[], help="comma-separated TCP ports")
    parser.add_argument("--udp", type=_ports, default=[], help="comma-separated UDP ports")
    parser.add_argument("--sctp", type=_ports, default=[], help="comma-separated SCTP ports")
    args = parser.parse_args(argv)
    return serve(args.addr, args.tcp, args.udp, args.sctp)


if __name__ == "__main__":
    sys.exit(main())
