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
from typing import Any

from compiler.cluster import Endpoint
from compiler.flow import Decision, Direction, DirectionDecision, Flow, IPAddress, Protocol
from verifier.diff.outcome import Side, decided_side, l7_admitted
from verifier.regions import AddressCell, PortCell
from verifier.simulate.source import ReferenceEvaluator, RuleMatch
from verifier.simulate.source_rules import PeerRules, PolicyUnit


@dataclass(frozen=True, eq=False)
class CellClass:
    """Address cells policy cannot tell apart in either version (endpoints), or one cell (the node,
    a world range). Compared and hashed by identity: one comparison makes each class once."""

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
    _tokens: dict[tuple[object, ...], int] = field(default_factory=dict)
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

    def token(self, rules: PeerRules | None) -> int:
        """A small number standing for ``rules.key`` in this version (-1: no policy side)."""
        if rules is None:
            return -1
        return self._tokens.setdefault(rules.key, len(self._tokens))

    def decide(self, rules: PeerRules, flow: Flow) -> Decided:
        key = (self.token(rules), flow.protocol, flow.port)
        found = self._decided.get(key)
        if found is None:
            decision, matches = self.ref.decide(rules, flow)
            found = self._decided[key] = Decided(decision, matches, projection(decision, matches))
        return found

    def side(self, egress: PeerRules | None, ingress: PeerRules | None, flow: Flow) -> Side:
        """The outcome of a flow from both directions' rules (memoized: equal keys, equal outcome)."""
        key = (self.token(egress), self.token(ingress), flow.protocol, flow.port)
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


@dataclass
class _Run:
    """Both versions, and what one comparison found so far."""

    old: VersionEvaluator
    new: VersionEvaluator
    found: list[Changed] = field(default_factory=list)
    pairs: int = 0
    #: per rule sets of a pair in both versions and port list: the ports whose outcome changes
    changes: dict[tuple[object, ...], tuple[Sequence[PortCell], list[tuple[PortCell, Side, Side]]]] = field(
        default_factory=dict
    )

    @property
    def versions(self) -> tuple[VersionEvaluator, VersionEvaluator]:
        return self.old, self.new

    def rules(self, direction: Direction, own: IPAddress, peer: IPAddress) -> tuple[PeerRules | None, PeerRules | None]:
        """``own``'s rules in ``direction`` selecting ``peer``, in OLD and in NEW."""
        return self.old.rules(direction, own, peer), self.new.rules(direction, own, peer)


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
    run = _Run(old, new)
    port_lists = {v: [p for p in ports if _family_ok(p.protocol, v)] for v in (4, 6)}
    sources = [c for c in classes if c.index in egress_affected]
    targets = [c for c in classes if c.index in ingress_affected]
    progress(f"comparing from {len(sources)} and to {len(targets)} of {len(classes)} address classes")
    groups = _same_policy(sources, Direction.EGRESS, run)
    buckets = _alike(classes, groups, Direction.EGRESS, run)
    for group in groups:
        _pass_egress(group, buckets, port_lists[group[0].family], ingress_affected, run)
    others = [c for c in classes if c.index not in egress_affected]
    groups = _same_policy(targets, Direction.INGRESS, run)
    buckets = _alike(others, groups, Direction.INGRESS, run)
    for group in groups:
        _pass_ingress(group, buckets, port_lists[group[0].family], run)
    return Comparison(run.found, run.pairs, old.evaluations + new.evaluations)


def _same_policy(classes: Sequence[CellClass], direction: Direction, run: _Run) -> list[list[CellClass]]:
    """Endpoint classes with the same units in ``direction`` in both versions (and the same
    family, and on ingress the same declared ports, which named ports resolve against): the rules
    of their policy that select a given peer are the same, so they share that computation."""
    groups: dict[tuple[object, ...], list[CellClass]] = defaultdict(list)
    for cls in classes:
        key = tuple(tuple(id(u) for u in v.units(direction, cls.address)) for v in run.versions)
        ports = tuple(v.own_ports(cls.address) for v in run.versions) if direction is Direction.INGRESS else ()
        groups[(key, ports, cls.family)].append(cls)
    return list(groups.values())


def _alike(
    classes: Sequence[CellClass], groups: Sequence[Sequence[CellClass]], direction: Direction, run: _Run
) -> list[list[CellClass]]:
    """``classes`` (the other side of a pass) bucketed so that, for every group's policy in
    ``direction`` and both versions, all classes of a bucket select the same rules: equal
    :meth:`ReferenceEvaluator.peer_signature` over the union of the groups' peer tests. A pass
    then finds a group's rules once per bucket instead of once per class."""
    if not groups:
        return []
    tests = [_union_tests(v, direction, [g[0].address for g in groups]) for v in run.versions]
    buckets: dict[tuple[object, ...], list[CellClass]] = defaultdict(list)
    for cls in classes:
        views = (v.ref.view(cls.address) for v in run.versions)
        signature = tuple(
            v.ref.peer_signature(direction, view, t) for v, view, t in zip(run.versions, views, tests, strict=True)
        )
        buckets[(cls.family, signature)].append(cls)
    return list(buckets.values())


def _union_tests(version: VersionEvaluator, direction: Direction, owners: Iterable[IPAddress]) -> list[Any]:
    seen: dict[tuple[int, object], Any] = {}
    for owner in owners:
        ep = version.ref.view(owner).endpoint
        for peer, requires in version.ref.peer_tests(direction, ep) if ep is not None else ():
            seen.setdefault((id(peer), requires), (peer, requires))
    return list(seen.values())


def _pass_egress(
    group: Sequence[CellClass],
    buckets: Iterable[Sequence[CellClass]],
    ports: Sequence[PortCell],
    ingress_affected: set[int],
    run: _Run,
) -> None:
    """Pass A for source classes sharing their egress policy, against every bucket of destination
    classes selecting the same egress rules; a destination whose ingress cannot change is
    compared only on the ports where the egress decision moved."""
    source = group[0].address
    for bucket in buckets:
        if bucket[0].family != group[0].family:
            continue
        egress = run.rules(Direction.EGRESS, source, bucket[0].address)
        hot = _moved_ports(ports, source, bucket[0].address, egress, run)
        for b in bucket:
            todo = ports if b.index in ingress_affected else hot
            for a in group:
                addresses = _pair(a, b)
                if addresses is None:
                    continue
                run.pairs += 1
                if todo:
                    src, dst = addresses
                    _record(a, b, todo, src, dst, egress, run.rules(Direction.INGRESS, dst, src), run)


def _pass_ingress(
    group: Sequence[CellClass], buckets: Iterable[Sequence[CellClass]], ports: Sequence[PortCell], run: _Run
) -> None:
    """Pass B for destination classes sharing their ingress policy, against every bucket of
    source classes (whose egress cannot change) selecting the same ingress rules, compared only
    on the ports where the ingress decision moved."""
    target = group[0].address
    for bucket in buckets:
        if bucket[0].family != group[0].family:
            continue
        ingress = run.rules(Direction.INGRESS, target, bucket[0].address)
        hot = _moved_ports(ports, bucket[0].address, target, ingress, run)
        for a in bucket:
            for b in group:
                addresses = _pair(a, b)
                if addresses is None:
                    continue
                run.pairs += 1
                if hot:
                    src, dst = addresses
                    _record(a, b, hot, src, dst, run.rules(Direction.EGRESS, src, dst), ingress, run)


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
    rules: tuple[PeerRules | None, PeerRules | None],
    run: _Run,
) -> list[PortCell]:
    """The ports on which one direction's decision (by projection) differs between the versions."""
    old_rules, new_rules = rules
    assert old_rules is not None and new_rules is not None  # the pass's own side is an endpoint
    out = []
    for port in ports:
        flow = _flow(src, dst, port)
        if run.old.decide(old_rules, flow).projection != run.new.decide(new_rules, flow).projection:
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
    egress: tuple[PeerRules | None, PeerRules | None],
    ingress: tuple[PeerRules | None, PeerRules | None],
    run: _Run,
) -> None:
    """Compare the pair on ``ports`` (the rules of both directions, in OLD and NEW). Pairs with
    the same rules in both versions and the same port list have the same changes, so those are
    computed once (kept with the port list, whose identity is part of the key)."""
    old, new = run.versions
    key = (old.token(egress[0]), old.token(ingress[0]), new.token(egress[1]), new.token(ingress[1]), id(ports))
    known = run.changes.get(key)
    if known is None:
        changes = []
        for port in ports:
            flow = _flow(src, dst, port)
            before, after = old.side(egress[0], ingress[0], flow), new.side(egress[1], ingress[1], flow)
            if before.differs(after):
                changes.append((port, before, after))
        known = run.changes[key] = (ports, changes)
    run.found.extend((a, b, port, before, after) for port, before, after in known[1])
