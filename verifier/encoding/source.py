"""The source semantics as a formula: what docs/SEMANTICS.md says the first packet of a flow meets.

Built from the parsed policies through the reference evaluator's parts
(:class:`verifier.simulate.source.ReferenceEvaluator`: which units select an endpoint, whether a
peer selects an address, what a named port means) — never from the IR or an artifact — so that
"target ≡ source" compares two independent derivations.

Addresses enter only through what they are. A free address of a slice is one of the endpoint
addresses, the node, or a *world* address; world addresses are split into ranges
(:func:`verifier.regions.address_cells`) at every prefix the policies mention (``ipBlock`` /
``toCIDR`` networks and excepts, ``cidr:`` selector keys), inside which every peer test gives
one answer. Each case is therefore decided on a concrete view, and
only the protocol and port stay symbolic (port ranges, named ports, L7 parsers per protocol).
Cases with the same formula are merged, so endpoints of one identity cost one branch.

The outcome is the targets' 18-bit outcome (:mod:`verifier.encoding.terms`): dropped, allowed,
or redirected to the proxy port of the parser (:func:`compiler.targets.proxyports.proxy_port`,
the fixed port convention of DESIGN.md §4), the source's egress proxy first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import z3

from compiler.cluster import Endpoint
from compiler.flow import Direction, Profile, Protocol
from compiler.inputs import Inputs
from compiler.labels import LabelFilter
from compiler.targets.proxyports import proxy_port
from verifier.encoding.terms import (
    KIND_ALLOWED,
    KIND_DROPPED,
    Cond,
    SymPacket,
    Value,
    and_,
    eq,
    in_range,
    ite,
    not_,
    or_,
    outcome,
    redirected,
)
from verifier.proofs.slices import Slice
from verifier.regions import address_cells
from verifier.simulate.source import ReferenceEvaluator
from verifier.simulate.source_labels import PeerKind, PeerView, Requirement
from verifier.simulate.source_rules import PolicyUnit, PortMatch, SourceRule

_NO_PROXY = z3.BitVecVal(0, 16)


@dataclass(frozen=True)
class _Case:
    """One kind of address a free slice field can hold: the condition and a concrete view."""

    cond: Cond
    view: PeerView
    exact: bool = True  # one address (cases of this kind are disjoint), else a world range


@dataclass(frozen=True)
class _DirectionTerm:
    allowed: Cond
    proxy: z3.BitVecRef  # 16-bit proxy port; 0 when not redirected


@dataclass(frozen=True)
class RuleTerm:
    """One allow or deny rule on one (endpoint, direction, peer): when it matches, and (allows
    only) when it sends the connection to each L7 parser."""

    unit: PolicyUnit
    rule: SourceRule
    matches: Cond
    parsers: dict[str, Cond]


@dataclass(frozen=True)
class DirectionRules:
    """Every rule deciding one direction of one endpoint against one peer (SEMANTICS §2, §8)."""

    direction: Direction
    rules: tuple[RuleTerm, ...]
    enforced: bool
    default_allow: bool = False  # every selecting unit sets enableDefaultDeny false (SEMANTICS §2)
    localhost: bool = False  # the node reaching its endpoint under ``cilium`` (SEMANTICS §4.2)

    @property
    def always(self) -> bool:
        """Allowed whatever the allow rules say (denies still apply)."""
        return self.default_allow or self.localhost

    @cached_property
    def outcome(self) -> _DirectionTerm:
        """:meth:`combine` of every rule, computed once (the analyses compare it per rule)."""
        return self.combine()

    def combine(self, without: SourceRule | None = None) -> _DirectionTerm:
        """The direction's verdict and proxy port, optionally as if ``without`` were not written:
        no deny matches and some allow does; the first parser in name order wins."""
        if not self.enforced:
            return _DirectionTerm(True, _NO_PROXY)
        kept = [t for t in self.rules if t.rule is not without]
        denies = [t.matches for t in kept if t.rule.deny]
        allows = [t.matches for t in kept if not t.rule.deny]
        if self.always:
            allows.append(True)
        parsers: dict[str, list[Cond]] = {}
        for term in kept:
            for name, cond in term.parsers.items():
                parsers.setdefault(name, []).append(cond)
        proxy = _NO_PROXY
        for parser in sorted(parsers, reverse=True):
            proxy = ite(or_(*parsers[parser]), z3.BitVecVal(proxy_port(parser, self.direction), 16), proxy)
        return _DirectionTerm(and_(not_(or_(*denies)), or_(*allows)), proxy)


class SourceEncoding:
    """Outcome formulas of the source semantics for one set of inputs and one profile."""

    def __init__(self, inputs: Inputs, profile: Profile, label_filter: LabelFilter | None = None,
                 excluded: Mapping[int, frozenset[int]] | None = None) -> None:
        """``excluded``: per family, endpoint addresses a free address is known not to be
        (verifier/proofs/address_classes.py); they drop out of the cases."""
        self.ref = ReferenceEvaluator(inputs, profile, label_filter)
        self.excluded = excluded or {}
        self.profile = profile
        cluster = inputs.cluster
        self.node = cluster.node_address
        self._endpoint_views: dict[int, list[tuple[int, PeerView]]] = {4: [], 6: []}
        for ep in cluster.endpoints:
            for address in ep.addresses:
                self._endpoint_views[address.version].append((int(address), self.ref.view(address)))
        for views in self._endpoint_views.values():
            views.sort(key=lambda item: item[0])
        self._world: dict[int, list[tuple[int, int, PeerView]]] = {4: [], 6: []}
        for cell in address_cells(cluster, [str(n) for n in self.ref.policy_networks()]):
            if cell.kind == "world":
                lo, hi = cell.span
                self._world[cell.representative.version].append((lo, hi, self.ref.view(cell.representative)))
        self._directions: dict[tuple[object, ...], _DirectionTerm] = {}

    def peer_views(self) -> list[PeerView]:
        """One view per kind of address a rule can tell apart: endpoint addresses (one per
        :meth:`_peer_key`, e.g. per label set under ``cilium``), the node, and each world range."""
        out: dict[tuple[object, ...], PeerView] = {}
        for family in (4, 6):
            for _, view in self._endpoint_views[family]:
                out.setdefault((family, *self._peer_key(view)), view)
            if self.node.version == family:
                node = self.ref.view(self.node)
                out.setdefault((family, *self._peer_key(node)), node)
            for lo, _, view in self._world[family]:
                out.setdefault((family, lo), view)
        return list(out.values())

    # --- the slice ---------------------------------------------------------------------------

    def outcome(self, packet: SymPacket, piece: Slice) -> z3.BitVecRef:
        """The source outcome of every packet of ``piece``, as one term."""
        srcs = self._cases(packet.src, piece.src_not, packet.family)
        dsts = self._cases(packet.dst, piece.dst_not, packet.family)
        rows = []
        for src in srcs:
            cells = [(dst.cond, dst.exact, self._flow(packet, src.view, dst.view)) for dst in dsts]
            rows.append((src.cond, src.exact, _select(cells)))
        return _select(rows)

    def _cases(self, value: Value, excluded: Iterable[int], family: int) -> list[_Case]:
        """What a slice field can be: the fixed address's view, or every case of a free one."""
        if isinstance(value, int):
            return [_Case(True, self.ref.view(ipaddress.ip_address(value) if family == 4
                                               else ipaddress.IPv6Address(value)))]
        skip = set(excluded) | self.excluded.get(family, frozenset())
        cases = [_Case(value == address, view) for address, view in self._endpoint_views[family]
                 if address not in skip]
        if self.node.version == family and int(self.node) not in skip:
            cases.append(_Case(value == int(self.node), self.ref.view(self.node)))
        # exact cases are tested before world ranges, so a range may hold endpoint addresses
        cases.extend(_Case(in_range(value, lo, hi), view, False) for lo, hi, view in self._world[family])
        return cases

    def _flow(self, packet: SymPacket, src: PeerView, dst: PeerView) -> z3.BitVecRef:
        """SEMANTICS §8: both directions must allow; the source's egress proxy is met first."""
        sides = []
        if src.endpoint is not None:
            sides.append(self._direction(packet, Direction.EGRESS, src, dst))
        if dst.endpoint is not None:
            sides.append(self._direction(packet, Direction.INGRESS, dst, src))
        allowed = and_(*(s.allowed for s in sides))
        if allowed is False:
            return outcome(KIND_DROPPED)
        result = outcome(KIND_ALLOWED)
        for side in reversed(sides):
            result = ite(side.proxy != 0, redirected(side.proxy), result)
        return ite(allowed, result, outcome(KIND_DROPPED))

    # --- one direction -------------------------------------------------------------------------

    def _direction(self, packet: SymPacket, direction: Direction, own: PeerView, peer: PeerView) -> _DirectionTerm:
        assert own.endpoint is not None
        key = (direction, own.endpoint.key, *self._peer_key(peer))
        found = self._directions.get(key)
        if found is None:
            found = self._directions[key] = self._build_direction(packet, direction, own, peer)
        return found

    def _peer_key(self, peer: PeerView) -> tuple[object, ...]:
        """What of the peer the decision can depend on: under ``cilium`` an endpoint's kind and
        labels only (CIDR rules never select endpoints, named ports are cluster-wide); under
        ``k8s``, and for world ranges, the address and the endpoint too."""
        if self.profile is Profile.CILIUM and peer.kind is not PeerKind.WORLD:
            return (peer.kind, peer.labels)
        return (peer.kind, peer.labels, peer.address, peer.endpoint.key if peer.endpoint else None)

    def _build_direction(self, packet: SymPacket, direction: Direction, own: PeerView,
                         peer: PeerView) -> _DirectionTerm:
        return self.direction_rules(packet, direction, own, peer).outcome

    def direction_rules(self, packet: SymPacket, direction: Direction, own: PeerView, peer: PeerView) -> DirectionRules:
        """Each rule of the units selecting ``own`` in ``direction``, as a condition on ``packet``
        when the other side is ``peer`` (what the rule-redundancy and deny-override analyses ask)."""
        ref, ep = self.ref, own.endpoint
        assert ep is not None
        units = ref.units_for(ep, direction)
        if not units:
            return DirectionRules(direction, (), enforced=False)
        requires, requires_deny = ref.requirements(units, direction)
        terms: list[RuleTerm] = []
        for unit in units:
            for rule in unit.denies.get(direction, ()):
                terms.append(self._rule(packet, unit, rule, direction, own, peer, requires_deny))
            for rule in unit.allows.get(direction, ()):
                terms.append(self._rule(packet, unit, rule, direction, own, peer, requires))
        return DirectionRules(direction, tuple(terms), True, ref.default_allows(units, direction),
                              ref.localhost_allowed(direction, peer))

    def peer_matching(self, direction: Direction, ep: Endpoint, peer: PeerView) -> tuple[SourceRule, ...]:
        """The rules of ``ep``'s units in ``direction`` whose peers select ``peer`` (no formulas)."""
        units = self.ref.units_for(ep, direction)
        allow_requires, deny_requires = self.ref.requirements(units, direction)
        out: list[SourceRule] = []
        for deny, requires in ((True, deny_requires), (False, allow_requires)):
            for unit in units:
                for rule in (unit.denies if deny else unit.allows).get(direction, ()):
                    if any(self.ref.peer_matches(p, peer, requires) for p in rule.peers):
                        out.append(rule)
        return tuple(out)

    def _rule(self, packet: SymPacket, unit: PolicyUnit, rule: SourceRule, direction: Direction, own: PeerView,
              peer: PeerView, requires: tuple[tuple[Requirement, ...], ...]) -> RuleTerm:
        """When ``rule`` matches (some peer and some port), and when it redirects to each parser."""
        if not any(self.ref.peer_matches(p, peer, requires) for p in rule.peers):
            return RuleTerm(unit, rule, False, {})
        if rule.ports is None:
            return RuleTerm(unit, rule, True, {})
        conds = []
        parsers: dict[str, list[Cond]] = {}
        for pm in rule.ports:
            for protocol in sorted(pm.protocols):
                cond = and_(eq(packet.protocol, int(protocol)), self._port(packet, pm, protocol, direction, own, peer))
                conds.append(cond)
                parser = pm.parser_for(protocol)
                if parser is not None and cond is not False and not rule.deny:
                    parsers.setdefault(parser, []).append(cond)
        return RuleTerm(unit, rule, or_(*conds), {name: or_(*c) for name, c in parsers.items()})

    def _port(self, packet: SymPacket, pm: PortMatch, protocol: Protocol, direction: Direction, own: PeerView,
              peer: PeerView) -> Cond:
        if pm.name is None:
            return in_range(packet.dport, pm.low, pm.high)
        assert own.endpoint is not None
        number = self.ref.named_port(pm.name, protocol, direction, own.endpoint, peer)
        return False if number is None else eq(packet.dport, number)


def _select(cases: list[tuple[Cond, bool, z3.BitVecRef]]) -> z3.BitVecRef:
    """The term of the case that holds: exact addresses first, then world ranges.

    Within each kind the conditions are disjoint, so cases with the same term are joined into
    one branch (endpoints of one identity cost one branch); the last world range (or the last
    exact case, when there are no ranges) is the fallback, as the slice's domain leaves no other
    address.
    """
    exact = [(c, t) for c, is_exact, t in cases if is_exact]
    ranges = [(c, t) for c, is_exact, t in cases if not is_exact]
    if not ranges:
        return _chain(exact[:-1], exact[-1][1]) if exact else outcome(KIND_DROPPED)
    return _chain(exact, _chain(ranges[:-1], ranges[-1][1]))


def _chain(cases: list[tuple[Cond, z3.BitVecRef]], fallback: z3.BitVecRef) -> z3.BitVecRef:
    """If-then-else over disjoint cases, one branch per distinct term (the fallback's cases are
    dropped: they are what remains)."""
    groups: dict[int, tuple[list[Cond], z3.BitVecRef]] = {}
    for cond, term in cases:
        if term.eq(fallback):
            continue
        groups.setdefault(term.get_id(), ([], term))[0].append(cond)
    result = fallback
    for conds, term in groups.values():
        result = ite(or_(*conds), term, result)
    return result
