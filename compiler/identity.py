"""Numeric security identities: reserved, cluster (one per identity label set) and CIDR.

DESIGN §3. Reserved identities keep Cilium's numbers (reference/cilium.md §3.1); cluster
identities live in [256, 65535] and CIDR identities in the local scope ``1<<24 | n``
(reference/cilium.md §3.2).

Numbers are a hash of the canonical label string into the range, so a label set keeps its number
when unrelated objects come and go. Allocation runs in three passes over the label sets in sorted
canonical order: numbers pinned by a lock file, then every set whose home slot (its hash) is free,
then the sets that collided, each probing linearly from its home slot. A set only moves when
another set really hashes to (or probes onto) its slot.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from compiler.cluster import Cluster, Endpoint
from compiler.flow import Profile
from compiler.labels import (
    SERVICE_ACCOUNT_LABEL,
    SOURCE_ANY,
    SOURCE_CIDR,
    SOURCE_K8S,
    Label,
    LabelFilter,
    LabelSet,
    Selector,
    format_labels,
    namespace_labels,
    pod_label,
    reserved_labels,
)
from compiler.source import InputError, SourceRef

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Reserved numeric identities (reference/cilium.md §3.1).
ID_UNKNOWN = 0  # also the wildcard (ANY) identity in policy keys
ID_HOST = 1
ID_WORLD = 2
ID_UNMANAGED = 3
ID_HEALTH = 4
ID_INIT = 5
ID_REMOTE_NODE = 6
ID_KUBE_APISERVER = 7
ID_INGRESS = 8
ID_WORLD_IPV4 = 9
ID_WORLD_IPV6 = 10

#: Labels of each reserved identity. 7 also carries ``remote-node`` (reference/cilium.md §3.1).
RESERVED_IDENTITIES: dict[int, LabelSet] = {
    ID_UNKNOWN: reserved_labels("unknown"),
    ID_HOST: reserved_labels("host"),
    ID_WORLD: reserved_labels("world"),
    ID_UNMANAGED: reserved_labels("unmanaged"),
    ID_HEALTH: reserved_labels("health"),
    ID_INIT: reserved_labels("init"),
    ID_REMOTE_NODE: reserved_labels("remote-node"),
    ID_KUBE_APISERVER: reserved_labels("kube-apiserver") | reserved_labels("remote-node"),
    ID_INGRESS: reserved_labels("ingress"),
    ID_WORLD_IPV4: reserved_labels("world-ipv4"),
    ID_WORLD_IPV6: reserved_labels("world-ipv6"),
}

# Cluster-scope range for cluster ID 0 (reference/cilium.md §3.2: MinimalNumericIdentity = 256).
CLUSTER_ID_MIN = 256
CLUSTER_ID_MAX = 65535
CLUSTER_ID_COUNT = CLUSTER_ID_MAX - CLUSTER_ID_MIN + 1  # 65,280
# Local scope: 1<<24 | n, n in 1..0xFFFFFF (reference/cilium.md §3.2).
LOCAL_SCOPE = 1 << 24
LOCAL_ID_COUNT = 0xFFFFFF

LOCK_VERSION = 1


@dataclass(frozen=True)
class Identity:
    """A numeric identity, its labels, and the endpoints (``ns/name``, sorted) that have it."""

    number: int
    labels: LabelSet
    endpoints: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``reserved`` (< 256), ``cidr`` (local scope) or ``cluster``."""
        if self.number < CLUSTER_ID_MIN:
            return "reserved"
        if self.number >> 24 == LOCAL_SCOPE >> 24:
            return "cidr"
        return "cluster"

    @property
    def canonical(self) -> str:
        return format_labels(self.labels)


def _home(text: str, size: int) -> int:
    """The home slot of a canonical string in a range of ``size`` slots."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % size


class _FreeSlots:
    """Next free slot at or after ``i`` (wrapping), in near-constant time (union-find with path
    compression), so probing stays fast even when the range is almost full."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._next: dict[int, int] = {}

    def take(self, slot: int) -> None:
        self._next[slot] = (slot + 1) % self.size

    def taken(self, slot: int) -> bool:
        return slot in self._next

    def find(self, slot: int) -> int:
        path = []
        while slot in self._next:
            path.append(slot)
            slot = self._next[slot]
        for p in path:
            self._next[p] = slot
        return slot


def _assign(names: list[str], size: int, pinned: Mapping[str, int]) -> dict[str, int]:
    """Slots in ``[0, size)`` for sorted ``names``: pinned, then home slots, then linear probing."""
    slots = _FreeSlots(size)
    out: dict[str, int] = {}
    for name, slot in sorted(pinned.items()):
        slots.take(slot)
        out[name] = slot
    wanted = [n for n in names if n not in out]
    if len(wanted) + len(pinned) > size:
        raise InputError(
            f"identity exhaustion: {len(wanted) + len(pinned)} identities needed, only {size} numbers "
            "available; reduce label cardinality (e.g. with --labels)",
            source=SourceRef("<cluster>", 0),
        )
    collided = []
    for name in wanted:
        home = _home(name, size)
        if slots.taken(home):
            collided.append(name)
        else:
            slots.take(home)
            out[name] = home
    for name in collided:
        slot = slots.find(_home(name, size))
        slots.take(slot)
        out[name] = slot
    return {name: out[name] for name in names}


def normalize_prefix(prefix: str) -> str:
    """``10.1.2.3`` → ``10.1.2.3/32``; host bits are masked (``10.1.2.3/8`` → ``10.0.0.0/8``)."""
    try:
        return str(ipaddress.ip_network(prefix.strip(), strict=False))
    except ValueError:
        raise InputError(f"invalid CIDR {prefix!r}") from None


def _is_world_prefix(prefix: str) -> bool:
    return prefix in ("0.0.0.0/0", "::/0")


class _Labeler:
    """``identity_labels`` for a whole cluster, reusing per-namespace and per-label work."""

    def __init__(self, cluster: Cluster, profile: Profile, label_filter: LabelFilter) -> None:
        self.cluster = cluster
        self.keep = label_filter.relevant if profile is Profile.CILIUM else (lambda _label: True)
        self._namespaces: dict[str, LabelSet] = {}
        self._pod: dict[tuple[str, str], Label | None] = {}
        self._sa: dict[str, LabelSet] = {}

    def labels(self, ep: Endpoint) -> LabelSet:
        base = self._namespaces.get(ep.namespace)
        if base is None:
            base = self._namespaces[ep.namespace] = frozenset(
                label for label in namespace_labels(ep.namespace, self.cluster) if self.keep(label))
        sa = self._sa.get(ep.service_account)
        if sa is None:
            label = Label(SOURCE_K8S, SERVICE_ACCOUNT_LABEL, ep.service_account)
            sa = self._sa[ep.service_account] = frozenset(
                [label] if ep.service_account and self.keep(label) else [])
        own = []
        for item in ep.labels.items():
            if item in self._pod:
                found = self._pod[item]
            else:
                candidate = pod_label(*item)
                relevant = candidate is not None and self.keep(candidate)
                found = self._pod[item] = candidate if relevant else None
            if found is not None:
                own.append(found)
        return base.union(sa, own)


class IdentityTable:
    """Every identity of a compilation, with lookups by endpoint, number, address and selector."""

    def __init__(self, identities: Iterable[Identity], endpoint_numbers: Mapping[str, int],
                 cidr_numbers: Mapping[str, int] | None = None) -> None:
        self._by_number: dict[int, Identity] = {i.number: i for i in identities}
        self._endpoint_numbers = dict(endpoint_numbers)
        self._cidr_numbers: dict[str, int] = dict(cidr_numbers or {})
        self._local_slots = _FreeSlots(LOCAL_ID_COUNT)
        for number in self._cidr_numbers.values():
            self._local_slots.take((number & 0xFFFFFF) - 1)
        self._reindex()

    def _reindex(self) -> None:
        self._by_key: dict[str, set[int]] = {}
        self._by_key_value: dict[tuple[str, str], set[int]] = {}
        for number, ident in self._by_number.items():
            if number == ID_UNKNOWN:
                continue
            for label in ident.labels:
                self._by_key.setdefault(label.key, set()).add(number)
                self._by_key_value.setdefault((label.key, label.value), set()).add(number)
        self._selectable = frozenset(n for n in self._by_number if n != ID_UNKNOWN)
        self._memo: dict[str, frozenset[int]] = {}

    # --- lookups ----------------------------------------------------------------------------

    def endpoint_identity(self, key: str) -> Identity:
        """The identity of endpoint ``ns/name`` (KeyError for an unknown endpoint)."""
        return self._by_number[self._endpoint_numbers[key]]

    def by_number(self, number: int) -> Identity:
        return self._by_number[number]

    def identities(self) -> list[Identity]:
        """Every identity but 0 (the wildcard), sorted by number."""
        return [self._by_number[n] for n in sorted(self._selectable)]

    def cidr_identity(self, prefix: str) -> Identity:
        """The local identity of a CIDR prefix, allocated on first use (prefer passing every prefix
        to :func:`allocate`, which makes numbers independent of call order). ``0.0.0.0/0`` and
        ``::/0`` are world itself, as in Cilium's ipcache."""
        norm = normalize_prefix(prefix)
        if _is_world_prefix(norm):
            return self._by_number[ID_WORLD]
        number = self._cidr_numbers.get(norm)
        if number is None:
            slot = self._local_slots.find(_home(norm, LOCAL_ID_COUNT))
            self._local_slots.take(slot)
            number = self._cidr_numbers[norm] = LOCAL_SCOPE | (slot + 1)
            self._by_number[number] = cidr_identity_of(number, norm)
            self._reindex()
        return self._by_number[number]

    def cidr_identities(self) -> dict[str, int]:
        """Normalized prefix → number for every CIDR identity allocated so far."""
        return dict(sorted(self._cidr_numbers.items()))

    def identity_of_address(self, addr: str | IPAddress, cluster: Cluster) -> int:
        """The identity a packet from/to ``addr`` carries: its endpoint's, host (1) for the node,
        else world (2). CIDR identities are layered on by the IR, not here."""
        address = ipaddress.ip_address(addr) if isinstance(addr, str) else addr
        if address == cluster.node_address:
            return ID_HOST
        ep = cluster.endpoint_at(address)
        if ep is not None and ep.key in self._endpoint_numbers:
            return self._endpoint_numbers[ep.key]
        return ID_WORLD

    # --- selection --------------------------------------------------------------------------

    def select(self, selector: Selector) -> frozenset[int]:
        """Numbers of every identity (reserved and CIDR included, 0 excluded) whose labels match.

        Memoized per selector string, like Cilium's selector cache (reference/cilium.md §4.1);
        candidates come from a label-key index, so a selector only looks at identities that
        carry one of its positive keys.
        """
        text = str(selector)
        hit = self._memo.get(text)
        if hit is None:
            candidates = self._candidates(selector)
            hit = self._memo[text] = frozenset(
                n for n in candidates if selector.matches(self._by_number[n].labels))
        return hit

    def _candidates(self, selector: Selector) -> frozenset[int] | set[int]:
        best: set[int] | None = None
        for req in selector.requirements:
            containment = req.source in (SOURCE_CIDR, SOURCE_ANY) and "/" in req.key
            if req.operator not in ("In", "Exists") or containment:
                continue  # not indexable: negative, or CIDR prefix containment
            if req.operator == "Exists":
                found = self._by_key.get(req.key, set())
            else:
                found = set().union(*(self._by_key_value.get((req.key, v), set()) for v in req.values))
            if best is None or len(found) < len(best):
                best = found
        return self._selectable if best is None else best

    # --- lock file --------------------------------------------------------------------------

    def lock(self) -> dict[str, int]:
        """Canonical label string → number for every cluster identity."""
        return {i.canonical: i.number for i in self.identities() if i.kind == "cluster"}

    def to_lock(self, path: str | Path) -> None:
        """Write the lock file that pins these numbers in later runs (``allocate(lock=...)``)."""
        body = {"version": LOCK_VERSION, "identities": self.lock()}
        Path(path).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")


def cidr_identity_of(number: int, prefix: str) -> Identity:
    """A CIDR identity: ``cidr:<prefix>`` plus ``reserved:world`` (reference/cilium.md §7.4)."""
    return Identity(number, frozenset({Label(SOURCE_CIDR, prefix)}) | reserved_labels("world"))


def load_lock(path: str | Path) -> dict[str, int]:
    """Read a lock file written by :meth:`IdentityTable.to_lock`."""
    source = SourceRef(str(path), 1)
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read identity lock file: {err}", source=source) from None
    if not (isinstance(body, dict) and body.get("version") == LOCK_VERSION
            and isinstance(body.get("identities"), dict)):
        shape = json.dumps({"version": LOCK_VERSION, "identities": {"<labels>": 256}})
        raise InputError(f"identity lock file must look like {shape}", source=source)
    return {str(k): v for k, v in body["identities"].items()}


def _check_lock(lock: Mapping[str, int]) -> dict[str, int]:
    """Lock numbers as slots; refuse numbers outside the cluster range and duplicates."""
    slots: dict[str, int] = {}
    owner: dict[int, str] = {}
    for labels, number in sorted(lock.items()):
        if not isinstance(number, int) or not CLUSTER_ID_MIN <= number <= CLUSTER_ID_MAX:
            raise InputError(f"identity lock: {number!r} for {labels!r} is outside "
                             f"{CLUSTER_ID_MIN}-{CLUSTER_ID_MAX}")
        if number in owner:
            raise InputError(f"identity lock: {number} is pinned twice ({owner[number]!r} and {labels!r})")
        owner[number] = labels
        slots[labels] = number - CLUSTER_ID_MIN
    return slots


def allocate(cluster: Cluster, profile: Profile, label_filter: LabelFilter, cidrs: Iterable[str] = (),
             lock: Mapping[str, int] | None = None) -> IdentityTable:
    """Give every endpoint the identity of its identity-relevant label set, and every CIDR a
    local identity; deterministic and stable (see the module docstring)."""
    labeler = _Labeler(cluster, profile, label_filter)
    members: dict[LabelSet, list[str]] = {}
    for ep in cluster.endpoints:
        members.setdefault(labeler.labels(ep), []).append(ep.key)
    by_canonical = {format_labels(labels): labels for labels in members}
    slots = _assign(sorted(by_canonical), CLUSTER_ID_COUNT, _check_lock(lock or {}))

    identities = [Identity(n, labels) for n, labels in RESERVED_IDENTITIES.items()]
    endpoint_numbers: dict[str, int] = {}
    for canonical, slot in slots.items():
        labels = by_canonical[canonical]
        number = CLUSTER_ID_MIN + slot
        keys = tuple(sorted(members[labels]))
        identities.append(Identity(number, labels, keys))
        endpoint_numbers.update((key, number) for key in keys)

    prefixes = sorted({p for p in map(normalize_prefix, cidrs) if not _is_world_prefix(p)})
    cidr_numbers = {p: LOCAL_SCOPE | (slot + 1) for p, slot in _assign(prefixes, LOCAL_ID_COUNT, {}).items()}
    identities.extend(cidr_identity_of(n, p) for p, n in cidr_numbers.items())
    return IdentityTable(identities, endpoint_numbers, cidr_numbers)


# --- rendering (``netpolc identities``) -------------------------------------------------------

def render_identities(table: IdentityTable, fmt: str) -> str:
    """``text``: aligned NUMBER / ENDPOINTS / LABELS columns, one label per line (like
    ``cilium-dbg identity list``); ``json``: a list of objects. Both deterministic."""
    rows = table.identities()
    if fmt == "json":
        body = [{"number": i.number, "labels": [str(label) for label in sorted(i.labels)],
                 "endpoints": len(i.endpoints), "endpoint_names": list(i.endpoints)} for i in rows]
        return json.dumps(body, indent=2) + "\n"
    if fmt != "text":
        raise InputError(f"unknown identities format {fmt!r} (text or json)", field="--output")
    width_n = max([len("NUMBER"), *(len(str(i.number)) for i in rows)])
    width_e = max([len("ENDPOINTS"), *(len(str(len(i.endpoints))) for i in rows)])
    lines = [f"{'NUMBER':<{width_n}}  {'ENDPOINTS':<{width_e}}  LABELS"]
    for ident in rows:
        labels = [str(label) for label in sorted(ident.labels)] or ["-"]
        lines.append(f"{ident.number:<{width_n}}  {len(ident.endpoints):<{width_e}}  {labels[0]}")
        lines.extend(f"{'':<{width_n}}  {'':<{width_e}}  {label}" for label in labels[1:])
    return "\n".join(lines) + "\n"
