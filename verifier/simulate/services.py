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
the rule (:func:`verifier.simulate.iptables.uniform_draw`), so a flow always meets the same
backend and flows spread as the probabilities say.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from compiler.flow import Flow
from verifier.artifacts.models import (
    ArtifactError,
    CommentMatch,
    Dnat,
    Goto,
    IptRule,
    Jump,
    MarkTarget,
    PortMatch,
    Ruleset,
    Verdict,
)
from verifier.simulate.iptables import IptablesSimulator, Node, Packet, uniform_draw

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


def lb_slot(flow: Flow, sport: int, count: int) -> int:
    """The backend slot (1..count) Cilium's random selection gives this connection here."""
    return 1 + int(uniform_draw(flow.src, sport, flow.dst, flow.port, int(flow.protocol), "lb-slot") * count)


class KubeProxySimulator:
    """kube-proxy's nat table, walked for the first packet of a connection.

    Rules are matched by :class:`verifier.simulate.iptables.IptablesSimulator`'s matcher (the
    ``statistic`` draws included); the walk adds what nat does with the verdict: a DNAT ends it.
    The services files are read chain by chain as walks reach them: a 5,000-Service table holds
    over 100,000 rules, of which one walk needs KUBE-SERVICES and a Service's own chains (each chain
    is read by the same grammar, its rules and errors keep their lines in the file).
    """

    def __init__(self, texts: Mapping[int, tuple[str, str]], node_address: IPAddress) -> None:
        """``texts``: family → (text, path) of the services files."""
        self._chains = {family: _LazyNat(text, path, family) for family, (text, path) in texts.items()}
        self._matchers = {family: IptablesSimulator(Ruleset(family, {}), {},  # type: ignore[arg-type]
                                                    Node(frozenset({node_address})))
                          for family in self._chains}
        self._indexes: dict[tuple[int, str], _Index] = {}

    def rules(self, family: int, chain: str) -> tuple[IptRule, ...]:
        return self._chains[family].rules(chain)

    def index(self, family: int, chain: str) -> _Index:
        """The chain's leading run of simple rules, keyed for a direct lookup (built once)."""
        key = (family, chain)
        if key not in self._indexes:
            self._indexes[key] = _Index.of(self.rules(family, chain))
        return self._indexes[key]

    def resolve(self, flow: Flow, sport: int = 40000, *, from_node: bool = False) -> ServiceLookup:
        """The DNAT the first packet of ``flow`` gets (none: its own destination), with the rules walked."""
        family = flow.dst.version
        if family not in self._chains:
            return ServiceLookup(flow.dst, flow.port, False, trace=("no nat table: no Services",))
        walk = _Walk(self, family, Packet(flow.src, flow.dst, int(flow.protocol), sport, flow.port))
        dnat = walk.run("OUTPUT" if from_node else "PREROUTING", 0)
        if not isinstance(dnat, Dnat):
            return ServiceLookup(flow.dst, flow.port, False, walk.rules, trace=tuple(walk.trace))
        return ServiceLookup(dnat.address, dnat.port or flow.port, True, walk.rules, trace=tuple(walk.trace))


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
        """The chain's lines (with the declarations of the chains they jump to) as one small file,
        read by the services grammar; lines and errors are mapped back to the whole file."""
        from verifier.artifacts import read_services

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
        return tuple(replace(rule, line=origin[rule.line - 1]) for rule in ruleset.chain("nat", chain).rules)


class _Walk:
    """One packet's way through the nat chains: rules counted, marks kept, a DNAT or ACCEPT ends it."""

    def __init__(self, sim: KubeProxySimulator, family: int, packet: Packet) -> None:
        self.sim, self.family, self.packet = sim, family, packet
        self.matcher = sim._matchers[family]
        self.rules = 0
        self.trace: list[str] = []

    def run(self, chain: str, depth: int) -> Dnat | Verdict | None:
        """Walk ``chain``: a DNAT or ACCEPT ends nat's traversal (returned), RETURN or the chain's end
        returns None to the caller."""
        if depth > _MAX_DEPTH:
            raise ServiceSimulationError(f"nat chain calls nest deeper than {_MAX_DEPTH}")
        rules = self.sim.rules(self.family, chain)
        packet = self.packet
        index = self.sim.index(self.family, chain)
        hit = index.first.get((packet.dst, packet.protocol, packet.dport))
        start = index.length if hit is None else hit  # the simple rules before it do not match
        self.rules += start
        for number, rule in enumerate(rules[start:], start + 1):
            self.rules += 1
            if not self.matcher.matches(self.packet, rule):
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
                self.packet = replace(self.packet, mark=target.apply(self.packet.mark))
            elif isinstance(target, Verdict):
                return target if target.name == "ACCEPT" else None
            elif target is not None:
                raise ServiceSimulationError(f"{self.sim._chains[self.family].path}:{rule.line}: target "
                                             f"{target!r} is not modelled in the nat walk")
        return None


# --- Cilium's lb maps ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frontend:
    count: int
    slots: tuple[int, ...]  # backend_id per slot 1..count


class LbMapSimulator:
    """``cilium_lb{4,6}_services_v2`` / ``_backends_v3`` as ``lb4_local`` reads them."""

    def __init__(self, files: Mapping[str, str]) -> None:
        from compiler.targets.ebpf.services import BackendEntry, ServiceEntry, map_names
        from verifier.simulate.ebpf import EbpfArtifacts

        self._frontends: dict[tuple[IPAddress, int, int], _Frontend] = {}
        self._backends: dict[int, tuple[IPAddress, int]] = {}
        for version in (4, 6):
            service_map, backend_map = map_names(version)
            slots: dict[tuple[IPAddress, int, int], dict[int, int]] = {}
            counts: dict[tuple[IPAddress, int, int], int] = {}
            for entry in EbpfArtifacts.map_entries(files, f"{service_map}.json", ServiceEntry.decode, optional=True):
                key = (entry.address, entry.port, entry.proto)
                if entry.slot == 0:
                    counts[key] = entry.count
                else:
                    slots.setdefault(key, {})[entry.slot] = entry.backend_id
            for key, count in counts.items():
                got = slots.get(key, {})
                self._frontends[key] = _Frontend(count, tuple(got.get(i, 0) for i in range(1, count + 1)))
            for backend in EbpfArtifacts.map_entries(files, f"{backend_map}.json", BackendEntry.decode, optional=True):
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
