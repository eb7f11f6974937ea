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

Half-flow proofs (verifier/proofs/slices.py, half_slices) ask for one direction of one endpoint
against a remote that is one address per class or any outside address
(:meth:`SourceEncoding.half`): there each rule's peer is a set of remote views, computed once per
process, so a half costs one condition per rule rather than one case per remote.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
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
    ClassAddress,
    Cond,
    SymPacket,
    Value,
    address_of,
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
from verifier.simulate.source_rules import Peer, PolicyUnit, PortMatch, SelectorPeer, ServicePeer, SourceRule

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
        return _decide(self.direction, [t for t in self.rules if t.rule is not without], self.always)


def _decide(direction: Direction, terms: Sequence[RuleTerm], always: Cond) -> _DirectionTerm:
    """An enforced direction's verdict and proxy port from its rules (SEMANTICS §2, §7): no deny
    matches and some allow does (or ``always``: a default allow, the node's localhost allowance);
    the first parser in name order wins."""
    denies = [t.matches for t in terms if t.rule.deny]
    allows = [t.matches for t in terms if not t.rule.deny]
    allows.append(always)
    parsers: dict[str, list[Cond]] = {}
    for term in terms:
        for name, cond in term.parsers.items():
            parsers.setdefault(name, []).append(cond)
    proxy = _NO_PROXY
    for parser in sorted(parsers, reverse=True):
        proxy = ite(or_(*parsers[parser]), z3.BitVecVal(proxy_port(parser, direction), 16), proxy)
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
        # _remotes: per kind of remote, its views (and exact addresses); per remote variable, its terms
        self._view_sets: dict[tuple[object, ...], tuple[object, _Views, tuple[int, ...]]] = {}
        self._remote_sets: dict[tuple[object, ...], tuple[object, _Remotes]] = {}

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
        # an address the packet avoids (an "outside" one is no endpoint's) is no case of its own
        srcs = self._cases(packet.src, piece.src_not | packet.avoided(packet.src), packet.family)
        dsts = self._cases(packet.dst, piece.dst_not | packet.avoided(packet.dst), packet.family)
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

    # --- half flows (verifier/proofs/slices.py, half_slices) ---------------------------------

    def half(self, packet: SymPacket, side: str) -> z3.BitVecRef:
        """The outcome of one endpoint's half of a flow: the egress (``side="src"``) or ingress
        (``"dst"``) verdict of the endpoint owning that address against the other address,
        redirected to that direction's proxy port; allowed when no endpoint owns it (a free own
        address is an outside one: the slice says so).

        Why the source composes from these halves: by definition. SEMANTICS §8 (:meth:`_flow`)
        decides a flow from exactly these two directions — dropped when either drops, else the
        source's egress proxy first, then the destination's ingress proxy — the composition the
        targets' halves are proved under.

        The remote address may be fixed, a :class:`ClassAddress` (one value per class) or free
        (an outside one: every endpoint address it avoids drops out). A free remote is decided
        per rule, not per value: each rule peer's set of matching remote views is computed once
        (:class:`_Remotes`) and becomes one condition on the remote."""
        own, remote = (packet.src, packet.dst) if side == "src" else (packet.dst, packet.src)
        if isinstance(own, ClassAddress):
            raise ValueError("a half-flow outcome whose own address is a class address")
        if not isinstance(own, int):
            return outcome(KIND_ALLOWED)
        view = self.ref.view(address_of(own, packet.family))
        if view.endpoint is None:
            return outcome(KIND_ALLOWED)
        direction = Direction.EGRESS if side == "src" else Direction.INGRESS
        if isinstance(remote, int):
            term = self._direction(packet, direction, view, self.ref.view(address_of(remote, packet.family)))
        else:
            term = self._half_direction(packet, direction, view, self._remotes(packet, remote))
        return ite(term.allowed, _redirect_or(term.proxy, outcome(KIND_ALLOWED)), outcome(KIND_DROPPED))

    def _remotes(self, packet: SymPacket, remote: ClassAddress | z3.BitVecRef) -> _Remotes:
        """The free ``remote`` of ``packet`` over its views. Built once per process and remote:
        the class values, or the set an outside address avoids, are the same objects in every
        slice, and the views are shared by the source's and the destination's remote alike."""
        family = packet.family
        held: object = remote.values if isinstance(remote, ClassAddress) else packet.avoided(remote)
        kind = "class" if isinstance(remote, ClassAddress) else "free"
        name = str(remote.index if isinstance(remote, ClassAddress) else remote)
        key = (kind, family, id(held), name)
        found = self._remote_sets.get(key)
        if found is not None and found[0] is held:
            return found[1]
        shared = self._view_sets.get(key[:3])
        remotes: _Remotes
        if isinstance(remote, ClassAddress):
            if shared is None or shared[0] is not held:
                views = [self.ref.view(address_of(v, family)) for v in remote.values]
                shared = self._view_sets[key[:3]] = (held, _Views(self, views), ())
            remotes = _ClassRemotes(shared[1], remote)
        else:
            if shared is None or shared[0] is not held:
                skip = packet.avoided(remote) | self.excluded.get(family, frozenset())
                exact = [(a, v) for a, v in self._endpoint_views[family] if a not in skip]
                if self.node.version == family and int(self.node) not in skip:
                    exact.append((int(self.node), self.ref.view(self.node)))
                views = [*(v for _, v in exact), *(v for _, _, v in self._world[family])]
                shared = self._view_sets[key[:3]] = (held, _Views(self, views), tuple(a for a, _ in exact))
            remotes = _FreeRemotes(shared[1], remote, shared[2], [(lo, hi) for lo, hi, _ in self._world[family]])
        self._remote_sets[key] = (held, remotes)
        return remotes

    def _half_direction(self, packet: SymPacket, direction: Direction, own: PeerView,
                        remotes: _Remotes) -> _DirectionTerm:
        """:meth:`direction_rules`' verdict for every remote at once. The term depends on the
        endpoint only through its units and (ingress named ports) its ports, so endpoints alike
        share it."""
        ep = own.endpoint
        assert ep is not None
        units = self.ref.units_for(ep, direction)
        if not units:
            return _DirectionTerm(True, _NO_PROXY)
        key = (direction, tuple(id(u) for u in units), ep.ports if direction is Direction.INGRESS else None,
               str(packet.protocol), str(packet.dport))
        found = remotes.directions.get(key)
        if found is None:
            requires, requires_deny = self.ref.requirements(units, direction)
            terms = [self._half_rule(packet, unit, rule, direction, ep, remotes, reqs)
                     for unit in units
                     for rules, reqs in ((unit.denies, requires_deny), (unit.allows, requires))
                     for rule in rules.get(direction, ())]
            always = or_(self.ref.default_allows(units, direction), remotes.among(remotes.views.localhost(direction)))
            found = remotes.directions[key] = _decide(direction, terms, always)
        return found

    def _half_rule(self, packet: SymPacket, unit: PolicyUnit, rule: SourceRule, direction: Direction,
                   ep: Endpoint, remotes: _Remotes, requires: tuple[tuple[Requirement, ...], ...]) -> RuleTerm:
        """:meth:`_rule` for every remote: its peers select the remote, and some port matches."""
        selected = remotes.among(remotes.views.selected(rule.peers, requires))
        return _rule_term(packet, unit, rule, selected,
                          lambda pm, protocol: self._half_port(packet, pm, protocol, direction, ep, remotes))

    def _half_port(self, packet: SymPacket, pm: PortMatch, protocol: Protocol, direction: Direction, ep: Endpoint,
                   remotes: _Remotes) -> Cond:
        """:meth:`_port` for every remote: a named port of an egress rule under ``k8s`` is the
        remote's own container port (SEMANTICS §6), so the remotes are grouped by the number
        they give; otherwise the number does not depend on the remote."""
        if pm.name is None:
            return in_range(packet.dport, pm.low, pm.high)
        if direction is Direction.EGRESS and self.profile is Profile.K8S:
            numbers = remotes.views.named_port(pm.name, protocol, ep)
            return or_(*(and_(remotes.among(indices), eq(packet.dport, number))
                         for number, indices in sorted(numbers.items())))
        # the peer argument is not read here: ingress resolves against ep, cilium egress cluster-wide
        number = self.ref.named_port(pm.name, protocol, direction, ep, self.ref.view(self.node))
        return False if number is None else eq(packet.dport, number)

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
        selected = any(self.ref.peer_matches(p, peer, requires) for p in rule.peers)
        return _rule_term(packet, unit, rule, selected,
                          lambda pm, protocol: self._port(packet, pm, protocol, direction, own, peer))

    def _port(self, packet: SymPacket, pm: PortMatch, protocol: Protocol, direction: Direction, own: PeerView,
              peer: PeerView) -> Cond:
        if pm.name is None:
            return in_range(packet.dport, pm.low, pm.high)
        assert own.endpoint is not None
        number = self.ref.named_port(pm.name, protocol, direction, own.endpoint, peer)
        return False if number is None else eq(packet.dport, number)


class _Views:
    """The views a free remote address can have, and what rules ask of them: which views a rule
    peer selects, which are the node's (its localhost allowance), which number a named port
    gives. Each is computed once per process over groups of views alike for peer tests
    (:meth:`SourceEncoding._peer_key`), and shared by every remote of one kind (a source's and a
    destination's class address alike).
    """

    def __init__(self, enc: SourceEncoding, views: Sequence[PeerView]) -> None:
        self.enc = enc
        self.views = tuple(views)
        groups: dict[tuple[object, ...], tuple[PeerView, list[int]]] = {}
        for index, view in enumerate(self.views):
            groups.setdefault((view.address.version, *enc._peer_key(view)), (view, []))[1].append(index)
        self.groups = [(view, frozenset(indices)) for view, indices in groups.values()]
        # a selector's "key In (values)" holds only where the view has such a label (or is a world
        # address, whose cidr: labels are implicit): the groups worth testing (SEMANTICS §4)
        self._labelled: dict[tuple[str, str], set[int]] = {}
        self._worlds: set[int] = set()
        for position, (view, _) in enumerate(self.groups):
            if view.kind is PeerKind.WORLD:
                self._worlds.add(position)
            for _, key, value in view.labels:
                self._labelled.setdefault((key, value), set()).add(position)
        self._peers: dict[tuple[object, ...], frozenset[int]] = {}
        self._rules: dict[tuple[object, ...], tuple[object, frozenset[int]]] = {}
        self._localhost: dict[Direction, frozenset[int]] = {}
        self._named: dict[tuple[object, ...], dict[int, frozenset[int]]] = {}

    def _where(self, test: Callable[[PeerView], bool], positions: Iterable[int] | None = None) -> frozenset[int]:
        """The indices of the views ``test`` holds for, asked once per group (of ``positions``)."""
        chosen = range(len(self.groups)) if positions is None else sorted(positions)
        return frozenset().union(*(self.groups[i][1] for i in chosen if test(self.groups[i][0])))

    def _candidates(self, peer: Peer) -> set[int] | None:
        """The groups a selector peer can select by its ``In`` requirements (None: every group)."""
        if not isinstance(peer, SelectorPeer | ServicePeer):
            return None
        found: set[int] | None = None
        for req in peer.requirements:
            if req.operator == "In":
                having = set(self._worlds).union(*(self._labelled.get((req.key, v), ()) for v in req.values))
                found = having if found is None else found & having
        return found

    def matching(self, peer: Peer, requires: tuple[tuple[Requirement, ...], ...]) -> frozenset[int]:
        """The views ``peer`` (with the units' requirements) selects."""
        key = (peer, requires)
        found = self._peers.get(key)
        if found is None:
            found = self._peers[key] = self._where(lambda view: self.enc.ref.peer_matches(peer, view, requires),
                                                   self._candidates(peer))
        return found

    def selected(self, peers: tuple[Peer, ...], requires: tuple[tuple[Requirement, ...], ...]) -> frozenset[int]:
        """The views some of a rule's ``peers`` selects."""
        key = (id(peers), requires)
        found = self._rules.get(key)
        if found is None or found[0] is not peers:
            found = self._rules[key] = (peers, frozenset().union(*(self.matching(p, requires) for p in peers)))
        return found[1]

    def localhost(self, direction: Direction) -> frozenset[int]:
        """The views whose connections ``direction`` allows as the node's (SEMANTICS §4.2)."""
        found = self._localhost.get(direction)
        if found is None:
            found = self._localhost[direction] = self._where(
                lambda view: self.enc.ref.localhost_allowed(direction, view))
        return found

    def named_port(self, name: str, protocol: Protocol, ep: Endpoint) -> dict[int, frozenset[int]]:
        """An egress named port under ``k8s``: the views by the number they give it (views
        without one are left out: they match no port)."""
        key = (name, protocol)
        found = self._named.get(key)
        if found is None:
            by_number: dict[int, set[int]] = {}
            for view, indices in self.groups:
                number = self.enc.ref.named_port(name, protocol, Direction.EGRESS, ep, view)
                if number is not None:
                    by_number.setdefault(number, set()).update(indices)
            found = self._named[key] = {n: frozenset(ix) for n, ix in by_number.items()}
        return found


class _Remotes:
    """One free remote address of a half flow over :class:`_Views`: "the remote has one of the
    views ``indices``" as a condition (like the iptables encoding's ipsets over class indices),
    and the direction terms built over it."""

    def __init__(self, views: _Views) -> None:
        self.views = views
        self.directions: dict[tuple[object, ...], _DirectionTerm] = {}  # SourceEncoding._half_direction
        self._among: dict[frozenset[int], Cond] = {}

    def among(self, indices: frozenset[int]) -> Cond:
        """The remote has one of the views ``indices`` (built once per set)."""
        found = self._among.get(indices)
        if found is None:
            found = self._among[indices] = self._condition(indices) if indices else False
        return found

    def _condition(self, indices: frozenset[int]) -> Cond:
        raise NotImplementedError


class _ClassRemotes(_Remotes):
    """A :class:`ClassAddress`: view ``i`` is that of class value ``i``."""

    def __init__(self, views: _Views, address: ClassAddress) -> None:
        super().__init__(views)
        self.address = address

    def _condition(self, indices: frozenset[int]) -> Cond:
        return self.address.among(indices)


class _FreeRemotes(_Remotes):
    """A free address: the views of ``exact`` addresses (endpoints and the node it does not avoid),
    then one per world range. Ranges may hold exact addresses, which take their own view first;
    an address the remote avoids is in no case (a witness there is ruled out,
    :meth:`verifier.encoding.targets.TargetEncodings.compare`)."""

    def __init__(self, views: _Views, address: z3.BitVecRef, exact: Sequence[int],
                 ranges: Sequence[tuple[int, int]]) -> None:
        super().__init__(views)
        self.address = address
        self.exact = tuple(exact)
        self.ranges = tuple(ranges)

    @cached_property
    def _not_exact(self) -> Cond:
        """The address is none of the exact ones (what a range's view needs)."""
        return and_(*(self.address != value for value in self.exact))

    def _condition(self, indices: frozenset[int]) -> Cond:
        count = len(self.exact)
        exact = [self.address == self.exact[i] for i in sorted(indices) if i < count]
        runs: list[list[int]] = []
        for i in sorted(i - count for i in indices if i >= count):
            lo, hi = self.ranges[i]
            if runs and runs[-1][1] + 1 == lo:  # adjacent ranges: one test
                runs[-1][1] = hi
            else:
                runs.append([lo, hi])
        ranges = or_(*(in_range(self.address, lo, hi) for lo, hi in runs))
        return or_(*exact, and_(self._not_exact, ranges) if ranges is not False else False)


def _redirect_or(proxy: z3.BitVecRef, otherwise: z3.BitVecRef) -> z3.BitVecRef:
    """Redirected to ``proxy`` when it is not 0, else ``otherwise``."""
    if z3.is_bv_value(proxy):
        return otherwise if proxy.as_long() == 0 else redirected(proxy.as_long())
    return ite(proxy != 0, redirected(proxy), otherwise)


def _rule_term(packet: SymPacket, unit: PolicyUnit, rule: SourceRule, selected: Cond,
               port: Callable[[PortMatch, Protocol], Cond]) -> RuleTerm:
    """A rule's term from when its peers select the remote and, per port entry and protocol, when
    the port matches: it matches on a selected remote with some port, and an allow redirects
    where a port with a parser matches."""
    if selected is False or rule.ports is None:
        return RuleTerm(unit, rule, selected, {})
    conds = []
    parsers: dict[str, list[Cond]] = {}
    for pm in rule.ports:
        for protocol in sorted(pm.protocols):
            cond = and_(selected, eq(packet.protocol, int(protocol)), port(pm, protocol))
            conds.append(cond)
            parser = pm.parser_for(protocol)
            if parser is not None and cond is not False and not rule.deny:
                parsers.setdefault(parser, []).append(cond)
    return RuleTerm(unit, rule, or_(*conds), {name: or_(*c) for name, c in parsers.items()})


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
