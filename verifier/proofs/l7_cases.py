"""Which connections the L7 proof must look at, and what each side holds for them.

A connection reaches a proxy for one endpoint, one direction, one remote address, one protocol
and port. The source's L7 rules for it depend on the remote only through its view (an endpoint,
the node, or a world range between policy prefixes) and on the port only through rule
boundaries; Envoy's depend on the remote's identity (the ipcache) and on its port-policy
boundaries. So the cases are every (endpoint, direction) that either side sends to a proxy ×
every remote cell × every (protocol, port range) cut at both sides' boundaries: one
representative per case decides the whole case. Cases that hold the same rules on both sides are
grouped, so the solver sees each distinct question once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

from compiler.cluster import Endpoint
from compiler.flow import Direction, Flow, IPAddress, Protocol
from verifier.regions import AddressCell, address_cells, split_ranges
from verifier.simulate.ebpf import Ipcache
from verifier.simulate.envoy import Applicable, EnvoySimulator, NotRedirected
from verifier.simulate.source import ReferenceEvaluator, RuleMatch

L7_PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
MAX_PORT = 65535


@dataclass(frozen=True)
class L7Case:
    """One connection class: a representative flow and what each side holds for it."""

    endpoint: str
    direction: Direction
    remote: AddressCell
    identity: int  # the remote's identity (Envoy's ``remote_policies`` are keyed by it)
    protocol: Protocol
    lo: int
    hi: int
    flow: Flow
    source_parser: str | None  # None: the source lets the connection through without a proxy
    source: tuple[RuleMatch, ...]
    envoy: Applicable | None  # None: Envoy has no policy for it

    @property
    def name(self) -> str:
        span = str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"
        side = "from" if self.direction is Direction.INGRESS else "to"
        return f"{self.endpoint} {self.direction.value} {span}/{self.protocol.name} {side} {self.remote}"

    def key(self) -> tuple[object, ...]:
        """What the question depends on: equal keys, equal answers."""
        envoy = None
        if self.envoy is not None:
            envoy = (self.envoy.parser, self.envoy.denies != (),
                     tuple(sorted(json.dumps(rule, sort_keys=True) for _, rule in self.envoy.allows)))
        source = tuple(sorted(repr(m.l7) for m in self.source))
        return (self.source_parser, envoy, source)


def l7_cases(ref: ReferenceEvaluator, envoy: EnvoySimulator, ipcache: Ipcache) -> Iterator[L7Case]:
    """Every connection class either side sends to a proxy (see the module docstring)."""
    cluster = ref.cluster
    cells = address_cells(cluster, [str(n) for n in ref.policy_networks()])
    source_spans = {protocol: _source_spans(ref, protocol) for protocol in L7_PROTOCOLS}
    for ep in cluster.endpoints:
        for address in ep.addresses:
            for direction in Direction:
                redirected = _envoy_redirects(envoy, address, direction)
                if not redirected and not _source_has_l7(ref, ep, direction):
                    continue
                for protocol in L7_PROTOCOLS:
                    spans = source_spans[protocol] | _envoy_spans(envoy, address, direction)
                    for lo, hi in split_ranges(spans, MAX_PORT):
                        for cell in cells:
                            case = _case(ref, envoy, ipcache, ep.key, address, direction, cell, protocol, lo, hi)
                            if case is not None:
                                yield case


def _case(ref: ReferenceEvaluator, envoy: EnvoySimulator, ipcache: Ipcache, endpoint: str, address: IPAddress,
          direction: Direction, cell: AddressCell, protocol: Protocol, lo: int, hi: int) -> L7Case | None:
    remote = cell.representative
    if remote.version != address.version or remote == address:
        return None
    src, dst = (remote, address) if direction is Direction.INGRESS else (address, remote)
    flow = Flow(src, dst, protocol, lo)
    decision, matches = ref.evaluate_direction(flow, direction)
    if not decision.allowed:
        return None  # dropped before any proxy: the L3/L4 proofs' business
    identity = ipcache.lookup(remote)
    try:
        rules: Applicable | None = envoy.applicable(address, direction.value, identity, protocol, lo)
    except NotRedirected:
        rules = None
    if decision.redirect is None and rules is None:
        return None
    return L7Case(endpoint, direction, cell, identity, protocol, lo, hi, flow, decision.redirect, matches, rules)


def _envoy_redirects(envoy: EnvoySimulator, address: IPAddress, direction: Direction) -> bool:
    entry = envoy.entry(address)
    return entry is not None and any(r["direction"] == direction.value for r in entry["redirects"])


def _source_has_l7(ref: ReferenceEvaluator, ep: Endpoint, direction: Direction) -> bool:
    return any(pm.parser is not None for unit in ref.units_for(ep, direction)
               for rule in unit.allows.get(direction, ()) for pm in rule.ports or ())


def _source_spans(ref: ReferenceEvaluator, protocol: Protocol) -> set[tuple[int, int]]:
    """Where the source's decisions can change: every rule range of the protocol and every
    declared container port (named ports resolve to them)."""
    spans: set[tuple[int, int]] = set()
    for unit in ref.units:
        for rules in (*unit.allows.values(), *unit.denies.values()):
            for rule in rules:
                for pm in rule.ports or ():
                    if protocol in pm.protocols and pm.name is None:
                        spans.add((pm.low, pm.high))
    for ep in ref.cluster.endpoints:
        spans.update((p.port, p.port) for p in ep.ports)
    return spans


def _envoy_spans(envoy: EnvoySimulator, address: IPAddress, direction: Direction) -> set[tuple[int, int]]:
    """Where Envoy's can: the endpoint's redirect and port-policy ranges."""
    spans: set[tuple[int, int]] = set()
    entry = envoy.entry(address)
    if entry is not None:
        items = list(entry["redirects"])
        for doc_key in ("npds", "dns"):
            if doc_key in entry:
                items.extend(envoy.document(entry[doc_key]).get(f"{direction.value}_per_port_policies", []))
        for item in items:
            if item.get("port", 0):
                spans.add((item["port"], item.get("end_port", 0) or item["port"]))
    return spans
