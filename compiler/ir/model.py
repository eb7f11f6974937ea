"""The identity-based IR (DESIGN.md §1): the one rule model every input kind lowers into.

Cilium computes policy per *security identity*, not per pod, so the IR does too: an
:class:`EndpointPolicy` is the policy of one subject identity in one direction, holding
:class:`Rule` values whose peers are identity sets, CIDR sets or the wildcard. What cannot be
resolved per identity is kept symbolic and resolved per endpoint when the rules are used:

- named ports (SEMANTICS §6): ingress against the destination endpoint's own container ports,
  egress per profile (cluster-wide unique number under ``cilium``, the destination endpoint's
  ports under ``k8s``) — :meth:`IR.port_range`;
- CIDR peers (SEMANTICS §5): matched on the address, with the profile deciding whether cluster
  addresses can match — :meth:`Peer.matches`.

The lowering-only structures (:class:`RuleTemplate`, :class:`DirectionRules`,
:class:`SubjectRules`) live here too because both lowerings produce them and the builder
consumes them; they never appear in a built :class:`IR`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

from compiler.cluster import Cluster, Endpoint
from compiler.flow import Direction, L7Request, Profile, Protocol, RuleRef
from compiler.identity import ID_HOST, ID_WORLD, IdentityTable
from compiler.inputs.ciliumpolicy import FQDNSelector, PortRuleHTTP, PortRuleKafka
from compiler.l7match import l7_rule_matches
from compiler.labels import Requirement, Selector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
L7Rule = PortRuleHTTP | PortRuleKafka | FQDNSelector | dict[str, str]

MAX_PORT = 65535


class Action(str, Enum):
    """What a rule does when it matches (deny always wins, SEMANTICS §2)."""

    ALLOW = "allow"
    DENY = "deny"


# --- peers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CIDRMatch:
    """One CIDR peer with its excepts (``ipBlock``, ``fromCIDR``, ``toCIDRSet``)."""

    network: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()

    def contains(self, address: IPAddress) -> bool:
        """Inside the prefix and inside no except (family mismatch never matches)."""
        if address.version != self.network.version or address not in self.network:
            return False
        return not any(address in sub for sub in self.excepts)

    def __str__(self) -> str:
        if not self.excepts:
            return str(self.network)
        return f"{self.network} except {','.join(str(e) for e in self.excepts)}"


class RemoteKind(str, Enum):
    """What the other side of a flow is (SEMANTICS §1)."""

    ENDPOINT = "endpoint"
    HOST = "host"
    WORLD = "world"


@dataclass(frozen=True)
class Remote:
    """The peer of a flow as policy sees it: its address, what it is, and the identities it carries.

    An endpoint carries its own identity and the host 1. A world address carries, for selection,
    ``reserved:world`` (2) and every CIDR identity whose prefix contains it (SEMANTICS §1: the
    ``cidr:`` prefixes containing it); the family-specific world entities are matched on the
    address family (:attr:`Peer.world_families`), as the world-ipv4/ipv6 identities (9/10) carry
    no ``reserved:world`` label.
    """

    address: IPAddress
    kind: RemoteKind
    identities: frozenset[int]
    endpoint: Endpoint | None = None


@dataclass(frozen=True)
class Peer:
    """Who a rule is about: the wildcard (identity 0), identities, CIDRs, or a union of these.

    ``Peer()`` is nothing (an explicitly empty L3 list, ``toFQDNs``, an unknown Service).
    ``world_families`` (4, 6) are the world entities of one family: world addresses of that IP
    version. ``selectors`` keeps the selector strings the identities were resolved from.
    """

    any: bool = False
    identities: frozenset[int] = frozenset()
    cidrs: tuple[CIDRMatch, ...] = ()
    world_families: frozenset[int] = frozenset()
    selectors: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.any and not self.identities and not self.cidrs and not self.world_families

    def union(self, other: Peer) -> Peer:
        if self.is_empty and not self.selectors:
            return other
        if other.is_empty and not other.selectors:
            return self
        return Peer(self.any or other.any, self.identities | other.identities, self.cidrs + other.cidrs,
                    self.world_families | other.world_families, self.selectors + other.selectors)

    def restricted(self, allowed: frozenset[int]) -> Peer:
        """The identity part narrowed to ``allowed`` (NetworkPolicy selectors under ``k8s``)."""
        return Peer(self.any, self.identities & allowed, self.cidrs, self.world_families, self.selectors)

    def matches(self, remote: Remote, profile: Profile) -> bool:
        """Whether the remote side of a flow is this peer (SEMANTICS §4, §5)."""
        if self.any:
            return True
        if not self.identities.isdisjoint(remote.identities):
            return True
        if remote.kind is RemoteKind.WORLD and remote.address.version in self.world_families:
            return True  # entity world-ipv4 / world-ipv6 (SEMANTICS §4.2)
        if self.cidrs and (profile is Profile.K8S or remote.kind is RemoteKind.WORLD):
            # cilium: a CIDR never matches a cluster address (ipcache LPM), SEMANTICS §5 [§7.4]
            return any(c.contains(remote.address) for c in self.cidrs)
        return False

    def __str__(self) -> str:
        if self.any:
            return "any"
        parts = list(self.selectors) + [f"cidr {c}" for c in self.cidrs]
        return "; ".join(parts) if parts else "nothing"


ANY_PEER = Peer(any=True)
NO_PEER = Peer()


# --- ports ------------------------------------------------------------------------------------

@dataclass(frozen=True, order=True)
class PortMatch:
    """A protocol and a port range ``[lo, hi]`` (ICMP: the type), or a named port.

    ``protocol=None`` means every protocol including ICMP (only with the full range). A named
    port (``name`` set) is resolved per endpoint by :meth:`IR.port_range`.
    """

    protocol: Protocol | None
    lo: int = 0
    hi: int = MAX_PORT
    name: str | None = None

    def __str__(self) -> str:
        proto = self.protocol.name if self.protocol is not None else "ANY"
        if self.name is not None:
            return f"{self.name}/{proto}"
        if self.lo == 0 and self.hi == MAX_PORT:
            return proto
        return f"{self.lo}/{proto}" if self.lo == self.hi else f"{self.lo}-{self.hi}/{proto}"


# --- L7 ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class L7Spec:
    """The L7 part of an allow: the parser the flow is redirected to and the rules the proxy applies.

    ``rules`` are the parsed input objects themselves, so matching goes through
    :func:`compiler.l7match.l7_rule_matches`. An empty list admits every request (SEMANTICS §7,
    Clarified). Compared by identity: input models are not hashable.
    """

    parser: str
    rules: tuple[L7Rule, ...]

    def admits(self, request: L7Request) -> bool:
        return not self.rules or any(l7_rule_matches(rule, request) for rule in self.rules)


# --- rules and policies -----------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """One allow or deny: peer, ports (empty = every protocol and port), optional L7, provenance.

    The subject is implicit: a rule belongs to the :class:`EndpointPolicy` (identity, direction)
    that holds it. One input rule can lower into several IR rules with the same ``origin`` (one
    per ``toPorts`` entry, or split by protocol when a parser applies to TCP only).
    """

    direction: Direction
    action: Action
    peer: Peer
    ports: tuple[PortMatch, ...]
    l7: L7Spec | None
    origin: RuleRef


@dataclass(frozen=True)
class EndpointPolicy:
    """The policy of one subject identity in one direction (shared by its endpoints)."""

    identity: int
    direction: Direction
    enforced: bool
    default_allow: bool  # every selecting Cilium rule set enableDefaultDeny false (SEMANTICS §2)
    allow: tuple[Rule, ...]
    deny: tuple[Rule, ...]
    endpoints: tuple[str, ...]  # keys of the endpoints with this identity


@dataclass(frozen=True)
class IR:
    """Everything the targets and the IR evaluator need: cluster, profile, identities, policies."""

    cluster: Cluster
    profile: Profile
    identities: IdentityTable
    policies: Mapping[tuple[int, Direction], EndpointPolicy]
    #: (name, protocol) → the single port number every endpoint declaring it uses, or None when
    #: endpoints disagree (Cilium's ErrDuplicateNamedPorts); used for egress under ``cilium``.
    named_ports: Mapping[tuple[str, Protocol], int | None] = field(default_factory=dict)

    def endpoint_identity(self, key: str) -> int:
        return self.identities.endpoint_identity(key).number

    def policy(self, endpoint_key: str, direction: Direction) -> EndpointPolicy:
        """The policy applying to one endpoint in one direction."""
        return self.policies[(self.endpoint_identity(endpoint_key), direction)]

    def endpoint_policies(self) -> Iterator[EndpointPolicy]:
        """Every policy, sorted by identity then direction."""
        for key in sorted(self.policies, key=lambda k: (k[0], k[1].value)):
            yield self.policies[key]

    def port_range(self, match: PortMatch, direction: Direction, subject: Endpoint,
                   peer: Endpoint | None) -> tuple[int, int] | None:
        """The concrete range of a port match for one subject endpoint and peer (SEMANTICS §6).

        ``subject`` is the endpoint whose policy this is; ``peer`` the remote endpoint (None for
        host/world). ``None`` when a named port does not resolve.
        """
        if match.name is None:
            return match.lo, match.hi
        assert match.protocol is not None
        proto = match.protocol.name
        if direction is Direction.INGRESS:
            number = subject.named_port(match.name, proto)  # the destination's own ports
        elif self.profile is Profile.K8S:
            number = peer.named_port(match.name, proto) if peer is not None else None
        else:
            number = self.named_ports.get((match.name, match.protocol))  # cluster-wide, unique
        return None if number is None else (number, number)

    @cached_property
    def _cidr_prefixes(self) -> tuple[tuple[IPNetwork, int], ...]:
        return tuple((ipaddress.ip_network(p), n) for p, n in self.identities.cidr_identities().items())

    def remote(self, address: IPAddress) -> Remote:
        """Classify an address (SEMANTICS §1) with the identities it carries."""
        if address == self.cluster.node_address:
            return Remote(address, RemoteKind.HOST, frozenset({ID_HOST}))
        ep = self.cluster.endpoint_at(address)
        if ep is not None:
            return Remote(address, RemoteKind.ENDPOINT, frozenset({self.endpoint_identity(ep.key)}), ep)
        ids = {ID_WORLD}
        for network, number in self._cidr_prefixes:  # every cidr: prefix containing it (§1)
            if address.version == network.version and address in network:
                ids.add(number)
        return Remote(address, RemoteKind.WORLD, frozenset(ids))


# --- lowering output (consumed by build.py, never part of a built IR) ----------------------------

Select = Callable[[Selector], frozenset[int]]


@dataclass(frozen=True)
class RuleTemplate:
    """An IR rule as lowered once per input rule, plus what ``fromRequires`` needs to rewrite it.

    ``selectors`` are the endpoint-selector peers requirements are ANDed into (SEMANTICS §4.2);
    ``fixed_peer`` is the rest of the peer (CIDRs, entities, services), which they never touch.
    """

    rule: Rule
    selectors: tuple[Selector, ...] = ()
    fixed_peer: Peer = NO_PEER
    #: identities the selectors may resolve to (None: any); NetworkPolicy selectors under ``k8s``
    #: select pods only (SEMANTICS §4.1, Clarified)
    restrict: frozenset[int] | None = None

    def with_requirements(self, requirements: tuple[Requirement, ...], select: Select) -> Rule:
        if not requirements or not self.selectors:
            return self.rule
        peer = self.fixed_peer
        for sel in self.selectors:
            narrowed = sel.with_requirements(requirements)
            found = select(narrowed)
            if self.restrict is not None:
                found &= self.restrict
            peer = peer.union(Peer(identities=found, selectors=(str(narrowed),)))
        return Rule(self.rule.direction, self.rule.action, peer, self.rule.ports, self.rule.l7, self.rule.origin)


@dataclass(frozen=True)
class DirectionRules:
    """One direction of one NetworkPolicy or one Cilium rule, lowered."""

    has_rules: bool  # turns enforcement on for this direction (SEMANTICS §2)
    allow: tuple[RuleTemplate, ...] = ()
    deny: tuple[RuleTemplate, ...] = ()
    #: fromRequires/toRequires written in allow rules (they narrow allow rules) and in deny rules
    #: (they narrow deny rules), namespaced — Cilium keeps the two apart (SEMANTICS §4.2, Clarified)
    allow_requirements: tuple[Requirement, ...] = ()
    deny_requirements: tuple[Requirement, ...] = ()
    default_deny: bool = True  # False only for Cilium ``enableDefaultDeny.<dir>: false``


@dataclass(frozen=True)
class SubjectRules:
    """What one NetworkPolicy or one Cilium rule (``spec`` / ``specs[k]``) says, per direction."""

    subject: Selector
    cilium: bool
    ingress: DirectionRules
    egress: DirectionRules
    origin: str  # "NetworkPolicy ns/name" or "CiliumNetworkPolicy ns/name specs[1]", for messages

    def direction(self, direction: Direction) -> DirectionRules:
        return self.ingress if direction is Direction.INGRESS else self.egress
