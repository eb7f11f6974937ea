"""Which flows a change between two policy versions can affect (the diff's restriction).

A flow's outcome is decided by two things only (DESIGN.md §2, docs/SEMANTICS.md §2, §8): the
source endpoint's egress policy and the destination endpoint's ingress policy. Each is computed
by :meth:`verifier.simulate.source.ReferenceEvaluator.direction_matches` from

- the *units* (a NetworkPolicy, or one rule of a Cilium policy) that select the endpoint and
  have that direction — this is where enforcement / isolation, default deny, deny rules,
  ``fromRequires``, L7 rules and ``enableDefaultDeny`` live;
- the other side's address as selectors see it (its labels, its namespace's labels, whether it
  is the node or world and which prefixes hold it) — a function of the cluster and the profile;
- cluster-wide tables: named ports (egress under ``cilium``), Services (``toServices``), and
  the profile (``allow-localhost``, what a CIDR peer may match, the label filter).

Nothing else is global: a host policy (``nodeSelector``) selects no endpoint in this model, a
CCNP is a unit like any other (its subject may span namespaces), ``cidr:`` selector keys and
CIDR peers only cut world addresses into cells (the cells are computed from both versions), and
an L7 rule belongs to the allow rule, hence to the unit, that carries it.

So when both versions have the same cluster (every field but provenance) and the same profile,
and policies are compared by identity (kind, namespace, name) and content (a policy present in
one version only is changed), the units of unchanged policies are equal in both versions and
a flow ``src → dst`` can change only if

- ``src`` is an endpoint selected, in OLD or in NEW, by a unit of a changed policy that has
  egress rules in that version (its egress unit list differs, or may), or
- ``dst`` is an endpoint selected, in OLD or in NEW, by a unit of a changed policy that has
  ingress rules in that version.

Every other flow has, in both versions, the same egress units and the same ingress units (same
content, same order), the same peer views and the same tables, so the same decision — only the
file:line of the rules can differ, which no outcome depends on. Restricting the comparison to
those flows is therefore exact: the result is "equivalent" only if no flow differs.

Finer, per direction (:func:`changed_directions`): a unit takes part in an endpoint's decision
in one direction only through its part for that direction — whether it has the direction, its
subject, whether it is a NetworkPolicy (default allow is Cilium-only), its default-deny setting,
allow and deny rules (peers, ports, L7 rules, their policy and path) and fromRequires /
toRequires for that direction. A changed policy whose units' egress parts are equal in both
versions (say only an ingress rule moved to another port) changes no egress decision, so its
subjects count as egress-affected only if another policy changed in egress selects them.

When the profiles or the clusters differ, every unit may decide differently (label filter,
CIDR semantics, labels of the peers), so there is no restriction: every endpoint counts as
affected in both directions and the comparison covers the whole flow space.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from compiler.cluster import Cluster
from compiler.flow import Direction, Profile
from compiler.inputs import Inputs, Policy
from verifier.simulate.source_rules import PolicyUnit, PortMatch, SourceRule


@dataclass(frozen=True)
class Scope:
    """What the comparison is restricted to: the displays of the changed policies, or nothing
    (``restricted`` False, with the reason) when every flow must be compared."""

    restricted: bool
    changed: frozenset[str]  # policy displays ("NetworkPolicy ns/name"), changed in either version
    reason: str = ""
    #: per direction, the changed policies whose part for it differs (:func:`changed_directions`)
    changed_in: Mapping[Direction, frozenset[str]] = field(default_factory=dict)

    def __str__(self) -> str:
        if not self.restricted:
            return f"every flow ({self.reason})"
        count = len(self.changed)
        return f"flows of endpoints selected by {count} changed polic{'y' if count == 1 else 'ies'}"


def diff_scope(old: Inputs, new: Inputs, profile_old: Profile, profile_new: Profile) -> Scope:
    """The restriction the module docstring justifies, or none when it does not apply."""
    changed = frozenset(changed_policies(old.policies, new.policies))
    if profile_old is not profile_new:
        return Scope(False, changed, "the profiles differ")
    if old.cluster is not new.cluster and cluster_signature(old.cluster) != cluster_signature(new.cluster):
        return Scope(False, changed, "the clusters differ")
    return Scope(True, changed)


def policy_key(policy: Policy) -> tuple[str, str, str]:
    """A policy's identity across versions: kind, namespace, name."""
    return (policy.kind, policy.namespace or "", policy.name)


def changed_policies(old: tuple[Policy, ...], new: tuple[Policy, ...]) -> list[str]:
    """Displays of the policies added, removed, or with different content (provenance aside).

    The same object on both sides (a document reused by the loader's cache) is unchanged without
    looking; otherwise the models' field values are compared (``model_dump``: no source lines).
    """
    before = {policy_key(p): p for p in old}
    after = {policy_key(p): p for p in new}
    out = []
    for key in sorted(before.keys() | after.keys()):
        a, b = before.get(key), after.get(key)
        if a is not None and b is not None and (a is b or _content(a) == _content(b)):
            continue
        out.append((a or b).display)  # type: ignore[union-attr]
    return out


def _content(policy: Policy) -> dict[str, object]:
    return policy.model_dump(mode="json", by_alias=True)


def cluster_signature(cluster: Cluster) -> tuple[object, ...]:
    """Every field of the cluster that policy evaluation can read, without provenance (file and
    line): equal signatures mean the reference evaluator sees the same cluster."""
    return (
        tuple((ns.name, _items(ns.labels), ns.implicit) for ns in cluster.namespaces.values()),
        tuple(
            (ep.namespace, ep.name, _items(ep.labels), ep.service_account, ep.ips, ep.ports, ep.owner,
             ep.host_network, ep.node_os, ep.node)
            for ep in cluster.endpoints
        ),
        tuple(
            (s.namespace, s.name, None if s.selector is None else _items(s.selector), s.ports, s.cluster_ips)
            for s in cluster.services
        ),
        cluster.cluster_name,
        cluster.pod_cidrs,
        cluster.node_ip,
        tuple(sorted((k, repr(v)) for k, v in cluster.extra.items())),
    )


def _items(mapping: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(mapping.items()))


def changed_directions(scope: Scope, old: Iterable[PolicyUnit], new: Iterable[PolicyUnit]) -> Scope:
    """``scope`` with, per direction, the changed policies whose units' parts for that direction
    (see the module docstring) differ between the two versions' units."""
    before, after = _parts(old, scope.changed), _parts(new, scope.changed)
    changed_in = {
        d: frozenset(p for p in scope.changed if before.get((p, d), ()) != after.get((p, d), ())) for d in Direction
    }
    return replace(scope, changed_in=changed_in)


def _parts(units: Iterable[PolicyUnit], displays: frozenset[str]) -> dict[tuple[str, Direction], tuple[object, ...]]:
    out: dict[tuple[str, Direction], list[object]] = {}
    for unit in units:
        if unit.display in displays:
            for direction in Direction:
                out.setdefault((unit.display, direction), []).append(_part(unit, direction))
    return {key: tuple(parts) for key, parts in out.items()}


def _part(unit: PolicyUnit, direction: Direction) -> tuple[object, ...] | None:
    """Everything a unit contributes to one direction's decision, without source positions."""
    if direction not in unit.directions:
        return None
    return (
        unit.subject,
        unit.is_network_policy,
        unit.default_deny.get(direction),
        _rules(unit.allows.get(direction, ())),
        _rules(unit.denies.get(direction, ())),
        unit.requires.get(direction, ()),
        unit.requires_deny.get(direction, ()),
    )


def _rules(rules: tuple[SourceRule, ...]) -> tuple[object, ...]:
    return tuple((r.ref.policy, r.ref.path, r.deny, r.peers, _ports(r.ports)) for r in rules)


def _ports(ports: tuple[PortMatch, ...] | None) -> tuple[object, ...] | None:
    if ports is None:
        return None
    return tuple(
        (pm.protocols, pm.low, pm.high, pm.name, pm.parser, tuple(_l7(item) for item in pm.l7_rules)) for pm in ports
    )


def _l7(item: object) -> str:
    if hasattr(item, "model_dump"):
        item = item.model_dump(mode="json", by_alias=True)
    return json.dumps(item, sort_keys=True, default=str)
