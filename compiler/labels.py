"""Cilium labels: what an endpoint carries, which of it forms the identity, and selectors over it.

Three things live here because every later stage agrees on them through this one module:

- :class:`Label` and :func:`endpoint_labels`: the ``k8s:`` labels Cilium gives a pod
  (SEMANTICS §3, reference/cilium.md §3.4), plus the ``reserved:`` labels of host and world.
- :class:`LabelFilter`: Cilium's identity-relevance filter (reference/cilium.md §3.3), so the
  ``cilium`` profile sees exactly the labels a real agent would put into the identity.
- :class:`Selector`: a source-aware selector over label sets, with the namespacing rules of
  SEMANTICS §4.2 (reference/cilium.md §7.3) and the NetworkPolicy peer translation of §4.1.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from compiler.cluster import Cluster, Endpoint
from compiler.flow import Profile
from compiler.inputs.selector import LabelSelector

SOURCE_K8S = "k8s"
SOURCE_RESERVED = "reserved"
SOURCE_CIDR = "cidr"
#: In a selector: a key without a source (or ``any:``) matches labels of every source.
SOURCE_ANY = "any"

# Keys Cilium adds to a pod's labels (reference/cilium.md §3.4).
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
SERVICE_ACCOUNT_LABEL = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
#: Pod labels under this prefix are owned by Cilium and stripped from the pod's own labels
#: (``filterPodLabels`` in ``pkg/k8s/utils``, reference/cilium.md §3.4).
CILIUM_OWNED_PREFIX = "io.cilium.k8s"

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


@dataclass(frozen=True, order=True, slots=True)
class Label:
    """One Cilium label ``source:key[=value]``; reserved and CIDR labels have the value ``""``."""

    source: str
    key: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.source}:{self.key}={self.value}" if self.value else f"{self.source}:{self.key}"

    @classmethod
    def parse(cls, text: str) -> Label:
        """``k8s:app=web`` / ``reserved:host`` (a missing source means ``k8s``)."""
        source, sep, rest = text.partition(":")
        if not sep:
            source, rest = SOURCE_K8S, text
        key, _, value = rest.partition("=")
        return cls(source, key, value)


LabelSet = frozenset[Label]


def format_labels(labels: Iterable[Label]) -> str:
    """The canonical string of a label set (``k8s:a=b;k8s:c=d``): sorted, used for hashing."""
    return ";".join(str(label) for label in sorted(labels))


def reserved_labels(name: str) -> LabelSet:
    """The label set of a reserved identity, e.g. ``reserved:host``."""
    return frozenset({Label(SOURCE_RESERVED, name)})


HOST_LABELS = reserved_labels("host")
WORLD_LABELS = reserved_labels("world")


def split_key(key: str) -> tuple[str, str]:
    """``k8s:app`` → (k8s, app); ``app`` → (any, app). The source ends at the first colon."""
    source, sep, rest = key.partition(":")
    return (source, rest) if sep else (SOURCE_ANY, key)


# --- endpoint labels --------------------------------------------------------------------------

def namespace_labels(namespace: str, cluster: Cluster) -> LabelSet:
    """The labels every pod of a namespace gets from it: namespace name, namespace labels, cluster."""
    ns_labels = cluster.namespace_labels(namespace)
    out = {Label(SOURCE_K8S, NAMESPACE_LABELS_PREFIX + k, v) for k, v in ns_labels.items()}
    out.add(Label(SOURCE_K8S, POD_NAMESPACE_LABEL, namespace))
    out.add(Label(SOURCE_K8S, CLUSTER_LABEL, cluster.cluster_name))
    return frozenset(out)


def pod_label(key: str, value: str) -> Label | None:
    """A pod's own label as Cilium keeps it; ``None`` for keys Cilium owns (they are stripped)."""
    if key.startswith(CILIUM_OWNED_PREFIX) or key == POD_NAMESPACE_LABEL:
        return None
    return Label(SOURCE_K8S, key, value)


def endpoint_labels(ep: Endpoint, cluster: Cluster) -> LabelSet:
    """Every label of an endpoint as Cilium selectors see it, before the label filter (SEMANTICS §3).

    Mirrors ``SanitizePodLabels``: pod labels minus Cilium-owned keys, then namespace labels,
    namespace name, service account (omitted when empty) and cluster name override them.
    """
    out = {label for k, v in ep.labels.items() if (label := pod_label(k, v)) is not None}
    out |= namespace_labels(ep.namespace, cluster)
    if ep.service_account:
        out.add(Label(SOURCE_K8S, SERVICE_ACCOUNT_LABEL, ep.service_account))
    return frozenset(out)


# --- label filter -----------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelPrefix:
    """One filter entry: a regex matched at the start of the key, optionally for one source."""

    pattern: str
    source: str = ""  # "" (or "any") = every source
    exclude: bool = False
    regex: re.Pattern[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "regex", re.compile(self.pattern))
        except re.error as err:
            raise ValueError(f"invalid label pattern {self.pattern!r}: {err}") from None

    @classmethod
    def parse(cls, text: str) -> LabelPrefix:
        """``[source:][!]regex`` as cilium-agent ``--labels`` takes it (``parseLabelPrefix``)."""
        source, sep, pattern = text.partition(":")
        if not sep:
            source, pattern = "", text
        exclude = pattern.startswith("!")
        pattern = pattern[1:] if exclude else pattern
        if not pattern:
            raise ValueError(f"invalid label pattern {text!r}: empty prefix")
        return cls(pattern, source, exclude)

    def match_length(self, label: Label) -> int | None:
        """Length of the match at the start of the key, or ``None`` (Go: ``FindStringIndex`` at 0)."""
        if self.source not in ("", SOURCE_ANY) and self.source != label.source:
            return None
        found = self.regex.match(label.key)
        return found.end() if found else None

    def __str__(self) -> str:
        bang = "!" if self.exclude else ""
        return f"{self.source}:{bang}{self.pattern}" if self.source else f"{bang}{self.pattern}"


#: Cilium 1.18's default list (reference/cilium.md §3.3). Includes first, then excludes.
DEFAULT_LABEL_PATTERNS: tuple[str, ...] = (
    "reserved:.*",
    r"io\.kubernetes\.pod\.namespace",
    r"io\.cilium\.k8s\.namespace\.labels",
    r"app\.kubernetes\.io",
    r"io\.cilium\.k8s\.policy\.cluster",
    r"io\.cilium\.k8s\.policy\.serviceaccount",
    r"!io\.kubernetes",
    r"!kubernetes\.io",
    r"!statefulset\.kubernetes\.io/pod-name",
    r"!apps\.kubernetes\.io/pod-index",
    r"!batch\.kubernetes\.io/job-completion-index",
    r"!batch\.kubernetes\.io/controller-uid",
    r"!.*beta\.kubernetes\.io",
    r"!k8s\.io",
    "!pod-template-generation",
    "!pod-template-hash",
    "!controller-revision-hash",
    "!controller-uid",
    "!annotation.*",
    "!etcd_node",
)


@dataclass(frozen=True)
class LabelFilter:
    """Cilium's identity-relevance filter (reference/cilium.md §3.3, ``pkg/labelsfilter``).

    A label is relevant when (not allow-list mode and no exclude matched) or the longest include
    match is longer than the shortest exclude match. Allow-list mode turns on as soon as the user
    supplies any include entry; the defaults alone never do. Reserved labels are always relevant.
    """

    prefixes: tuple[LabelPrefix, ...]
    allow_list: bool = False
    _memo: dict[tuple[str, str], bool] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @classmethod
    def default(cls) -> LabelFilter:
        return cls(tuple(LabelPrefix.parse(p) for p in DEFAULT_LABEL_PATTERNS))

    @classmethod
    def from_options(cls, patterns: Sequence[str]) -> LabelFilter:
        """The defaults plus ``--labels`` entries; raises ValueError on a bad entry."""
        extra = tuple(LabelPrefix.parse(p) for p in patterns if p)
        return cls(cls.default().prefixes + extra, allow_list=any(not p.exclude for p in extra))

    def relevant(self, label: Label) -> bool:
        """Whether the label is part of the identity (memoized per source and key)."""
        if label.source == SOURCE_RESERVED:
            return True
        memo_key = (label.source, label.key)
        hit = self._memo.get(memo_key)
        if hit is None:
            hit = self._memo[memo_key] = self._decide(label)
        return hit

    def _decide(self, label: Label) -> bool:
        included = ignored = 0
        for prefix in self.prefixes:
            length = prefix.match_length(label)
            if length is None:
                continue
            if prefix.exclude:
                if ignored == 0 or length < ignored:  # shortest exclude
                    ignored = length
            elif length > included:  # longest include
                included = length
        return (not self.allow_list and ignored == 0) or included > ignored

    def filter(self, labels: LabelSet) -> LabelSet:
        return frozenset(label for label in labels if self.relevant(label))

    def __str__(self) -> str:
        return " ".join(str(p) for p in self.prefixes)


def identity_labels(ep: Endpoint, cluster: Cluster, profile: Profile, label_filter: LabelFilter) -> LabelSet:
    """The labels that form the endpoint's identity: filtered under ``cilium``, all under ``k8s``."""
    labels = endpoint_labels(ep, cluster)
    return label_filter.filter(labels) if profile is Profile.CILIUM else labels


# --- selectors --------------------------------------------------------------------------------

@lru_cache(maxsize=4096)
def _as_prefix(key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    if "/" not in key and ":" not in key and not key[:1].isdigit():
        return None
    try:
        return ipaddress.ip_network(key, strict=False)
    except ValueError:
        return None


@dataclass(frozen=True, order=True)
class Requirement:
    """One selector requirement on a source-qualified key; ``values`` are kept sorted and unique."""

    source: str
    key: str
    operator: str
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise ValueError(f"unknown selector operator {self.operator!r} (one of {', '.join(OPERATORS)})")
        values = tuple(sorted(set(self.values)))
        if self.operator in ("In", "NotIn") and not values:
            raise ValueError(f"operator {self.operator} needs values")
        if self.operator in ("Exists", "DoesNotExist") and values:
            raise ValueError(f"operator {self.operator} takes no values")
        object.__setattr__(self, "values", values)

    @classmethod
    def of(cls, key: str, operator: str, values: Iterable[str] = ()) -> Requirement:
        """From a possibly source-prefixed key (``k8s:app``, ``reserved:host``, ``app``)."""
        source, bare = split_key(key)
        return cls(source, bare, operator, tuple(values))

    def key_matches(self, label: Label) -> bool:
        """Source and key agree; a ``cidr`` label also matches a containing prefix (``Label.HasKey``)."""
        if self.source != SOURCE_ANY and self.source != label.source:
            return False
        if label.key == self.key:
            return True
        if label.source == SOURCE_CIDR:
            mine, theirs = _as_prefix(self.key), _as_prefix(label.key)
            return (mine is not None and theirs is not None and mine.version == theirs.version
                    and theirs.subnet_of(mine))  # type: ignore[arg-type]
        return False

    def matches(self, labels: Iterable[Label]) -> bool:
        found = [label.value for label in labels if self.key_matches(label)]
        if self.operator == "In":
            return any(v in self.values for v in found)
        if self.operator == "NotIn":
            return not any(v in self.values for v in found)
        if self.operator == "Exists":
            return bool(found)
        return not found

    def __str__(self) -> str:
        name = f"{self.source}:{self.key}"
        if self.operator == "Exists":
            return name
        if self.operator == "DoesNotExist":
            return f"!{name}"
        if len(self.values) == 1:
            return f"{name}{'=' if self.operator == 'In' else '!='}{self.values[0]}"
        return f"{name} {self.operator.lower()} ({','.join(self.values)})"

    @classmethod
    def parse(cls, text: str) -> Requirement:
        """The inverse of ``str()``: ``k8s:a=x``, ``a!=x``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a``."""
        text = text.strip()
        for word, op in ((" notin ", "NotIn"), (" in ", "In")):
            name, sep, rest = text.partition(word)
            if sep:
                rest = rest.strip()
                if not (rest.startswith("(") and rest.endswith(")")):
                    raise ValueError(f"invalid selector requirement {text!r}")
                return cls.of(name.strip(), op, [v.strip() for v in rest[1:-1].split(",")])
        if text.startswith("!"):
            return cls.of(text[1:], "DoesNotExist")
        for sign, op in (("!=", "NotIn"), ("=", "In")):
            name, sep, value = text.partition(sign)
            if sep:
                return cls.of(name, op, (value,))
        return cls.of(text, "Exists")


@dataclass(frozen=True, order=True)
class Selector:
    """Requirements that must all hold (AND); kept sorted and unique, so equal selectors compare equal."""

    requirements: tuple[Requirement, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "requirements", tuple(sorted(set(self.requirements))))

    @classmethod
    def of(cls, labels: Mapping[str, str] | None = None, /, **kwargs: str) -> Selector:
        """``matchLabels``-style: ``Selector.of({"k8s:app": "web"})`` or ``Selector.of(app="web")``."""
        items = {**(labels or {}), **kwargs}
        return cls(tuple(Requirement.of(k, "In", (v,)) for k, v in items.items()))

    @classmethod
    def parse(cls, text: str) -> Selector:
        """The inverse of ``str()`` (``{}`` or comma-separated requirements)."""
        text = text.strip()
        if text in ("", "{}"):
            return cls()
        parts, depth, start = [], 0, 0
        for i, char in enumerate(text):
            depth += {"(": 1, ")": -1}.get(char, 0)
            if char == "," and depth == 0:
                parts.append(text[start:i])
                start = i + 1
        parts.append(text[start:])
        return cls(tuple(Requirement.parse(p) for p in parts))

    def matches(self, labels: LabelSet) -> bool:
        """All requirements hold; the empty selector matches every label set."""
        return all(r.matches(labels) for r in self.requirements)

    def with_requirements(self, extra: Iterable[Requirement]) -> Selector:
        return Selector(self.requirements + tuple(extra))

    def is_empty(self) -> bool:
        return not self.requirements

    def selects_namespace_key(self) -> bool:
        """Some requirement is on ``io.kubernetes.pod.namespace`` (any source)."""
        return any(r.key == POD_NAMESPACE_LABEL for r in self.requirements)

    def has_reserved(self) -> bool:
        return any(r.source == SOURCE_RESERVED for r in self.requirements)

    def has_namespace_labels(self) -> bool:
        return any(r.key.startswith(NAMESPACE_LABELS_PREFIX) for r in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements) if self.requirements else "{}"


def selector_from_k8s(sel: LabelSelector) -> Selector:
    """A ``matchLabels``/``matchExpressions`` selector whose keys may carry a ``source:``."""
    return Selector(tuple(Requirement.of(key, op, values) for key, op, values in sel.requirements()))


# --- namespacing (SEMANTICS §4.2, reference/cilium.md §7.3) -----------------------------------

def _namespace_is(namespace: str) -> Requirement:
    return Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, "In", (namespace,))


_IN_SOME_NAMESPACE = Requirement(SOURCE_K8S, POD_NAMESPACE_LABEL, "Exists")


def namespace_peer_selector(sel: Selector, policy_namespace: str | None) -> Selector:
    """Namespace a ``from/toEndpoints`` (or ``from/toRequires``) selector.

    ``policy_namespace`` is None for a CCNP. A selector that names the namespace key or has a
    reserved key is used as is; a CCNP adds ``namespace Exists``; a CNP adds ``namespace = ns``
    unless the selector is on namespace labels (then it spans namespaces).
    """
    if sel.selects_namespace_key() or sel.has_reserved():
        return sel
    if policy_namespace is None:
        return sel.with_requirements([_IN_SOME_NAMESPACE])
    if sel.has_namespace_labels():
        return sel
    return sel.with_requirements([_namespace_is(policy_namespace)])


def namespace_subject_selector(sel: Selector, policy_namespace: str | None) -> Selector:
    """Namespace an ``endpointSelector``: a CNP forces its own namespace (replacing any namespace
    requirement the user wrote, which Cilium logs as illegal); a CCNP leaves it unchanged."""
    if policy_namespace is None:
        return sel
    kept = tuple(r for r in sel.requirements
                 if not (r.key == POD_NAMESPACE_LABEL and r.source != SOURCE_RESERVED))
    return Selector((*kept, _namespace_is(policy_namespace)))


# --- NetworkPolicy peers (SEMANTICS §4.1) -----------------------------------------------------

def _k8s_requirements(sel: LabelSelector, source: str, key_prefix: str = "",
                      drop_match_labels: frozenset[str] = frozenset()) -> list[Requirement]:
    out = [Requirement(source, key_prefix + k, "In", (v,))
           for k, v in sorted((sel.matchLabels or {}).items()) if k not in drop_match_labels]
    out.extend(Requirement(source, key_prefix + r.key, r.operator, tuple(r.values or ()))
               for r in sel.matchExpressions or [])
    return out


def k8s_pod_selector(sel: LabelSelector, namespace: str) -> Selector:
    """A NetworkPolicy ``podSelector`` (subject or peer): pods of ``namespace`` matching it.

    Like Cilium's ``parsePodSelector``, the namespace overwrites a ``matchLabels`` entry on the
    namespace key. Pod keys get source ``k8s`` as in Cilium's ``parsePodSelector``.
    """
    reqs = _k8s_requirements(sel, SOURCE_K8S, drop_match_labels=frozenset({POD_NAMESPACE_LABEL}))
    return Selector((*reqs, _namespace_is(namespace)))


def k8s_namespace_selector(ns_sel: LabelSelector, pod_sel: LabelSelector | None) -> Selector:
    """A NetworkPolicy peer with ``namespaceSelector`` (and maybe ``podSelector``).

    Namespace keys become ``k8s:io.cilium.k8s.namespace.labels.<key>``; an empty namespace
    selector means every namespace (``io.kubernetes.pod.namespace Exists``).
    """
    reqs = _k8s_requirements(ns_sel, SOURCE_K8S, NAMESPACE_LABELS_PREFIX) or [_IN_SOME_NAMESPACE]
    if pod_sel is not None:
        reqs.extend(_k8s_requirements(pod_sel, SOURCE_K8S))
    return Selector(tuple(reqs))
