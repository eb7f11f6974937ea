"""Where a packet to a Service goes, and what finding out costs, on each datapath, read back from the
artifacts: kube-proxy's nat table (``OUT/iptables/services.v4``) and Cilium's lb maps
(``OUT/ebpf/cilium_lb4_*.json``).

kube-proxy (reference/iptables.md §4.1-4.2): only the first packet of a connection traverses nat;
it walks PREROUTING (OUTPUT for the node's own connections) → KUBE-SERVICES, a linear scan that
every new connection pays, to a service or to the end (a pod address is no service: the scan runs
to the NodePorts rule), then KUBE-SVC (the ``statistic`` draws) and KUBE-SEP (DNAT). Later packets
follow the conntrack entry and skip nat.

Cilium (bpf/lib/lb.h ``lb4_local``): every packet from a pod looks up the service map (slot 0); a
miss means "no service". A new connection then looks up a random slot and its backend (three
lookups); an established one reads the backend its conntrack entry names (two).

The random choices (``statistic --mode random``, the slot) are drawn from a hash of the flow and
the rule, so a flow always meets the same backend and flows spread as the probabilities say.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from compiler.flow import Flow
from verifier.artifacts.models import (
    AddrtypeMatch,
    CommentMatch,
    Dnat,
    Goto,
    IptRule,
    Jump,
    MarkMatch,
    MarkTarget,
    PortMatch,
    Ruleset,
    StatisticMatch,
    Verdict,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_MAX_DEPTH = 16


class ServiceSimulationError(ValueError):
    """The nat table holds something the kube-proxy walk does not model."""


@dataclass(frozen=True)
class ServiceLookup:
    """Where the connection goes (the backend, or the original destination) and the work done."""

    address: IPAddress
    port: int
    service: bool  # whether a Service frontend matched
    rules_evaluated: int = 0  # kube-proxy: nat rules walked
    lookups: int = 0  # Cilium: lb map lookups
    trace: tuple[str, ...] = field(default=())


def _draw(flow: Flow, sport: int, where: str) -> float:
    """A uniform draw in [0, 1) fixed by the flow and the place it is drawn for."""
    text = f"{flow.src}|{sport}|{flow.dst}|{flow.port}|{int(flow.protocol)}|{where}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def lb_slot(flow: Flow, sport: int, count: int) -> int:
    """The backend slot (1..count) Cilium's random selection gives this connection here."""
    return 1 + int(_draw(flow, sport, "lb-slot") * count)


class KubeProxySimulator:
    """kube-proxy's nat table, walked for the first packet of a connection.

    Built from parsed rulesets, or with :meth:`from_texts` from the files themselves, read chain by
    chain as walks reach them: a 5,000-Service table holds over 100,000 rules, of which one walk
    needs KUBE-SERVICES and a Service's own chains (each chain is read by the same grammar, and its
    errors name the line in the file).
    """

    def __init__(self, rulesets: Mapping[int, Ruleset], node_address: IPAddress) -> None:
        self.rulesets = dict(rulesets)
        self.node = node_address
        self._indexes: dict[tuple[int, str], _Index] = {}
        self._lazy: dict[int, _LazyNat] = {}

    @classmethod
    def from_texts(cls, texts: Mapping[int, tuple[str, str]], node_address: IPAddress) -> KubeProxySimulator:
        """``family → (text, path)`` of services files, read lazily."""
        sim = cls({}, node_address)
        sim._lazy = {family: _LazyNat(text, path, family) for family, (text, path) in texts.items()}
        return sim

    def rules(self, family: int, chain: str) -> tuple[IptRule, ...]:
        lazy = self._lazy.get(family)
        if lazy is not None:
            return lazy.rules(chain)
        return self.rulesets[family].chain("nat", chain).rules

    def has_family(self, family: int) -> bool:
        ruleset = self.rulesets.get(family)
        return family in self._lazy or (ruleset is not None and "nat" in ruleset.tables)

    def index(self, family: int, chain: str) -> _Index:
        """The chain's leading run of simple rules, keyed for a direct lookup (built once)."""
        key = (family, chain)
        if key not in self._indexes:
            self._indexes[key] = _Index.of(self.rules(family, chain))
        return self._indexes[key]

    def resolve(self, flow: Flow, sport: int = 40000, *, from_node: bool = False) -> ServiceLookup:
        """The DNAT the first packet of ``flow`` gets (none: its own destination), with the rules walked."""
        family = flow.dst.version
        if not self.has_family(family):
            return ServiceLookup(flow.dst, flow.port, False, trace=("no nat table: no Services",))
        state = _Walk(flow, sport, self.node, lambda chain: self.rules(family, chain),
                      lambda chain: self.index(family, chain))
        dnat = state.run("OUTPUT" if from_node else "PREROUTING", 0)
        if dnat is None:
            return ServiceLookup(flow.dst, flow.port, False, state.rules, trace=tuple(state.trace))
        return ServiceLookup(dnat.address, dnat.port or flow.port, True, state.rules, trace=tuple(state.trace))


@dataclass(frozen=True)
class _Index:
    """A chain's first ``length`` rules all match exactly one (destination address, protocol, port)
    — KUBE-SERVICES' service rules — so the first of them a packet matches is a dictionary lookup,
    and every rule before it is known not to match: the walk counts them without testing each."""

    length: int
    first: Mapping[tuple[object, int, int], int]

    @classmethod
    def of(cls, rules: tuple[IptRule, ...]) -> _Index:
        first: dict[tuple[object, int, int], int] = {}
        length = 0
        for i, rule in enumerate(rules):
            key = _simple_key(rule)
            if key is None:
                break
            first.setdefault(key, i)
            length = i + 1
        return cls(length, first)


def _simple_key(rule: IptRule) -> tuple[object, int, int] | None:
    """(address, protocol, port) when the rule matches exactly that and nothing else."""
    dst, proto = rule.destination, rule.protocol
    if (rule.source is not None or dst is None or dst.negated or proto is None or proto.negated
            or dst.network.num_addresses != 1 or rule.in_interface or rule.out_interface):
        return None
    port = None
    for match in rule.matches:
        if isinstance(match, CommentMatch):
            continue
        if (isinstance(match, PortMatch) and match.sport is None and match.dport is not None
                and not match.dport_negated and match.dport.first == match.dport.last and port is None):
            port = match.dport.first
            continue
        return None
    return None if port is None else (dst.network.network_address, proto.number, port)


class _LazyNat:
    """A services file split by chain; each chain parsed on first use."""

    def __init__(self, text: str, path: str, family: int) -> None:
        self.path, self.family = path, family
        self.lines: dict[str, list[int]] = {}  # chain → line numbers of its -A lines
        self.declared: dict[str, int] = {}
        self.text_lines = text.split("\n")
        for number, line in enumerate(self.text_lines, 1):
            if line.startswith("-A "):
                self.lines.setdefault(line.split(None, 2)[1], []).append(number)
            elif line.startswith(":"):
                self.declared[line[1:].split(None, 1)[0]] = number
        self._parsed: dict[str, tuple[IptRule, ...]] = {}

    def rules(self, chain: str) -> tuple[IptRule, ...]:
        found = self._parsed.get(chain)
        if found is None:
            found = self._parsed[chain] = self._parse(chain)
        return found

    def _parse(self, chain: str) -> tuple[IptRule, ...]:
        from verifier.artifacts import read_services
        from verifier.artifacts.models import ArtifactError

        if chain not in self.declared:
            raise ArtifactError(self.path, 0, f"chain {chain!r} is not declared in the nat table")
        numbers = self.lines.get(chain, [])
        targets = {word for n in numbers for word in self.text_lines[n - 1].split() if word in self.declared}
        declarations = sorted(self.declared[c] for c in targets | {chain})
        origin = [0, *declarations, *numbers, 0]
        text = "\n".join(["*nat", *(self.text_lines[n - 1] for n in origin[1:-1]), "COMMIT", ""])
        try:
            ruleset = read_services(text, self.path, self.family)  # type: ignore[arg-type]
        except ArtifactError as err:
            line = origin[err.line - 1] if 0 < err.line <= len(origin) else err.line
            raise ArtifactError(self.path, line, err.message, err.column) from None
        return ruleset.chain("nat", chain).rules


class _Walk:
    def __init__(self, flow: Flow, sport: int, node: IPAddress, rules: Callable[[str], tuple[IptRule, ...]],
                 index: Callable[[str], _Index]) -> None:
        self.flow, self.sport, self.node = flow, sport, node
        self.chain_rules = rules
        self.index = index
        self.mark = 0
        self.rules = 0
        self.trace: list[str] = []

    def run(self, chain: str, depth: int) -> Dnat | None:
        """Walk ``chain``; a DNAT ends the walk (nat's verdict for the connection)."""
        if depth > _MAX_DEPTH:
            raise ServiceSimulationError(f"nat chain calls nest deeper than {_MAX_DEPTH}")
        rules = self.chain_rules(chain)
        index = self.index(chain)
        flow = self.flow
        hit = index.first.get((flow.dst, int(flow.protocol), flow.port))
        start = index.length if hit is None else hit  # the simple rules before it do not match
        self.rules += start
        for number, rule in enumerate(rules[start:], start + 1):
            self.rules += 1
            if not self._matches(rule, f"{chain}#{number}"):
                continue
            self.trace.append(f"nat/{chain}#{number}: {rule.raw.strip() or rule.target}")
            target = rule.target
            if isinstance(target, Dnat):
                return target
            if isinstance(target, Jump | Goto):
                found = self.run(target.chain, depth + 1)
                if found is not None or isinstance(target, Goto):
                    return found
            elif isinstance(target, MarkTarget):
                self.mark = target.apply(self.mark)
            elif isinstance(target, Verdict):
                return None  # ACCEPT ends nat's traversal, RETURN this chain: no translation either way
            elif target is not None:
                raise ServiceSimulationError(f"nat/{chain}#{number}: target {target!r} is not modelled")
        return None

    def _matches(self, rule: IptRule, where: str) -> bool:
        flow = self.flow
        if rule.protocol is not None and (int(flow.protocol) == rule.protocol.number) == rule.protocol.negated:
            return False
        if rule.source is not None and not rule.source.matches(flow.src):
            return False
        if rule.destination is not None and not rule.destination.matches(flow.dst):
            return False
        for match in rule.matches:
            if isinstance(match, CommentMatch):
                continue
            if isinstance(match, PortMatch):
                if match.dport is not None and match.dport.contains(flow.port) == match.dport_negated:
                    return False
                if match.sport is not None and match.sport.contains(self.sport) == match.sport_negated:
                    return False
            elif isinstance(match, StatisticMatch):
                if match.mode != "random":
                    raise ServiceSimulationError(f"{where}: statistic --mode nth is not modelled")
                if (_draw(flow, self.sport, where) < match.probability) == match.negated:
                    return False
            elif isinstance(match, AddrtypeMatch):
                local = flow.dst == self.node
                if match.dst_types is not None and (("LOCAL" in match.dst_types) == local) == match.dst_negated:
                    return False
                if match.src_types is not None:
                    raise ServiceSimulationError(f"{where}: addrtype --src-type is not modelled")
            elif isinstance(match, MarkMatch):
                if not match.matches(self.mark):
                    return False
            else:
                raise ServiceSimulationError(f"{where}: match {match!r} is not modelled")
        return True


# --- Cilium's lb maps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frontend:
    count: int
    slots: tuple[int, ...]  # backend_id per slot 1..count


class LbMapSimulator:
    """``cilium_lb{4,6}_services_v2`` / ``_backends_v3`` as ``lb4_local`` reads them."""

    def __init__(self, files: Mapping[str, str]) -> None:
        from compiler.targets.ebpf.layout import parse_hex_bytes
        from compiler.targets.ebpf.services import BackendEntry, ServiceEntry, map_names

        self._frontends: dict[tuple[IPAddress, int, int], _Frontend] = {}
        self._backends: dict[int, tuple[IPAddress, int]] = {}
        for version in (4, 6):
            service_map, backend_map = map_names(version)
            slots: dict[tuple[IPAddress, int, int], dict[int, int]] = {}
            counts: dict[tuple[IPAddress, int, int], int] = {}
            for doc in json.loads(files.get(f"{service_map}.json", "[]")):
                entry = ServiceEntry.decode(parse_hex_bytes(doc["key"], "key"), parse_hex_bytes(doc["value"], "value"))
                key = (entry.address, entry.port, entry.proto)
                if entry.slot == 0:
                    counts[key] = entry.count
                else:
                    slots.setdefault(key, {})[entry.slot] = entry.backend_id
            for key, count in counts.items():
                got = slots.get(key, {})
                self._frontends[key] = _Frontend(count, tuple(got.get(i, 0) for i in range(1, count + 1)))
            for doc in json.loads(files.get(f"{backend_map}.json", "[]")):
                key_bytes, value_bytes = parse_hex_bytes(doc["key"], "key"), parse_hex_bytes(doc["value"], "value")
                backend = BackendEntry.decode(key_bytes, value_bytes)
                self._backends[backend.backend_id] = (backend.address, backend.port)

    def resolve(self, flow: Flow, sport: int = 40000, *, new: bool = True) -> ServiceLookup:
        """The backend of ``flow`` (its own destination when it is no service) and the lookups made."""
        frontend = self._frontends.get((flow.dst, flow.port, int(flow.protocol)))
        if frontend is None or frontend.count == 0:
            return ServiceLookup(flow.dst, flow.port, False, lookups=1, trace=("lb service lookup: miss",))
        slot = lb_slot(flow, sport, frontend.count)
        backend_id = frontend.slots[slot - 1]
        backend = self._backends.get(backend_id)
        if backend is None:
            raise ServiceSimulationError(f"{flow.dst}:{flow.port} slot {slot} names backend {backend_id}, "
                                         "which the backend map does not hold")
        lookups = 3 if new else 2
        steps = ("lb service lookup: slot 0, count " + str(frontend.count),
                 *((f"lb service lookup: slot {slot} -> backend {backend_id}",) if new else ()),
                 f"lb backend lookup: {backend_id} -> {backend[0]}:{backend[1]}")
        return ServiceLookup(backend[0], backend[1], True, lookups=lookups, trace=steps)
