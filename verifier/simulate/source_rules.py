"""Policies in plain terms for the reference evaluator: who a policy selects, what each rule matches.

Every NetworkPolicy and every Cilium rule (``spec`` / ``specs[k]``) becomes one
:class:`PolicyUnit`: its subject (requirements on the endpoint's labels), the directions it
"has" (SEMANTICS §2), its default-deny setting, and per direction its allow and deny rules as
:class:`SourceRule` values (peers × ports, with provenance). Nothing here knows about
identities or the IR; peers are predicates over a concrete address (SEMANTICS §4, §5) and ports
are ranges or names resolved per flow (§6).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from compiler.cluster import Cluster, Endpoint
from compiler.flow import ANY_PROTOCOLS, Direction, Profile, Protocol, RuleRef
from compiler.icmp import icmp_type_number
from compiler.inputs import Inputs, Policy
from compiler.inputs.ciliumpolicy import (
    CIDRRule,
    CiliumPolicy,
    EgressRule,
    IngressRule,
    L7Rules,
    PortRule,
    Rule,
    ServiceRef,
)
from compiler.inputs.networkpolicy import NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort
from compiler.source import InputError
from verifier.simulate.source_labels import (
    ANY_SOURCE,
    K8S,
    POD_NAMESPACE,
    PeerView,
    Requirement,
    in_namespace,
    k8s_namespace_selector,
    k8s_pod_selector,
    namespaced_peer,
    namespaced_subject,
    requirements_of,
    split_key,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ALL_PORTS = (0, 65535)


# --- peers ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectorPeer:
    """An endpoint selector (``fromEndpoints``, NetworkPolicy pod/namespace selectors, or the
    "every peer" selector of a NetworkPolicy rule without ``from``/``to``). ``fromRequires`` are
    ANDed into exactly these peers."""

    requirements: tuple[Requirement, ...]
    endpoints_only: bool = False  # NetworkPolicy selectors under the k8s profile select pods only


@dataclass(frozen=True)
class CidrPeer:
    network: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class EntityPeer:
    entity: str


@dataclass(frozen=True)
class ServicePeer:
    """The backends of a Service with a selector: pods of its namespace matching the selector."""

    requirements: tuple[Requirement, ...]


@dataclass(frozen=True)
class AnyPeer:
    """The peer of an L4-only Cilium rule (no L3 field): every address."""


Peer = SelectorPeer | CidrPeer | EntityPeer | ServicePeer | AnyPeer


# --- ports ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PortMatch:
    """One protocol set × port range (or named port), with the L7 rules of its ``toPorts`` entry."""

    protocols: frozenset[Protocol]
    low: int = ALL_PORTS[0]
    high: int = ALL_PORTS[1]
    name: str | None = None
    parser: str | None = None
    l7_rules: tuple[Any, ...] = ()

    def parser_for(self, protocol: Protocol) -> str | None:
        """The parser that applies to a flow of this protocol: HTTP, Kafka and generic L7 only
        on TCP (Cilium sets those parsers on TCP filters only); DNS on any protocol."""
        if self.parser is None or (self.parser != "dns" and protocol is not Protocol.TCP):
            return None
        return self.parser


@dataclass(frozen=True)
class SourceRule:
    """One allow or deny rule: it matches a flow when some peer and some port match."""

    ref: RuleRef
    deny: bool
    peers: tuple[Peer, ...]
    ports: tuple[PortMatch, ...] | None  # None: every protocol and port (ICMP included)


@dataclass(frozen=True)
class PolicyUnit:
    """A NetworkPolicy, or one rule of a Cilium policy: the unit that selects endpoints."""

    display: str
    is_network_policy: bool
    subject: tuple[Requirement, ...] | None  # None: selects no endpoint (host-firewall rule)
    directions: frozenset[Direction]
    default_deny: Mapping[Direction, bool] = field(default_factory=dict)
    allows: Mapping[Direction, tuple[SourceRule, ...]] = field(default_factory=dict)
    denies: Mapping[Direction, tuple[SourceRule, ...]] = field(default_factory=dict)
    #: fromRequires/toRequires written in allow rules (they tighten allow rules only) ...
    requires: Mapping[Direction, tuple[tuple[Requirement, ...], ...]] = field(default_factory=dict)
    #: ... and in deny rules (they tighten deny rules only).
    requires_deny: Mapping[Direction, tuple[tuple[Requirement, ...], ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class PeerRules:
    """One endpoint's policy in one direction, narrowed to one peer address: the first half of
    ``ReferenceEvaluator.direction_matches`` (verifier/simulate/source.py) — whether the direction
    is enforced, and the allow and deny rules whose peers (with the units' fromRequires /
    toRequires) select the peer. Which of them match a flow then depends only on its protocol,
    port and request (``ReferenceEvaluator.decide``), so callers that sweep ports compute this
    once per pair."""

    direction: Direction
    endpoint: Endpoint
    peer: PeerView
    enforced: bool
    allows: tuple[SourceRule, ...]  # in unit order, then rule order
    denies: tuple[SourceRule, ...]
    default_allow: bool  # Cilium-only units that all disable default deny for the direction
    localhost: bool  # the implicit allow-localhost applies (cilium profile, ingress from the node)
    #: what named ports resolve against besides the cluster: the endpoint's own ports on ingress,
    #: the peer endpoint's on egress under k8s (None: no per-pair dependence)
    named_ports: tuple[Any, ...] | None

    @cached_property
    def key(self) -> tuple[object, ...]:
        """Equal keys give equal ``ReferenceEvaluator.decide`` results for every flow (up to
        ``DirectionDecision.endpoint``): it holds everything ``decide`` reads besides the flow.
        Rules are compared by identity, so keys are meaningful only while the evaluator lives."""
        return (
            self.direction,
            self.enforced,
            tuple(id(r) for r in self.allows),
            tuple(id(r) for r in self.denies),
            self.default_allow,
            self.localhost,
            self.named_ports,
        )


#: The fromRequires/toRequires selectors a peer must also meet.
Requires = tuple[tuple[Requirement, ...], ...]


def _ref(policy: str, path: str, obj: Any) -> RuleRef:
    return RuleRef(policy, path, obj.src.file, obj.src.line)


# --- NetworkPolicy ----------------------------------------------------------------------------------


def _np_peer(peer: NetworkPolicyPeer, namespace: str, profile: Profile) -> Peer:
    if peer.ipBlock is not None:
        return CidrPeer(peer.ipBlock.network, tuple(peer.ipBlock.excepts))
    pods_only = profile is Profile.K8S
    if peer.namespaceSelector is not None:
        return SelectorPeer(k8s_namespace_selector(peer.namespaceSelector, peer.podSelector), pods_only)
    assert peer.podSelector is not None  # the model requires one of the three
    return SelectorPeer(k8s_pod_selector(peer.podSelector, namespace), pods_only)


def _np_ports(ports: Sequence[NetworkPolicyPort] | None) -> tuple[PortMatch, ...] | None:
    if not ports:
        return None
    out = []
    for port in ports:
        protocols = frozenset({Protocol[port.effective_protocol]})
        if port.port is None:
            out.append(PortMatch(protocols))
        elif isinstance(port.port, str):
            out.append(PortMatch(protocols, name=port.port))
        else:
            out.append(PortMatch(protocols, port.port, port.endPort if port.endPort is not None else port.port))
    return tuple(out)


def network_policy_unit(policy: NetworkPolicy, profile: Profile) -> PolicyUnit:
    """A NetworkPolicy; its rules of a direction count only when the direction is in its policyTypes."""
    ns = policy.namespace
    directions = frozenset(Direction(t.lower()) for t in policy.policy_types)
    allows: dict[Direction, tuple[SourceRule, ...]] = {}
    sections: list[tuple[Direction, Sequence[Any]]] = [
        (Direction.INGRESS, policy.spec.ingress or []),
        (Direction.EGRESS, policy.spec.egress or []),
    ]
    for direction, rules in sections:
        if direction not in directions:
            continue
        out = []
        for index, rule in enumerate(rules):
            peers_in = rule.from_ if direction is Direction.INGRESS else rule.to
            peers: tuple[Peer, ...] = (
                tuple(_np_peer(p, ns, profile) for p in peers_in) if peers_in else (SelectorPeer(()),)
            )
            ref = _ref(policy.display, f"spec.{direction.value}[{index}]", rule)
            out.append(SourceRule(ref, False, peers, _np_ports(rule.ports)))
        allows[direction] = tuple(out)
    return PolicyUnit(
        display=policy.display,
        is_network_policy=True,
        subject=k8s_pod_selector(policy.spec.podSelector, ns),
        directions=directions,
        default_deny={d: True for d in directions},
        allows=allows,
    )


# --- Cilium -----------------------------------------------------------------------------------------


def _network(text: str) -> IPNetwork:
    if "/" not in text:
        text += "/128" if ":" in text else "/32"
    return ipaddress.ip_network(text, strict=False)


def _l7(rules: L7Rules | None) -> tuple[str | None, tuple[Any, ...]]:
    """The parser and rule items of a ``rules`` block; an empty list (``http: []``) still names the
    parser (SEMANTICS §7: it redirects and admits every request)."""
    if rules is None or rules.parser is None:
        return None, ()
    items: Sequence[Any] = rules.http or rules.kafka or rules.dns or rules.l7 or ()
    return rules.parser, tuple(items)


def _cilium_ports(to_ports: Sequence[PortRule]) -> tuple[PortMatch, ...]:
    out = []
    for entry in to_ports:
        parser, items = _l7(entry.rules)
        for port in entry.ports or []:
            protocol = port.effective_protocol
            protocols = frozenset(ANY_PROTOCOLS) if protocol == "ANY" else frozenset({Protocol[protocol]})
            if port.is_named:
                out.append(PortMatch(protocols, name=port.port, parser=parser, l7_rules=items))
            elif port.port is None or (int(port.port) == 0 and not port.endPort):
                out.append(PortMatch(protocols, parser=parser, l7_rules=items))
            else:
                low = int(port.port)
                out.append(PortMatch(protocols, low, max(low, port.endPort or 0), parser=parser, l7_rules=items))
    return tuple(out)


def _icmp_ports(icmps: Sequence[Any]) -> tuple[PortMatch, ...]:
    out = []
    for icmp in icmps:
        for fld in icmp.fields:
            family = fld.family or "IPv4"
            protocol = Protocol.ICMPV6 if family == "IPv6" else Protocol.ICMP
            number = icmp_type_number(fld.type, family)
            out.append(PortMatch(frozenset({protocol}), number, number))
    return tuple(out)


def _service_peers(refs: Sequence[ServiceRef], cluster: Cluster, rule: EgressRule) -> tuple[Peer, ...]:
    peers: list[Peer] = []
    for ref in refs:
        if ref.k8sServiceSelector is not None:
            raise InputError(
                "toServices.k8sServiceSelector is not supported yet (use k8sService)",
                source=rule.src,
                field="toServices",
            )
        assert ref.k8sService is not None
        name, namespace = ref.k8sService.serviceName, ref.k8sService.namespace
        for service in cluster.services:
            # An absent namespace matches the name in every namespace (Cilium's serviceRefMatches).
            if service.name != name or (namespace and service.namespace != namespace) or not service.selector:
                continue
            reqs = [Requirement(*split_key(k, ANY_SOURCE), "In", (v,)) for k, v in sorted(service.selector.items())]
            peers.append(ServicePeer((*reqs, in_namespace(service.namespace))))
    return tuple(peers)


def _cilium_peers(rule: IngressRule | EgressRule, ns: str | None, cluster: Cluster) -> tuple[Peer, ...]:
    """The peers of one Cilium rule; at most one L3 field is set (the model validates it)."""
    ingress = isinstance(rule, IngressRule)
    prefix = "from" if ingress else "to"
    endpoints = getattr(rule, f"{prefix}Endpoints")
    if endpoints is not None:
        return tuple(SelectorPeer(namespaced_peer(requirements_of(s, ANY_SOURCE), ns)) for s in endpoints)
    cidrs = getattr(rule, f"{prefix}CIDR")
    if cidrs is not None:
        return tuple(CidrPeer(_network(c)) for c in cidrs)
    cidr_set: list[CIDRRule] | None = getattr(rule, f"{prefix}CIDRSet")
    if cidr_set is not None:
        return tuple(CidrPeer(_network(c.cidr or ""), tuple(_network(e) for e in c.except_ or [])) for c in cidr_set)
    entities = getattr(rule, f"{prefix}Entities")
    if entities is not None:
        return tuple(EntityPeer(e) for e in entities)
    if isinstance(rule, EgressRule) and rule.toServices is not None:
        return _service_peers(rule.toServices, cluster, rule)
    others = ("Nodes", "Groups", "FQDNs") if not ingress else ("Nodes", "Groups")
    if any(getattr(rule, f"{prefix}{o}", None) is not None for o in others):
        return ()  # one node, no cloud groups, no resolved names: these select nothing here
    if rule.toPorts or rule.icmps:
        return (AnyPeer(),)  # L4-only rule: every peer on those ports
    return ()  # no L3 and no L4 (e.g. `ingress: [{}]`): allows nothing, only enforces


def _cilium_rule(
    policy: CiliumPolicy, path: str, rule: IngressRule | EgressRule, deny: bool, cluster: Cluster
) -> SourceRule:
    ports: tuple[PortMatch, ...] | None = None
    if rule.toPorts:
        ports = _cilium_ports(rule.toPorts)
    elif rule.icmps:
        ports = _icmp_ports(rule.icmps)
    return SourceRule(_ref(policy.display, path, rule), deny, _cilium_peers(rule, policy.namespace, cluster), ports)


def cilium_units(policy: CiliumPolicy, cluster: Cluster) -> list[PolicyUnit]:
    ns = policy.namespace
    units = []
    for path, rule in policy.rules:
        units.append(_cilium_unit(policy, path, rule, ns, cluster))
    return units


def _cilium_unit(policy: CiliumPolicy, path: str, rule: Rule, ns: str | None, cluster: Cluster) -> PolicyUnit:
    subject = (
        namespaced_subject(requirements_of(rule.endpointSelector, ANY_SOURCE), ns)
        if rule.endpointSelector is not None
        else None
    )
    directions, default_deny = set(), {}
    allows: dict[Direction, tuple[SourceRule, ...]] = {}
    denies: dict[Direction, tuple[SourceRule, ...]] = {}
    requires: dict[Direction, tuple[tuple[Requirement, ...], ...]] = {}
    requires_deny: dict[Direction, tuple[tuple[Requirement, ...], ...]] = {}
    for direction in Direction:
        allow_list, deny_list = rule.direction_rules(direction.value)
        allow_rules: Sequence[IngressRule | EgressRule] = allow_list
        deny_rules: Sequence[IngressRule | EgressRule] = deny_list
        if not allow_rules and not deny_rules:
            continue
        directions.add(direction)
        setting = getattr(rule.enableDefaultDeny, direction.value) if rule.enableDefaultDeny else None
        default_deny[direction] = True if setting is None else setting
        field_name = f"{path}.{direction.value}"
        allows[direction] = tuple(
            _cilium_rule(policy, f"{field_name}[{i}]", r, False, cluster) for i, r in enumerate(allow_rules)
        )
        denies[direction] = tuple(
            _cilium_rule(policy, f"{field_name}Deny[{i}]", r, True, cluster) for i, r in enumerate(deny_rules)
        )
        attr = "fromRequires" if direction is Direction.INGRESS else "toRequires"
        requires[direction] = tuple(
            namespaced_peer(requirements_of(sel, ANY_SOURCE), ns) for r in allow_rules for sel in getattr(r, attr) or []
        )
        requires_deny[direction] = tuple(
            namespaced_peer(requirements_of(sel, ANY_SOURCE), ns) for r in deny_rules for sel in getattr(r, attr) or []
        )
    return PolicyUnit(
        policy.display, False, subject, frozenset(directions), default_deny, allows, denies, requires, requires_deny
    )


def policy_units(inputs: Inputs, profile: Profile) -> tuple[PolicyUnit, ...]:
    """Every selecting unit of the inputs, in input order (rule references where the inputs say
    each policy is, for policies a cached load reused from another place: ``Inputs.moved``)."""
    return tuple(u for _, units in units_by_policy(inputs, profile) for u in units)


def units_by_policy(
    inputs: Inputs, profile: Profile, known: Mapping[int, tuple[PolicyUnit, ...]] | None = None
) -> list[tuple[Policy, tuple[PolicyUnit, ...]]]:
    """Each policy with its units, in input order. ``known`` maps ``id(policy)`` to the units
    already made for that very object under the same profile and cluster, at the positions
    its objects name (no ``Inputs.moved`` entry): they are reused, relocated if these inputs
    moved the policy — a unit is a function of the policy, the profile and the cluster's
    Services, so only the rule references can differ."""
    out: list[tuple[Policy, tuple[PolicyUnit, ...]]] = []
    for policy in inputs.policies:
        units = (known or {}).get(id(policy))
        if units is None:
            try:
                if isinstance(policy, NetworkPolicy):
                    units = (network_policy_unit(policy, profile),)
                else:
                    units = tuple(cilium_units(policy, inputs.cluster))
            except InputError as err:
                if err.source is not None and policy.display in inputs.moved:
                    err.source = inputs.locate(policy.display, err.source)
                raise
        if policy.display in inputs.moved:
            units = tuple(_relocated(unit, inputs) for unit in units)
        out.append((policy, units))
    return out


def _relocated(unit: PolicyUnit, inputs: Inputs) -> PolicyUnit:
    """A unit whose rules cite the position ``inputs`` gives their policy (made positionally:
    ``dataclasses.replace`` costs a tenth of a second over 5,000 policies)."""
    move = inputs.moved[unit.display]

    def rules(by_direction: Mapping[Direction, tuple[SourceRule, ...]]) -> dict[Direction, tuple[SourceRule, ...]]:
        return {
            d: tuple(
                SourceRule(RuleRef(r.ref.policy, r.ref.path, move.file, r.ref.line + move.line_delta), r.deny, r.peers,
                           r.ports)
                for r in rs
            )
            for d, rs in by_direction.items()
        }

    return PolicyUnit(
        unit.display, unit.is_network_policy, unit.subject, unit.directions, unit.default_deny,
        rules(unit.allows), rules(unit.denies), unit.requires, unit.requires_deny,
    )


def subject_index(units: tuple[PolicyUnit, ...]) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
    """Units by the namespaces their subject confines them to, and the units that can select
    anywhere. A subject requirement ``k8s:io.kubernetes.pod.namespace In (ns…)`` (or with any
    source) holds for an endpoint only if its namespace is listed: an endpoint's view carries
    exactly one label on that key, its own namespace (pods cannot override it, §4.2). So an
    endpoint of namespace N can only be selected by the units listed under N or by the
    unconfined ones (the reference evaluator still tests each candidate)."""
    by_namespace: dict[str, list[int]] = defaultdict(list)
    anywhere: list[int] = []
    for index, unit in enumerate(units):
        if unit.subject is None:
            continue
        allowed: set[str] | None = None
        for req in unit.subject:
            if req.key == POD_NAMESPACE and req.source in (K8S, ANY_SOURCE) and req.operator == "In":
                allowed = set(req.values) if allowed is None else allowed & set(req.values)
        if allowed is None:
            anywhere.append(index)
        for namespace in allowed or ():
            by_namespace[namespace].append(index)
    return {ns: tuple(ids) for ns, ids in by_namespace.items()}, tuple(anywhere)
