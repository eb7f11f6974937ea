"""Which connections the L7 proof must look at, and what each side holds for them.

A connection reaches a proxy for one endpoint, one direction, one remote address, one protocol
and port. The source's L7 rules for it depend on the remote only through its view (an endpoint,
the node, or a world range between policy prefixes) and on the port only through rule
boundaries; Envoy's depend on the remote's identity (the ipcache) and on its port-policy
boundaries. So the cases are every (endpoint, direction) that either side sends to a proxy ×
every remote cell × every (protocol, port range) cut at both sides' boundaries: one
representative per case decides the whole case. Cases that hold the same rules on both sides are
grouped, so the solver sees each distinct question once.

**Classes, not addresses.** Enumerating every endpoint address as own side × every endpoint
address as remote grows with the square of the cluster; both are taken per class instead, and
exactly so:

- *The remote.* A case reads the remote endpoint only through the reference evaluator's view of
  it (:meth:`ReferenceEvaluator.peer_rules`: its kind and visible labels for selectors and
  entities, which policy prefixes hold its address for CIDR peers, its declared ports for named
  ports; :meth:`~ReferenceEvaluator.decide` reads nothing more of it), through its ipcache
  identity (Envoy's ``remote_policies`` are keyed by it; :meth:`EnvoySimulator.applicable` gets
  nothing else of the remote), and through whether it is the own address. The ``source``
  signature of :func:`verifier.proofs.address_classes.address_classes` holds the view's kind and
  labels (after the label filter), the pod's namespace and ports and every policy prefix holding the address (to
  the host route); its ``ebpf`` signature holds the ipcache identity. So two endpoint addresses
  of one class give the same case from or to any own address other than both: the class's
  representative stands for it, and where the representative *is* the own address, the class's
  kept second member does (the flow from an address to itself is no connection, the one to
  another member of its class is). Under ``cilium`` the view says less: CIDR peers never select
  an endpoint and named ports resolve against the own endpoint or the whole cluster, so an
  endpoint matters by kind and labels only (the argument of ``_peer_key`` in
  :mod:`verifier.encoding.source`); classes whose addresses agree in those and in identity are
  merged (any member other than the own address stands for the merged class). Under ``k8s`` the classes stay whole.
  The node and every world cell are kept as they are.
- *The own endpoint.* The source reads it through the same view (the units selecting it, its
  ports for named ports on ingress), which its class fixes; Envoy reads its index entry (the
  redirects) and the NPDS / DNS documents the entry names, which no class sees. So own addresses
  are grouped by (class, the entry's content with those documents resolved), and one address per
  group is enumerated. The content drops only the fields that name the endpoint itself (its key,
  id and addresses, where the documents repeat the entry's own id and addresses), never a rule:
  an endpoint whose Envoy config differs in anything else — a corrupted regex, a missing
  redirect — is a group, and a case, of its own.

Case names say how many endpoints they stand for (``ns/pod (+12 alike)``), as the slices of the
target proofs do.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from compiler.cluster import Cluster, Endpoint
from compiler.flow import Direction, Flow, IPAddress, Profile, Protocol
from verifier.proofs.address_classes import AddressClasses
from verifier.proofs.view_index import ViewIndex, members, refine
from verifier.regions import AddressCell, address_cells, split_ranges
from verifier.simulate.ebpf import Ipcache
from verifier.simulate.envoy import Applicable, EnvoySimulator, NotRedirected
from verifier.simulate.source import ReferenceEvaluator, RuleMatch
from verifier.simulate.source_labels import PeerKind
from verifier.simulate.source_rules import PeerRules, PolicyUnit

L7_PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
MAX_PORT = 65535

#: Index-entry fields that name the endpoint itself (the trace and the lookup by address read
#: them; no decision does), and the documents' fields that repeat the entry's own id and addresses.
_ENTRY_NAMES = ("endpoint", "endpoint_id", "ips")
_DOCUMENT_NAMES = {"endpoint_id": "endpoint_id", "endpoint_ips": "ips"}


@dataclass(frozen=True)
class L7Case:
    """One connection class: a representative flow and what each side holds for it."""

    endpoint: str  # the own endpoint's key, with how many alike it stands for
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
    envoy_key: tuple[object, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        span = str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"
        side = "from" if self.direction is Direction.INGRESS else "to"
        return f"{self.endpoint} {self.direction.value} {span}/{self.protocol.name} {side} {self.remote}"

    def key(self) -> tuple[object, ...]:
        """What the question depends on: equal keys, equal answers."""
        envoy = self.envoy_key if self.envoy_key is not None else envoy_rules_key(self.envoy)
        source = tuple(sorted(repr(m.l7) for m in self.source))
        return (self.source_parser, envoy, source)


def envoy_rules_key(rules: Applicable | None) -> tuple[object, ...] | None:
    """Envoy's part of :meth:`L7Case.key`: the parser, whether a deny applies, the allow rules."""
    if rules is None:
        return None
    return (rules.parser, rules.denies != (),
            tuple(sorted(json.dumps(rule, sort_keys=True) for _, rule in rules.allows)))


@dataclass(frozen=True)
class OwnGroup:
    """Own endpoint addresses that give the same cases: one class, equal Envoy configs."""

    endpoint: Endpoint  # the representative's endpoint
    address: IPAddress  # the representative, enumerated for the group
    endpoints: tuple[str, ...]  # every endpoint key the group holds (sorted)

    @property
    def name(self) -> str:
        return _named(self.endpoint.key, len(self.endpoints))


Member = tuple[IPAddress, str]  # an endpoint address and its endpoint's key


@dataclass(frozen=True)
class RemoteClass:
    """Endpoint addresses that are interchangeable as the remote: a representative, the members
    that stand for it where the representative is the own address (the flow from an address to
    itself is no connection, the one to another member is), and the endpoints it stands for."""

    first: Member
    others: tuple[Member, ...]  # one kept second member; every candidate when the classes name none
    endpoints: frozenset[str]

    @cached_property
    def cells(self) -> tuple[AddressCell, tuple[AddressCell, ...]]:
        """The members as remote cells, named for the endpoints they stand for."""
        count = len(self.endpoints)
        return (AddressCell("endpoint", _named(self.first[1], count), self.first[0]),
                tuple(AddressCell("endpoint", _named(key, count), address) for address, key in self.others))

    def cells_for(self, own: IPAddress) -> tuple[AddressCell, ...]:
        """The cells that stand for the class as the remote of ``own`` (none: only ``own`` is in it)."""
        first, others = self.cells
        return (first,) if first.representative != own else tuple(c for c in others if c.representative != own)


def l7_cases(ref: ReferenceEvaluator, envoy: EnvoySimulator, ipcache: Ipcache,
             classes: AddressClasses | None = None,
             progress: Callable[[int, int], None] = lambda _done, _total: None) -> Iterator[L7Case]:
    """Every connection class either side sends to a proxy (see the module docstring).

    ``classes``: the endpoint addresses' classes under the ``ebpf`` and ``source`` sides (None:
    every address is its own class). ``progress`` is called after each own group, with the
    number of groups."""
    cluster = ref.cluster
    classes = classes or AddressClasses()
    fixed = [c for c in address_cells(cluster, [str(n) for n in ref.policy_networks()]) if c.kind != "endpoint"]
    remotes = remote_classes(ref, ipcache, classes)
    spans = _Spans(ref, envoy)
    groups = own_groups(ref, envoy, classes)
    proxied = [(g, directions) for g, directions in zip(groups, _proxied(ref, envoy, groups), strict=True)
               if directions]
    index = _RemoteIndex(ref, remotes)
    for done, (group, directions) in enumerate(proxied, 1):
        for direction in directions:
            yield from _group_cases(ref, envoy, ipcache, group, direction, _remote_cells(group, remotes, fixed),
                                    spans, index)
        progress(done, len(proxied))


# --- the own side ------------------------------------------------------------------------------

def own_groups(ref: ReferenceEvaluator, envoy: EnvoySimulator, classes: AddressClasses) -> list[OwnGroup]:
    """Every endpoint address, grouped by (its class, its Envoy config); in cluster order, each
    group represented by its first address."""
    class_of = _address_class(ref.cluster, classes)
    contents: dict[int, str] = {}  # id(entry) → its content, for endpoints with several addresses
    found: dict[tuple[object, ...], list[tuple[Endpoint, IPAddress]]] = {}
    for ep in ref.cluster.endpoints:
        for address in ep.addresses:
            content = _content(envoy, envoy.entry(address), contents)
            own_class = class_of.get((address.version, int(address)), ("alone", ep.key, str(address)))
            found.setdefault((own_class, content), []).append((ep, address))
    return [OwnGroup(members[0][0], members[0][1], tuple(sorted({ep.key for ep, _ in members})))
            for members in found.values()]


def _content(envoy: EnvoySimulator, entry: Mapping[str, Any] | None, seen: dict[int, str]) -> str:
    """:func:`envoy_content`, once per entry (an endpoint's addresses share theirs)."""
    if entry is None:
        return "null"
    found = seen.get(id(entry))
    if found is None:
        found = seen[id(entry)] = envoy_content(envoy, entry)
    return found


def envoy_content(envoy: EnvoySimulator, entry: Mapping[str, Any]) -> str:
    """An index entry's content, canonical JSON, with the NPDS / DNS documents it names in place
    of their paths, less the fields that name the endpoint itself (see the module docstring)."""
    content: dict[str, Any] = {k: v for k, v in entry.items() if k not in _ENTRY_NAMES}
    for doc_key in ("npds", "dns"):
        if doc_key in entry:
            document = envoy.document(entry[doc_key])
            content[doc_key] = {k: v for k, v in document.items()
                                if not (k in _DOCUMENT_NAMES and v == entry.get(_DOCUMENT_NAMES[k]))}
    return json.dumps(content, sort_keys=True, separators=(",", ":"))


def _address_class(cluster: Cluster, classes: AddressClasses) -> dict[tuple[int, int], tuple[object, ...]]:
    """(family, address) → its class, for the addresses whose class ``classes`` tells: an
    endpoint's only address of a family, not shared with another endpoint. The rest (the node's
    address, an endpoint's second address of a family, a shared one) are left out: each is a
    group of its own."""
    heads: dict[tuple[int, str], list[int]] = {}
    for (family, head), keys in classes.members.items():
        for key in keys:
            heads.setdefault((family, key), []).append(head)
    owners: dict[tuple[int, int], int] = {}
    for ep in cluster.endpoints:
        for address in set(ep.addresses):
            owners[(address.version, int(address))] = owners.get((address.version, int(address)), 0) + 1
    out: dict[tuple[int, int], tuple[object, ...]] = {}
    for ep in cluster.endpoints:
        for address in ep.addresses:
            family, value = address.version, int(address)
            found = heads.get((family, ep.key), [])
            alone = sum(1 for a in ep.addresses if a.version == family) == 1 and owners[(family, value)] == 1
            if alone and len(found) == 1:
                out[(family, value)] = ("class", family, found[0])
    return out


def _proxied(ref: ReferenceEvaluator, envoy: EnvoySimulator, groups: list[OwnGroup]) -> list[list[Direction]]:
    """Per group, the directions in which either side sends its connections to a proxy. The
    source does when a unit selecting the group's endpoint has an L7 allow in the direction:
    the few units with one are asked first, of every group at once (a :class:`ViewIndex` of
    the endpoints as subjects); for the groups one may select, the units are looked up as the
    evaluator does, which also refuses conflicting parsers."""
    index = ViewIndex(ref, [ref.subject_view(g.endpoint) for g in groups])
    maybe = {d: _subjects(index, (u for u in ref.units if d in u.directions and _has_parser(u, d)))
             for d in Direction}
    return [[d for d in Direction if _envoy_redirects(envoy, g.address, d)
             or (maybe[d] >> i & 1 and any(_has_parser(u, d) for u in ref.units_for(g.endpoint, d)))]
            for i, g in enumerate(groups)]


def _subjects(index: ViewIndex, units: Iterable[PolicyUnit]) -> int:
    """The views some unit of ``units`` selects as its subject."""
    found = 0
    for unit in units:
        if unit.subject is not None:
            found |= index.holding(unit.subject)
    return found


def _envoy_redirects(envoy: EnvoySimulator, address: IPAddress, direction: Direction) -> bool:
    entry = envoy.entry(address)
    return entry is not None and any(r["direction"] == direction.value for r in entry["redirects"])


def _has_parser(unit: PolicyUnit, direction: Direction) -> bool:
    return any(pm.parser is not None for rule in unit.allows.get(direction, ()) for pm in rule.ports or ())


# --- the remote side ---------------------------------------------------------------------------

def remote_classes(ref: ReferenceEvaluator, ipcache: Ipcache,
                   classes: AddressClasses) -> dict[int, list[RemoteClass]]:
    """Per family, the endpoint addresses as remotes: the address classes (without classes, each
    address is one), merged where the remote's view says they may be (:func:`_remote_key`). The
    node's address is in none (its cell is kept)."""
    merged: dict[tuple[int, tuple[object, ...]], list[RemoteClass]] = {}
    for family, remote in _address_remotes(ref.cluster, classes):
        merged.setdefault((family, _remote_key(ref, ipcache, remote.first[0])), []).append(remote)
    out: dict[int, list[RemoteClass]] = {4: [], 6: []}
    for (family, _), parts in merged.items():
        # a merged class's second member: the next class's representative (another address)
        others = tuple(p.first for p in parts[1:2]) or parts[0].others
        out[family].append(RemoteClass(parts[0].first, others, frozenset().union(*(p.endpoints for p in parts))))
    return out


def _remote_key(ref: ReferenceEvaluator, ipcache: Ipcache, address: IPAddress) -> tuple[object, ...]:
    """What of a remote endpoint address a case reads: under ``cilium``, its kind, its visible
    labels and its identity (CIDR peers never select an endpoint there, and named ports resolve
    against the own endpoint or the whole cluster, as :mod:`verifier.encoding.source` argues for
    ``_peer_key``); under ``k8s`` CIDR peers and the remote's named ports matter too, so the
    address class stays whole."""
    view = ref.view(address)
    if ref.profile is Profile.CILIUM and view.kind is PeerKind.ENDPOINT:
        return ("view", view.labels, ipcache.lookup(address))
    return ("class", int(address))


def _address_remotes(cluster: Cluster, classes: AddressClasses) -> Iterator[tuple[int, RemoteClass]]:
    """One :class:`RemoteClass` per address class (per endpoint address without classes), by
    representative address."""
    node = cluster.node_address
    by_address = {a: ep.key for ep in cluster.endpoints for a in ep.addresses if a != node}
    if not classes.members:
        for address in sorted(by_address, key=lambda a: (a.version, int(a))):
            yield address.version, RemoteClass((address, by_address[address]), (), frozenset({by_address[address]}))
        return
    as_ip: dict[tuple[int, int], IPAddress] = {(a.version, int(a)): a for a in by_address}
    for (family, head), keys in sorted(classes.members.items()):
        first = as_ip[(family, head)]
        alternate = classes.alternates.get((family, head))
        others: tuple[Member, ...] = ()
        if alternate is not None:
            others = ((as_ip[(family, alternate)], by_address[as_ip[(family, alternate)]]),)
        elif len(keys) > 1:  # the head is shared by two endpoints: which other address is in the class is
            others = _addresses_of(cluster, family, set(keys), first)  # not told, so every candidate
        yield family, RemoteClass((first, by_address[first]), others, frozenset(keys))


def _addresses_of(cluster: Cluster, family: int, keys: set[str], besides: IPAddress) -> tuple[Member, ...]:
    """The ``family`` addresses of the endpoints ``keys`` other than ``besides`` and the node's (a
    superset of the class's other members: an address of another class only adds a real case)."""
    node = cluster.node_address
    found = {(a, ep.key) for ep in cluster.endpoints if ep.key in keys for a in ep.addresses
             if a.version == family and a not in (node, besides)}
    return tuple(sorted(found, key=lambda item: (int(item[0]), item[1])))


def _remote_cells(group: OwnGroup, remotes: Mapping[int, list[RemoteClass]],
                  fixed: list[AddressCell]) -> list[AddressCell]:
    """The remote cells of one own address: one address per remote class, the node, the world."""
    own = group.address
    cells = [cell for remote in remotes.get(own.version, ()) for cell in remote.cells_for(own)]
    cells.extend(c for c in fixed if c.representative.version == own.version and c.representative != own)
    return cells


def _named(key: str, count: int) -> str:
    return key if count <= 1 else f"{key} (+{count - 1} alike)"


# --- the cases ---------------------------------------------------------------------------------

class _Spans:
    """The port spans of each (protocol, own Envoy config, direction), computed once each."""

    def __init__(self, ref: ReferenceEvaluator, envoy: EnvoySimulator) -> None:
        self.envoy = envoy
        self.source = {protocol: _source_spans(ref, protocol) for protocol in L7_PROTOCOLS}
        self._cut: dict[tuple[int, Direction, Protocol], list[tuple[int, int]]] = {}

    def of(self, address: IPAddress, direction: Direction, protocol: Protocol) -> list[tuple[int, int]]:
        entry = self.envoy.entry(address)
        key = (id(entry), direction, protocol)
        found = self._cut.get(key)
        if found is None:
            spans = self.source[protocol] | _envoy_spans(self.envoy, address, direction)
            found = self._cut[key] = split_ranges(spans, MAX_PORT)
        return found


@dataclass(frozen=True)
class _Remote:
    """One remote cell of one own address and direction, with its identity."""

    cell: AddressCell
    identity: int


class _RemoteIndex:
    """The remote classes' endpoint cells as a :class:`ViewIndex`, and per own endpoint and
    direction the cells cut into parts that the source's rules cannot tell apart."""

    def __init__(self, ref: ReferenceEvaluator, remotes: Mapping[int, list[RemoteClass]]) -> None:
        cells = {c.representative for rs in remotes.values() for r in rs for c in (r.cells[0], *r.cells[1])}
        addresses = sorted((a for a in cells if ref.view(a).kind is PeerKind.ENDPOINT),
                           key=lambda a: (a.version, int(a)))
        self.ref = ref
        self.position = {address: i for i, address in enumerate(addresses)}
        self.views = ViewIndex(ref, [ref.view(a) for a in addresses])

    def parts(self, direction: Direction, own: Endpoint) -> list[int]:
        """Per view, its part: views of one part give equal :attr:`PeerRules.key` (what
        :meth:`ReferenceEvaluator.peer_signature` says: the kind, every one of an endpoint's
        peer tests, and the remote's ports where named ports resolve against them)."""
        ref, views = self.ref, self.views.views
        by_ports: dict[object, int] = {}
        if direction is Direction.EGRESS and ref.profile is Profile.K8S:
            for i, view in enumerate(views):
                ports = view.endpoint.ports if view.endpoint is not None else None
                by_ports[ports] = by_ports.get(ports, 0) | 1 << i
        cuts = refine(by_ports.values() if by_ports else [self.views.every],
                      (self.views.selecting(peer, requires) for peer, requires in ref.peer_tests(direction, own)))
        part = [0] * len(views)
        for number, mask in enumerate(cuts):
            for i in members(mask):
                part[i] = number
        return part


def _peers(ref: ReferenceEvaluator, own: Endpoint, direction: Direction, cells: list[AddressCell],
           ipcache: Ipcache, index: _RemoteIndex) -> list[tuple[PeerRules, list[_Remote]]]:
    """The remote cells by the source's rules for them (:attr:`PeerRules.key`: equal keys, equal
    decisions on every port), in the order each rule set first appears. The rules are looked up
    once per part of :meth:`_RemoteIndex.parts` (and for every cell no part holds: the node, the
    world)."""
    found: dict[tuple[object, ...], tuple[PeerRules, list[_Remote]]] = {}
    part = index.parts(direction, own)
    per_part: dict[int, PeerRules] = {}
    for cell in cells:
        at = index.position.get(cell.representative)
        known = None if at is None else per_part.get(part[at])
        rules = known or ref.peer_rules(direction, own, ref.view(cell.representative))
        if at is not None:
            per_part[part[at]] = rules
        found.setdefault(rules.key, (rules, []))[1].append(_Remote(cell, ipcache.lookup(cell.representative)))
    return list(found.values())


def _group_cases(ref: ReferenceEvaluator, envoy: EnvoySimulator, ipcache: Ipcache, group: OwnGroup,
                 direction: Direction, cells: list[AddressCell], spans: _Spans,
                 index: _RemoteIndex) -> Iterator[L7Case]:
    """The cases of one own address and direction: every protocol × port span × remote cell.

    The source's peer rules do not depend on the port (:meth:`ReferenceEvaluator.evaluate_direction`
    is :meth:`~ReferenceEvaluator.peer_rules` then :meth:`~ReferenceEvaluator.decide`), so they
    are looked up once per remote, and a port is decided once per distinct rule set; Envoy's rules
    once per (identity, protocol, port)."""
    own = ref.view(group.address).endpoint
    if own is None:
        raise ValueError(f"{group.address} is not an endpoint: it has no {direction.value} policy")
    peers = _peers(ref, own, direction, cells, ipcache, index)
    applicable: dict[tuple[int, Protocol, int], tuple[Applicable | None, tuple[object, ...] | None]] = {}
    for protocol in L7_PROTOCOLS:
        for lo, hi in spans.of(group.address, direction, protocol):
            for rules, remotes in peers:
                # decide reads the flow's protocol and port only: any remote's flow decides them all
                decision, matches = ref.decide(rules, _flow(group.address, remotes[0].cell, direction, protocol, lo))
                if not decision.allowed:
                    continue  # dropped before any proxy: the L3/L4 proofs' business
                for remote in remotes:
                    key = (remote.identity, protocol, lo)
                    if key not in applicable:
                        found = _applicable(envoy, group.address, direction, remote.identity, protocol, lo)
                        applicable[key] = (found, envoy_rules_key(found))
                    envoy_rules, envoy_key = applicable[key]
                    if decision.redirect is None and envoy_rules is None:
                        continue
                    flow = _flow(group.address, remote.cell, direction, protocol, lo)
                    yield L7Case(group.name, direction, remote.cell, remote.identity, protocol, lo, hi, flow,
                                 decision.redirect, matches, envoy_rules, envoy_key)


def _flow(own: IPAddress, remote: AddressCell, direction: Direction, protocol: Protocol, port: int) -> Flow:
    src, dst = (remote.representative, own) if direction is Direction.INGRESS else (own, remote.representative)
    return Flow(src, dst, protocol, port)


def _applicable(envoy: EnvoySimulator, address: IPAddress, direction: Direction, identity: int,
                protocol: Protocol, port: int) -> Applicable | None:
    try:
        return envoy.applicable(address, direction.value, identity, protocol, port)
    except NotRedirected:
        return None


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
