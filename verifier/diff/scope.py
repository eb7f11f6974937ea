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

When the profiles or the clusters differ, every unit may decide differently (label filter,
CIDR semantics, labels of the peers), so there is no restriction: every endpoint counts as
affected in both directions and the comparison covers the whole flow space.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from compiler.cluster import Cluster
from compiler.flow import Profile
from compiler.inputs import Inputs, Policy


@dataclass(frozen=True)
class Scope:
    """What the comparison is restricted to: the displays of the changed policies, or nothing
    (``restricted`` False, with the reason) when every flow must be compared."""

    restricted: bool
    changed: frozenset[str]  # policy displays ("NetworkPolicy ns/name"), changed in either version
    reason: str = ""

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
