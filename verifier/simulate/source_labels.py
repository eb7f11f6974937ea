"""Label views and selector matching for the reference evaluator (SEMANTICS §1, §3, §4).

The reference evaluator never builds identities. It asks, for one concrete address, "which
labels does Cilium's selector machinery see here?" (a *view*) and checks each selector
requirement against that view directly. Selectors keep Cilium's source qualification
(``k8s:app``, ``reserved:host``, no prefix = any source) and the namespacing rules of §4.2 are
applied as extra requirements while matching. This is deliberately written without
:mod:`compiler.labels` (except its :class:`LabelFilter`), so it is a second, independent reading
of the spec.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from functools import cached_property, lru_cache

from compiler.cluster import Cluster, Endpoint
from compiler.inputs.selector import LabelSelector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ANY_SOURCE = "any"
K8S = "k8s"
RESERVED = "reserved"
CIDR = "cidr"

POD_NAMESPACE = "io.kubernetes.pod.namespace"
NAMESPACE_LABEL_PREFIX = "io.cilium.k8s.namespace.labels."
SERVICE_ACCOUNT = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_NAME = "io.cilium.k8s.policy.cluster"
#: Pod labels Cilium owns; a pod cannot set them itself (``StripPodSpecialLabels``).
_CILIUM_OWNED = "io.cilium.k8s"


class PeerKind(str, Enum):
    """How SEMANTICS §1 classifies an address."""

    ENDPOINT = "endpoint"
    HOST = "host"
    WORLD = "world"


#: One label as (source, key, value); reserved labels have the value "".
LabelTriple = tuple[str, str, str]


@dataclass(frozen=True)
class PeerView:
    """One address as selectors see it: what it is and its visible labels."""

    address: IPAddress
    kind: PeerKind
    endpoint: Endpoint | None
    labels: frozenset[LabelTriple]

    @property
    def is_cluster_address(self) -> bool:
        return self.kind is not PeerKind.WORLD

    @cached_property
    def by_key(self) -> Mapping[str, tuple[tuple[str, str], ...]]:
        """The labels by key, as (source, value) pairs: what a requirement on one key looks up."""
        index: dict[str, list[tuple[str, str]]] = {}
        for source, key, value in self.labels:
            index.setdefault(key, []).append((source, value))
        return {key: tuple(pairs) for key, pairs in index.items()}


@dataclass(frozen=True)
class Requirement:
    """One selector requirement on a source-qualified key (source ``any`` = every source)."""

    source: str
    key: str
    operator: str
    values: tuple[str, ...] = ()


def split_key(raw: str, default_source: str) -> tuple[str, str]:
    """``k8s:app`` → (k8s, app); ``app`` → (default_source, app). The source ends at the first colon."""
    source, sep, key = raw.partition(":")
    return (source, key) if sep else (default_source, raw)


def requirements_of(selector: LabelSelector, default_source: str, key_prefix: str = "") -> list[Requirement]:
    """matchLabels and matchExpressions as requirements; bare keys get ``default_source``."""
    out: list[Requirement] = []
    for raw, operator, values in selector.requirements():
        source, key = split_key(raw, default_source)
        out.append(Requirement(source, key_prefix + key, operator, values))
    return out


@lru_cache(maxsize=1024)
def as_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """The prefix a ``cidr:`` label key names (None when the key is not one)."""
    if not text[:1].isdigit() and ":" not in text:
        return None
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _values_for(req: Requirement, view: PeerView) -> list[str]:
    """The values of every label in the view that the requirement's (source, key) names."""
    found = [v for s, v in view.by_key.get(req.key, ()) if req.source in (ANY_SOURCE, s)]
    if view.kind is PeerKind.WORLD and req.source in (ANY_SOURCE, CIDR):
        # A world address carries, for selection, a cidr: label for every prefix containing it (§1).
        network = as_network(req.key)
        if network is not None and view.address in network:
            found.append("")
    return found


def requirement_holds(req: Requirement, view: PeerView) -> bool:
    values = _values_for(req, view)
    if req.operator == "In":
        return any(v in req.values for v in values)
    if req.operator == "NotIn":
        return not any(v in req.values for v in values)
    if req.operator == "Exists":
        return bool(values)
    if req.operator == "DoesNotExist":
        return not values
    raise ValueError(f"unknown selector operator {req.operator!r}")


def all_hold(requirements: Iterable[Requirement], view: PeerView) -> bool:
    return all(requirement_holds(r, view) for r in requirements)


# --- namespacing (SEMANTICS §4.2) ---------------------------------------------------------------


def in_namespace(namespace: str) -> Requirement:
    return Requirement(K8S, POD_NAMESPACE, "In", (namespace,))


IN_SOME_NAMESPACE = Requirement(K8S, POD_NAMESPACE, "Exists")


def namespaced_peer(reqs: list[Requirement], policy_namespace: str | None) -> tuple[Requirement, ...]:
    """A ``from/toEndpoints`` or ``from/toRequires`` selector of a CNP (namespace) or CCNP (None).

    Used as is when it names the namespace key or has a ``reserved:`` key; a CCNP adds
    "namespace exists"; a CNP adds "namespace = policy namespace" unless a key is a namespace label.
    """
    if any(r.key == POD_NAMESPACE or r.source == RESERVED for r in reqs):
        return tuple(reqs)
    if policy_namespace is None:
        return (*reqs, IN_SOME_NAMESPACE)
    if any(r.key.startswith(NAMESPACE_LABEL_PREFIX) for r in reqs):
        return tuple(reqs)
    return (*reqs, in_namespace(policy_namespace))


def namespaced_subject(reqs: list[Requirement], policy_namespace: str | None) -> tuple[Requirement, ...]:
    """A Cilium ``endpointSelector``: a CNP always selects in its own namespace (a namespace the
    user wrote is replaced, as Cilium does); a CCNP selects across namespaces."""
    if policy_namespace is None:
        return tuple(reqs)
    kept = [r for r in reqs if not (r.key == POD_NAMESPACE and r.source != RESERVED)]
    return (*kept, in_namespace(policy_namespace))


def k8s_pod_selector(selector: LabelSelector, namespace: str) -> tuple[Requirement, ...]:
    """A NetworkPolicy ``podSelector`` confined to ``namespace`` (Cilium's ``parsePodSelector``:
    the namespace overwrites a ``matchLabels`` entry on the namespace key)."""
    labels = {k: v for k, v in (selector.matchLabels or {}).items() if k != POD_NAMESPACE}
    stripped = LabelSelector(matchLabels=labels, matchExpressions=selector.matchExpressions)
    return (*requirements_of(stripped, K8S), in_namespace(namespace))


def k8s_namespace_selector(ns_selector: LabelSelector, pod_selector: LabelSelector | None) -> tuple[Requirement, ...]:
    """A NetworkPolicy peer with a ``namespaceSelector`` as Cilium translates it: namespace keys
    become ``k8s:io.cilium.k8s.namespace.labels.<key>``; ``{}`` becomes "namespace exists"."""
    reqs = requirements_of(ns_selector, K8S, NAMESPACE_LABEL_PREFIX) or [IN_SOME_NAMESPACE]
    if pod_selector is not None:
        reqs.extend(requirements_of(pod_selector, K8S))
    return tuple(reqs)


# --- views --------------------------------------------------------------------------------------


class LabelViews:
    """Builds (and caches) the view of every address of one cluster.

    ``visible(key, value)`` says whether a ``k8s:`` label (in its Cilium form, so a namespace
    label is seen as ``io.cilium.k8s.namespace.labels.<key>``) is visible to selectors: the label
    filter of the ``cilium`` profile, everything under ``k8s``.
    """

    def __init__(self, cluster: Cluster, visible: Callable[[str, str], bool]) -> None:
        self._cluster = cluster
        self._visible = visible
        self._cache: dict[IPAddress, PeerView] = {}

    def endpoint_labels(self, ep: Endpoint) -> frozenset[LabelTriple]:
        """The endpoint's ``k8s:`` labels in their Cilium form, then the visibility filter (§3)."""
        labels: dict[str, str] = {}
        for key, value in ep.labels.items():
            if not key.startswith(_CILIUM_OWNED):  # Cilium strips pod labels impersonating its own
                labels[key] = value
        ns_labels: Mapping[str, str] = self._cluster.namespace_labels(ep.namespace)
        for key, value in ns_labels.items():
            labels[NAMESPACE_LABEL_PREFIX + key] = value
        labels[POD_NAMESPACE] = ep.namespace
        if ep.service_account:
            labels[SERVICE_ACCOUNT] = ep.service_account
        labels[CLUSTER_NAME] = self._cluster.cluster_name
        return frozenset((K8S, k, v) for k, v in labels.items() if self._visible(k, v))

    def of(self, address: IPAddress) -> PeerView:
        view = self._cache.get(address)
        if view is None:
            view = self._cache[address] = self._build(address)
        return view

    def _build(self, address: IPAddress) -> PeerView:
        ep = self._cluster.endpoint_at(address)
        if ep is not None:
            return PeerView(address, PeerKind.ENDPOINT, ep, self.endpoint_labels(ep))
        if address == self._cluster.node_address:
            return PeerView(address, PeerKind.HOST, None, frozenset({(RESERVED, "host", "")}))
        return PeerView(address, PeerKind.WORLD, None, frozenset({(RESERVED, "world", "")}))
