"""The diff's enumeration: classes of address cells, and the pairs of classes a change can touch.

**Classes.** Two endpoints that no policy of either version can tell apart get the same verdict
against every peer, so they form one class and one member stands for all. The reference
evaluator reads an endpoint only through its view (visible labels, which include its namespace,
its namespace's labels, service account and cluster name), its declared ports (named ports), its
address family, and — for CIDR peers and excepts — which policy prefixes hold its address
(:func:`verifier.simulate.source.ReferenceEvaluator.policy_networks`, both versions). The class
key is exactly that, in both versions (plus the namespace, for good measure). The node and each
world cell (already cut at every policy prefix, :mod:`verifier.regions`) are classes of their own.
Self-flows are not flows: a pair of classes ``(A, A)`` exists only when ``A`` has two members, and
is evaluated between two of them.

**Pairs.** :func:`compare` walks two passes (the flows :mod:`verifier.diff.scope` says can change):

- pass A, per class ``A`` whose egress may change, against every destination class ``B``;
- pass B, per class ``B`` whose ingress may change, against every source class ``A`` not
  already covered by pass A.

Both directions are evaluated in two steps (:class:`verifier.simulate.source.PeerRules`): first
which rules' peers select the other side (once per pair), then the ports (once per distinct rule
set and port cell, memoized). In pass A the destinations are grouped by the egress rules that
select them; where a group's egress decision is the same in both versions on a port — same
verdict, drop reason, proxy and L7 rules — and the destination's ingress cannot change, the flow
cannot change (the other direction is identical in both versions), so its ingress is not even
looked at. Pass B is the mirror image. In the full comparison (profiles or clusters differ)
every endpoint class is in both affected sets, so the shortcut only ever skips the node and world
cells, which have no policy of their own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from compiler.cluster import Endpoint
from compiler.flow import Decision, Direction, DirectionDecision, Flow, IPAddress, Protocol
from verifier.diff.outcome import Side, decided_side, l7_admitted
from verifier.regions import AddressCell, PortCell
from verifier.simulate.source import PeerRules, ReferenceEvaluator, RuleMatch
from verifier.simulate.source_rules import PolicyUnit


@dataclass(frozen=True)
class CellClass:
    """Address cells policy cannot tell apart in either version (endpoints), or one cell (the node,
    a world range)."""

    index: int
    kind: str  # "endpoint", "host", "world"
    members: tuple[AddressCell, ...]

    @property
    def family(self) -> int:
        return self.members[0].representative.version

    @property
    def address(self) -> IPAddress:
        return self.members[0].representative


def cell_classes(cells: Sequence[AddressCell], refs: Sequence[ReferenceEvaluator]) -> list[CellClass]:
    """Group endpoint cells by what the evaluators can see of them (see the module docstring)."""
    networks = sorted({n for ref in refs for n in ref.policy_networks()}, key=lambda n: (n.version, str(n)))
    clusters = list({id(ref.cluster): ref.cluster for ref in refs}.values())
    raw_kinds: dict[tuple[object, ...], int] = {}  # an endpoint's own fields, in every cluster
    kinds: dict[tuple[object, ...], int] = {}  # what the evaluators see of it
    kind_of_raw: list[int] = []
    by_key: dict[tuple[object, ...], list[AddressCell]] = defaultdict(list)
    others: list[AddressCell] = []
    for cell in cells:
        if cell.kind != "endpoint":
            others.append(cell)
            continue
        address = cell.representative
        raw = tuple(_raw_key(cluster.endpoint_at(address)) for cluster in clusters)
        raw_kind = raw_kinds.setdefault(raw, len(raw_kinds))
        if raw_kind == len(kind_of_raw):  # first endpoint with these fields: its views decide
            seen = (tuple(r[:2] for r in raw), tuple(ref.view(address).labels for ref in refs))
            kind_of_raw.append(kinds.setdefault(seen, len(kinds)))
        inside = tuple(address in n for n in networks)
        by_key[(kind_of_raw[raw_kind], address.version, inside)].append(cell)
    groups = sorted(by_key.values(), key=lambda members: members[0].name)
    classes = [CellClass(i, "endpoint", tuple(m)) for i, m in enumerate(groups)]
    classes.extend(CellClass(len(classes) + i, c.kind, (c,)) for i, c in enumerate(others))
    return classes


def _raw_key(ep: Endpoint | None) -> tuple[object, ...]:
    """An endpoint's namespace, ports, service account and labels (its view is a function of
    them); the first two stay in the class key, the view replaces the rest."""
    if ep is None:  # the address is not an endpoint in this version (clusters differ)
        return ("not an endpoint",)
    return (ep.namespace, ep.ports, ep.service_account, frozenset(ep.labels.items()))


@dataclass(frozen=True)
class Decided:
    """One direction's decision on one port, with what an outcome depends on (``projection``)."""

    decision: DirectionDecision
    matches: tuple[RuleMatch, ...]
    projection: tuple[object, ...]


@dataclass
class VersionEvaluator:
    """One version's answers for pairs of classes, memoized by :attr:`PeerRules.key` and port."""

    ref: ReferenceEvaluator
    evaluations: int = 0
    _decided: dict[tuple[object, ...], Decided] = field(default_factory=dict)
    _sides: dict[tuple[object, ...], Side] = field(default_factory=dict)

    def rules(self, direction: Direction, own: IPAddress, peer: IPAddress) -> PeerRules | None:
        """The rules of ``own``'s policy in ``direction`` whose peers select ``peer`` (None: ``own``
        is not an endpoint, so it has no policy)."""
        view = self.ref.view(own)
        if view.endpoint is None:
            return None
        return self.ref.peer_rules(direction, view.endpoint, self.ref.view(peer))

    def units(self, direction: Direction, own: IPAddress) -> list[PolicyUnit]:
        """The units of ``own``'s policy in ``direction`` (none for the node and world)."""
        view = self.ref.view(own)
        return [] if view.endpoint is None else self.ref.units_for(view.endpoint, direction)

    def own_ports(self, own: IPAddress) -> tuple[object, ...]:
        """The ports ``own`` declares (ingress named ports resolve against them)."""
        view = self.ref.view(own)
        return () if view.endpoint is None else view.endpoint.ports

    def decide(self, rules: PeerRules, flow: Flow) -> Decided:
        key = (rules.key, flow.protocol, flow.port)
        found = self._decided.get(key)
        if found is None:
            decision, matches = self.ref.decide(rules, flow)
            found = self._decided[key] = Decided(decision, matches, projection(decision, matches))
        return found

    def side(self, egress: PeerRules | None, ingress: PeerRules | None, flow: Flow) -> Side:
        """The outcome of a flow from both directions' rules (memoized: equal keys, equal outcome)."""
        key = (
            None if egress is None else egress.key,
            None if ingress is None else ingress.key,
            flow.protocol,
            flow.port,
        )
        found = self._sides.get(key)
        if found is None:
            self.evaluations += 1
            eg = self.decide(egress, flow) if egress is not None else None
            ing = self.decide(ingress, flow) if ingress is not None else None
            decision = Decision.combine(flow, eg.decision if eg else None, ing.decision if ing else None)
            found = self._sides[key] = decided_side(decision, eg.matches if eg else (), ing.matches if ing else ())
        return found


def projection(decision: DirectionDecision, matches: tuple[RuleMatch, ...]) -> tuple[object, ...]:
    """What a flow's outcome (and its L7 comparison) reads from one direction: allowed, drop reason,
    proxy, and the L7 rules behind the proxy. Equal projections of one direction in both versions,
    with the other direction identical, give equal outcomes."""
    l7 = l7_admitted(matches) if decision.redirect else None
    return (decision.allowed, decision.reason, decision.redirect, l7)


Changed = tuple[CellClass, CellClass, PortCell, Side, Side]


@dataclass
class Comparison:
    """What :func:`compare` found, and how much it evaluated."""

    changed: list[Changed]
    pairs: int  # class pairs looked at
    evaluations: int  # distinct (egress rules, ingress rules, port) outcomes computed, both versions


def compare(
    classes: Sequence[CellClass],
    ports: Sequence[PortCell],
    old: VersionEvaluator,
    new: VersionEvaluator,
    egress_affected: set[int],
    ingress_affected: set[int],
    progress: Callable[[str], None] = lambda _: None,
) -> Comparison:
    """Every (source class, destination class, port cell) whose outcome differs, among the flows
    whose source's egress (``egress_affected``) or destination's ingress (``ingress_affected``)
    may differ — by class index. See the module docstring for why this is exhaustive."""
    found: list[Changed] = []
    port_lists = {v: [p for p in ports if _family_ok(p.protocol, v)] for v in (4, 6)}
    sources = [c for c in classes if c.index in egress_affected]
    targets = [c for c in classes if c.index in ingress_affected]
    progress(f"comparing from {len(sources)} and to {len(targets)} of {len(classes)} address classes")
    pairs = 0
    for group in _same_policy(sources, Direction.EGRESS, old, new):
        pairs += _pass_egress(group, classes, port_lists[group[0].family], (old, new), ingress_affected, found)
    others = [c for c in classes if c.index not in egress_affected]
    for group in _same_policy(targets, Direction.INGRESS, old, new):
        pairs += _pass_ingress(group, others, port_lists[group[0].family], (old, new), found)
    return Comparison(found, pairs, old.evaluations + new.evaluations)


def _same_policy(
    classes: Sequence[CellClass], direction: Direction, old: VersionEvaluator, new: VersionEvaluator
) -> list[list[CellClass]]:
    """Endpoint classes with the same units in ``direction`` in both versions (and the same
    family, and on ingress the same declared ports, which named ports resolve against): the rules
    of their policy that select a given peer are the same, so they share that computation."""
    groups: dict[tuple[object, ...], list[CellClass]] = defaultdict(list)
    for cls in classes:
        key = tuple(tuple(id(u) for u in v.units(direction, cls.address)) for v in (old, new))
        ports = tuple(v.own_ports(cls.address) for v in (old, new)) if direction is Direction.INGRESS else ()
        groups[(key, ports, cls.family)].append(cls)
    return list(groups.values())


Member = tuple[CellClass, PeerRules, PeerRules]


def _pass_egress(
    group: Sequence[CellClass],
    classes: Iterable[CellClass],
    ports: Sequence[PortCell],
    versions: tuple[VersionEvaluator, VersionEvaluator],
    ingress_affected: set[int],
    found: list[Changed],
) -> int:
    """Pass A for source classes sharing their egress policy: every destination class, grouped by
    the egress rules that select it; a destination whose ingress cannot change is compared only on
    the ports where the egress decision moved."""
    source = group[0].address
    buckets: dict[tuple[object, ...], list[Member]] = defaultdict(list)
    for b in classes:
        if b.family != group[0].family:
            continue
        eg_old, eg_new = _both(Direction.EGRESS, source, b.address, versions)
        assert eg_old is not None and eg_new is not None  # the group holds endpoint classes
        buckets[(eg_old.key, eg_new.key)].append((b, eg_old, eg_new))
    pairs = 0
    for members in buckets.values():
        _, eg_old, eg_new = members[0]
        hot = _moved_ports(ports, source, members[0][0].address, (eg_old, eg_new), versions)
        for b, eg_old, eg_new in members:
            todo = ports if b.index in ingress_affected else hot
            for a in group:
                addresses = _pair(a, b)
                if addresses is None:
                    continue
                pairs += 1
                if not todo:
                    continue
                src, dst = addresses
                in_old, in_new = _both(Direction.INGRESS, dst, src, versions)
                _record(a, b, todo, src, dst, (eg_old, in_old), (eg_new, in_new), versions, found)
    return pairs


def _pass_ingress(
    group: Sequence[CellClass],
    classes: Iterable[CellClass],
    ports: Sequence[PortCell],
    versions: tuple[VersionEvaluator, VersionEvaluator],
    found: list[Changed],
) -> int:
    """Pass B for destination classes sharing their ingress policy: every source class whose egress
    cannot change, grouped by the ingress rules that select it, compared only on the ports where
    the ingress decision moved."""
    target = group[0].address
    buckets: dict[tuple[object, ...], list[Member]] = defaultdict(list)
    for a in classes:
        if a.family != group[0].family:
            continue
        in_old, in_new = _both(Direction.INGRESS, target, a.address, versions)
        assert in_old is not None and in_new is not None  # the group holds endpoint classes
        buckets[(in_old.key, in_new.key)].append((a, in_old, in_new))
    pairs = 0
    for members in buckets.values():
        _, in_old, in_new = members[0]
        hot = _moved_ports(ports, members[0][0].address, target, (in_old, in_new), versions)
        for a, in_old, in_new in members:
            for b in group:
                addresses = _pair(a, b)
                if addresses is None:
                    continue
                pairs += 1
                if not hot:
                    continue
                src, dst = addresses
                eg_old, eg_new = _both(Direction.EGRESS, src, dst, versions)
                _record(a, b, hot, src, dst, (eg_old, in_old), (eg_new, in_new), versions, found)
    return pairs


def _both(
    direction: Direction, own: IPAddress, peer: IPAddress, versions: tuple[VersionEvaluator, VersionEvaluator]
) -> tuple[PeerRules | None, PeerRules | None]:
    return versions[0].rules(direction, own, peer), versions[1].rules(direction, own, peer)


def _family_ok(protocol: Protocol, family: int) -> bool:
    if protocol is Protocol.ICMP:
        return family == 4
    if protocol is Protocol.ICMPV6:
        return family == 6
    return True


def _pair(src: CellClass, dst: CellClass) -> tuple[IPAddress, IPAddress] | None:
    """The two addresses that stand for the pair, or None when the pair holds no flow: different
    families, neither side an endpoint, or one single cell with itself."""
    if src.family != dst.family or (src.kind != "endpoint" and dst.kind != "endpoint"):
        return None
    if src.index != dst.index:
        return src.address, dst.address
    if len(src.members) < 2:
        return None
    return src.members[0].representative, src.members[1].representative


def _moved_ports(
    ports: Sequence[PortCell],
    src: IPAddress,
    dst: IPAddress,
    rules: tuple[PeerRules, PeerRules],
    versions: tuple[VersionEvaluator, VersionEvaluator],
) -> list[PortCell]:
    """The ports on which one direction's decision differs between the versions (by projection)."""
    (old_rules, new_rules), (old, new) = rules, versions
    out = []
    for port in ports:
        flow = _flow(src, dst, port)
        if old.decide(old_rules, flow).projection != new.decide(new_rules, flow).projection:
            out.append(port)
    return out


def _flow(src: IPAddress, dst: IPAddress, port: PortCell) -> Flow:
    return Flow(src, dst, port.protocol, port.lo)


def _record(
    a: CellClass,
    b: CellClass,
    ports: Sequence[PortCell],
    src: IPAddress,
    dst: IPAddress,
    rules_old: tuple[PeerRules | None, PeerRules | None],
    rules_new: tuple[PeerRules | None, PeerRules | None],
    versions: tuple[VersionEvaluator, VersionEvaluator],
    found: list[Changed],
) -> None:
    old, new = versions
    for port in ports:
        flow = _flow(src, dst, port)
        before, after = old.side(*rules_old, flow), new.side(*rules_new, flow)
        if before.differs(after):
            found.append((a, b, port, before, after))

