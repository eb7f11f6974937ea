"""Build the IR from the inputs: identities, lowering, per-identity composition, L7 checks.

The pipeline follows Cilium's (reference/cilium.md §4.1): allocate identities; lower every rule
once (peer selectors resolved through the memoized selector cache of the identity table); find
the rules selecting each subject identity through the same cache; then compose each identity's
policy per direction — enforcement, ``fromRequires``, default-allow, the synthetic rules.

Cost is proportional to (policies + identities + selections), never policies × endpoints:
subject selectors are resolved once each against the label index of the identity table, and
endpoints sharing an identity share its policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations

from compiler.cluster import Cluster, Endpoint
from compiler.flow import Direction, Profile, Protocol, RuleRef
from compiler.identity import ID_HOST, allocate
from compiler.inputs import Inputs, Policy
from compiler.inputs.ciliumpolicy import CiliumPolicy
from compiler.inputs.networkpolicy import NetworkPolicy
from compiler.ir.lower_cilium import CiliumContext, lower_cilium_policy
from compiler.ir.lower_k8s import lower_network_policy
from compiler.ir.model import (
    ANY_PEER,
    IR,
    Action,
    EndpointPolicy,
    Peer,
    Rule,
    RuleTemplate,
    Select,
    SubjectRules,
)
from compiler.labels import LabelFilter, Requirement
from compiler.source import InputError, SourceRef

#: Unenforced direction: Cilium's allow-all key (ID 0, ANY, ANY) "allow-any-<dir>" [§4.1 step 5].
ALLOW_ANY = {
    d: Rule(d, Action.ALLOW, ANY_PEER, (), None, RuleRef(f"<allow-any-{d.value}>", "-")) for d in Direction
}
#: enableDefaultDeny false on every selecting rule: Cilium's appended wildcard rule [§4.5].
DEFAULT_ALLOW = {
    d: Rule(d, Action.ALLOW, ANY_PEER, (), None, RuleRef(f"<default-allow-{d.value}>", "-")) for d in Direction
}
#: cilium profile: ingress from the host always allowed (ID 1, ANY, ANY) [§4.1 step 5].
ALLOW_LOCALHOST = Rule(Direction.INGRESS, Action.ALLOW,
                       Peer(identities=frozenset({ID_HOST}), selectors=("reserved:host",)),
                       (), None, RuleRef("<allow-localhost>", "-"))


def policy_cidrs(inputs: Inputs) -> list[str]:
    """Every CIDR and except the policies name (they get local CIDR identities, DESIGN §3)."""
    out: set[str] = set()
    for policy in inputs.policies:
        out.update(_cidrs_of(policy))
    return sorted(out)


def _cidrs_of(policy: Policy) -> Iterator[str]:
    if isinstance(policy, NetworkPolicy):
        for entries in (policy.spec.ingress or [], policy.spec.egress or []):
            for entry in entries:
                peers = getattr(entry, "from_", None) or getattr(entry, "to", None) or []
                for peer in peers:
                    if peer.ipBlock is not None:
                        yield str(peer.ipBlock.network)
                        yield from (str(e) for e in peer.ipBlock.excepts)
        return
    for _path, rule in policy.rules:
        for item in [*(rule.ingress or []), *(rule.ingressDeny or []), *(rule.egress or []), *(rule.egressDeny or [])]:
            for cidr in getattr(item, "fromCIDR", None) or getattr(item, "toCIDR", None) or []:
                yield cidr if "/" in cidr else cidr + ("/128" if ":" in cidr else "/32")
            for cidr_rule in getattr(item, "fromCIDRSet", None) or getattr(item, "toCIDRSet", None) or []:
                if cidr_rule.cidr is not None:
                    yield cidr_rule.cidr
                yield from cidr_rule.except_ or []


def build_ir(inputs: Inputs, profile: Profile = Profile.CILIUM, label_filter: LabelFilter | None = None) -> IR:
    """Compile the inputs into the identity-based IR under a semantic profile."""
    cluster = inputs.cluster
    table = allocate(cluster, profile, label_filter or LabelFilter.default(), policy_cidrs(inputs))
    select: Select = table.select
    members = {ident.number: ident.endpoints for ident in table.identities() if ident.endpoints}
    pods = frozenset(members) if profile is Profile.K8S else None
    context = CiliumContext(cluster, select)
    subjects: list[SubjectRules] = []
    for policy in inputs.policies:
        if isinstance(policy, CiliumPolicy):
            subjects.extend(lower_cilium_policy(policy, context))
        else:
            subjects.append(lower_network_policy(policy, select, pods))

    selecting: dict[int, list[SubjectRules]] = {number: [] for number in members}
    for subject in subjects:
        for number in select(subject.subject):
            found = selecting.get(number)
            if found is not None:  # endpoint identities only: rules never select host/world
                found.append(subject)

    composer = _Composer(profile, select)
    policies = {
        (number, direction): composer.compose(number, direction, selecting[number], members[number])
        for number in sorted(members)
        for direction in Direction
    }
    ir = IR(cluster, profile, table, policies, cluster_named_ports(cluster))
    check_l7_conflicts(ir)
    return ir


class _Composer:
    """Per-identity composition of the selecting rules (SEMANTICS §2, §4.2 fromRequires)."""

    def __init__(self, profile: Profile, select: Select) -> None:
        self.profile = profile
        self.select = select
        self._memo: dict[tuple[int, tuple[Requirement, ...]], Rule] = {}

    def _apply(self, template: RuleTemplate, requirements: tuple[Requirement, ...]) -> Rule:
        if not requirements or not template.selectors:
            return template.rule
        key = (id(template), requirements)
        rule = self._memo.get(key)
        if rule is None:
            rule = self._memo[key] = template.with_requirements(requirements, self.select)
        return rule

    def compose(self, number: int, direction: Direction, selecting: list[SubjectRules],
                endpoints: tuple[str, ...]) -> EndpointPolicy:
        parts = [(s.cilium, s.direction(direction)) for s in selecting]
        enforced = any(part.has_rules for _, part in parts)
        # fromRequires of every selecting rule, ANDed into every endpoint selector: allow rules'
        # into allow rules, deny rules' into deny rules (SEMANTICS §4.2 and its Clarified note)
        allow_reqs = tuple(sorted({req for _, part in parts for req in part.allow_requirements}))
        deny_reqs = tuple(sorted({req for _, part in parts for req in part.deny_requirements}))
        allow = [self._apply(t, allow_reqs) for _, part in parts for t in part.allow]
        deny = [self._apply(t, deny_reqs) for _, part in parts for t in part.deny]
        default_allow = False
        if not enforced:
            allow.append(ALLOW_ANY[direction])  # unenforced: allow-any (SEMANTICS §2)
        else:
            # default-allow iff every selecting Cilium rule with D says enableDefaultDeny false and
            # no NetworkPolicy has D (SEMANTICS §2) [§4.5]
            with_rules = [(cilium, part) for cilium, part in parts if part.has_rules]
            default_allow = all(cilium and not part.default_deny for cilium, part in with_rules)
            if default_allow:
                allow.append(DEFAULT_ALLOW[direction])
        if direction is Direction.INGRESS and self.profile is Profile.CILIUM:
            allow.append(ALLOW_LOCALHOST)  # whether or not enforced (SEMANTICS §2, Clarified)
        return EndpointPolicy(number, direction, enforced, default_allow, tuple(allow), tuple(deny), endpoints)


def cluster_named_ports(cluster: Cluster) -> dict[tuple[str, Protocol], int | None]:
    """(name, protocol) → the one number all endpoints use for it, None if they disagree (§6)."""
    numbers: dict[tuple[str, Protocol], set[int]] = {}
    for ep in cluster.endpoints:
        for port in ep.ports:
            if port.name:
                numbers.setdefault((port.name, Protocol[port.protocol]), set()).add(port.port)
    return {key: (next(iter(found)) if len(found) == 1 else None) for key, found in sorted(numbers.items())}


# --- conflicting L7 parsers (SEMANTICS §7 and its Clarified note) --------------------------------

Span = tuple[Protocol | None, int, int]


class _Spans:
    """The concrete (protocol, lo, hi) an L7 rule's ports can mean on one subject endpoint.

    Egress under ``k8s`` resolves a named port per destination, so every number some endpoint
    declares for the name counts.
    """

    def __init__(self, ir: IR) -> None:
        self.ir = ir
        self.declared: dict[tuple[str, str], set[int]] = {}
        for ep in ir.cluster.endpoints:
            for port in ep.ports:
                if port.name:
                    self.declared.setdefault((port.name, port.protocol), set()).add(port.port)

    def of(self, rule: Rule, subject: Endpoint) -> list[Span]:
        out: list[Span] = []
        for match in rule.ports:
            if match.name is not None and rule.direction is Direction.EGRESS and self.ir.profile is Profile.K8S:
                assert match.protocol is not None
                numbers = self.declared.get((match.name, match.protocol.name), set())
                out.extend((match.protocol, n, n) for n in sorted(numbers))
                continue
            resolved = self.ir.port_range(match, rule.direction, subject, None)
            if resolved is not None:
                out.append((match.protocol, *resolved))
        return out


def _overlap(a: list[Span], b: list[Span]) -> tuple[Protocol | None, int] | None:
    for pa, la, ha in a:
        for pb, lb, hb in b:
            if pa == pb and la <= hb and lb <= ha:
                return pa, max(la, lb)
    return None


def check_l7_conflicts(ir: IR) -> None:
    """Refuse two L7 allows with different parsers on one port of one endpoint (Cilium: "cannot
    merge conflicting L7 parsers"), whatever their peers."""
    spans: _Spans | None = None
    for policy in ir.endpoint_policies():
        l7_rules = [r for r in policy.allow if r.l7 is not None]
        if len({r.l7.parser for r in l7_rules if r.l7 is not None}) < 2:
            continue
        spans = spans or _Spans(ir)
        subjects = {ep.ports: ep for key in policy.endpoints if (ep := ir.cluster.endpoint(key)) is not None}
        for first, second in combinations(l7_rules, 2):
            assert first.l7 is not None and second.l7 is not None
            if first.l7.parser == second.l7.parser:
                continue
            for subject in subjects.values():
                clash = _overlap(spans.of(first, subject), spans.of(second, subject))
                if clash is not None:
                    _raise_conflict(first, second, clash, subject)


def _raise_conflict(first: Rule, second: Rule, clash: tuple[Protocol | None, int], subject: Endpoint) -> None:
    a, b = sorted((first, second), key=lambda r: r.origin)
    assert a.l7 is not None and b.l7 is not None
    proto, port = clash
    raise InputError(
        f"cannot merge conflicting L7 parsers ({a.l7.parser}/{b.l7.parser}) on port "
        f"{port}/{proto.name if proto else 'ANY'} of {subject.key} ({a.direction.value}): "
        f"{a.origin.policy} {a.origin.path} at {a.origin.file}:{a.origin.line} and "
        f"{b.origin.policy} {b.origin.path} at {b.origin.file}:{b.origin.line}",
        source=SourceRef(a.origin.file, a.origin.line),
        subject=a.origin.policy,
    )
