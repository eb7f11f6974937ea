"""Concrete flows through the eBPF artifacts, the way Cilium 1.18's datapath looks them up.

Reads ``OUT/ebpf/`` back as the kernel gets it — the ``key``/``value`` byte arrays of the bpftool
JSON, never the ``formatted`` objects nor compiler objects (DESIGN §1: the verifier does not trust
the compiler) — and answers one flow:

1. ipcache LPM (reference/cilium.md §2): the identity of the remote address of each direction;
   an address in no prefix is world (``WORLD_IPV4_ID``/``WORLD_IPV6_ID`` 9/10, §2).
2. Per direction (source endpoint's egress, then destination endpoint's ingress — the order of
   ``compiler.flow.Decision.combine``), ``__policy_can_access`` (§1.7): lookup 1 with the real
   identity (a deny hit is final), lookup 2 with identity 0, the L4-only entry chosen when it is
   a deny, when there is no L3 hit, when its proxy-port priority is higher, or on equal priority
   when its prefix is strictly longer.
3. Verdict: no entry → drop 133 (Policy denied), deny → drop 181 (Policy denied by denylist),
   otherwise allowed, redirected when the entry has a proxy port.

Cost is counted as the datapath pays it: ipcache lookups and policy-map lookups. L7 requests are
Envoy's business (verifier/simulate/envoy.py); here a redirect is only the proxy port.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from compiler.flow import Decision, Direction, DropReason, Flow, IPAddress, Verdict
from compiler.targets import proxyports
from compiler.targets.ebpf.layout import (
    POLICY_FULL_PREFIX,
    POLICY_STATIC_PREFIX,
    IpcacheEntry,
    PolicyEntry,
    PolicyKey,
    entry_bytes,
)

T = TypeVar("T")

WORLD_FALLBACK = {4: 9, 6: 10}  # WORLD_IPV4_ID / WORLD_IPV6_ID (reference/cilium.md §2)

#: POLICY_MATCH_* as monitor and Hubble print them (reference/cilium.md §1.7 item 7).
MATCH_NONE = "none"
MATCH_L3_ONLY = "L3-Only"
MATCH_L3_L4 = "L3-L4"
MATCH_L4_ONLY = "L4-Only"
MATCH_ALL = "all"
MATCH_L3_PROTO = "L3-Proto"
MATCH_PROTO_ONLY = "Proto-Only"


class ArtifactError(ValueError):
    """An eBPF artifact that does not decode (names the file)."""


def match_type(key: PolicyKey | None) -> str:
    if key is None:
        return MATCH_NONE
    if key.port_prefix == 0:
        return MATCH_ALL if key.identity == 0 else MATCH_L3_ONLY
    if key.port_prefix == 8:
        return MATCH_PROTO_ONLY if key.identity == 0 else MATCH_L3_PROTO
    return MATCH_L4_ONLY if key.identity == 0 else MATCH_L3_L4


# --- maps -------------------------------------------------------------------------------------

class PolicyMap:
    """An LPM trie over bytes 4..11 of ``policy_key`` (64 data bits), read from its bpftool dump.
    ``entries`` come decoded by :func:`_checked_entry` (their prefixes checked)."""

    def __init__(self, name: str, entries: list[tuple[PolicyKey, PolicyEntry]]) -> None:
        self.name = name
        self.entries = entries
        self._trie = _Trie(entries)

    def stored(self) -> list[tuple[PolicyKey, PolicyEntry]]:
        """The entries the trie holds: one per (prefix length, masked key), the last written."""
        return [item for by_key in self._trie.by_len.values() for item in by_key.values()]

    def renamed(self, name: str) -> PolicyMap:
        """The same map under another endpoint's name (entries and index shared, not copied)."""
        twin = object.__new__(PolicyMap)
        twin.name, twin.entries, twin._trie = name, self.entries, self._trie
        return twin

    def lookup(self, identity: int, egress: int, protocol: int, port: int) -> tuple[PolicyKey, PolicyEntry] | None:
        """Longest-prefix match of a full (prefix 64) lookup key."""
        data = PolicyKey(identity, egress, protocol, port, POLICY_FULL_PREFIX - POLICY_STATIC_PREFIX).data_bits()
        for bits in self._trie.lengths:
            hit = self._trie.by_len[bits].get(data >> (POLICY_FULL_PREFIX - bits))
            if hit is not None:
                return hit
        return None


class _Trie:
    """A policy map's entries by prefix length, then by masked key bits. Built on the first
    lookup (the proofs read :meth:`EbpfArtifacts.plain_entries` instead), once for a map and
    its renamed twins."""

    def __init__(self, entries: list[tuple[PolicyKey, PolicyEntry]]) -> None:
        self.entries = entries

    @cached_property
    def by_len(self) -> dict[int, dict[int, tuple[PolicyKey, PolicyEntry]]]:
        found: dict[int, dict[int, tuple[PolicyKey, PolicyEntry]]] = {}
        for key, entry in self.entries:
            found.setdefault(key.prefixlen, {})[key.trie_bits] = (key, entry)
        return found

    @cached_property
    def lengths(self) -> list[int]:
        return sorted(self.by_len, reverse=True)


def check_prefixes(key: PolicyKey, entry: PolicyEntry) -> None:
    """The entry copies its key's prefix length (Cilium's PolicyEntry.IsValid); ValueError if not."""
    if entry.port_prefix != key.port_prefix:
        raise ValueError(f"entry prefix {entry.port_prefix} != key prefix {key.port_prefix} "
                         "(Cilium's PolicyEntry.IsValid fails)")


#: A stored policy entry as plain values, ordered as a lookup tries them within one remote
#: identity and direction (longest prefix first): (identity, egress, (-port prefix, protocol,
#: port, deny, proxy port, priority)), protocol and port masked to the prefix as the trie keeps
#: them. The auth type is left out: no verdict reads it (reference/cilium.md §1.7).
PlainEntry = tuple[int, int, tuple[int, int, int, bool, int, int]]


def _plain(key: PolicyKey, entry: PolicyEntry) -> tuple[int, PlainEntry]:
    """The trie slot an entry is stored under, as one number ordered like (identity, egress,
    -prefix, protocol, port) (numbers sort faster than tuples), and the entry as plain values."""
    prefix = key.port_prefix
    protocol = key.protocol >> (8 - min(prefix, 8)) << (8 - min(prefix, 8)) if prefix else 0
    port_bits = max(0, prefix - 8)
    port = key.port >> (16 - port_bits) << (16 - port_bits) if port_bits else 0
    slot = key.identity << 56 | key.egress << 48 | (255 - prefix) << 24 | protocol << 16 | port
    return slot, (key.identity, key.egress, (-prefix, protocol, port, entry.deny, entry.proxy_port, entry.priority))


class Ipcache:
    """``cilium_ipcache_v2`` as an LPM per address family."""

    def __init__(self, entries: list[IpcacheEntry]) -> None:
        self.entries = entries
        self._by_len: dict[tuple[int, int], dict[int, int]] = {}
        for entry in entries:
            net = entry.network
            self._by_len.setdefault((net.version, net.prefixlen), {})[int(net.network_address)] = entry.identity
        self._lengths = sorted(self._by_len, key=lambda k: -k[1])

    def lookup(self, address: IPAddress) -> int:
        width = 32 if address.version == 4 else 128
        value = int(address)
        for version, bits in self._lengths:
            if version != address.version:
                continue
            masked = (value >> (width - bits)) << (width - bits) if bits else 0
            found = self._by_len[(version, bits)].get(masked)
            if found is not None:
                return found
        return WORLD_FALLBACK[address.version]


@dataclass(frozen=True)
class EbpfEndpoint:
    id: int
    key: str
    ips: tuple[IPAddress, ...]
    identity: int
    policy_map: str
    ingress_enforced: bool
    egress_enforced: bool


# --- results ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DirectionLookup:
    """One endpoint's policy check in one direction: what was looked up and what was chosen."""

    direction: Direction
    endpoint: str
    endpoint_id: int
    enforced: bool
    remote_identity: int
    allowed: bool
    reason: DropReason | None
    match: str
    proxy_port: int
    chosen: PolicyKey | None
    policy_lookups: int

    def describe(self) -> str:
        reason = f"drop {int(self.reason)} ({self.reason.text})" if self.reason is not None else "drop"
        verdict = "allow" if self.allowed else reason
        redirect = f", proxy port {self.proxy_port}" if self.proxy_port else ""
        chosen = f" entry {self.chosen}" if self.chosen else ""
        return (f"{self.direction.value} {self.endpoint} (ep {self.endpoint_id}) remote id {self.remote_identity}: "
                f"{verdict}, match {self.match}{redirect}{chosen}")


@dataclass(frozen=True)
class EbpfResult:
    flow: Flow
    verdict: Verdict
    drop_reason: DropReason | None
    src_identity: int
    dst_identity: int
    egress: DirectionLookup | None
    ingress: DirectionLookup | None
    ipcache_lookups: int
    policy_lookups: int
    trace: tuple[str, ...] = field(default=())

    @property
    def allowed(self) -> bool:
        return self.verdict is not Verdict.DROPPED


# --- the artifacts and the simulator ----------------------------------------------------------

class EbpfArtifacts:
    """``OUT/ebpf/`` decoded: endpoints, ipcache, and every endpoint's policy map."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.endpoints = [self._endpoint(e) for e in self._json(files, "endpoints.json")]
        self.ipcache = Ipcache(self.map_entries(files, "ipcache.json", IpcacheEntry.decode))
        self.maps: dict[str, PolicyMap] = {}
        # the endpoints of one identity usually have byte-identical maps: decode each text once
        by_text: dict[str, PolicyMap] = {}
        memo: dict[str, tuple[PolicyKey, PolicyEntry]] = {}
        for ep in self.endpoints:
            name = f"{ep.policy_map}.json"
            text = files.get(name)
            same = by_text.get(text) if text is not None else None
            if same is not None:
                self.maps[ep.policy_map] = same.renamed(ep.policy_map)
                continue
            entries = self.map_entries(files, name, _checked_entry, memo=memo)
            self.maps[ep.policy_map] = PolicyMap(ep.policy_map, entries)
            if text is not None:
                by_text[text] = self.maps[ep.policy_map]
        self.by_address = {ip: ep for ep in self.endpoints for ip in ep.ips}
        self._shapes: dict[tuple[PlainEntry, ...], int] = {}
        # id(PolicyMap.entries) → (plain entries, shape_id); the maps keep their entries alive
        self._plain_maps: dict[int, tuple[tuple[PlainEntry, ...], int]] = {}
        self._plain: dict[int, tuple[int, PlainEntry]] = {}  # id(decoded entry) → _plain (ditto)

    def plain_entries(self, name: str) -> tuple[PlainEntry, ...]:
        """The entries map ``name``'s trie holds (the last written per slot) as plain values,
        in lookup order. Computed once per decoded text (renamed twins share their entries) and
        each decoded entry made plain once (the maps of a cluster share them)."""
        return self._plain_map(name)[0]

    def shape_id(self, name: str) -> int:
        """A number per distinct content among this set's maps (:meth:`plain_entries`):
        endpoints whose maps have one number behave the same (the compiler gives the endpoints
        of one identity equal maps)."""
        return self._plain_map(name)[1]

    def _plain_map(self, name: str) -> tuple[tuple[PlainEntry, ...], int]:
        entries = self.maps[name].entries
        found = self._plain_maps.get(id(entries))
        if found is None:
            made = self._plain
            pairs = list(map(made.get, map(id, entries)))
            if None in pairs:
                for index, item in enumerate(entries):
                    if pairs[index] is None:
                        pairs[index] = made[id(item)] = _plain(*item)
            # dict: the last entry written to a slot wins, as in the trie; sorted slots: lookup order
            table: dict[int, PlainEntry] = dict(pairs)  # type: ignore[arg-type]
            stored = tuple(map(table.__getitem__, sorted(table)))
            found = self._plain_maps[id(entries)] = (stored, self._shapes.setdefault(stored, len(self._shapes)))
        return found

    @classmethod
    def of(cls, files: Mapping[str, str]) -> EbpfArtifacts:
        """The artifacts of ``files``, decoded once per mapping object: a verify run reads one
        artifact set for the simulators, the address classes and every proof, and forked proof
        workers inherit what the parent decoded."""
        for held, artifacts in _DECODED:
            if held is files:
                return artifacts
        artifacts = cls(files)
        _DECODED.append((files, artifacts))
        del _DECODED[:-4]
        return artifacts

    @classmethod
    def from_dir(cls, path: str | Path) -> EbpfArtifacts:
        """Read a compile output directory (``OUT`` or ``OUT/ebpf``)."""
        root = Path(path)
        if (root / "ebpf").is_dir():
            root = root / "ebpf"
        return cls({p.name: p.read_text() for p in root.iterdir() if p.suffix == ".json"})

    @staticmethod
    def _json(files: Mapping[str, str], name: str) -> list[Any]:
        if name not in files:
            raise ArtifactError(f"{name}: missing")
        try:
            doc = json.loads(files[name])
        except ValueError as err:
            raise ArtifactError(f"{name}: not JSON ({err})") from None
        if not isinstance(doc, list):
            raise ArtifactError(f"{name}: expected a JSON list")
        return doc

    @staticmethod
    def _endpoint(doc: Any) -> EbpfEndpoint:
        try:
            return EbpfEndpoint(int(doc["id"]), f"{doc['namespace']}/{doc['name']}",
                                tuple(ipaddress.ip_address(ip) for ip in doc["ips"]), int(doc["identity"]),
                                str(doc["policy_map"]), bool(doc["ingress_enforced"]), bool(doc["egress_enforced"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"endpoints.json: bad endpoint {doc!r}: {err}") from None

    @classmethod
    def map_entries(cls, files: Mapping[str, str], name: str, decode: Callable[[bytes, bytes], T], *,
                    optional: bool = False, memo: dict[str, T] | None = None) -> list[T]:
        """Every entry of one dumped map, decoded; a clear error naming the file and entry for
        anything else (an ``optional`` map that is absent has no entries)."""
        if optional and name not in files:
            return []
        fast = _canonical_entries(files.get(name, ""), decode, {} if memo is None else memo)
        if fast is not None:
            return fast
        out = []
        for index, doc in enumerate(cls._json(files, name)):
            try:
                out.append(decode(*entry_bytes(doc)))
            except (KeyError, TypeError, ValueError) as err:
                raise ArtifactError(f"{name}: entry {index}: {err}") from None
        return out


_DECODED: list[tuple[Mapping[str, str], EbpfArtifacts]] = []  # EbpfArtifacts.of, newest last


def _checked_entry(key_bytes: bytes, value_bytes: bytes) -> tuple[PolicyKey, PolicyEntry]:
    """One policy-map entry, its prefixes checked (ValueError: map_entries names the file and
    entry; a line decoded for an earlier map was checked there)."""
    key, entry = PolicyKey.decode(key_bytes), PolicyEntry.decode(value_bytes)
    check_prefixes(key, entry)
    return key, entry

# One entry of a dump exactly as compiler/targets/ebpf/target.py writes it (sorted keys, no
# spaces, one entry per line): ``formatted`` (a flat reading the verifier never uses) and the
# key and value bytes. A text made of such lines is read line by line, each distinct line decoded
# once, a hundred times faster than JSON and with the same bytes; any other text (bpftool's own
# output, a hand edit, a broken file) goes through ``json`` and gets its precise error.
_BYTES = r'"0x[0-9a-f]{2}"(?:,"0x[0-9a-f]{2}")*'
_ENTRY = re.compile(r'\{"formatted":\{[a-z0-9_":,.{}]*\},"key":\[(' + _BYTES + r')\],"value":\[(' + _BYTES + r')\]\}')


def _canonical_entries(text: str, decode: Callable[[bytes, bytes], T], seen: dict[str, T]) -> list[T] | None:
    """The entries of a dump in the compiler's own layout (None: not in that layout): ``[``, one
    entry per line (a comma after all but the last), ``]``, an optional final newline. Equal
    lines decode once (``seen``, shared by the maps of one artifact set: a cluster's maps repeat
    a few thousand entries many times), and a line seen before costs one dictionary probe."""
    body = text[:-1] if text.endswith("\n") else text
    if body == "[]":
        return []
    if not (body.startswith("[\n") and body.endswith("\n]")) or len(body) < 5:
        return None
    # a missing comma, a stray line break or an empty line leaves a piece the entry pattern refuses
    lines = body[2:-2].split(",\n")
    items = list(map(seen.get, lines))
    for index in [i for i, item in enumerate(items) if item is None] if None in items else ():
        line = lines[index]
        item = seen.get(line)  # an earlier line of this text may have been the first of its kind
        if item is None:
            match = _ENTRY.fullmatch(line)
            if match is None:
                return None
            try:
                item = seen[line] = decode(*(bytes.fromhex(part.replace('"0x', "").replace('"', "").replace(",", ""))
                                             for part in match.groups()))
            except ValueError:
                return None  # let the careful reader name the entry and the fault
        items[index] = item
    return items  # type: ignore[return-value]


class EbpfSimulator:
    """Flow → :class:`EbpfResult` over decoded artifacts."""

    def __init__(self, artifacts: EbpfArtifacts) -> None:
        self.artifacts = artifacts

    def evaluate(self, flow: Flow) -> EbpfResult:
        art = self.artifacts
        src_ep, dst_ep = art.by_address.get(flow.src), art.by_address.get(flow.dst)
        ipcache_lookups = 0
        src_id = dst_id = -1
        egress = ingress = None
        if src_ep is not None:
            dst_id = art.ipcache.lookup(flow.dst)
            ipcache_lookups += 1
            egress = self._direction(Direction.EGRESS, src_ep, dst_id, flow)
        if dst_ep is not None:
            src_id = art.ipcache.lookup(flow.src)
            ipcache_lookups += 1
            ingress = self._direction(Direction.INGRESS, dst_ep, src_id, flow)
        trace = tuple(side.describe() for side in (egress, ingress) if side is not None) or (
            f"no endpoint has {flow.src} or {flow.dst}: no policy lookup, forwarded",)
        lookups = sum(side.policy_lookups for side in (egress, ingress) if side is not None)
        verdict, reason = Verdict.FORWARDED, None
        for side in (egress, ingress):
            if side is not None and not side.allowed:
                verdict, reason = Verdict.DROPPED, side.reason
                break
        else:
            if any(side is not None and side.proxy_port for side in (egress, ingress)):
                verdict = Verdict.REDIRECTED
        return EbpfResult(flow, verdict, reason, src_id, dst_id, egress, ingress, ipcache_lookups, lookups, trace)

    def _direction(self, direction: Direction, ep: EbpfEndpoint, remote: int, flow: Flow) -> DirectionLookup:
        policy_map = self.artifacts.maps[ep.policy_map]
        egress = 1 if direction is Direction.EGRESS else 0
        enforced = ep.egress_enforced if egress else ep.ingress_enforced
        proto, port = int(flow.protocol), flow.port
        l3 = policy_map.lookup(remote, egress, proto, port)
        lookups = 1
        chosen = l3
        if l3 is None or not l3[1].deny:  # a deny on the real identity is final (§1.7 step 2)
            l4 = policy_map.lookup(0, egress, proto, port)
            lookups = 2
            if l4 is not None and (l4[1].deny or l3 is None or l4[1].priority > l3[1].priority
                                   or (l4[1].priority == l3[1].priority and l4[1].port_prefix > l3[1].port_prefix)):
                chosen = l4
        if chosen is None:
            return DirectionLookup(direction, ep.key, ep.id, enforced, remote, False, DropReason.POLICY_DENIED,
                                   MATCH_NONE, 0, None, lookups)
        key, entry = chosen
        if entry.deny:
            return DirectionLookup(direction, ep.key, ep.id, enforced, remote, False, DropReason.POLICY_DENY,
                                   match_type(key), 0, key, lookups)
        return DirectionLookup(direction, ep.key, ep.id, enforced, remote, True, None, match_type(key),
                               entry.proxy_port, key, lookups)


# --- comparison with the IR evaluator ---------------------------------------------------------

def redirect_port(parser: str | None, direction: Direction) -> int:
    """The proxy port an IR redirect means (compiler/targets/proxyports.py), 0 for none."""
    return 0 if parser is None else proxyports.proxy_port(parser, direction)


def compare_with_ir(ir: Decision, sim: EbpfResult) -> list[str]:
    """Differences at L3/L4 and redirect: per direction present/allowed/reason/proxy port, and
    the flow's L3/L4 outcome. L7 request outcomes are Envoy's, so an IR drop by the proxy counts
    as allowed at L3/L4 here."""
    out: list[str] = []
    for name, left, right in (("egress", ir.egress, sim.egress), ("ingress", ir.ingress, sim.ingress)):
        if (left is None) != (right is None):
            out.append(f"{name}: IR {'checks' if left else 'does not check'} it, eBPF "
                       f"{'checks' if right else 'does not'}")
            continue
        if left is None or right is None:
            continue
        if left.allowed != right.allowed or left.reason != right.reason:
            out.append(f"{name}: IR {'allow' if left.allowed else left.reason}, eBPF "
                       f"{'allow' if right.allowed else right.reason} ({right.describe()})")
        want = redirect_port(left.redirect, left.direction) if left.allowed else 0
        if want != right.proxy_port:
            out.append(f"{name}: IR redirect {left.redirect} (port {want}), eBPF proxy port {right.proxy_port}")
    ir_l34 = ir.allowed or ir.l7_denied
    if ir_l34 != sim.allowed:
        out.append(f"flow: IR {'allowed' if ir_l34 else 'dropped'} at L3/L4, eBPF {sim.verdict.value}")
    elif not ir_l34 and ir.drop_reason != sim.drop_reason:
        out.append(f"flow: IR drop reason {ir.drop_reason}, eBPF {sim.drop_reason}")
    return out
