"""The eBPF artifacts (ipcache + per-endpoint policy maps, read back from their bpftool dumps) as
a formula over a packet.

Semantics of :class:`verifier.simulate.ebpf.EbpfSimulator` (reference/cilium.md §1.7, §2): the
ipcache is a longest-prefix match per family (world 9/10 when nothing matches); each policy map
is an LPM trie over (identity, direction, protocol, port) where an entry of port-prefix ``p``
fixes the identity and direction and the first ``p`` bits of protocol-then-port; per direction
lookup 1 uses the remote identity (a deny hit is final) and lookup 2 identity 0, the L4-only hit
winning when it is a deny, when lookup 1 missed, on higher proxy priority, or on equal priority
with a longer prefix. Source endpoint's egress first, destination endpoint's ingress second; the
first drop decides; otherwise the first non-zero proxy port redirects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter

import z3

from verifier.encoding.terms import (
    KIND_ALLOWED,
    KIND_DROPPED,
    Address,
    ClassAddress,
    Cond,
    SymPacket,
    address_of,
    and_,
    eq,
    excluded_host,
    in_network,
    ite,
    not_,
    or_,
    outcome,
    redirected,
    top_bits,
)
from verifier.simulate.ebpf import WORLD_FALLBACK, EbpfArtifacts, EbpfEndpoint

_ID_BITS = 32

_Stored = tuple[int, int, int, bool, int, int]  # -prefix, protocol, port, deny, proxy port, priority (PlainEntry)
_IDENTITY_EGRESS = itemgetter(0, 1)
_STORED = itemgetter(2)


class _ClassIdentity:
    """The ipcache identity of a :class:`ClassAddress`: one per class, known in advance, so
    "identity is N" is the set of classes whose address has N."""

    def __init__(self, address: ClassAddress, by_number: Mapping[int, set[int]]) -> None:
        """``by_number``: identity → the indices of the classes whose address has it."""
        self.address = address
        self.by_number = by_number

    def is_(self, number: int) -> Cond:
        return self.address.among(self.by_number.get(number, set()))


@dataclass(frozen=True)
class _FreeIdentity:
    """The ipcache identity of a free address: a term, and the identities it can take (a
    lookup need not test the others)."""

    term: z3.BitVecRef
    possible: frozenset[int]


Identity = int | _ClassIdentity | _FreeIdentity


@dataclass(frozen=True)
class _Hit:
    """A lookup result as terms: found, deny, proxy port (16 bits), priority and prefix (8 bits)."""

    found: Cond
    deny: Cond
    proxy: z3.BitVecRef
    priority: z3.BitVecRef
    prefix: z3.BitVecRef

    @staticmethod
    def none() -> _Hit:
        return _Hit(False, False, z3.BitVecVal(0, 16), z3.BitVecVal(0, 8), z3.BitVecVal(0, 8))

    @staticmethod
    def of(deny: bool, proxy_port: int, priority: int, prefix: int) -> _Hit:
        return _Hit(True, deny, z3.BitVecVal(proxy_port, 16), z3.BitVecVal(priority, 8), z3.BitVecVal(prefix, 8))

    def choose(self, cond: Cond, other: _Hit) -> _Hit:
        """``self`` when ``cond``, else ``other``."""
        if cond is True:
            return self
        if cond is False:
            return other
        return _Hit(_ite_bool(cond, self.found, other.found), _ite_bool(cond, self.deny, other.deny),
                    ite(cond, self.proxy, other.proxy), ite(cond, self.priority, other.priority),
                    ite(cond, self.prefix, other.prefix))


def _ite_bool(cond: Cond, a: Cond, b: Cond) -> Cond:
    if a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b):
        return a
    return or_(and_(cond, a), and_(not_(cond), b))


@dataclass(frozen=True)
class _Side:
    """One endpoint's verdict in one direction: dropped, and the proxy port (0: none)."""

    dropped: Cond
    proxy: z3.BitVecRef


_NO_SIDE = _Side(False, z3.BitVecVal(0, 16))


class EbpfEncoding:
    """Outcome formulas over the decoded eBPF artifacts."""

    def __init__(self, artifacts: EbpfArtifacts, excluded: Mapping[int, frozenset[int]] | None = None) -> None:
        """``excluded``: per family, addresses a free address is known not to be
        (verifier/proofs/address_classes.py): their ipcache host entries and endpoints drop out."""
        self.art = artifacts
        self.excluded = excluded or {}
        self._tables: dict[int, dict[tuple[int, int], tuple[_Stored, ...]]] = {}  # id(plain entries) →
        self._pinned: dict[tuple[str, int], object] = {}  # what memo keys name by id (kept alive: _held)
        # id(ClassAddress.values) → (those values, identity → class indices)
        self._class_ids: dict[int, tuple[tuple[int, ...], dict[int, set[int]]]] = {}
        self._hits: dict[tuple[object, ...], _Hit] = {}  # _lookup_one, per map entries and key
        self._class_hits: dict[tuple[object, ...], _Hit] = {}  # lookup, per class address
        self._among_conds: dict[tuple[object, ...], Cond] = {}  # _among
        self._groups: dict[tuple[int, int], list[tuple[int, ...]]] = {}  # _alike
        self._free_ids: dict[tuple[int, str, int], tuple[frozenset[int], _FreeIdentity]] = {}  # identity
        self._family_endpoints: dict[int, list[EbpfEndpoint]] = {}  # outcome

    # --- ipcache ------------------------------------------------------------------------------------

    def identity(self, address: Address, family: int, avoid: frozenset[int] = frozenset()) -> Identity:
        """The ipcache identity of ``address`` (an int when the address is fixed); ``avoid``:
        addresses a free ``address`` is known not to be, besides the excluded ones."""
        if isinstance(address, int):
            return self.art.ipcache.lookup(address_of(address, family))
        if isinstance(address, ClassAddress):
            held, by_number = self._class_ids.get(id(address.values), ((), {}))
            if held is not address.values:  # one ClassSpace per process: computed once per family
                by_number = {}
                for index, value in enumerate(address.values):
                    by_number.setdefault(self.art.ipcache.lookup(address_of(value, family)), set()).add(index)
                self._class_ids[id(address.values)] = (address.values, by_number)
            return _ClassIdentity(address, by_number)
        # the same term for every packet with these variables and exclusions: built once
        key = (family, str(address), id(avoid))
        free = self._free_ids.get(key)
        if free is None or free[0] is not avoid:
            free = self._free_ids[key] = (avoid, self._free_identity(address, family, avoid))
        return free[1]

    def _free_identity(self, address: z3.BitVecRef, family: int, avoid: frozenset[int]) -> _FreeIdentity:
        skip = self.excluded.get(family, frozenset())
        entries = sorted((e for e in self.art.ipcache.entries
                          if e.network.version == family and not excluded_host(address, e.network, skip)
                          and not excluded_host(address, e.network, avoid)),
                         key=lambda e: (-e.network.prefixlen, int(e.network.network_address)))
        term: z3.BitVecRef = z3.BitVecVal(WORLD_FALLBACK[family], _ID_BITS)
        for entry in reversed(entries):
            term = ite(in_network(address, entry.network), z3.BitVecVal(entry.identity, _ID_BITS), term)
        return _FreeIdentity(term, frozenset({WORLD_FALLBACK[family], *(e.identity for e in entries)}))

    # --- policy maps ----------------------------------------------------------------------------------

    def _table(self, name: str) -> dict[tuple[int, int], tuple[_Stored, ...]]:
        """(identity, egress) → the entries the trie keeps, longest prefix first
        (EbpfArtifacts.plain_entries, already in that order)."""
        plain = self.art.plain_entries(name)
        found = self._tables.get(id(plain))  # maps of one content share their plain entries
        if found is None:
            found = self._tables[id(plain)] = {ie: tuple(map(_STORED, run))
                                               for ie, run in groupby(plain, key=_IDENTITY_EGRESS)}
        return found

    def _lookup_one(self, name: str, identity: int, egress: int, packet: SymPacket) -> _Hit:
        # the lookup's terms read only the protocol and port variables, the same in every packet
        key = (id(self.art.plain_entries(name)), identity, egress, self._held(packet.protocol),
               self._held(packet.dport))
        found = self._hits.get(key)
        if found is None:
            found = self._hits[key] = self._lookup_terms(name, identity, egress, packet)
        return found

    def _held(self, value: z3.BitVecRef | ClassAddress | int) -> tuple[str, int]:
        """A memo key for a packet field or class address: a value, a variable's AST id or the
        object's id (what an id names is kept alive, so the id stays its own)."""
        if isinstance(value, int):
            return ("value", value)
        key = ("variable", value.get_id()) if isinstance(value, z3.ExprRef) else ("object", id(value))
        self._pinned[key] = value
        return key

    def _lookup_terms(self, name: str, identity: int, egress: int, packet: SymPacket) -> _Hit:
        hit = _Hit.none()
        for negative_prefix, protocol, port, deny, proxy, priority in reversed(
                self._table(name).get((identity, egress), ())):
            prefix = -negative_prefix
            cond = and_(top_bits(packet.protocol, 8, min(prefix, 8), protocol),
                        top_bits(packet.dport, 16, max(0, prefix - 8), port))
            hit = _Hit.of(deny, proxy, priority, prefix).choose(cond, hit)
        return hit

    def lookup(self, name: str, identity: Identity, egress: int, packet: SymPacket) -> _Hit:
        if isinstance(identity, int):
            return self._lookup_one(name, identity, egress, packet)
        if isinstance(identity, _ClassIdentity):  # the same for every slice of one class space
            key = (id(self.art.plain_entries(name)), egress, self._held(identity.address),
                   self._held(packet.protocol), self._held(packet.dport))
            found = self._class_hits.get(key)
            if found is None:
                found = self._class_hits[key] = self._lookup_groups(name, identity, egress, packet)
            return found
        return self._lookup_groups(name, identity, egress, packet)

    def _lookup_groups(self, name: str, identity: _ClassIdentity | _FreeIdentity, egress: int,
                       packet: SymPacket) -> _Hit:
        hit = _Hit.none()
        for numbers in self._alike(name, egress):
            cond: Cond
            if isinstance(identity, _ClassIdentity):
                cond = self._among(identity, numbers)
            else:
                cond = or_(*(identity.term == n for n in numbers if n in identity.possible))
            if cond is not False:
                hit = self._lookup_one(name, numbers[0], egress, packet).choose(cond, hit)
        return hit

    def _among(self, identity: _ClassIdentity, numbers: tuple[int, ...]) -> Cond:
        """The class address has one of the identities ``numbers`` (a group of one map's lookup;
        groups repeat across the maps that allow the same peers, so each is built once)."""
        key = (self._held(identity.address), numbers)
        found = self._among_conds.get(key)
        if found is None:
            by_number = identity.by_number
            found = self._among_conds[key] = identity.address.among(
                set().union(*(by_number.get(n, set()) for n in numbers)))
        return found

    def _alike(self, name: str, egress: int) -> list[tuple[int, ...]]:
        """The remote identities of a map's direction, grouped by equal entries (a rule allowing
        many identities gives each the same entries, and a lookup tells them apart only by that)."""
        key = (id(self.art.plain_entries(name)), egress)
        found = self._groups.get(key)
        if found is None:  # both directions at once
            groups: tuple[dict[tuple[_Stored, ...], list[int]], ...] = ({}, {})
            for (number, direction), entries in self._table(name).items():
                groups[direction].setdefault(entries, []).append(number)
            for direction, by_entries in enumerate(groups):
                self._groups[(key[0], direction)] = [tuple(numbers) for numbers in by_entries.values()]
            found = self._groups[key]
        return found

    def side(self, ep: EbpfEndpoint, egress: int, remote: Identity, packet: SymPacket) -> _Side:
        """``__policy_can_access`` for one endpoint and direction (EbpfSimulator._direction)."""
        l3 = self.lookup(ep.policy_map, remote, egress, packet)
        l4 = self.lookup(ep.policy_map, 0, egress, packet)
        final_l3 = and_(l3.found, l3.deny)
        better = and_(l4.found, or_(l4.deny, not_(l3.found), z3.UGT(l4.priority, l3.priority),
                                    and_(l4.priority == l3.priority, z3.UGT(l4.prefix, l3.prefix))))
        chosen = l4.choose(and_(not_(final_l3), better), l3)
        dropped = or_(not_(chosen.found), chosen.deny)
        return _Side(dropped, ite(dropped, z3.BitVecVal(0, 16), chosen.proxy))

    # --- one flow ------------------------------------------------------------------------------------

    def _endpoint_side(self, address: Address, family: int, egress: int, remote_address: Address,
                       packet: SymPacket, candidates: Sequence[EbpfEndpoint]) -> _Side:
        """The side of whichever endpoint owns ``address`` (none: no side)."""
        if isinstance(address, ClassAddress):
            raise ValueError("a whole-flow outcome over a class address (half-flow slices only)")
        if isinstance(address, int):
            ep = self.art.by_address.get(address_of(address, family))
            if ep is None:
                return _NO_SIDE
            return self.side(ep, egress, self.identity(remote_address, family, packet.avoided(remote_address)),
                             packet)
        remote = self.identity(remote_address, family, packet.avoided(remote_address))
        groups: dict[int, list[EbpfEndpoint]] = {}
        for ep in candidates:
            groups.setdefault(self._map_shape(ep), []).append(ep)
        dropped: Cond = False
        proxy: z3.BitVecRef = z3.BitVecVal(0, 16)
        skip = self.excluded.get(family, frozenset()) | packet.avoided(address)
        for members in groups.values():
            owns = or_(*(eq(address, int(ip)) for ep in members for ip in ep.ips
                         if ip.version == family and int(ip) not in skip))
            if owns is False:
                continue
            side = self.side(members[0], egress, remote, packet)
            dropped = or_(and_(owns, side.dropped), dropped)
            proxy = ite(owns, side.proxy, proxy)
        return _Side(dropped, proxy)

    def half(self, packet: SymPacket, side: str) -> z3.BitVecRef:
        """The outcome of one endpoint's half of a flow: the egress (``side="src"``) or ingress
        (``"dst"``) lookup of the endpoint owning that address against the other address's
        identity (allowed when no endpoint owns it). :meth:`outcome` is these two composed:
        either drop drops, else the egress proxy port redirects first."""
        family = packet.family
        own, remote = (packet.src, packet.dst) if side == "src" else (packet.dst, packet.src)
        if not isinstance(own, int):  # a free address no endpoint has (the slice says so)
            return outcome(KIND_ALLOWED)
        ep = self.art.by_address.get(address_of(own, family))
        if ep is None:
            return outcome(KIND_ALLOWED)
        result = self.side(ep, 1 if side == "src" else 0,
                           self.identity(remote, family, packet.avoided(remote)), packet)
        return ite(result.dropped, outcome(KIND_DROPPED), _redirect_or(result.proxy, outcome(KIND_ALLOWED)))

    def _map_shape(self, ep: EbpfEndpoint) -> int:
        """Endpoints whose maps hold the same entries behave the same (the compiler shares them)."""
        return self.art.shape_id(ep.policy_map)

    def outcome(self, packet: SymPacket) -> z3.BitVecRef:
        """The 18-bit outcome of ``packet`` (EbpfSimulator.evaluate)."""
        family = packet.family
        endpoints = self._family_endpoints.get(family)
        if endpoints is None:
            endpoints = self._family_endpoints[family] = [ep for ep in self.art.endpoints
                                                          if any(ip.version == family for ip in ep.ips)]
        egress = self._endpoint_side(packet.src, family, 1, packet.dst, packet, endpoints)
        ingress = self._endpoint_side(packet.dst, family, 0, packet.src, packet, endpoints)
        term = _redirect_or(egress.proxy, _redirect_or(ingress.proxy, outcome(KIND_ALLOWED)))
        return ite(or_(egress.dropped, ingress.dropped), outcome(KIND_DROPPED), term)


def _redirect_or(proxy: z3.BitVecRef, otherwise: z3.BitVecRef) -> z3.BitVecRef:
    """Redirected to ``proxy`` when it is not 0, else ``otherwise``."""
    return ite(proxy != 0 if not _zero(proxy) else False, redirected(proxy), otherwise)


def _zero(term: z3.BitVecRef) -> bool:
    return bool(z3.is_bv_value(term)) and term.as_long() == 0


__all__ = ["EbpfEncoding"]
