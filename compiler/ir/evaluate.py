"""Evaluate flows on the IR alone (SEMANTICS §1, §2, §7, §8).

The IR evaluator answers a :class:`~compiler.flow.Flow` with a :class:`~compiler.flow.Decision`
using only the built IR (identity sets, CIDR matches, port matches, and the L7 rule objects held
by :class:`~compiler.ir.model.L7Spec`). The reference evaluator over the parsed policies must
give identical decisions; property tests compare the two.

The L3/L4 part of a direction's answer is cached on what it can depend on — the subject
identity, the subject's own ports (ingress named ports), the remote's identities and address
family, and the remote's address or ports only when the policy has CIDR or egress-named-port rules — so a
matrix over many endpoints that share identities stays cheap.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from compiler.cluster import Endpoint
from compiler.flow import (
    Decision,
    Direction,
    DirectionDecision,
    DropReason,
    Flow,
    IPAddress,
    L7Request,
    PortSpec,
    Profile,
)
from compiler.ir.model import IR, EndpointPolicy, Remote, Rule


@dataclass(frozen=True)
class _L4Answer:
    """One direction at L3/L4: which allow and deny rules match."""

    allows: tuple[Rule, ...]
    denies: tuple[Rule, ...]


class IREvaluator:
    """Concrete flow → decision over an :class:`IR`."""

    def __init__(self, ir: IR) -> None:
        self.ir = ir
        self._cache: dict[Hashable, _L4Answer] = {}
        self._shape: dict[int, tuple[bool, bool]] = {}
        self._remotes: dict[IPAddress, Remote] = {}

    # --- public API -------------------------------------------------------------------------

    def evaluate(self, flow: Flow) -> Decision:
        """Source egress (if the source is an endpoint), destination ingress (likewise), combined."""
        src = self._remote(flow.src)
        dst = self._remote(flow.dst)
        egress = self._side(Direction.EGRESS, src.endpoint, dst, flow) if src.endpoint is not None else None
        ingress = self._side(Direction.INGRESS, dst.endpoint, src, flow) if dst.endpoint is not None else None
        return Decision.combine(flow, egress, ingress)

    def evaluate_endpoints(self, src_key: str, dst_key: str, port: PortSpec, l7: L7Request | None = None) -> Decision:
        """A flow between two endpoints named ``ns/name`` (their primary addresses)."""
        src = self._endpoint(src_key)
        dst = self._endpoint(dst_key)
        src_addr, dst_addr = _addresses(src, dst)
        return self.evaluate(Flow(src_addr, dst_addr, port.protocol, port.port, l7))

    # --- one direction ----------------------------------------------------------------------

    def _remote(self, address: IPAddress) -> Remote:
        remote = self._remotes.get(address)
        if remote is None:
            remote = self._remotes[address] = self.ir.remote(address)
        return remote

    def _endpoint(self, key: str) -> Endpoint:
        ep = self.ir.cluster.endpoint(key)
        if ep is None:
            raise KeyError(f"no endpoint {key!r}")
        if not ep.ips:
            raise ValueError(f"endpoint {key} has no address")
        return ep

    def _side(self, direction: Direction, subject: Endpoint, remote: Remote, flow: Flow) -> DirectionDecision:
        policy = self.ir.policy(subject.key, direction)
        answer = self._l4(policy, subject, remote, flow)
        allow_refs = frozenset(r.origin for r in answer.allows)
        deny_refs = frozenset(r.origin for r in answer.denies)
        if answer.denies:  # deny wins, whatever the port specificity (SEMANTICS §2)
            return DirectionDecision(direction, subject.key, policy.enforced, False, DropReason.POLICY_DENY,
                                     allow_refs, deny_refs)
        if not answer.allows:
            return DirectionDecision(direction, subject.key, policy.enforced, False, DropReason.POLICY_DENIED,
                                     allow_refs, deny_refs)
        parsers = sorted({r.l7.parser for r in answer.allows if r.l7 is not None})
        redirect = parsers[0] if parsers else None  # §7: some matching allow is an L7 allow
        l7_allowed = None
        if redirect is not None and flow.l7 is not None:
            # admitted iff some matching allow has no L7 rules or one that matches (SEMANTICS §7)
            l7_allowed = any(r.l7 is None or r.l7.admits(flow.l7) for r in answer.allows)
        return DirectionDecision(direction, subject.key, policy.enforced, True, None, allow_refs, deny_refs,
                                 redirect, l7_allowed)

    def _l4(self, policy: EndpointPolicy, subject: Endpoint, remote: Remote, flow: Flow) -> _L4Answer:
        has_cidrs, egress_named = self._policy_shape(policy)
        key = (
            policy.identity, policy.direction,
            subject.ports if policy.direction is Direction.INGRESS else None,
            remote.kind, remote.identities, remote.address.version,
            remote.address if has_cidrs else None,
            remote.endpoint.ports if egress_named and remote.endpoint is not None else None,
            flow.protocol, flow.port,
        )
        answer = self._cache.get(key)
        if answer is None:
            allows = tuple(r for r in policy.allow if self._matches(r, subject, remote, flow))
            denies = tuple(r for r in policy.deny if self._matches(r, subject, remote, flow))
            answer = self._cache[key] = _L4Answer(allows, denies)
        return answer

    def _policy_shape(self, policy: EndpointPolicy) -> tuple[bool, bool]:
        """(has CIDR peers, resolves named ports against the destination) — what the cache keys on."""
        marker = id(policy)
        shape = self._shape.get(marker)
        if shape is None:
            rules = policy.allow + policy.deny
            has_cidrs = any(r.peer.cidrs for r in rules)
            egress_named = (policy.direction is Direction.EGRESS and self.ir.profile is Profile.K8S
                            and any(m.name is not None for r in rules for m in r.ports))
            shape = self._shape[marker] = (has_cidrs, egress_named)
        return shape

    def _matches(self, rule: Rule, subject: Endpoint, remote: Remote, flow: Flow) -> bool:
        """Peer and ports (SEMANTICS §4-§6); empty ports = every protocol and port, ICMP included."""
        if not rule.peer.matches(remote, self.ir.profile):
            return False
        if not rule.ports:
            return True
        for match in rule.ports:
            if match.protocol is not None and match.protocol != flow.protocol:
                continue
            span = self.ir.port_range(match, rule.direction, subject, remote.endpoint)
            if span is not None and span[0] <= flow.port <= span[1]:
                return True
        return False


def _primary(addresses: Sequence[IPAddress], version: int | None = None) -> IPAddress:
    """An endpoint's address of the wanted family, else its IPv4 address, else its first."""
    if version is not None:
        for address in addresses:
            if address.version == version:
                return address
    return next((a for a in addresses if a.version == 4), addresses[0])


def _addresses(src: Endpoint, dst: Endpoint) -> tuple[IPAddress, IPAddress]:
    src_addr = _primary(src.addresses)
    return src_addr, _primary(dst.addresses, src_addr.version)


def matrix(ir: IR, ports: list[PortSpec]) -> dict[str, dict[str, list[str]]]:
    """"80/TCP" → source key → sorted destination keys it may reach (verdict not DROPPED).

    Every ordered pair of endpoints with an address, a pod to itself included; flows carry no L7
    request, so a redirected flow counts as reachable.
    """
    evaluator = IREvaluator(ir)
    endpoints = ir.cluster.endpoints
    reachable = [ep for ep in endpoints if ep.ips]
    out: dict[str, dict[str, list[str]]] = {}
    for port in ports:
        rows: dict[str, list[str]] = {}
        for src in endpoints:
            if not src.ips:
                rows[src.key] = []
                continue
            src_addr = _primary(src.addresses)
            rows[src.key] = sorted(
                dst.key for dst in reachable
                if evaluator.evaluate(Flow(src_addr, _primary(dst.addresses), port.protocol, port.port)).allowed
            )
        out[str(port)] = rows
    return out

