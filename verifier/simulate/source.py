"""The reference evaluator: one flow's verdict read straight from the parsed policies.

This is the project's second, independent semantics (DESIGN.md §1, §5; STYLE.md "claripy"):
it implements docs/SEMANTICS.md in plain Kubernetes/Cilium terms — which policies select the
endpoint, whether the direction is enforced, which allow and deny rules match this concrete
address, port and request — without identities and without importing the IR. The IR
evaluator and every artifact simulator must give the same :class:`Decision`, field by field;
property tests compare them on random inputs, so a mistake in either side shows up as a
difference rather than as a silently shared bug.

Helpers: :mod:`verifier.simulate.source_labels` (label views, selectors, namespacing) and
:mod:`verifier.simulate.source_rules` (policies → units and rules).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from compiler.cluster import Cluster, Endpoint
from compiler.flow import (
    Decision,
    Direction,
    DirectionDecision,
    DropReason,
    Flow,
    IPAddress,
    L7Request,
    Profile,
    Protocol,
    RuleRef,
)
from compiler.inputs import Inputs, Policy
from compiler.l7match import l7_rule_matches
from compiler.labels import Label, LabelFilter
from compiler.source import InputError, SourceRef
from verifier.simulate.source_labels import (
    ANY_SOURCE,
    CIDR,
    LabelViews,
    PeerKind,
    PeerView,
    Requirement,
    all_hold,
    as_network,
)
from verifier.simulate.source_rules import (
    AnyPeer,
    CidrPeer,
    EntityPeer,
    Peer,
    PeerRules,
    PolicyUnit,
    PortMatch,
    Requires,
    SelectorPeer,
    ServicePeer,
    SourceRule,
    subject_index,
    units_by_policy,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_LOCALHOST = RuleRef("<allow-localhost>", "-")
ALLOW_ANY = {
    Direction.INGRESS: RuleRef("<allow-any-ingress>", "-"),
    Direction.EGRESS: RuleRef("<allow-any-egress>", "-"),
}
DEFAULT_ALLOW = {
    Direction.INGRESS: RuleRef("<default-allow-ingress>", "-"),
    Direction.EGRESS: RuleRef("<default-allow-egress>", "-"),
}

#: Entities that select something in this model (SEMANTICS §4.2); every other entity selects nothing.
_ENTITY_KINDS: dict[str, frozenset[PeerKind]] = {
    "all": frozenset(PeerKind),
    "world": frozenset({PeerKind.WORLD}),
    "world-ipv4": frozenset({PeerKind.WORLD}),
    "world-ipv6": frozenset({PeerKind.WORLD}),
    "host": frozenset({PeerKind.HOST}),
    "cluster": frozenset({PeerKind.ENDPOINT, PeerKind.HOST}),
}


#: An L7 rule of any parser, as parsed (PortRuleHTTP, PortRuleKafka, FQDNSelector, generic dict).
L7Rule = Any


@dataclass(frozen=True)
class RuleMatch:
    """A matching allow rule and what it says at L7 for this flow: ``l7`` is None when it admits
    every request (no toPorts, or a matched port without L7 rules), else the L7 rules of which
    one must admit the request."""

    ref: RuleRef
    parsers: frozenset[str]
    l7: tuple[L7Rule, ...] | None

    def admits(self, request: L7Request | None) -> bool:
        """Whether it lets ``request`` through a redirect."""
        if request is None or self.l7 is None:
            return True
        return any(l7_rule_matches(item, request) for item in self.l7)


class ReferenceEvaluator:
    """Evaluate flows against the parsed policies, per docs/SEMANTICS.md.

    ``label_filter`` is the ``cilium`` profile's label filter (default: Cilium's default
    filter); the ``k8s`` profile sees every label and ignores it.

    ``share`` is an evaluator of another policy set on a cluster *equal in content* to this
    one's, under the same profile and label filter — the caller vouches for the cluster
    (``netpolc diff`` compares them first; the rest is checked). This evaluator then uses its
    cluster object and address views, and the units of the policy objects both inputs hold
    (a cached load shares unchanged documents), so a second version costs only its changes.
    """

    def __init__(
        self,
        inputs: Inputs,
        profile: Profile = Profile.CILIUM,
        label_filter: LabelFilter | None = None,
        *,
        share: ReferenceEvaluator | None = None,
    ) -> None:
        self.inputs = inputs
        self.profile = profile
        self._label_filter = label_filter
        self.cluster: Cluster
        self._views: LabelViews
        self._peer_memo: dict[tuple[object, ...], tuple[bool, Peer, PeerView]]
        self._by_policy: list[tuple[Policy, tuple[PolicyUnit, ...]]]
        known: dict[int, tuple[PolicyUnit, ...]] = {}
        if share is not None:
            if share.profile is not profile or share._label_filter != label_filter:
                raise ValueError("a shared evaluator must have the same profile and label filter")
            self.cluster = share.cluster
            self._views = share._views
            self._peer_memo = share._peer_memo
            known = {id(p): units for p, units in share._by_policy if p.display not in share.inputs.moved}
        else:
            self.cluster = inputs.cluster
            self._views = LabelViews(self.cluster, self._visibility(profile, label_filter))
            self._peer_memo = {}
        self._by_policy = units_by_policy(inputs, profile, known)
        self._units = tuple(u for _, units in self._by_policy for u in units)
        self._by_namespace, self._any_namespace = subject_index(self._units)
        self._with_parsers = frozenset(
            i for i, u in enumerate(self._units)
            if any(pm.parser for rules in u.allows.values() for r in rules for pm in r.ports or ())
        )
        self._selecting: dict[str, tuple[PolicyUnit, ...]] = {}
        self._networks: list[IPNetwork] | None = None
        self._parsers_checked: set[tuple[str, Direction]] = set()
        self._cluster_named_ports: dict[tuple[str, str], frozenset[int]]
        if share is not None:
            self._cluster_named_ports = share._cluster_named_ports
        else:
            named: dict[tuple[str, str], set[int]] = defaultdict(set)
            for ep in self.cluster.endpoints:
                for port in ep.ports:
                    if port.name:
                        named[(port.name, port.protocol)].add(port.port)
            self._cluster_named_ports = {key: frozenset(numbers) for key, numbers in named.items()}

    @staticmethod
    def _visibility(profile: Profile, label_filter: LabelFilter | None) -> Callable[[str, str], bool]:
        if profile is Profile.K8S:
            return lambda key, value: True
        chosen = label_filter if label_filter is not None else LabelFilter.default()
        return lambda key, value: chosen.relevant(Label("k8s", key, value))

    # --- the flow -----------------------------------------------------------------------------

    def evaluate(self, flow: Flow) -> Decision:
        """The decision for one flow: source egress, destination ingress, combined (§8)."""
        src_view, dst_view = self._views.of(flow.src), self._views.of(flow.dst)
        egress = ingress = None
        if src_view.endpoint is not None:
            egress = self.direction_matches(Direction.EGRESS, src_view.endpoint, dst_view, flow)[0]
        if dst_view.endpoint is not None:
            ingress = self.direction_matches(Direction.INGRESS, dst_view.endpoint, src_view, flow)[0]
        return Decision.combine(flow, egress, ingress)

    def _units_selecting(self, ep: Endpoint) -> tuple[PolicyUnit, ...]:
        """The units whose subject selects ``ep``, in input order. Only the units that can select
        its namespace are tested (:func:`~verifier.simulate.source_rules.subject_index`): a pure
        shortcut, the same answer."""
        units = self._selecting.get(ep.key)
        if units is None:
            view = self.subject_view(ep)
            candidates = sorted((*self._by_namespace.get(ep.namespace, ()), *self._any_namespace))
            subjects = (self._units[i] for i in candidates)
            units = tuple(u for u in subjects if u.subject is not None and all_hold(u.subject, view))
            self._selecting[ep.key] = units
        return units

    def selects(self, unit: PolicyUnit, ep: Endpoint) -> bool:
        """Whether ``unit``'s subject selects ``ep`` (what :meth:`units_for` tests per unit)."""
        return unit.subject is not None and all_hold(unit.subject, self.subject_view(ep))

    def subject_view(self, ep: Endpoint) -> PeerView:
        """``ep`` as subject selectors see it (its address's cached view, when it has one)."""
        if ep.addresses and self.cluster.endpoint_at(ep.addresses[0]) is ep:
            return self._views.of(ep.addresses[0])
        address = ep.addresses[0] if ep.addresses else self.cluster.node_address
        return PeerView(address, PeerKind.ENDPOINT, ep, self._views.endpoint_labels(ep))

    def check_parsers(self, ep: Endpoint) -> None:
        """Refuse conflicting L7 parsers on ``ep`` (:meth:`_check_parsers`) without looking up
        every unit selecting it: only a unit with an L7 port can conflict, so the full lookup
        happens only for the directions such a unit selects ``ep`` in."""
        candidates = (*self._by_namespace.get(ep.namespace, ()), *self._any_namespace)
        directions = {
            d for i in candidates if i in self._with_parsers and self.selects(self._units[i], ep)
            for d in self._units[i].directions
        }
        for direction in sorted(directions):
            self.units_for(ep, direction)

    # --- one direction --------------------------------------------------------------------------

    def evaluate_direction(self, flow: Flow, direction: Direction) -> tuple[DirectionDecision, tuple[RuleMatch, ...]]:
        """One direction of a flow whose policy side (the source for egress, the destination for
        ingress) is an endpoint, with the allow rules that matched (what the L7 proofs compare)."""
        src_view, dst_view = self._views.of(flow.src), self._views.of(flow.dst)
        own, peer = (src_view, dst_view) if direction is Direction.EGRESS else (dst_view, src_view)
        if own.endpoint is None:
            raise ValueError(f"{own.address} is not an endpoint: it has no {direction.value} policy")
        return self.direction_matches(direction, own.endpoint, peer, flow)

    def direction_matches(
        self, direction: Direction, ep: Endpoint, peer: PeerView, flow: Flow
    ) -> tuple[DirectionDecision, tuple[RuleMatch, ...]]:
        """SEMANTICS §2, §8 for one endpoint and direction: the decision and the matching allows."""
        return self.decide(self.peer_rules(direction, ep, peer), flow)

    def peer_rules(self, direction: Direction, ep: Endpoint, peer: PeerView) -> PeerRules:
        """The first half of :meth:`direction_matches`: enforcement, and the rules whose peers
        select ``peer`` (ports not looked at yet)."""
        units = self.units_for(ep, direction)
        localhost = self.localhost_allowed(direction, peer)
        named_ports = self._named_port_source(direction, ep, peer)
        if not units:
            return PeerRules(direction, ep, peer, False, (), (), False, localhost, named_ports)
        requires, requires_deny = self.requirements(units, direction)
        allows = tuple(
            rule
            for unit in units
            for rule in unit.allows.get(direction, ())
            if any(self._peer_matches_once(p, peer, requires) for p in rule.peers)
        )
        denies = tuple(
            rule
            for unit in units
            for rule in unit.denies.get(direction, ())
            if any(self._peer_matches_once(p, peer, requires_deny) for p in rule.peers)
        )
        default_allow = self.default_allows(units, direction)
        return PeerRules(direction, ep, peer, True, allows, denies, default_allow, localhost, named_ports)

    def peer_tests(self, direction: Direction, ep: Endpoint) -> list[tuple[Peer, Requires]]:
        """Every (peer, fromRequires/toRequires) test :meth:`peer_rules` makes for ``ep`` in
        ``direction``, whatever the other side."""
        units = self.units_for(ep, direction)
        requires, requires_deny = self.requirements(units, direction)
        tests = [(p, requires) for u in units for r in u.allows.get(direction, ()) for p in r.peers]
        tests.extend((p, requires_deny) for u in units for r in u.denies.get(direction, ()) for p in r.peers)
        return tests

    def peer_signature(
        self, direction: Direction, view: PeerView, tests: list[tuple[Peer, Requires]]
    ) -> tuple[object, ...]:
        """Everything :meth:`peer_rules` reads of the other side ``view``, for an endpoint whose
        :meth:`peer_tests` are among ``tests``: its kind (the node's implicit allow), its ports
        where named ports resolve against it (egress under k8s), and each test's answer. Two
        views with equal signatures get equal :attr:`PeerRules.key`."""
        k8s_egress = direction is Direction.EGRESS and self.profile is Profile.K8S
        ports = view.endpoint.ports if k8s_egress and view.endpoint is not None else None
        return (view.kind, ports, tuple(self._peer_matches_once(p, view, r) for p, r in tests))

    def _peer_matches_once(self, peer: Peer, view: PeerView, requires: Requires) -> bool:
        """:meth:`peer_matches`, remembered per (peer, view, requirements) — a function of them
        and the profile. The memo holds the peer and the view it was asked about, so their ids
        cannot be taken by other objects while it lives. Evaluators that share views (same
        profile) share it."""
        key = (id(peer), id(view), requires)
        found = self._peer_memo.get(key)
        if found is None:
            found = self._peer_memo[key] = (self.peer_matches(peer, view, requires), peer, view)
        return found[0]

    def _named_port_source(self, direction: Direction, ep: Endpoint, peer: PeerView) -> tuple[Any, ...] | None:
        """What :meth:`named_port` reads besides the cluster-wide table, for :attr:`PeerRules.key`."""
        if direction is Direction.INGRESS:
            return ep.ports
        if self.profile is Profile.K8S:
            return peer.endpoint.ports if peer.endpoint is not None else None
        return None

    def decide(self, rules: PeerRules, flow: Flow) -> tuple[DirectionDecision, tuple[RuleMatch, ...]]:
        """The second half of :meth:`direction_matches`: which of the peer's rules match the flow's
        protocol, port (and request), and the decision they make."""
        direction, ep = rules.direction, rules.endpoint
        if not rules.enforced:
            allow = {ALLOW_ANY[direction], *([ALLOW_LOCALHOST] if rules.localhost else [])}
            decision = DirectionDecision(direction, ep.key, enforced=False, allowed=True, allow_rules=frozenset(allow))
            return decision, tuple(RuleMatch(r, frozenset(), None) for r in sorted(allow))

        matches: list[RuleMatch] = []
        for rule in rules.allows:
            match = self._match_allow(rule, rules, flow)
            if match is not None:
                matches.append(match)
        denies = {r.ref for r in rules.denies if self._rule_ports(r, rules, flow) is not None}
        if rules.default_allow:
            matches.append(RuleMatch(DEFAULT_ALLOW[direction], frozenset(), None))
        if rules.localhost:
            matches.append(RuleMatch(ALLOW_LOCALHOST, frozenset(), None))

        allow_refs = frozenset(m.ref for m in matches)
        if denies:
            reason = DropReason.POLICY_DENY
            decision = DirectionDecision(direction, ep.key, True, False, reason, allow_refs, frozenset(denies))
            return decision, tuple(matches)
        if not matches:
            return DirectionDecision(direction, ep.key, True, False, DropReason.POLICY_DENIED), ()
        parsers = sorted(p for m in matches for p in m.parsers)
        redirect = parsers[0] if parsers else None  # one parser at most: _check_parsers made sure
        l7_allowed = None
        if redirect is not None and flow.l7 is not None:
            l7_allowed = any(m.admits(flow.l7) for m in matches)
        decision = DirectionDecision(direction, ep.key, True, True, None, allow_refs, frozenset(), redirect, l7_allowed)
        return decision, tuple(matches)

    # --- the parts a symbolic encoding of these semantics reuses (verifier/encoding/source.py) ----

    def units_for(self, ep: Endpoint, direction: Direction) -> list[PolicyUnit]:
        """The policy units that select ``ep`` and have ``direction`` (validated: one L7 parser
        per port)."""
        units = [u for u in self._units_selecting(ep) if direction in u.directions]
        if units:
            self._check_parsers(ep, direction, units)
        return units

    @staticmethod
    def requirements(units: list[PolicyUnit], direction: Direction) -> tuple[
            tuple[tuple[Requirement, ...], ...], tuple[tuple[Requirement, ...], ...]]:
        """The fromRequires/toRequires every peer must meet in ``direction``: those of allow rules
        (they tighten allows) and those of deny rules (they tighten denies), across the units."""
        allows = tuple(r for u in units for r in u.requires.get(direction, ()))
        denies = tuple(r for u in units for r in u.requires_deny.get(direction, ()))
        return allows, denies

    def localhost_allowed(self, direction: Direction, peer: PeerView) -> bool:
        """Cilium lets the node reach its endpoints whatever the ingress policy (SEMANTICS §4.2)."""
        return direction is Direction.INGRESS and self.profile is Profile.CILIUM and peer.kind is PeerKind.HOST

    @staticmethod
    def default_allows(units: list[PolicyUnit], direction: Direction) -> bool:
        """Cilium-only units that all set ``enableDefaultDeny: false`` for the direction."""
        cilium_only = not any(u.is_network_policy for u in units)
        return cilium_only and not any(u.default_deny.get(direction, True) for u in units)

    @property
    def units(self) -> tuple[PolicyUnit, ...]:
        """Every selecting unit of the inputs."""
        return self._units

    def policy_networks(self) -> list[IPNetwork]:
        """Every prefix a peer test can look at: CIDR peers and their excepts, and ``cidr:``
        selector keys (a world address carries a ``cidr:`` label per prefix holding it, §1)."""
        if self._networks is None:
            self._networks = self._find_networks()
        return list(self._networks)

    def _find_networks(self) -> list[IPNetwork]:
        nets: set[IPNetwork] = set()

        def requirement_nets(reqs: Iterable[Requirement]) -> None:
            for req in reqs:
                if req.source in (ANY_SOURCE, CIDR):
                    network = as_network(req.key)
                    if network is not None:
                        nets.add(network)

        for unit in self._units:
            for requires in (unit.requires, unit.requires_deny):
                for groups in requires.values():
                    for group in groups:
                        requirement_nets(group)
            for rule_sets in (unit.allows, unit.denies):
                for rules in rule_sets.values():
                    for rule in rules:
                        for peer in rule.peers:
                            if isinstance(peer, CidrPeer):
                                nets.add(peer.network)
                                nets.update(peer.excepts)
                            elif isinstance(peer, SelectorPeer | ServicePeer):
                                requirement_nets(peer.requirements)
        return sorted(nets, key=lambda n: (n.version, n))

    def view(self, address: IPAddress) -> PeerView:
        return self._views.of(address)

    def _match_allow(self, rule: SourceRule, rules: PeerRules, flow: Flow) -> RuleMatch | None:
        ports = self._rule_ports(rule, rules, flow)
        if ports is None:
            return None
        protocol = flow.protocol
        if not ports:  # no toPorts: an L3-only rule, which admits every request
            return RuleMatch(rule.ref, frozenset(), None)
        parsers = frozenset(p for pm in ports if (p := pm.parser_for(protocol)) is not None)
        l7: list[L7Rule] = []
        for pm in ports:
            if pm.parser_for(protocol) is None or not pm.l7_rules:
                return RuleMatch(rule.ref, parsers, None)
            l7.extend(pm.l7_rules)
        return RuleMatch(rule.ref, parsers, tuple(l7))

    def _rule_ports(self, rule: SourceRule, rules: PeerRules, flow: Flow) -> tuple[PortMatch, ...] | None:
        """The port entries through which a rule whose peer matched matches the flow; ``()`` when
        the rule has no ports (matches every port); ``None`` when it does not match."""
        if rule.ports is None:
            return ()
        matched = tuple(pm for pm in rule.ports if self._port_matches(pm, rules, flow))
        return matched or None

    # --- peers and ports -----------------------------------------------------------------------------

    def peer_matches(self, peer: Peer, view: PeerView, requires: tuple[tuple[Requirement, ...], ...]) -> bool:
        """Whether ``peer`` (with the units' fromRequires/toRequires) selects the address of ``view``."""
        if isinstance(peer, SelectorPeer):
            if peer.endpoints_only and view.kind is not PeerKind.ENDPOINT:
                return False
            return all_hold(peer.requirements, view) and all(all_hold(r, view) for r in requires)
        if isinstance(peer, CidrPeer):
            address = view.address
            if address not in peer.network or any(address in e for e in peer.excepts):
                return False
            return self.profile is Profile.K8S or view.kind is PeerKind.WORLD
        if isinstance(peer, EntityPeer):
            if view.kind not in _ENTITY_KINDS.get(peer.entity, frozenset()):
                return False
            if peer.entity == "world-ipv4":
                return view.address.version == 4
            if peer.entity == "world-ipv6":
                return view.address.version == 6
            return True
        if isinstance(peer, ServicePeer):
            return all_hold(peer.requirements, view)
        assert isinstance(peer, AnyPeer)
        return True

    def _port_matches(self, pm: PortMatch, rules: PeerRules, flow: Flow) -> bool:
        protocol = flow.protocol
        if protocol not in pm.protocols:
            return False
        if pm.name is None:
            return pm.low <= flow.port <= pm.high
        number = self.named_port(pm.name, protocol, rules.direction, rules.endpoint, rules.peer)
        return number == flow.port

    def named_port(
        self, name: str, protocol: Protocol, direction: Direction, ep: Endpoint, peer: PeerView
    ) -> int | None:
        """SEMANTICS §6: ingress against the destination (the policy's endpoint); egress against
        the destination under k8s, against the whole cluster (one number or nothing) under cilium."""
        if direction is Direction.INGRESS:
            return ep.named_port(name, protocol.name)
        if self.profile is Profile.K8S:
            dst = peer.endpoint
            return dst.named_port(name, protocol.name) if dst is not None else None
        numbers = self._cluster_named_ports.get((name, protocol.name), frozenset())
        return next(iter(numbers)) if len(numbers) == 1 else None

    # --- input validation that needs the endpoint ------------------------------------------------

    def _check_parsers(self, ep: Endpoint, direction: Direction, units: list[PolicyUnit]) -> None:
        """Refuse two L7 allows with different parsers on an intersecting (protocol, port) of one
        endpoint and direction, whatever their peers (SEMANTICS §7; Cilium: "cannot merge
        conflicting L7 parsers"). Checked once per endpoint and direction."""
        if (ep.key, direction) in self._parsers_checked:
            return
        seen: list[tuple[SourceRule, Protocol, int, int, str]] = []
        for unit in units:
            for rule in unit.allows.get(direction, ()):
                for pm in rule.ports or ():
                    for protocol in sorted(pm.protocols):
                        parser = pm.parser_for(protocol)
                        if parser is None:
                            continue
                        for low, high in self._port_ranges(pm, protocol, direction, ep):
                            for other, o_proto, o_low, o_high, o_parser in seen:
                                if o_parser != parser and o_proto is protocol and low <= o_high and o_low <= high:
                                    raise InputError(
                                        f"conflicting L7 parsers on {ep.key} {direction.value} "
                                        f"{max(low, o_low)}/{protocol.name}: {o_parser} from {other.ref} and "
                                        f"{parser} from {rule.ref} (Cilium: cannot merge conflicting L7 parsers)",
                                        source=SourceRef(rule.ref.file, rule.ref.line),
                                        subject=rule.ref.policy,
                                    )
                            seen.append((rule, protocol, low, high, parser))
        self._parsers_checked.add((ep.key, direction))

    def _port_ranges(
        self, pm: PortMatch, protocol: Protocol, direction: Direction, ep: Endpoint
    ) -> list[tuple[int, int]]:
        """The port ranges a port entry can mean for this endpoint and direction (a named port on
        egress under k8s: every number some endpoint declares for it)."""
        if pm.name is None:
            return [(pm.low, pm.high)]
        if direction is Direction.INGRESS:
            number = ep.named_port(pm.name, protocol.name)
            numbers: frozenset[int] = frozenset() if number is None else frozenset({number})
        elif self.profile is Profile.K8S:
            numbers = self._cluster_named_ports.get((pm.name, protocol.name), frozenset())
        else:
            numbers = self._cluster_named_ports.get((pm.name, protocol.name), frozenset())
            numbers = numbers if len(numbers) == 1 else frozenset()
        return [(n, n) for n in sorted(numbers)]

