"""Lower CiliumNetworkPolicy / CiliumClusterwideNetworkPolicy rules into IR rule templates.

SEMANTICS §2 (selection, enforcement, enableDefaultDeny), §4.2 (peers, namespacing,
fromRequires, entities, services, FQDNs, empty vs absent), §5 (CIDRs), §6 (ports, ICMP, named
ports) and §7 (L7 parsers); reference/cilium.md §4 and §7. Each ``spec``/``specs[k]`` rule is
lowered on its own: Cilium's repository holds rules, not policies.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from compiler.cluster import Cluster
from compiler.flow import ANY_PROTOCOLS, Direction, Protocol, RuleRef
from compiler.icmp import icmp_type_number
from compiler.identity import (
    ID_HEALTH,
    ID_HOST,
    ID_INGRESS,
    ID_INIT,
    ID_KUBE_APISERVER,
    ID_REMOTE_NODE,
    ID_UNMANAGED,
    ID_WORLD_IPV4,
    ID_WORLD_IPV6,
)
from compiler.inputs.ciliumpolicy import (
    EGRESS_L3,
    INGRESS_L3,
    CIDRRule,
    CiliumPolicy,
    EgressRule,
    IngressRule,
    PortProtocol,
    PortRule,
    ServiceRef,
)
from compiler.inputs.ciliumpolicy import Rule as CiliumRule
from compiler.inputs.networkpolicy import parse_cidr
from compiler.ir.model import (
    ANY_PEER,
    NO_PEER,
    Action,
    CIDRMatch,
    DirectionRules,
    L7Rule,
    L7Spec,
    Peer,
    PortMatch,
    Rule,
    RuleTemplate,
    Select,
    SubjectRules,
)
from compiler.labels import (
    CLUSTER_LABEL,
    POD_NAMESPACE_LABEL,
    SOURCE_K8S,
    SOURCE_RESERVED,
    Requirement,
    Selector,
    namespace_peer_selector,
    namespace_subject_selector,
    selector_from_k8s,
)
from compiler.source import InputError, SourceRef

#: Reserved identities of the entities that name nothing in this one-node model (SEMANTICS §4.2);
#: kept so the targets can emit the keys Cilium would (reference/cilium.md §4.6).
_RESERVED_ENTITIES: dict[str, frozenset[int]] = {
    "host": frozenset({ID_HOST}),
    "remote-node": frozenset({ID_REMOTE_NODE, ID_KUBE_APISERVER}),
    "kube-apiserver": frozenset({ID_KUBE_APISERVER}),
    "health": frozenset({ID_HEALTH}),
    "init": frozenset({ID_INIT}),
    "unmanaged": frozenset({ID_UNMANAGED}),
    "ingress": frozenset({ID_INGRESS}),
    "none": frozenset(),
}
_CLUSTER_RESERVED = frozenset({ID_HOST, ID_REMOTE_NODE, ID_INIT, ID_INGRESS, ID_HEALTH, ID_UNMANAGED,
                               ID_KUBE_APISERVER})
#: Peer fields that select nothing here: node selectors (reserved:remote-node is added and the one
#: node is the local host), cloud groups, FQDNs (no names resolved offline). SEMANTICS §4.2.
_NOTHING_FIELDS = frozenset({"fromNodes", "toNodes", "fromGroups", "toGroups", "toFQDNs"})


@dataclass(frozen=True)
class CiliumContext:
    """What lowering needs besides the policy: the cluster (services, name) and selection."""

    cluster: Cluster
    select: Select

    def entity_peer(self, entities: Sequence[str]) -> Peer:
        """``fromEntities``/``toEntities`` (SEMANTICS §4.2, reference/cilium.md §4.6)."""
        if "all" in entities:
            return ANY_PEER  # the wildcard selector: identity 0
        ids: set[int] = set()
        families: set[int] = set()
        for entity in entities:
            if entity in ("world-ipv4", "world-ipv6"):
                # world addresses of that family; identity 9/10 for the targets [§4.6]
                families.add(4 if entity == "world-ipv4" else 6)
                ids.add(ID_WORLD_IPV4 if entity == "world-ipv4" else ID_WORLD_IPV6)
            elif entity == "world":
                # reserved:world (2 and every CIDR identity) plus world-ipv4/ipv6 [§4.6]
                world = Selector((Requirement(SOURCE_RESERVED, "world", "Exists"),))
                ids |= self.select(world) | {ID_WORLD_IPV4, ID_WORLD_IPV6}
            elif entity == "cluster":
                # host and the other node-local reserved identities + every pod of this cluster
                pods = Selector((Requirement(SOURCE_K8S, CLUSTER_LABEL, "In", (self.cluster.cluster_name,)),))
                ids |= self.select(pods) | _CLUSTER_RESERVED
            else:
                ids |= _RESERVED_ENTITIES[entity]
        return Peer(identities=frozenset(ids), world_families=frozenset(families),
                    selectors=tuple(f"entity:{e}" for e in entities))

    def service_peer(self, refs: Sequence[ServiceRef], policy: CiliumPolicy, where: SourceRef) -> Peer:
        """``toServices`` (SEMANTICS §4.2 and its Clarified note; Cilium pkg/policy/k8s/service.go)."""
        peer = NO_PEER
        for ref in refs:
            if ref.k8sServiceSelector is not None:
                raise InputError("toServices.k8sServiceSelector is not supported yet (use k8sService)",
                                 source=where, field="toServices", subject=policy.display)
            assert ref.k8sService is not None
            name, namespace = ref.k8sService.serviceName, ref.k8sService.namespace
            for svc in self.cluster.services:
                # no namespace: the Services of that name in every namespace (serviceRefMatches)
                if svc.name != name or (namespace and svc.namespace != namespace):
                    continue
                if not svc.selector:
                    peer = peer.union(Peer(selectors=(f"service:{svc.key} (selectorless)",)))
                    continue  # selectorless: backends are not modelled → nothing
                sel = Selector.of({**svc.selector, f"{SOURCE_K8S}:{POD_NAMESPACE_LABEL}": svc.namespace})
                peer = peer.union(Peer(identities=self.select(sel), selectors=(f"service:{svc.key} {sel}",)))
        return peer


def subject_selector(rule: CiliumRule, policy: CiliumPolicy) -> Selector | None:
    """A rule's ``endpointSelector``, namespaced (CNP) [§7.3]; None for host rules (nodeSelector)."""
    if rule.endpointSelector is None:
        return None  # nodeSelector: host firewall, selects no endpoint (SEMANTICS §2)
    return namespace_subject_selector(selector_from_k8s(rule.endpointSelector), policy.namespace)


def lower_cilium_policy(policy: CiliumPolicy, ctx: CiliumContext) -> list[SubjectRules]:
    """Every endpoint rule of a CNP/CCNP → its subject and per-direction templates."""
    out: list[SubjectRules] = []
    for path, rule in policy.rules:
        subject = subject_selector(rule, policy)
        if subject is None:
            continue
        ingress = _direction(policy, path, rule, Direction.INGRESS, ctx)
        egress = _direction(policy, path, rule, Direction.EGRESS, ctx)
        out.append(SubjectRules(subject, True, ingress, egress, f"{policy.display} {path}"))
    return out


def _direction(policy: CiliumPolicy, path: str, rule: CiliumRule, direction: Direction,
               ctx: CiliumContext) -> DirectionRules:
    allow_list, deny_list = rule.direction_rules(direction.value)
    allows: Sequence[IngressRule | EgressRule] = allow_list
    denies: Sequence[IngressRule | EgressRule] = deny_list
    # enforcement: a non-empty allow or deny list for the direction (SEMANTICS §2) [§4.5]
    has_rules = bool(allows) or bool(denies)
    # fromRequires of allow rules narrow allow rules, of deny rules deny rules (Cilium's
    # requirements / requirementsDeny; SEMANTICS §4.2, Clarified)
    allow_requirements = _requirements(allows, policy)
    deny_requirements = _requirements(denies, policy)
    config = rule.enableDefaultDeny
    flag = None if config is None else (config.ingress if direction is Direction.INGRESS else config.egress)
    name = direction.value
    allow_templates = [t for i, item in enumerate(allows)
                       for t in _lower_rule(policy, f"{path}.{name}[{i}]", item, direction, Action.ALLOW, ctx)]
    deny_templates = [t for i, item in enumerate(denies)
                      for t in _lower_rule(policy, f"{path}.{name}Deny[{i}]", item, direction, Action.DENY, ctx)]
    return DirectionRules(
        has_rules=has_rules,
        allow=tuple(allow_templates),
        deny=tuple(deny_templates),
        allow_requirements=allow_requirements,
        deny_requirements=deny_requirements,
        default_deny=flag is not False,  # nil = default deny when the direction has rules [§4.5]
    )


def _requirements(items: Sequence[IngressRule | EgressRule], policy: CiliumPolicy) -> tuple[Requirement, ...]:
    out: list[Requirement] = []
    for entry in items:
        requires = entry.fromRequires if isinstance(entry, IngressRule) else entry.toRequires
        for sel in requires or []:
            # requirements are namespaced like fromEndpoints (SEMANTICS §4.2) [§7.3]
            out.extend(namespace_peer_selector(selector_from_k8s(sel), policy.namespace).requirements)
    return tuple(out)


def _lower_rule(policy: CiliumPolicy, path: str, item: IngressRule | EgressRule, direction: Direction,
                action: Action, ctx: CiliumContext) -> list[RuleTemplate]:
    origin = RuleRef(policy.display, path, item.src.file, item.src.line)
    l3_fields = INGRESS_L3 if direction is Direction.INGRESS else EGRESS_L3
    present = [f for f in l3_fields if getattr(item, f, None) is not None]
    to_ports = item.toPorts or []  # `toPorts: []` counts as absent (SEMANTICS §6, Clarified)
    icmps = item.icmps or []
    selectors: tuple[Selector, ...] = ()
    if not present:
        if not to_ports and not icmps:
            return []  # no L3, no L4 (`ingress: [{}]`): allows nothing, only enforces [§7.2]
        peer = ANY_PEER  # L4-only: every peer (identity 0); fromRequires not applied [§4.1 step 3]
        fixed = ANY_PEER
    else:
        peer, fixed, selectors = _l3_peer(policy, item, present[0], ctx)
    if icmps:
        icmp_ports = tuple(_icmp_ports(icmps))
        return [_template(direction, action, peer, icmp_ports, None, origin, selectors, fixed)]
    if not to_ports:
        # L3 with no toPorts/icmps: those peers on every protocol and port (incl. ICMP) [§4.3]
        return [_template(direction, action, peer, (), None, origin, selectors, fixed)]
    out: list[RuleTemplate] = []
    for port_rule in to_ports:
        ports = [m for p in port_rule.ports or [] for m in _port_matches(p)]
        if not ports:
            continue  # an entry without ports adds nothing (SEMANTICS §6, Clarified)
        l7 = _l7_spec(port_rule) if action is Action.ALLOW else None
        if l7 is not None and l7.parser != "dns":
            # http/kafka/l7proto only on the TCP expansion; UDP/SCTP stay plain L4 [§4.2 createL4Filter]
            tcp = tuple(m for m in ports if m.protocol is Protocol.TCP)
            rest = tuple(m for m in ports if m.protocol is not Protocol.TCP)
            if tcp:
                out.append(_template(direction, action, peer, tcp, l7, origin, selectors, fixed))
            if rest:
                out.append(_template(direction, action, peer, rest, None, origin, selectors, fixed))
        else:
            out.append(_template(direction, action, peer, tuple(ports), l7, origin, selectors, fixed))
    return out


def _template(direction: Direction, action: Action, peer: Peer, ports: tuple[PortMatch, ...],
              l7: L7Spec | None, origin: RuleRef, selectors: tuple[Selector, ...], fixed: Peer) -> RuleTemplate:
    return RuleTemplate(Rule(direction, action, peer, ports, l7, origin), selectors, fixed)


def _l3_peer(policy: CiliumPolicy, item: IngressRule | EgressRule, name: str,
             ctx: CiliumContext) -> tuple[Peer, Peer, tuple[Selector, ...]]:
    """(peer, the part fromRequires never touches, endpoint selectors it is ANDed into)."""
    value = getattr(item, name)
    if name in ("fromEndpoints", "toEndpoints"):
        # namespaced per §4.2 [§7.3]; `[]` selects nothing [§7.2]
        sels = tuple(namespace_peer_selector(selector_from_k8s(s), policy.namespace) for s in value)
        peer = NO_PEER
        for sel in sels:
            peer = peer.union(Peer(identities=ctx.select(sel), selectors=(str(sel),)))
        return peer, NO_PEER, sels
    if name in ("fromCIDR", "toCIDR"):
        # a bare address is /32 or /128 (SEMANTICS §4.2); matched per §5
        cidrs = tuple(CIDRMatch(_network(c)) for c in value)
        return _fixed(Peer(cidrs=cidrs))
    if name in ("fromCIDRSet", "toCIDRSet"):
        return _fixed(Peer(cidrs=tuple(_cidr_rule(c) for c in value)))  # with except (SEMANTICS §5)
    if name in ("fromEntities", "toEntities"):
        return _fixed(ctx.entity_peer(value))  # entities never get fromRequires [§4.1 step 3]
    if name == "toServices":
        return _fixed(ctx.service_peer(value, policy, item.line_of("toServices")))
    if name in _NOTHING_FIELDS:
        return _fixed(Peer(selectors=(f"{name} (matches nothing)",)))  # SEMANTICS §4.2, Clarified
    raise AssertionError(f"unhandled L3 field {name}")


def _fixed(peer: Peer) -> tuple[Peer, Peer, tuple[Selector, ...]]:
    return peer, peer, ()


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return parse_cidr(text if "/" in text else text + ("/128" if ":" in text else "/32"))


def _cidr_rule(rule: CIDRRule) -> CIDRMatch:
    assert rule.cidr is not None  # cidrGroupRef/Selector are refused at input validation
    return CIDRMatch(_network(rule.cidr), tuple(_network(e) for e in rule.except_ or []))


def _port_matches(port: PortProtocol) -> list[PortMatch]:
    """One ``ports`` item → matches per protocol; ANY/omitted = TCP, UDP, SCTP, never ICMP (§6) [§4.3]."""
    protocols = ANY_PROTOCOLS if port.effective_protocol == "ANY" else (Protocol[port.effective_protocol],)
    if port.is_named:
        return [PortMatch(p, name=port.port) for p in protocols]  # named: per protocol, per endpoint
    number = int(port.port) if port.port is not None else 0
    end = port.endPort or 0
    if number == 0 and end == 0:
        return [PortMatch(p) for p in protocols]  # port 0 / absent: every port
    return [PortMatch(p, number, max(number, end)) for p in protocols]  # [port, endPort]; "0"+N = [0, N]


def _icmp_ports(icmps: Sequence[Any]) -> list[PortMatch]:
    """``icmps`` fields → ICMP (IPv4, default) or ICMPv6 with the type as the port (SEMANTICS §6)."""
    out: list[PortMatch] = []
    for icmp_rule in icmps:
        for fld in icmp_rule.fields:
            family = fld.family or "IPv4"
            protocol = Protocol.ICMPV6 if family == "IPv6" else Protocol.ICMP
            number = icmp_type_number(fld.type, family)
            out.append(PortMatch(protocol, number, number))
    return out


def _l7_spec(port_rule: PortRule) -> L7Spec | None:
    """The L7 part of a ``toPorts`` entry: its parser and rules (SEMANTICS §7)."""
    rules = port_rule.rules
    if rules is None or rules.parser is None:
        return None
    items: list[L7Rule]
    if rules.http is not None:
        items = list(rules.http)
    elif rules.kafka is not None:
        items = list(rules.kafka)
    elif rules.dns is not None:
        items = list(rules.dns)
    else:
        items = list(rules.l7 or [])
    return L7Spec(rules.parser, tuple(items))
