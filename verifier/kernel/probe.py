"""Send real connections through a testbed and collect what got through.

Probes run from inside testbed namespaces only (a namespace not named ``npc-…`` is refused), so a
probe can never leave this machine's testbed: the namespaces have no link to anything else.
One :mod:`verifier.kernel.prober` process per source namespace runs its whole batch
concurrently; all sources run in parallel.

``ok`` means *connection established* (TCP/SCTP handshake done) or, for UDP, *echo received*.
A refusal (RST, ICMP port unreachable) is not ok: with a listener on every served port, a
refusal means something (a REJECT rule) answered instead of the listener.

SCTP: this package probes it with real SCTP sockets when the kernel has them. When it does not
(no ``sctp`` module, as on the machine this was written on), a probe answers
:attr:`ProbeStatus.UNSUPPORTED` and :func:`kernel_matrix` raises :class:`UnsupportedProbeError`
(or leaves the port out with ``skip_unsupported=True``) — never a silent "denied".
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from compiler.flow import Flow, PortSpec, Protocol
from verifier.kernel import netns as ns
from verifier.kernel.netns import sctp_supported
from verifier.kernel.testbed import Testbed, helper_argv

PROBER = Path(__file__).resolve().parent / "prober.py"
DEFAULT_TIMEOUT = 0.5
#: Open sockets per prober process at once (well under the default 1024 descriptor limit).
CONCURRENCY = 256
PROBE_PROTOCOLS = frozenset({Protocol.TCP, Protocol.UDP, Protocol.SCTP})


class ProbeStatus(str, Enum):
    """How a probe ended (the prober's words; see :mod:`verifier.kernel.prober`)."""

    REACHED = "reached"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    UNSUPPORTED = "unsupported"
    ERROR = "error"


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe: ``ok`` when the connection was established / the echo came back."""

    status: ProbeStatus
    detail: str
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is ProbeStatus.REACHED

    @property
    def supported(self) -> bool:
        return self.status is not ProbeStatus.UNSUPPORTED

    def __str__(self) -> str:
        return f"{self.status.value}: {self.detail} ({self.seconds * 1000:.1f} ms)"


@dataclass(frozen=True)
class ProbeRequest:
    """One connection attempt from a namespace (optionally from a given source address)."""

    netns: str
    dst: str
    protocol: Protocol
    port: int
    src: str | None = None


class UnsupportedProbeError(RuntimeError):
    """A port cannot be probed on this kernel (SCTP without kernel support, ICMP)."""


def unsupported_reason(port: PortSpec) -> str | None:
    """Why a port cannot be probed here, or None when it can."""
    if port.protocol not in PROBE_PROTOCOLS:
        return f"{port}: only TCP, UDP and SCTP are probed (ICMP is not)"
    if port.protocol is Protocol.SCTP and not sctp_supported():
        return f"{port}: this kernel has no SCTP sockets (socket(AF_INET, SOCK_STREAM, 132) fails)"
    return None


def _run_prober(netns: str, batch: Sequence[ProbeRequest], timeout: float) -> list[ProbeResult]:
    request = {
        "timeout": timeout,
        "concurrency": CONCURRENCY,
        "probes": [[r.src, r.dst, r.protocol.name.lower(), r.port] for r in batch],
    }
    # Each concurrency wave costs at most one timeout; plus process start-up.
    limit = 30.0 + timeout * (len(batch) // CONCURRENCY + 1) * 2
    proc = ns.run(helper_argv(netns, PROBER), input=json.dumps(request), check=False, timeout=limit)
    if proc.returncode != 0:
        raise ns.KernelError(["prober in", netns], proc.returncode, proc.stderr)
    rows = json.loads(proc.stdout)
    return [ProbeResult(ProbeStatus(status), str(detail), float(secs)) for status, detail, secs in rows]


def probe_many(requests: Sequence[ProbeRequest], *, timeout: float = DEFAULT_TIMEOUT) -> list[ProbeResult]:
    """Run probes, grouped into one concurrent prober per source namespace; results in request order."""
    groups: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
        if not req.netns.startswith(ns.PREFIX):
            raise ValueError(f"refusing to probe from {req.netns!r}: only testbed namespaces ({ns.PREFIX}*)")
        if req.protocol not in PROBE_PROTOCOLS:
            raise UnsupportedProbeError(f"{req.port}/{req.protocol.name}: only TCP, UDP and SCTP are probed")
        groups.setdefault(req.netns, []).append(i)
    results: list[ProbeResult | None] = [None] * len(requests)
    if not groups:
        return []
    with ThreadPoolExecutor(max_workers=min(32, len(groups))) as pool:
        futures = {
            name: pool.submit(_run_prober, name, [requests[i] for i in idx], timeout) for name, idx in groups.items()
        }
        for name, future in futures.items():
            for i, result in zip(groups[name], future.result(), strict=True):
                results[i] = result
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def probe(
    src_netns: str,
    dst: str,
    protocol: Protocol,
    port: int,
    *,
    src: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> ProbeResult:
    """One probe from inside ``src_netns`` to ``dst:port`` (``src`` pins the source address)."""
    return probe_many([ProbeRequest(src_netns, dst, protocol, port, src)], timeout=timeout)[0]


def flow_request(testbed: Testbed, flow: Flow) -> ProbeRequest:
    """The probe that replays a flow: from the namespace owning ``flow.src``, from that address."""
    site = testbed.site_of(flow.src)
    if site is None:
        raise ValueError(f"no namespace of testbed {testbed.run_id} owns source address {flow.src}")
    if testbed.site_of(flow.dst) is None:
        raise ValueError(f"no namespace of testbed {testbed.run_id} owns destination {flow.dst}")
    return ProbeRequest(site.netns, str(flow.dst), flow.protocol, flow.port, str(flow.src))


def probe_flows(testbed: Testbed, flows: Sequence[Flow], *, timeout: float = DEFAULT_TIMEOUT) -> list[ProbeResult]:
    """Replay flows (endpoint, host and world addresses) through the testbed; L7 parts are ignored."""
    return probe_many([flow_request(testbed, f) for f in flows], timeout=timeout)


def site_requests(
    testbed: Testbed, src_label: str, dst_labels: Iterable[str], ports: Iterable[PortSpec]
) -> list[ProbeRequest]:
    """Probes from one site (endpoint key, ``host``, ``world``) to others' primary addresses (IPv4 first)."""
    src = testbed.site(src_label)
    out = []
    for dst_label in dst_labels:
        dst = testbed.site(dst_label).address()
        if dst is None:
            continue
        for port in ports:
            out.append(ProbeRequest(src.netns, dst, port.protocol, port.port, src.source_for(dst)))
    return out


def kernel_matrix(
    testbed: Testbed,
    ports: Sequence[PortSpec],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    skip_unsupported: bool = False,
) -> dict[str, dict[str, list[str]]]:
    """The measured reachability matrix, shaped like ``netpolc matrix``: ``{"80/TCP": {src: [dst, ...]}}``.

    Every endpoint probes every endpoint (itself included: that traffic stays on its loopback
    and never meets the node, as in a real pod) on each port, at the primary addresses (IPv4
    first), from the source's address of the same family. Ports the testbed does not serve
    raise ValueError (every probe would be refused). Unprobeable ports (SCTP on a kernel without
    SCTP, ICMP) raise :class:`UnsupportedProbeError`, or are left out of the result with
    ``skip_unsupported``.
    """
    wanted: list[PortSpec] = []
    for port in ports:
        reason = unsupported_reason(port)
        if reason is not None:
            if skip_unsupported:
                continue
            raise UnsupportedProbeError(reason)
        if not testbed.serves(port):
            raise ValueError(
                f"{port} is not served by testbed {testbed.run_id} (it serves "
                f"{', '.join(map(str, testbed.ports)) or 'nothing'})"
            )
        wanted.append(port)
    labels = list(testbed.topology.endpoints)  # endpoints with an address
    rows = [ep.key for ep in testbed.cluster.endpoints]
    requests: list[ProbeRequest] = []
    keys: list[tuple[str, str, str]] = []
    for src in labels:
        for dst in labels:
            for req in site_requests(testbed, src, [dst], wanted):
                requests.append(req)
                keys.append((str(PortSpec(req.port, req.protocol)), src, dst))
    out: dict[str, dict[str, list[str]]] = {str(p): {src: [] for src in rows} for p in wanted}
    for (port_key, src, dst), result in zip(keys, probe_many(requests, timeout=timeout), strict=True):
        if result.status is ProbeStatus.UNSUPPORTED:
            raise UnsupportedProbeError(f"{port_key}: {result.detail}")
        if result.ok:
            out[port_key][src].append(dst)
    for by_src in out.values():
        for reach in by_src.values():
            reach.sort()
    return out
