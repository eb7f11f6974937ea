"""Endpoint addresses no side can tell apart, so that a proof visits one address of each kind.

Every side of a proof sees an address only through what it is: for iptables, which ipset entries
and rule networks contain it; for eBPF, its ipcache identity and the endpoint (map, enforcement)
that owns it; for the source semantics, the owning pod's labels, namespace, ports and the policy
networks that contain it. Two endpoint addresses with the same *signature* (all of that) are
interchangeable in every side: a flow from or to one has the outcome of the same flow from or to
the other. The pods of one identity usually share a signature, so a 20,000-pod cluster has a few
thousand classes, not 20,000 addresses.

A proof then keeps, per class, a representative (its destination slices) and a second member (so
that flows between two members of one class are covered, ``src != dst``), and *excludes* the other
members: the encodings drop their host entries (ipset and ipcache ``/32`` entries, endpoint
ownership), which is exact for every packet whose free address is not excluded. A witness the
solver finds on an excluded address is spurious and is ruled out before it is reported
(:meth:`verifier.encoding.targets.TargetEncodings.compare`).
"""

from __future__ import annotations

import functools
import ipaddress
import multiprocessing
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from compiler.cluster import Cluster, Endpoint
from verifier.artifacts.models import CommentMatch, Goto, IptRule, Jump, SetMatch, Verdict
from verifier.proofs.result import SourceSpec

Signature = tuple[object, ...]
Tag = tuple[object, ...]  # what a network is: ("set", name, nomatch, proto, port), ("rule",), ("policy",)
Hit = tuple[Tag, int, int]  # a tag, its prefix length, its network (-1: the address itself)


@dataclass(frozen=True)
class AddressClasses:
    """Per family: the addresses a proof keeps, the ones it excludes, and each representative's
    class members (the endpoints a slice of that representative stands for)."""

    excluded: Mapping[int, frozenset[int]] = field(default_factory=lambda: {4: frozenset(), 6: frozenset()})
    members: Mapping[tuple[int, int], tuple[str, ...]] = field(default_factory=dict)
    alternates: Mapping[tuple[int, int], int] = field(default_factory=dict)  # representative → the kept second member
    shared: bool = False  # some address belongs to two endpoints (it is its own case in every class)

    def representative(self, family: int, address: int) -> bool:
        """Whether ``address`` heads its class (gets the endpoint's slices)."""
        return (family, address) in self.members or not self.members

    def stands_for(self, family: int, address: int) -> tuple[str, ...]:
        return self.members.get((family, address), ())


def address_classes(files: Mapping[str, Mapping[str, str]], cluster: Cluster, sides: Iterable[str],
                    source: SourceSpec | None, jobs: int = 1) -> AddressClasses:
    """The classes of the cluster's endpoint addresses under the ``sides`` in play (target names
    whose artifacts are in ``files``, and ``source`` with ``source`` given). With ``jobs`` over
    one, a large cluster's iptables signatures are computed in a forked process while this one
    computes the others."""
    sides = set(sides)
    makers: list[Callable[[], _Features]] = []
    if "iptables" in sides and "iptables" in files:
        makers.append(functools.partial(_IptablesFeatures, files["iptables"]))
    if "ebpf" in sides and "ebpf" in files:
        makers.append(functools.partial(_EbpfFeatures, files["ebpf"]))
    if "source" in sides and source is not None:
        makers.append(functools.partial(_SourceFeatures, source))
    node = int(cluster.node_address)
    # the node's address (hostNetwork pods) is never excluded: it has slices of its own
    addresses = [(address, ep) for ep in sorted(cluster.endpoints, key=lambda e: e.key) for address in ep.addresses
                 if not (int(address) == node and address.version == cluster.node_address.version)]
    forked = jobs > 1 and len(makers) > 1 and "iptables" in files and "iptables" in sides \
        and len(addresses) >= FORK_FROM
    if forked:
        _IptablesFeatures.read(files["iptables"])  # the proof workers read them too: parsed once, here
    columns = _columns(makers, addresses, forked)
    classes: dict[tuple[int, Signature], list[tuple[int, Endpoint]]] = {}
    for row, (address, ep) in enumerate(addresses):
        signature = tuple(column[row] for column in columns)
        classes.setdefault((address.version, signature), []).append((int(address), ep))
    excluded: dict[int, set[int]] = {4: set(), 6: set()}
    members: dict[tuple[int, int], tuple[str, ...]] = {}
    alternates: dict[tuple[int, int], int] = {}
    for (family, _), group in classes.items():
        group.sort(key=lambda item: (item[0], item[1].key))
        head = group[0][0]
        members[(family, head)] = tuple(sorted({ep.key for _, ep in group}))
        excluded[family].update(value for value, _ in group[2:])
        if len(group) > 1 and group[1][0] != head:
            alternates[(family, head)] = group[1][0]
    # an address two endpoints share stays (each owner is its own case)
    shared = _shared_addresses(cluster)
    return AddressClasses({f: frozenset(v - shared.get(f, set())) for f, v in excluded.items()}, members,
                          alternates, any(shared.values()))


#: endpoint addresses from which the iptables signatures are worth a forked process
FORK_FROM = 2_000

Column = list[object]  # one side's signature per address (or a number per distinct signature)
_FORKED: tuple[Callable[[], _Features], list[tuple[Any, Endpoint]]] | None = None  # what the fork computes


def _columns(makers: list[Callable[[], _Features]], addresses: list[tuple[Any, Endpoint]],
             forked: bool) -> list[Column]:
    """Per side, every address's signature; with ``forked``, the first side's (iptables) in a
    forked process (it inherits the artifacts, nothing large is sent; numbers come back, one
    per distinct signature, which compare as the signatures do)."""
    if not forked:
        return [_column(make, addresses) for make in makers]
    global _FORKED
    _FORKED = (makers[0], addresses)
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            first = pool.submit(_forked_column)
            rest = [_column(make, addresses) for make in makers[1:]]
            return [first.result(), *rest]
    finally:
        _FORKED = None


def _column(make: Callable[[], _Features], addresses: list[tuple[Any, Endpoint]]) -> Column:
    features = make()
    return [features.signature(address, ep) for address, ep in addresses]


def _forked_column() -> Column:
    assert _FORKED is not None
    numbers: dict[object, int] = {}
    return [numbers.setdefault(signature, len(numbers)) for signature in _column(*_FORKED)]


def _shared_addresses(cluster: Cluster) -> dict[int, set[int]]:
    seen: dict[tuple[int, int], int] = {}
    for ep in cluster.endpoints:
        for address in set(ep.addresses):
            key = (address.version, int(address))
            seen[key] = seen.get(key, 0) + 1
    out: dict[int, set[int]] = {}
    for (family, value), count in seen.items():
        if count > 1:
            out.setdefault(family, set()).add(value)
    return out


class _Features:
    def signature(self, address: Any, ep: Endpoint) -> Signature:
        raise NotImplementedError


class _Prefixes:
    """Networks by (family, prefix length, network address), for "which of them contain this
    address" in one dictionary probe per prefix length."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[int, int, int], list[Tag]] = {}
        self.lengths: dict[int, list[int]] = {4: [], 6: []}  # ascending

    def add(self, network: Any, tag: Tag) -> None:
        key = (network.version, network.prefixlen, int(network.network_address))
        self.by_key.setdefault(key, []).append(tag)
        lengths = self.lengths[network.version]
        if network.prefixlen not in lengths:
            lengths.append(network.prefixlen)
            lengths.sort()

    def containing(self, address: Any) -> tuple[Hit, ...]:
        """(tag, prefix length, network) of every network containing ``address``; an address's
        own host network is written -1, so that two addresses with host entries in the same places
        compare equal."""
        width = address.max_prefixlen
        value = int(address)
        out: list[Hit] = []
        for length in self.lengths[address.version]:
            network = value >> (width - length) << (width - length) if length else 0
            for tag in self.by_key.get((address.version, length, network), ()):
                out.append((tag, length, -1 if length == width else network))
        return tuple(sorted(out, key=repr))


class _IptablesFeatures(_Features):
    """ipset entries (with their nomatch flag, and port for port sets), rule networks, and what
    the address-dispatch chains do with the address.

    A *dispatch chain* tests one address field only (``-s``/``-d`` networks and ``src``/``dst``
    address sets, comments) and only jumps, goes to or returns: the prefix trees
    ``compiler/targets/iptables/dispatch.py`` writes. For a fixed address such a chain is a fixed
    sequence of calls to other chains, so the signature holds that sequence (per entry and side)
    instead of the networks the tree tests on the way, which differ for every address.
    """

    @staticmethod
    def read(texts: Mapping[str, str]) -> list[tuple[Mapping[str, Any], Any]]:
        """Per family, the parsed ipsets and ruleset (None: no rules of that family). The readers
        keep what they parsed, per text: reading again costs a lookup."""
        from verifier.artifacts import read_ipsets, read_iptables

        out: list[tuple[Mapping[str, Any], Any]] = []
        for family in (4, 6):
            sets, rules = texts.get(f"ipsets.v{family}"), texts.get(f"rules.v{family}")
            out.append((read_ipsets(sets, f"iptables/ipsets.v{family}") if sets else {},
                        read_iptables(rules, f"iptables/rules.v{family}", family) if rules else None))
        return out

    def __init__(self, texts: Mapping[str, str]) -> None:
        self.prefixes = _Prefixes()
        self.set_tags: dict[str, tuple[str, ...]] = {}
        self.entries: list[tuple[int, str, str, str]] = []  # (family, table, chain, side)
        self.dispatch: dict[tuple[int, str, str], str] = {}  # (family, table, chain) → side
        self.chains: dict[tuple[int, str], Mapping[str, Any]] = {}
        self._dispatch_rules: dict[tuple[int, str, str, str], list[_DispatchRule]] = {}  # _compiled
        for ipsets, ruleset in self.read(texts):
            for name, ipset in ipsets.items():
                for m in ipset.members:
                    self.prefixes.add(m.network, ("set", name, m.nomatch, m.proto, m.port))
            if ruleset is not None:
                self._read_rules(ruleset)

    def _read_rules(self, ruleset: Any) -> None:
        family = ruleset.family
        for table_name, table in ruleset.tables.items():
            self.chains[(family, table_name)] = table.chains
            for name, chain in table.chains.items():
                side = _dispatch_side(chain)
                if side is not None:
                    self.dispatch[(family, table_name, name)] = side
            for name, chain in table.chains.items():
                inside = (family, table_name, name) in self.dispatch
                for rule in chain.rules:
                    target = getattr(rule.target, "chain", None)
                    entry = self.dispatch.get((family, table_name, target)) if isinstance(target, str) else None
                    if entry is not None and isinstance(target, str) and not inside:
                        self.entries.append((family, table_name, target, entry))
                    if inside:
                        continue  # resolved per address (resolve) instead
                    for match in (rule.source, rule.destination):
                        if match is not None:
                            self.prefixes.add(match.network, ("rule",))
        self.entries.sort()

    def signature(self, address: Any, ep: Endpoint) -> Signature:
        tags = self.prefixes.containing(address)
        members = _set_members(tags)
        calls = tuple(self._resolve(family, table, chain, side, address, members, 0)
                      for family, table, chain, side in dict.fromkeys(self.entries) if family == address.version)
        return tags, calls

    def _resolve(self, family: int, table: str, name: str, side: str, address: Any, members: set[object],
                 depth: int) -> tuple[str, ...]:
        """The chains dispatch chain ``name`` runs for ``address`` on ``side``, in order. A goto
        into a user chain followed by the end of the frame is a jump to it, and a RETURN ends the
        frame, so the nested tree flattens to one list of calls. ``members``: the address-only
        sets holding the address (from the signature's own set tags, as ``IpSet.probe`` decides)."""
        if depth > 64:
            raise ValueError(f"dispatch chains nested over 64 deep at {name}")
        out: list[str] = []
        value = int(address)
        for lo, hi, negated, sets, chain, goto in self._compiled(family, table, name, side):
            if (lo <= value <= hi) == negated:
                continue
            if not all((set_name in members) != set_negated for set_name, set_negated in sets):
                continue
            if chain is None:
                return tuple(out)  # RETURN, the only other target a dispatch chain has
            if self.dispatch.get((family, table, chain)) == side:
                out.extend(self._resolve(family, table, chain, side, address, members, depth + 1))
            else:
                out.append(chain)
            if goto:
                return tuple(out)
        return tuple(out)

    def _compiled(self, family: int, table: str, name: str, side: str) -> list[_DispatchRule]:
        """A dispatch chain's rules as plain values (the walk runs once per endpoint address)."""
        key = (family, table, name, side)
        found = self._dispatch_rules.get(key)
        if found is None:
            found = self._dispatch_rules[key] = [_compile_dispatch(rule, side)
                                                 for rule in self.chains[(family, table)][name].rules]
        return found


# a dispatch rule: the address range it tests (negated or not), its set tests, the chain it calls
# (None: RETURN) and whether by goto
_DispatchRule = tuple[int, int, bool, tuple[tuple[str, bool], ...], str | None, bool]


def _compile_dispatch(rule: IptRule, side: str) -> _DispatchRule:
    match_ = rule.source if side == "src" else rule.destination
    if match_ is None:
        lo, hi, negated = 0, (1 << 128) - 1, False
    else:
        first = int(match_.network.network_address)
        lo, hi, negated = first, first + match_.network.num_addresses - 1, match_.negated
    sets = tuple((m.name, m.negated) for m in rule.matches if isinstance(m, SetMatch))
    chain = getattr(rule.target, "chain", None)
    return lo, hi, negated, sets, chain if isinstance(chain, str) else None, isinstance(rule.target, Goto)


def _set_members(hits: tuple[Hit, ...]) -> set[object]:
    """The address-only sets holding the address: per set, its most specific entry is not a
    nomatch one (``IpSet.probe``)."""
    best: dict[object, tuple[int, object]] = {}
    for tag, length, _ in hits:
        if tag[0] != "set" or tag[3] is not None:
            continue
        if tag[1] not in best or length > best[tag[1]][0]:
            best[tag[1]] = (length, tag[2])
    return {name for name, (_, nomatch) in best.items() if not nomatch}


def _dispatch_side(chain: Any) -> str | None:
    """The one address field a dispatch chain tests ("src"/"dst"), None for any other chain."""
    sides: set[str] = set()
    for rule in chain.rules:
        if rule.protocol is not None or rule.in_interface is not None or rule.out_interface is not None:
            return None
        if rule.source is not None:
            sides.add("src")
        if rule.destination is not None:
            sides.add("dst")
        for match in rule.matches:
            if isinstance(match, SetMatch) and len(match.flags) == 1 and not match.return_nomatch:
                sides.add(match.flags[0])
            elif not isinstance(match, CommentMatch):
                return None
        target = rule.target
        if not (isinstance(target, Jump | Goto) or (isinstance(target, Verdict) and target.name == "RETURN")):
            return None
    return sides.pop() if len(sides) == 1 else None


class _EbpfFeatures(_Features):
    """The ipcache's identity for the address, and the owning endpoint's map and enforcement."""

    def __init__(self, texts: Mapping[str, str]) -> None:
        from verifier.simulate.ebpf import EbpfArtifacts

        self.art = EbpfArtifacts.of(texts)

    def signature(self, address: Any, ep: Endpoint) -> Signature:
        owner = self.art.by_address.get(address)
        if owner is None:
            return (self.art.ipcache.lookup(address), ())
        shape = self.art.shape_id(owner.policy_map) if owner.policy_map in self.art.maps else None
        own = (owner.identity, shape, owner.ingress_enforced, owner.egress_enforced)
        return (self.art.ipcache.lookup(address), own)


class _SourceFeatures(_Features):
    """What selectors see (the view's labels, namespace and service account among them, after
    the profile's label filter), what rules read of the pod (ports for named ports, host
    network, node), and policy networks.

    The pod's raw labels are not part of it: a selector sees only the view's labels, so a label
    the filter hides (``statefulset.kubernetes.io/pod-name``, one value per pod) does not split
    a class in the source semantics any more than it splits the pod's Cilium identity."""

    def __init__(self, source: SourceSpec) -> None:
        from verifier.simulate.source import ReferenceEvaluator

        self.ref = ReferenceEvaluator(source.inputs, source.profile, source.label_filter)
        self.prefixes = _Prefixes()
        for network in self.ref.policy_networks():
            self.prefixes.add(ipaddress.ip_network(str(network)), ("policy",))

    def signature(self, address: Any, ep: Endpoint) -> Signature:
        view = self.ref.view(address)
        pod = view.endpoint
        own: tuple[object, ...] = () if pod is None else (
            pod.namespace, pod.service_account, pod.ports, pod.host_network, pod.node_os, pod.node)
        return (view.kind, tuple(sorted(view.labels, key=repr)), own, self.prefixes.containing(address))
