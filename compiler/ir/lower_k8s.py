"""Lower a Kubernetes NetworkPolicy into IR rule templates, the way Cilium translates it.

SEMANTICS §2 (selection, policyTypes) and §4.1 (peers, ports); reference/cilium.md §7.2 for the
empty-vs-absent distinctions. One ``spec.ingress[i]`` / ``spec.egress[i]`` entry becomes one IR
allow rule whose peer is the union of its ``from``/``to`` peers and whose ports are the union of
its ``ports`` — an AND of peers and ports within the entry, an OR across entries.
"""

from __future__ import annotations

from collections.abc import Sequence

from compiler.flow import Direction, Protocol, RuleRef
from compiler.inputs.networkpolicy import (
    NetworkPolicy,
    NetworkPolicyEgressRule,
    NetworkPolicyIngressRule,
    NetworkPolicyPeer,
    NetworkPolicyPort,
)
from compiler.ir.model import (
    ANY_PEER,
    NO_PEER,
    Action,
    CIDRMatch,
    DirectionRules,
    Peer,
    PortMatch,
    Rule,
    RuleTemplate,
    Select,
    SubjectRules,
)
from compiler.labels import Selector, k8s_namespace_selector, k8s_pod_selector

#: The "every peer" selector of an entry without from/to; fromRequires of Cilium rules selecting
#: the same endpoint are ANDed into it (SEMANTICS §4.2).
EVERY_PEER_SELECTOR = Selector()


def subject_selector(policy: NetworkPolicy) -> Selector:
    """Pods of the policy's namespace matching ``podSelector`` (SEMANTICS §2)."""
    return k8s_pod_selector(policy.spec.podSelector, policy.namespace)


def lower_network_policy(policy: NetworkPolicy, select: Select, pods: frozenset[int] | None = None) -> SubjectRules:
    """One NetworkPolicy → its subject and its per-direction allow templates.

    ``pods`` (the endpoint identities) is given under the ``k8s`` profile, where pod and
    namespace selector peers select pods only (SEMANTICS §4.1, Clarified).
    """
    types = policy.policy_types  # absent/empty → [Ingress] (+ Egress iff egress rules), SEMANTICS §2
    ingress = _direction(policy, Direction.INGRESS, "Ingress" in types, policy.spec.ingress, select, pods)
    egress = _direction(policy, Direction.EGRESS, "Egress" in types, policy.spec.egress, select, pods)
    return SubjectRules(subject_selector(policy), False, ingress, egress, policy.display)


def _direction(
    policy: NetworkPolicy,
    direction: Direction,
    enforced: bool,
    entries: Sequence[NetworkPolicyIngressRule | NetworkPolicyEgressRule] | None,
    select: Select,
    pods: frozenset[int] | None,
) -> DirectionRules:
    if not enforced:
        # A direction missing from policyTypes ignores its rules (SEMANTICS §4.1, Clarified).
        return DirectionRules(has_rules=False)
    templates = tuple(
        _lower_entry(policy, direction, index, entry, select, pods) for index, entry in enumerate(entries or [])
    )
    # `ingress: []` / absent with the type present: enforced, nothing allowed (default deny).
    return DirectionRules(has_rules=True, allow=templates)


def _lower_entry(
    policy: NetworkPolicy,
    direction: Direction,
    index: int,
    entry: NetworkPolicyIngressRule | NetworkPolicyEgressRule,
    select: Select,
    pods: frozenset[int] | None,
) -> RuleTemplate:
    peers = entry.from_ if isinstance(entry, NetworkPolicyIngressRule) else entry.to
    origin = RuleRef(policy.display, f"spec.{direction.value}[{index}]", entry.src.file, entry.src.line)
    ports = _ports(entry.ports)
    if not peers:
        # from/to absent or empty: every peer — endpoints, host and world (SEMANTICS §4.1).
        rule = Rule(direction, Action.ALLOW, ANY_PEER, ports, None, origin)
        return RuleTemplate(rule, selectors=(EVERY_PEER_SELECTOR,), fixed_peer=NO_PEER)
    selectors: list[Selector] = []
    cidrs: list[CIDRMatch] = []
    for peer in peers:
        sel = _peer_selector(peer, policy.namespace)
        if sel is not None:
            selectors.append(sel)
        else:
            assert peer.ipBlock is not None
            # ipBlock: in cidr and in no except; cluster addresses per profile (SEMANTICS §5).
            cidrs.append(CIDRMatch(peer.ipBlock.network, tuple(peer.ipBlock.excepts)))
    fixed = Peer(cidrs=tuple(cidrs)) if cidrs else NO_PEER
    peer_value = fixed
    for sel in selectors:
        found = select(sel) if pods is None else select(sel) & pods  # k8s: pods only
        peer_value = peer_value.union(Peer(identities=found, selectors=(str(sel),)))
    rule = Rule(direction, Action.ALLOW, peer_value, ports, None, origin)
    return RuleTemplate(rule, selectors=tuple(selectors), fixed_peer=fixed, restrict=pods)


def _peer_selector(peer: NetworkPolicyPeer, namespace: str) -> Selector | None:
    """The endpoint selector of a pod/namespace peer; None for an ipBlock (SEMANTICS §4.1)."""
    if peer.namespaceSelector is not None:
        # namespaceSelector (+ podSelector): pods matching it in the matching namespaces.
        return k8s_namespace_selector(peer.namespaceSelector, peer.podSelector)
    if peer.podSelector is not None:
        # podSelector only: pods in the policy's own namespace.
        return k8s_pod_selector(peer.podSelector, namespace)
    return None


def _ports(ports: list[NetworkPolicyPort] | None) -> tuple[PortMatch, ...]:
    """``ports`` absent or empty: every protocol and port including ICMP (SEMANTICS §4.1)."""
    out: list[PortMatch] = []
    for port in ports or []:
        protocol = Protocol[port.effective_protocol]  # protocol defaults to TCP
        if port.port is None:
            out.append(PortMatch(protocol))  # all ports of that protocol
        elif isinstance(port.port, str):
            out.append(PortMatch(protocol, name=port.port))  # named: resolved per endpoint, §6
        else:
            out.append(PortMatch(protocol, port.port, port.endPort or port.port))  # endPort: [port, endPort]
    return tuple(out)
