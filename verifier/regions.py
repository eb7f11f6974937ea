"""A finite partition of the flow space on which every policy decision is constant.

A flow is (source address, destination address, protocol, port or ICMP type). For a fixed
cluster and policy set, a decision depends on an address only through what it is (one endpoint,
the node, or a world address) and which policy prefixes contain it, and on a port only through
which rule ranges contain it. So the space splits into finitely many *cells* — each endpoint and
the node are one address cell each; world addresses split at every prefix boundary; ports split at
every range boundary (and every named port's number) — and evaluating one representative flow per
cell decides every flow of the cell. Enumerating the cells is therefore an exhaustive proof over
the whole space, used by `netpolc diff` (and by the proofs as the source side's case split).

The cells are computed from the union of several policy sets (old and new) so that one partition
serves both sides of a comparison.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from compiler.cluster import Cluster
from compiler.flow import Flow, IPAddress, Protocol
from compiler.ir.model import IR, MAX_PORT
from verifier.simulate.source_rules import PolicyUnit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

PORT_PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
ICMP_TYPES = 255


@dataclass(frozen=True, order=True)
class AddressCell:
    """A set of addresses policy cannot tell apart: one endpoint, the node, or a world range."""

    kind: str  # "endpoint", "host", "world"
    name: str  # endpoint key, "host", or "a.b.c.d-e.f.g.h"
    representative: IPAddress
    networks: tuple[str, ...] = ()  # for world ranges: the range as CIDRs (minus cluster addresses)
    span: tuple[int, int] = (0, 0)  # for world ranges: first and last address, as integers

    def __str__(self) -> str:
        if self.kind != "world":
            return self.name
        return ",".join(self.networks) if len(self.networks) <= 3 else self.name


@dataclass(frozen=True, order=True)
class PortCell:
    """A protocol and a port (or ICMP type) range inside which no rule boundary falls."""

    protocol: Protocol
    lo: int
    hi: int

    def __str__(self) -> str:
        span = str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"
        return f"{span}/{self.protocol.name}"


def split_ranges(ranges: Iterable[tuple[int, int]], top: int) -> list[tuple[int, int]]:
    """``0..top`` cut at every range's edges: no range starts or ends inside a piece."""
    cuts = {0, top + 1}
    for lo, hi in ranges:
        cuts.add(max(0, lo))
        cuts.add(min(top, hi) + 1)
    points = sorted(cuts)
    return [(a, b - 1) for a, b in itertools.pairwise(points) if a <= b - 1]


def port_cells(irs: Sequence[IR]) -> list[PortCell]:
    """Port/type cells from every rule range of every IR, and every declared container port."""
    ranges: dict[Protocol, set[tuple[int, int]]] = {p: set() for p in (*PORT_PROTOCOLS, Protocol.ICMP, Protocol.ICMPV6)}
    for ir in irs:
        for policy in ir.policies.values():
            for rule in (*policy.allow, *policy.deny):
                for match in rule.ports:
                    protocols = [match.protocol] if match.protocol is not None else list(ranges)
                    for proto in protocols:
                        if match.name is None:
                            ranges[proto].add((match.lo, match.hi))
        for ep in ir.cluster.endpoints:
            for port in ep.ports:
                proto = Protocol.parse(port.protocol)
                ranges.setdefault(proto, set()).add((port.port, port.port))
    cells: list[PortCell] = []
    for proto in sorted(ranges):
        top = ICMP_TYPES if proto in (Protocol.ICMP, Protocol.ICMPV6) else MAX_PORT
        cells.extend(PortCell(proto, lo, hi) for lo, hi in split_ranges(ranges[proto], top))
    return cells


def source_port_cells(units: Iterable[PolicyUnit], clusters: Iterable[Cluster]) -> list[PortCell]:
    """Port/type cells read from the parsed policies (the reference evaluator's rules) instead of
    an IR: every numeric range of every allow and deny rule, and every declared container port
    (named ports resolve to those). The reference evaluator looks at a port only through
    ``low <= port <= high`` of such a range or ``number == port`` for a named port's number, so
    its decisions are constant inside each cell — the same partition property as
    :func:`port_cells`, for callers that never build an IR (``netpolc diff``)."""
    ranges: dict[Protocol, set[tuple[int, int]]] = {p: set() for p in (*PORT_PROTOCOLS, Protocol.ICMP, Protocol.ICMPV6)}
    for unit in units:
        for rule_sets in (unit.allows, unit.denies):
            for rules in rule_sets.values():
                for rule in rules:
                    for match in rule.ports or ():
                        if match.name is None:
                            for proto in match.protocols:
                                ranges.setdefault(proto, set()).add((match.low, match.high))
    for cluster in clusters:
        for ep in cluster.endpoints:
            for port in ep.ports:
                ranges.setdefault(Protocol.parse(port.protocol), set()).add((port.port, port.port))
    cells: list[PortCell] = []
    for proto in sorted(ranges):
        top = ICMP_TYPES if proto in (Protocol.ICMP, Protocol.ICMPV6) else MAX_PORT
        cells.extend(PortCell(proto, lo, hi) for lo, hi in split_ranges(ranges[proto], top))
    return cells


def _world_ranges(prefixes: Iterable[IPNetwork], version: int) -> list[tuple[int, int]]:
    """The address space of one family cut at every boundary of ``prefixes``: inside one range,
    every prefix either holds every address or none."""
    top = (1 << (32 if version == 4 else 128)) - 1
    nets = [(int(n.network_address), int(n.broadcast_address)) for n in prefixes if n.version == version]
    return split_ranges(nets, top)


def address_cells(cluster: Cluster, prefixes: Iterable[str]) -> list[AddressCell]:
    """Every endpoint, the node, and the world split at the policies' prefix boundaries.

    IPv6 world cells appear only when an endpoint or a prefix is IPv6.
    """
    # the pod CIDRs too: addresses there that no endpoint holds are world, but keep them apart
    nets = [*(ipaddress.ip_network(p, strict=False) for p in prefixes), *cluster.pod_networks]
    taken = {cluster.node_address} | {a for ep in cluster.endpoints for a in ep.addresses}
    cells = [AddressCell("endpoint", ep.key, ep.addresses[0]) for ep in cluster.endpoints if ep.addresses]
    cells.append(AddressCell("host", "host", cluster.node_address))
    versions = {4} | {a.version for a in taken} | {n.version for n in nets}
    for version in sorted(versions):
        for lo, hi in _world_ranges(nets, version):
            rep = _free_address(lo, hi, version, taken)
            if rep is None:
                continue  # every address of the range belongs to the cluster
            first, last = ipaddress.ip_address(lo), ipaddress.ip_address(hi)
            covering = tuple(str(n) for n in ipaddress.summarize_address_range(first, last))
            cells.append(AddressCell("world", f"{first}-{last}", rep, covering, (lo, hi)))
    return cells


def _free_address(lo: int, hi: int, version: int, taken: set[IPAddress]) -> IPAddress | None:
    """The first address of ``lo..hi`` not in ``taken`` (None: the range is all taken)."""
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    value = lo
    while value <= hi:
        address = make(value)
        if address not in taken:
            return address
        value += 1
    return None


def flows(
    cells: Sequence[AddressCell], ports: Sequence[PortCell]
) -> Iterator[tuple[AddressCell, AddressCell, PortCell, Flow]]:
    """One representative flow per (source cell, destination cell, port cell) that policy can see.

    At least one side is an endpoint (nothing else is policed); the address families match;
    ICMPv6 only between IPv6 addresses and ICMP only between IPv4 ones.
    """
    for src in cells:
        for dst in cells:
            if src.kind != "endpoint" and dst.kind != "endpoint":
                continue
            if src.representative.version != dst.representative.version or src == dst:
                continue
            v6 = src.representative.version == 6
            for port in ports:
                if (port.protocol is Protocol.ICMP and v6) or (port.protocol is Protocol.ICMPV6 and not v6):
                    continue
                yield src, dst, port, Flow(src.representative, dst.representative, port.protocol, port.lo)
