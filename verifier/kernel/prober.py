"""Run a batch of connection probes concurrently from inside one namespace; JSON in, JSON out.

Run as ``ip netns exec NS python3 prober.py`` with, on stdin::

    {"timeout": 0.5, "concurrency": 256, "probes": [[src_or_null, dst, "tcp"|"udp"|"sctp", port], ...]}

and prints one ``[status, detail, seconds]`` per probe, in order. All probes run at once on
non-blocking sockets under one selector, so a batch costs about one timeout, not one per probe.

What the statuses mean (the same names as :class:`verifier.kernel.probe.ProbeStatus`):

- ``reached``: TCP/SCTP handshake completed; UDP: the listener's echo came back.
- ``timeout``: no answer within the timeout (dropped somewhere).
- ``refused``: TCP RST or ICMP port-unreachable (the host was reached, nothing serves the port,
  or a REJECT rule answered in its name).
- ``unreachable``: ICMP host/net unreachable or prohibited, no route, or a local netfilter drop (EPERM).
- ``unsupported``: the protocol has no sockets on this kernel (SCTP without the sctp module).
- ``error``: anything else local (bad address, cannot bind the source address...).

Standard library only, no package imports (started by file path in a bare namespace).
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field

IPPROTO_SCTP = 132
_UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EPERM, errno.EACCES, errno.EHOSTDOWN}
_UNSUPPORTED = {errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EAFNOSUPPORT, errno.EPROTOTYPE}
#: A UDP datagram is re-sent this many times within the timeout (the first could meet a full ARP queue).
UDP_SENDS = 2


@dataclass
class _Probe:
    index: int
    src: str | None
    dst: str
    proto: str
    port: int
    payload: bytes = b""
    sock: socket.socket | None = None
    started: float = 0.0
    sends: int = 0
    result: list[object] = field(default_factory=list)


def _errno_status(code: int) -> str:
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in _UNREACHABLE:
        return "unreachable"
    return "error"


class Runner:
    """Drives every probe of a batch through one selector."""

    def __init__(self, probes: list[_Probe], timeout: float, concurrency: int) -> None:
        self.waiting = list(reversed(probes))
        self.timeout = timeout
        self.concurrency = max(1, concurrency)
        self.active: dict[int, _Probe] = {}
        self.sel = selectors.DefaultSelector()

    def finish(self, probe: _Probe, status: str, detail: str) -> None:
        probe.result = [status, detail, round(time.monotonic() - probe.started, 4)]
        if probe.sock is not None:
            if probe.index in self.active:
                self.sel.unregister(probe.sock)
                del self.active[probe.index]
            probe.sock.close()
            probe.sock = None

    def start(self, probe: _Probe) -> None:
        probe.started = time.monotonic()
        family = socket.AF_INET6 if ":" in probe.dst else socket.AF_INET
        kind, proto = {
            "tcp": (socket.SOCK_STREAM, 0),
            "sctp": (socket.SOCK_STREAM, IPPROTO_SCTP),
            "udp": (socket.SOCK_DGRAM, 0),
        }[probe.proto]
        try:
            sock = socket.socket(family, kind, proto)
        except OSError as err:
            if probe.proto == "sctp" and err.errno in _UNSUPPORTED:
                self.finish(probe, "unsupported", f"SCTP sockets are not available on this kernel ({err.strerror})")
            else:
                self.finish(probe, "error", f"socket: {err}")
            return
        probe.sock = sock
        sock.setblocking(False)
        try:
            if probe.src:
                sock.bind((probe.src, 0))
        except OSError as err:
            self.finish(probe, "error", f"bind {probe.src}: {err.strerror}")
            return
        if kind == socket.SOCK_DGRAM:
            try:
                sock.connect((probe.dst, probe.port))
            except OSError as err:
                self.finish(probe, _errno_status(err.errno or 0), f"connect: {err.strerror}")
                return
            probe.payload = f"npc-probe {os.getpid()} {probe.index} {time.monotonic_ns()}".encode()
            self.active[probe.index] = probe
            self.sel.register(sock, selectors.EVENT_READ, probe)
            self.send(probe)
            return
        code = sock.connect_ex((probe.dst, probe.port))
        if code == 0:
            self.finish(probe, "reached", "connected")
        elif code in (errno.EINPROGRESS, errno.EAGAIN):
            self.active[probe.index] = probe
            self.sel.register(sock, selectors.EVENT_WRITE, probe)
        else:
            self.finish(probe, _errno_status(code), f"connect: {os.strerror(code)}")

    def send(self, probe: _Probe) -> None:
        assert probe.sock is not None
        probe.sends += 1
        try:
            probe.sock.send(probe.payload)
        except OSError as err:
            self.finish(probe, _errno_status(err.errno or 0), f"send: {err.strerror}")

    def ready(self, probe: _Probe) -> None:
        sock = probe.sock
        assert sock is not None
        if probe.proto == "udp":
            try:
                data = sock.recv(65535)
            except BlockingIOError:
                return
            except OSError as err:
                self.finish(probe, _errno_status(err.errno or 0), f"recv: {err.strerror}")
                return
            if data == probe.payload:
                self.finish(probe, "reached", "reply received")
            return
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            self.finish(probe, "reached", "connected")
        else:
            self.finish(probe, _errno_status(code), f"connect: {os.strerror(code)}")

    def run(self) -> None:
        while self.waiting or self.active:
            while self.waiting and len(self.active) < self.concurrency:
                self.start(self.waiting.pop())
            now = time.monotonic()
            for probe in list(self.active.values()):
                if now >= probe.started + self.timeout:
                    self.finish(probe, "timeout", f"no answer within {self.timeout:g}s")
                elif probe.proto == "udp" and now >= self.next_send(probe):
                    self.send(probe)
            if not self.active:
                continue
            wake = min(min(p.started + self.timeout, self.next_send(p)) for p in self.active.values())
            for key, _ in self.sel.select(max(0.0, wake - time.monotonic()) + 0.001):
                probe = key.data
                if probe.index in self.active:
                    self.ready(probe)

    def next_send(self, probe: _Probe) -> float:
        """When a UDP probe's next datagram is due (never for stream probes or after the last one)."""
        if probe.proto != "udp" or probe.sends >= UDP_SENDS:
            return float("inf")
        return probe.started + self.timeout * probe.sends / UDP_SENDS


def main() -> int:
    request = json.load(sys.stdin)
    probes = [
        _Probe(i, src, dst, str(proto).lower(), int(port))
        for i, (src, dst, proto, port) in enumerate(request["probes"])
    ]
    Runner(probes, float(request.get("timeout", 0.5)), int(request.get("concurrency", 256))).run()
    json.dump([p.result for p in probes], sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
