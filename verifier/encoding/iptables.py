"""An iptables ruleset + ipsets, read back from the artifact files, as a formula over a packet.

The semantics are those of :class:`verifier.simulate.iptables.IptablesSimulator` (hooks and tables
of one node, first match, jumps, gotos, returns, chain policies, marks, connmarks, ``-m socket``,
TPROXY and the fwmark route), for the first packet of a connection (ctstate NEW, conntrack mark
0, no socket). What a packet carries besides its header fields (mark, conntrack mark, socket,
assigned proxy port) is concrete along any path: only constants are ever written into it. So a
traversal is a dynamic programme over (chain, rule, call stack, state) whose answer is, for each
way of leaving the table, the condition on the header fields under which it is taken; conditions
on fixed fields fold while building. The hooks then chain the tables' exits, and the outcome is an
if-then-else over the final (verdict, proxy port) pairs.

Anything the simulator would refuse (interfaces, ``addrtype --limit-iface-*``, an unknown set) or
that this encoding does not model raises :class:`Unencodable`, which a proof reports as
``unknown``, never as ``proved``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Literal, TypeVar

import z3

from verifier.artifacts.ipsets import PORT_TYPES, PORTLESS_PROTOCOLS, SET_PROTOCOLS, IpSet, SetMember
from verifier.artifacts.models import (
    MARK_FULL,
    AddrtypeMatch,
    Chain,
    CommentMatch,
    ConnmarkMatch,
    ConnmarkTarget,
    ConntrackMatch,
    Goto,
    IcmpMatch,
    IPNetwork,
    IptRule,
    Jump,
    Log,
    MarkMatch,
    MarkTarget,
    Match,
    MultiportMatch,
    PortMatch,
    Reject,
    Ruleset,
    SetMatch,
    SocketMatch,
    Tproxy,
    Verdict,
)
from verifier.encoding.iptables_phases import Block, Phases, phases
from verifier.encoding.terms import (
    KIND_ALLOWED,
    KIND_DROPPED,
    KIND_REDIRECTED,
    OUTCOME_BITS,
    Address,
    ClassAddress,
    Cond,
    SymPacket,
    Value,
    address_of,
    and_,
    eq,
    excluded_host,
    in_network,
    in_range,
    ite,
    not_,
    or_,
    outcome,
    redirected,
)

_MAX_DEPTH = 64
_BLOCK = "<block>"  # the pseudo built-in a phase block runs as: falling off it is RETURN


class Unencodable(Exception):
    """The artifacts use something this encoding does not model (the proof is ``unknown``)."""


class NotComposable(Unencodable):
    """The ruleset's verdict is not shown to be an egress half and an ingress half
    (verifier/encoding/iptables_phases.py): a half-flow proof falls back to whole flows."""


@dataclass(frozen=True)
class _State:
    """What the packet carries besides its header: concrete on every path."""

    mark: int = 0
    ctmark: int = 0
    socket: int | None = None  # the transparent socket's port TPROXY assigned
    socket_wildcard: bool = False  # that socket listens on the wildcard address (TPROXY without --on-ip)
    tproxy_port: int | None = None


Exit = tuple[Literal["ACCEPT", "DROP", "TPROXY", "RETURN"], _State]
K = TypeVar("K")
Exits = dict[Exit, Cond]


def _add(into: dict[K, Cond], key: K, cond: Cond) -> None:
    """``key`` is also reached under ``cond`` (a path disjoint from those ``into`` holds)."""
    if cond is False:
        return
    into[key] = or_(into[key], cond) if key in into else cond


def _merge(into: Exits, cond: Cond, exits: Exits) -> None:
    """Add ``exits`` taken under ``cond``."""
    for key, c in exits.items():
        _add(into, key, and_(cond, c))


class IptablesEncoding:
    """Outcome formulas of one family's ruleset for packets on the node with ``node_addresses``.

    ``tproxy_route`` is the loader's ``ip rule fwmark V/M`` (verifier/kernel/load_iptables.py).
    ``excluded``: addresses a free address is known not to be (verifier/proofs/address_classes.py);
    their host entries are dropped wherever the address is symbolic.
    """

    def __init__(self, ruleset: Ruleset, ipsets: Mapping[str, IpSet], node_addresses: frozenset[int],
                 tproxy_route: tuple[int, int] | None, excluded: frozenset[int] = frozenset()) -> None:
        self.ruleset = ruleset
        self.excluded = excluded
        self.ipsets = dict(ipsets)
        self.family = ruleset.family
        self.node_addresses = node_addresses
        self.tproxy_route = tproxy_route
        self.block_chains: dict[str, Mapping[str, Chain]] = {}  # a phase block's table with the block added
        self.set_terms: dict[tuple[object, ...], tuple[Cond, Cond]] = {}  # _Traversal._set_probe, free addresses
        for rule in ruleset.rules():
            if rule.in_interface is not None or rule.out_interface is not None:
                raise Unencodable(f"{ruleset.source}:{rule.line}: interface matches are not encoded (the node "
                                  "model addresses endpoints by address)")
            for match in rule.matches:
                if isinstance(match, SetMatch) and match.name not in self.ipsets:
                    raise Unencodable(f"{ruleset.source}:{rule.line}: set {match.name!r} is not defined")

    # --- the path through the hooks (IptablesSimulator.simulate) -------------------------------------

    def outcome(self, packet: SymPacket, local_src: bool, local_dst: bool) -> z3.BitVecRef:
        """The 18-bit outcome (verifier/encoding/terms.py) of ``packet``'s first packet.

        ``local_src``/``local_dst``: whether the slice's addresses are the node's (the slice fixes
        this; it decides the hooks the packet takes).
        """
        run = _Traversal(self, packet)
        finals: dict[tuple[int, int], Cond] = {}
        start = _State()
        if local_src:
            outs = run.hooks(start, (("raw", "OUTPUT"), ("mangle", "OUTPUT"), ("filter", "OUTPUT"),
                                     ("mangle", "POSTROUTING")))
            for (dropped, state), cond in outs.items():
                route = self.tproxy_route
                rerouted = route is not None and (state.mark & route[1]) == route[0]
                if not dropped and (local_dst or rerouted):
                    for (dropped2, state2), cond2 in run.inbound(state, local_dst).items():
                        _add(finals, _final(dropped2, state2), and_(cond, cond2))
                else:
                    _add(finals, _final(dropped, state), cond)
        else:
            for (dropped, state), cond in run.inbound(start, local_dst).items():
                _add(finals, _final(dropped, state), cond)
        return _as_term(finals)


    @cached_property
    def phases(self) -> Phases | str:
        """The two-phase layout (or why there is none), recognised once."""
        return phases(self.ruleset)

    def half(self, packet: SymPacket, side: str) -> z3.BitVecRef:
        """The outcome of the egress (``side="src"``) or ingress (``"dst"``) half of a forwarded
        packet: dropped if that half's filter block drops it, else redirected to its mangle
        block's TPROXY port, else allowed (composed as verifier/encoding/iptables_phases.py
        explains). Raises :class:`NotComposable` where the lemma's dynamic part fails."""
        layout = self.phases
        if isinstance(layout, str):
            raise NotComposable(f"{self.ruleset.source}: {layout}")
        run = _Traversal(self, packet)
        ports: dict[int, Cond] = {}
        if layout.mangle_prefix is not None:
            start = run.prefix(layout.mangle_prefix, _State())
            block = layout.mangle_halves.get(side)
            for (kind, state), cond in (run.block("mangle", block, start).items() if block else ()):
                if kind == "TPROXY" and state.tproxy_port is not None:
                    _add(ports, state.tproxy_port, cond)
                elif kind != "RETURN" or state != start:
                    raise NotComposable(f"{self.ruleset.source}: mangle: a {side} dispatch ends in "
                                        f"{kind} with mark {state.mark:#x}, not TPROXY or a return")
        start = run.prefix(layout.filter_prefix, _State())
        if start.mark & layout.filter_mask:
            raise NotComposable(f"{self.ruleset.source}: filter prefix leaves mark {start.mark:#x}")
        dropped: Cond = False
        block = layout.filter_halves.get(side)
        for (kind, state), cond in (run.block("filter", block, start).items() if block else ()):
            if kind == "DROP":
                dropped = or_(dropped, cond)
            elif kind != "RETURN" or state != start:
                raise NotComposable(f"{self.ruleset.source}: filter: a {side} dispatch ends in "
                                    f"{kind} with mark {state.mark:#x}, not DROP or a return")
        term = outcome(KIND_ALLOWED)
        for port, cond in sorted(ports.items(), reverse=True):
            term = ite(cond, redirected(port), term)
        return ite(dropped, outcome(KIND_DROPPED), term)


def _final(dropped: bool, state: _State) -> tuple[int, int]:
    if dropped:
        return (KIND_DROPPED, 0)
    if state.tproxy_port is not None:
        return (KIND_REDIRECTED, state.tproxy_port)
    return (KIND_ALLOWED, 0)


def _as_term(finals: dict[tuple[int, int], Cond]) -> z3.BitVecRef:
    """An if-then-else over disjoint, covering conditions (the last one is the else)."""
    items = sorted(finals.items(), key=lambda item: item[0])
    if not items:
        raise Unencodable("no path through the ruleset (internal error)")
    term = outcome(*items[-1][0])
    for (kind, port), cond in reversed(items[:-1]):
        term = ite(cond, outcome(kind, port), term)
    return term


class _Traversal:
    """One packet's walk, memoised per (table, chain, rule, stack, state)."""

    def __init__(self, enc: IptablesEncoding, packet: SymPacket) -> None:
        self.enc = enc
        self.packet = packet
        self._memo: dict[tuple[object, ...], Exits] = {}
        self._sets: dict[tuple[str, tuple[str, ...]], Cond] = {}

    # -- hooks ---------------------------------------------------------------------------------------

    def hooks(self, state: _State, chains: tuple[tuple[str, str], ...]) -> dict[tuple[bool, _State], Cond]:
        """Built-in chains in order; the first DROP ends the packet. Keys: (dropped, state after)."""
        current: dict[tuple[bool, _State], Cond] = {(False, state): True}
        for table, builtin in chains:
            if table not in self.enc.ruleset.tables:
                continue
            nxt: dict[tuple[bool, _State], Cond] = {}
            for (dropped, st), cond in current.items():
                if dropped:
                    _add(nxt, (True, st), cond)
                    continue
                for (kind, st2), cond2 in self.table(table, builtin, st).items():
                    _add(nxt, (kind == "DROP", st2), and_(cond, cond2))
            current = nxt
        return current

    def inbound(self, state: _State, local_dst: bool) -> dict[tuple[bool, _State], Cond]:
        """PREROUTING, routing, then INPUT or FORWARD + POSTROUTING (IptablesSimulator._inbound)."""
        out: dict[tuple[bool, _State], Cond] = {}
        for (dropped, st), cond in self.hooks(state, (("raw", "PREROUTING"), ("mangle", "PREROUTING"))).items():
            if dropped:
                _add(out, (True, st), cond)
                continue
            st = self._delivery(st, local_dst)
            local = st.tproxy_port is not None or local_dst or self._routed(st)
            rest = (("mangle", "INPUT"), ("filter", "INPUT")) if local else (
                ("mangle", "FORWARD"), ("filter", "FORWARD"), ("mangle", "POSTROUTING"))
            for key, cond2 in self.hooks(st, rest).items():
                _add(out, key, and_(cond, cond2))
        return out

    def _routed(self, st: _State) -> bool:
        route = self.enc.tproxy_route
        if route is not None:
            return (st.mark & route[1]) == route[0]
        return st.socket is not None

    def _delivery(self, st: _State, local_dst: bool) -> _State:
        """An established proxied connection's socket decides the proxy port (never on a NEW packet)."""
        if st.tproxy_port is None and not local_dst and self._routed(st) and st.socket is not None:
            return replace(st, tproxy_port=st.socket)
        return st

    # -- phase blocks (verifier/encoding/iptables_phases.py) -----------------------------------------

    def prefix(self, block: Block, state: _State) -> _State:
        """The state after a phase chain's prefix: each rule must not match a NEW first packet
        in ``state``, or be an unconditional MARK."""
        for rule in block.rules:
            matched, after = self._matches(rule, state)
            if matched is False:
                continue
            if matched is True and isinstance(rule.target, MarkTarget):
                state = replace(after, mark=rule.target.apply(after.mark))
                continue
            raise NotComposable(f"{self.enc.ruleset.source}:{rule.line}: {block.chain}'s prefix rule may match "
                                "a new connection's first packet")
        return state

    def block(self, table: str, block: Block, state: _State) -> Exits:
        """The exits of a block's rules run as one chain; falling off it is ``RETURN``."""
        name = f"{_BLOCK}{block.chain}:{block.rules[0].line}"
        chains = self.enc.block_chains.get(name)
        if chains is None:
            chains = self.enc.block_chains[name] = {**self.enc.ruleset.tables[table].chains,
                                                    name: Chain(name, None, block.rules)}
        return self._from(table, name, chains, name, 0, (), state)

    # -- one table ----------------------------------------------------------------------------------

    def table(self, table: str, builtin: str, state: _State) -> Exits:
        chains = self.enc.ruleset.tables[table].chains
        return self._from(table, builtin, chains, builtin, 0, (), state)

    def _from(self, table: str, builtin: str, chains: Mapping[str, Chain], name: str, index: int,
              stack: tuple[tuple[str, int], ...], state: _State) -> Exits:
        key = (table, builtin, name, index, stack, state)
        found = self._memo.get(key)
        if found is not None:
            return found
        if len(stack) >= _MAX_DEPTH:
            raise Unencodable(f"{table}/{name}: chain calls nest deeper than {_MAX_DEPTH}")
        chain = chains.get(name) or Chain(name, None, ())
        exits: Exits
        if index >= len(chain.rules):
            exits = self._fall_off(table, builtin, chains, name, stack, state)
        else:
            rule = chain.rules[index]
            matched, after_match = self._matches(rule, state)
            exits = {}
            if matched is not False:
                _merge(exits, matched, self._taken(table, builtin, chains, name, index, stack, after_match, rule))
            if matched is not True:
                _merge(exits, not_(matched), self._from(table, builtin, chains, name, index + 1, stack, state))
        self._memo[key] = exits
        return exits

    def _fall_off(self, table: str, builtin: str, chains: Mapping[str, Chain], name: str,
                  stack: tuple[tuple[str, int], ...], state: _State) -> Exits:
        if name == builtin or not stack:
            if builtin.startswith(_BLOCK):
                return {("RETURN", state): True}
            policy = chains[builtin].policy if builtin in chains else None
            return {("DROP" if policy == "DROP" else "ACCEPT", state): True}
        (caller, at), rest = stack[-1], stack[:-1]
        return self._from(table, builtin, chains, caller, at, rest, state)

    def _taken(self, table: str, builtin: str, chains: Mapping[str, Chain], name: str, index: int,
               stack: tuple[tuple[str, int], ...], state: _State, rule: IptRule) -> Exits:
        target = rule.target
        nxt = index + 1
        if isinstance(target, Verdict):
            if target.name == "RETURN":
                return self._fall_off(table, builtin, chains, name if stack else builtin, stack, state)
            return {(target.name, state): True}
        if isinstance(target, Reject):
            return {("DROP", state): True}
        if isinstance(target, Jump):
            if target.chain == builtin:
                raise Unencodable(f"{table}/{name}: jump to the built-in chain {builtin}")
            return self._from(table, builtin, chains, target.chain, 0, (*stack, (name, nxt)), state)
        if isinstance(target, Goto):
            return self._from(table, builtin, chains, target.chain, 0, stack, state)
        if isinstance(target, Tproxy):
            if table != "mangle" or not (builtin == "PREROUTING" or builtin.startswith(_BLOCK)):
                raise Unencodable(f"{table}/{name}: TPROXY outside mangle PREROUTING")
            applies = or_(eq(self.packet.protocol, 6), eq(self.packet.protocol, 17))
            mark = ((state.mark & ~target.mask) ^ target.mark) & MARK_FULL
            out: Exits = {}
            assigned = replace(state, mark=mark, socket=target.on_port, socket_wildcard=target.on_ip is None,
                               tproxy_port=target.on_port)
            _merge(out, applies, {("TPROXY", assigned): True})
            _merge(out, not_(applies), self._from(table, builtin, chains, name, nxt, stack, state))
            return out
        return self._from(table, builtin, chains, name, nxt, stack, self._apply(state, target))

    @staticmethod
    def _apply(state: _State, target: object) -> _State:
        if isinstance(target, MarkTarget):
            return replace(state, mark=target.apply(state.mark))
        if isinstance(target, ConnmarkTarget):
            if target.mode == "set":
                return replace(state, ctmark=((state.ctmark & ~target.mask) ^ target.value) & MARK_FULL)
            if target.mode == "save":
                return replace(state, ctmark=((state.ctmark & ~target.ctmask) ^ (state.mark & target.nfmask))
                               & MARK_FULL)
            return replace(state, mark=((state.mark & ~target.nfmask) ^ (state.ctmark & target.ctmask)) & MARK_FULL)
        if target is None or isinstance(target, Log):
            return state
        raise Unencodable(f"target {target!r} is not encoded")

    # -- matches -------------------------------------------------------------------------------------

    def _matches(self, rule: IptRule, state: _State) -> tuple[Cond, _State]:
        """The rule's condition, and the state after matching (``--restore-skmark`` changes it)."""
        p = self.packet
        conds: list[Cond] = []
        if rule.protocol is not None:
            hit = eq(p.protocol, rule.protocol.number)
            conds.append(not_(hit) if rule.protocol.negated else hit)
        for match, address in ((rule.source, p.src), (rule.destination, p.dst)):
            if match is not None:
                network = match.network
                hit = False if self._avoided(address, network) else in_network(address, network)
                conds.append(not_(hit) if match.negated else hit)
        for m in rule.matches:
            cond, state = self._match(m, state, rule)
            conds.append(cond)
            if cond is False:
                break
        return and_(*conds), state

    def _match(self, match: Match, state: _State, rule: IptRule) -> tuple[Cond, _State]:
        p = self.packet
        if isinstance(match, CommentMatch):
            return True, state
        if isinstance(match, MarkMatch):
            return match.matches(state.mark), state
        if isinstance(match, ConnmarkMatch):
            return match.matches(state.ctmark), state
        if isinstance(match, ConntrackMatch):
            return match.matches("NEW"), state
        if isinstance(match, PortMatch):
            conds: list[Cond] = []
            if match.sport is not None:
                hit = match.sport.contains(p.sport)
                conds.append(hit != match.sport_negated)
            if match.dport is not None:
                hit2 = in_range(p.dport, match.dport.first, match.dport.last)
                conds.append(not_(hit2) if match.dport_negated else hit2)
            return and_(*conds), state
        if isinstance(match, MultiportMatch):
            def hit_any(port: Value) -> Cond:
                return or_(*(in_range(port, r.first, r.last) for r in match.ports))
            found = hit_any(p.sport) if match.direction == "src" else hit_any(p.dport) if match.direction == "dst" \
                else or_(hit_any(p.sport), hit_any(p.dport))
            return (not_(found) if match.negated else found), state
        if isinstance(match, IcmpMatch):
            if match.icmp_type is None:
                return (not match.negated), state
            hit3 = and_(eq(p.dport, match.icmp_type), match.code is None or match.code == 0)
            return (not_(hit3) if match.negated else hit3), state
        if isinstance(match, SetMatch):
            return self._set(match), state
        if isinstance(match, SocketMatch):
            if state.socket is None or (state.socket_wildcard and not match.nowildcard):
                return False, state
            if match.restore_skmark:
                state = replace(state, mark=0)
            return True, state
        if isinstance(match, AddrtypeMatch):
            return self._addrtype(match, rule), state
        raise Unencodable(f"match {match!r} is not encoded")

    def _addrtype(self, match: AddrtypeMatch, rule: IptRule) -> Cond:
        if match.limit_iface_in or match.limit_iface_out:
            raise Unencodable(f"{self.enc.ruleset.source}:{rule.line}: addrtype --limit-iface-* is not encoded")
        conds: list[Cond] = []
        for address, types, negated in ((self.packet.src, match.src_types, match.src_negated),
                                        (self.packet.dst, match.dst_types, match.dst_negated)):
            if types is None:
                continue
            if isinstance(address, ClassAddress) and not set(address.values) & self.enc.node_addresses:
                kind = "UNICAST"  # endpoint addresses other than the node's
            elif not isinstance(address, int) or not types <= {"LOCAL", "UNICAST"}:
                raise Unencodable(f"{self.enc.ruleset.source}:{rule.line}: addrtype on a free address")
            else:
                kind = "LOCAL" if address in self.enc.node_addresses else "UNICAST"
            conds.append((kind in types) != negated)
        return and_(*conds)

    def _avoided(self, address: Address, network: IPNetwork) -> bool:
        """A host entry a free ``address`` is known never to be (this encoding's exclusions and
        the packet's own)."""
        return excluded_host(address, network, self.enc.excluded) or \
            excluded_host(address, network, self.packet.avoided(address))

    def _set(self, match: SetMatch) -> Cond:
        key = (match.name, match.flags)
        base = self._sets.get(key)
        if base is None:
            base = self._sets[key] = self._set_probe(self.enc.ipsets[match.name], match.flags)
        found, nomatch = base if isinstance(base, tuple) else (base, False)
        hit = or_(found, nomatch) if match.return_nomatch else found
        return not_(hit) if match.negated else hit

    def _set_probe(self, ipset: IpSet, flags: tuple[str, ...]) -> tuple[Cond, Cond]:
        """(an entry decides "match", a nomatch entry decides "no") for this packet: ipset's
        most-specific-prefix walk per (proto, port) key (IpSet.probe)."""
        p = self.packet
        if len(flags) < ipset.dimension or ipset.family != self.enc.family:
            return False, False
        address = p.src if flags[0] == "src" else p.dst
        if isinstance(address, int):
            return self._fixed_probe(ipset, flags, address)
        # a free address: the same formula for every packet of the process with the same
        # variables and exclusions, so it is built once (the sets are the bulk of the rules)
        key = (ipset.name, flags, str(address.index if isinstance(address, ClassAddress) else address),
               id(address.values) if isinstance(address, ClassAddress) else 0, id(p.avoided(address)))
        found_ = self.enc.set_terms.get(key)
        if found_ is None:
            found_ = self.enc.set_terms[key] = self._free_probe(ipset, flags, address)
        return found_

    def _fixed_probe(self, ipset: IpSet, flags: tuple[str, ...], address: int) -> tuple[Cond, Cond]:
        """:meth:`_set_probe` for a fixed address: the set's own lookup per (proto, port) key."""
        ip = address_of(address, self.enc.family)
        found: list[Cond] = []
        refused: list[Cond] = []
        keys = sorted({(m.proto, m.port) for m in ipset.members}, key=lambda k: (k[0] or "", k[1] or 0)) \
            if ipset.type in PORT_TYPES else [(None, None)]
        for proto, port in keys:
            decided = ipset.probe(ip, proto, port)
            if decided is not None:
                (found if decided else refused).append(self._key_guard(proto, port, flags))
        return or_(*found), or_(*refused)

    def _key_guard(self, proto: str | None, port: int | None, flags: tuple[str, ...]) -> Cond:
        """The packet has a port set's (proto, port) key (True for address-only sets; False for a
        protocol no packet of the proof carries)."""
        if proto is None or port is None:
            return True
        p = self.packet
        number = SET_PROTOCOLS.get(proto)
        if number is None:
            return False
        if proto in PORTLESS_PROTOCOLS:
            return and_(eq(p.protocol, number), eq(p.dport, port >> 8), port & 0xFF == 0)
        # the other set protocols all carry ports (tcp, udp, sctp, udplite)
        return and_(eq(p.protocol, number), eq(p.sport if flags[1] == "src" else p.dport, port))

    def _free_probe(self, ipset: IpSet, flags: tuple[str, ...], address: Address) -> tuple[Cond, Cond]:
        groups: dict[tuple[str | None, int | None], list[SetMember]] = {}
        free = not isinstance(address, ClassAddress)  # a class index avoids no host entry
        for member in ipset.members:
            if free and self._avoided(address, member.network):
                continue
            groups.setdefault((member.proto, member.port), []).append(member)
        found: list[Cond] = []
        refused: list[Cond] = []
        for (proto, port), members in sorted(groups.items(), key=lambda g: (g[0][0] or "", g[0][1] or 0)):
            guard = self._key_guard(proto, port, flags) if ipset.type in PORT_TYPES else True
            if guard is False:
                continue
            yes, no = _longest_prefix(address, members)
            found.append(and_(guard, yes))
            refused.append(and_(guard, no))
        return or_(*found), or_(*refused)


def _longest_prefix(address: Address, members: list[SetMember]) -> tuple[Cond, Cond]:
    """(decided "match", decided "nomatch") for ``address`` over ``members``: most specific first."""
    if isinstance(address, ClassAddress):
        return _longest_prefix_classes(address, members)
    by_length: dict[int, list[SetMember]] = {}
    for member in members:
        by_length.setdefault(member.network.prefixlen, []).append(member)
    yes: Cond = False
    no: Cond = False
    undecided: Cond = True
    for length in sorted(by_length, reverse=True):
        hits = [in_network(address, m.network) for m in by_length[length] if not m.nomatch]
        misses = [in_network(address, m.network) for m in by_length[length] if m.nomatch]
        hit, miss = or_(*hits), or_(*misses)
        yes = or_(yes, and_(undecided, hit))
        no = or_(no, and_(undecided, miss))
        undecided = and_(undecided, not_(hit), not_(miss))
        if undecided is False:
            break
    return yes, no


def _longest_prefix_classes(address: ClassAddress, members: list[SetMember]) -> tuple[Cond, Cond]:
    """:func:`_longest_prefix` for a class index: decided per class value here, so a set of
    thousands of hosts is a few index ranges rather than one equality per host."""
    decided: dict[int, bool] = {}
    for member in sorted(members, key=lambda m: -m.network.prefixlen):
        for index in address.indices_in(member.network):
            decided.setdefault(index, not member.nomatch)
    return (address.among({i for i, hit in decided.items() if hit}),
            address.among({i for i, hit in decided.items() if not hit}))


__all__ = ["OUTCOME_BITS", "IptablesEncoding", "NotComposable", "Unencodable"]
