"""Evaluate one concrete packet on a parsed iptables ruleset + ipsets, as the kernel would (DESIGN.md §5).

The simulator works on what :mod:`verifier.artifacts` read back from the files, never on compiler objects. It
follows the packet through the netfilter hooks of one node (the node model of the kernel testbed,
verifier/kernel/topology.py): endpoints sit behind the node's FORWARD path, node-originated packets start in
OUTPUT, node-destined packets end in INPUT. Per hook the tables run in priority order (raw, mangle, filter; the
dialect contract has no nat table):

    forwarded:      raw PREROUTING, mangle PREROUTING, [routing], mangle FORWARD, filter FORWARD, mangle POSTROUTING
    to the node:    raw PREROUTING, mangle PREROUTING, [routing], mangle INPUT, filter INPUT
    from the node:  raw OUTPUT, mangle OUTPUT, filter OUTPUT, mangle POSTROUTING (then the INPUT path over ``lo``
                    when the destination is the node itself)

``-j TPROXY`` in mangle PREROUTING assigns the packet to the proxy's transparent socket and ends that chain with
ACCEPT; routing then delivers it locally (the ``ip rule fwmark … lookup T`` + ``local 0/0 dev lo`` recipe,
reference/iptables.md §6.1), so it continues through the INPUT hooks and, if they accept, the verdict is
REDIRECT to the proxy port.

Within a chain: first match wins for terminating targets (ACCEPT, DROP, REJECT, TPROXY); MARK, CONNMARK, LOG
and rules without a target continue; ``-j CHAIN`` returns to the next rule, ``-g CHAIN`` returns to the caller
of the current chain; RETURN or the end of a user chain returns; the end of a built-in chain applies its policy
(ACCEPT when the file sets none, the kernel's default).

The result carries the verdict, the cause of a drop, every rule evaluated in order (table, chain, rule number,
text, comments, whether it matched) and the cost: rules evaluated and ipset lookups.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from ipaddress import IPv4Network, IPv6Network
from typing import Literal

from compiler.source import NetpolcError
from verifier.artifacts.ipsets import PORTLESS_PROTOCOLS, IpSet
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
    IPAddress,
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
    StatisticMatch,
    Tproxy,
    Verdict,
)
from verifier.artifacts.render import render_rule

CtState = Literal["NEW", "ESTABLISHED"]
_PORT_PROTOCOL_NAMES = {6: "tcp", 17: "udp", 132: "sctp", 136: "udplite"}
_ICMP_PROTOCOLS = {1: "icmp", 58: "icmpv6"}
_MULTICAST = (IPv4Network("224.0.0.0/4"), IPv6Network("ff00::/8"))
_LOOPBACK = (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128"))
_MAX_DEPTH = 64  # deeper than any loop-free ruleset we emit; the kernel refuses loops at load time


class SimulationError(NetpolcError):
    """The ruleset cannot be simulated for this packet (a missing set, an unknown interface, a jump loop)."""


@dataclass(frozen=True)
class Socket:
    """A local socket the kernel would find for the packet (``-m socket``, reference/iptables.md §6.1).

    ``transparent``: it has IP_TRANSPARENT (a TPROXY listener, or a connection it accepted); ``wildcard``: it is
    a listener bound to 0.0.0.0/:: (ignored by ``-m socket`` unless ``--nowildcard``); ``port`` is its local port.
    """

    port: int
    transparent: bool = True
    wildcard: bool = False
    mark: int = 0


@dataclass(frozen=True)
class Packet:
    """The first packet of a connection (or a later one, ``ctstate`` ESTABLISHED) as netfilter sees it.

    ``dport`` is the ICMP type for ICMP (``icmp_code`` its code). Interfaces are the node's: ``in_interface`` is
    where a forwarded or node-destined packet came in, ``out_interface`` where a forwarded or node-originated
    one leaves; None means unknown, and a rule that tests an unknown interface is an error, not a guess.
    """

    src: IPAddress
    dst: IPAddress
    protocol: int
    sport: int = 0
    dport: int = 0
    icmp_code: int = 0
    in_interface: str | None = None
    out_interface: str | None = None
    mark: int = 0
    ctmark: int = 0
    ctstate: CtState = "NEW"
    socket: Socket | None = None


@dataclass(frozen=True)
class Node:
    """The node the rules are loaded on: its local addresses (``addrtype LOCAL``, INPUT/OUTPUT paths).

    ``tproxy_route``: the ``ip rule fwmark V/M`` that routes marked packets to the local table; when None, only
    packets TPROXY'd in this traversal, or carrying a transparent socket (an established proxied connection),
    are delivered locally. ``proxy_ports``: ports a transparent proxy listens on; None assumes every TPROXY port
    has a listener (otherwise TPROXY finds no socket and drops, as the kernel does).
    """

    addresses: frozenset[IPAddress]
    tproxy_route: tuple[int, int] | None = None
    proxy_ports: frozenset[int] | None = None

    def is_local(self, address: IPAddress) -> bool:
        return address in self.addresses or any(address in net for net in _LOOPBACK if net.version == address.version)


class Outcome(str, Enum):
    ACCEPT = "ACCEPT"
    DROP = "DROP"
    REDIRECT = "REDIRECT"


@dataclass(frozen=True)
class Step:
    """One rule evaluated (``rule`` 1-based) or one chain policy applied (``rule`` 0)."""

    table: str
    chain: str
    rule: int
    text: str
    matched: bool
    action: str = ""
    comments: tuple[str, ...] = ()
    line: int = 0

    def __str__(self) -> str:
        where = f"{self.table}/{self.chain}#{self.rule}" if self.rule else f"{self.table}/{self.chain} policy"
        mark = "=>" if self.matched else "  "
        note = f"  [{'; '.join(self.comments)}]" if self.comments else ""
        action = f" -> {self.action}" if self.action and self.matched else ""
        return f"{mark} {where}: {self.text}{action}{note}"


@dataclass(frozen=True)
class Cost:
    """What the kernel did for this packet: rules evaluated (matched or not) and ipset lookups made."""

    rules_evaluated: int = 0
    ipset_lookups: int = 0


@dataclass(frozen=True)
class Result:
    """The verdict for one packet, why, and at what cost."""

    outcome: Outcome
    proxy_port: int | None
    cause: Step | None  # the rule or policy that dropped (or redirected) the packet
    trace: tuple[Step, ...]
    cost: Cost
    hooks: tuple[str, ...]  # "table/CHAIN" in the order they ran
    mark: int = 0

    def render(self) -> str:
        """The trace as lines a human can follow, then the verdict and cost."""
        lines = [str(step) for step in self.trace]
        verdict = self.outcome.value + (f" to proxy port {self.proxy_port}" if self.proxy_port is not None else "")
        cause = ""
        if self.cause is not None:
            rule = f"#{self.cause.rule}" if self.cause.rule else " policy"
            cause = f" by {self.cause.table}/{self.cause.chain}{rule}"
        lines.append(f"verdict: {verdict}{cause}; {self.cost.rules_evaluated} rules evaluated, "
                     f"{self.cost.ipset_lookups} ipset lookups")  # fmt: skip
        return "\n".join(lines)


@dataclass
class _State:
    """What changes while the packet travels: mark, conntrack mark, assigned socket, trace, counters."""

    packet: Packet
    trace: list[Step] = field(default_factory=list)
    rules: int = 0
    lookups: int = 0
    tproxy_port: int | None = None
    tproxy_step: Step | None = None


@dataclass(frozen=True)
class _Verdict:
    kind: Literal["ACCEPT", "DROP", "TPROXY"]
    step: Step


class IptablesSimulator:
    """Simulate packets on one ruleset and its ipsets (both as read by :mod:`verifier.artifacts`)."""

    def __init__(self, ruleset: Ruleset, ipsets: Mapping[str, IpSet], node: Node) -> None:
        self.ruleset = ruleset
        self.ipsets = dict(ipsets)
        self.node = node
        self._texts: dict[int, str] = {}
        for rule in ruleset.rules():
            for match in rule.matches:
                if isinstance(match, SetMatch) and match.name not in self.ipsets:
                    raise SimulationError(f"{ruleset.source}:{rule.line}: set {match.name!r} is not defined in the "
                                          "ipsets (iptables-restore would refuse the rule)")  # fmt: skip

    # -- the path through the hooks --------------------------------------------------------------------------

    def simulate(self, packet: Packet) -> Result:
        """The verdict for ``packet`` with its trace and cost."""
        state = _State(packet)
        hooks: list[str] = []
        local_src = self.node.is_local(packet.src)
        local_dst = self.node.is_local(packet.dst)
        verdict: _Verdict | None = None
        if local_src:
            out_interface = "lo" if local_dst else packet.out_interface
            state.packet = replace(packet, in_interface="", out_interface=out_interface)
            verdict = self._hooks(state, hooks, (("raw", "OUTPUT"), ("mangle", "OUTPUT"), ("filter", "OUTPUT"),
                                                 ("mangle", "POSTROUTING")))  # fmt: skip
            route = self.node.tproxy_route
            rerouted = route is not None and (state.packet.mark & route[1]) == route[0]
            if verdict is None and (local_dst or rerouted):
                # delivered locally: through lo back into PREROUTING (a mark that selects the policy
                # route ``local 0.0.0.0/0 dev lo`` turns a packet for anywhere around the same way)
                state.packet = replace(state.packet, in_interface="lo")
                verdict = self._inbound(state, hooks)
        else:
            verdict = self._inbound(state, hooks)
        trace = tuple(state.trace)
        cost = Cost(state.rules, state.lookups)
        mark = state.packet.mark
        if verdict is not None and verdict.kind == "DROP":
            return Result(Outcome.DROP, None, verdict.step, trace, cost, tuple(hooks), mark)
        if state.tproxy_port is not None:
            return Result(Outcome.REDIRECT, state.tproxy_port, state.tproxy_step, trace, cost, tuple(hooks), mark)
        return Result(Outcome.ACCEPT, None, None, trace, cost, tuple(hooks), mark)

    def _inbound(self, state: _State, hooks: list[str]) -> _Verdict | None:
        """PREROUTING, routing, then INPUT (local delivery) or FORWARD + POSTROUTING."""
        verdict = self._hooks(state, hooks, (("raw", "PREROUTING"), ("mangle", "PREROUTING")))
        if verdict is not None and verdict.kind == "DROP":
            return verdict
        if self._delivered_locally(state):
            state.packet = replace(state.packet, out_interface="")
            rest = self._hooks(state, hooks, (("mangle", "INPUT"), ("filter", "INPUT")))
        else:
            rest = self._hooks(state, hooks, (("mangle", "FORWARD"), ("filter", "FORWARD"), ("mangle", "POSTROUTING")))
        return rest if rest is not None else verdict

    def _delivered_locally(self, state: _State) -> bool:
        packet = state.packet
        if state.tproxy_port is not None or self.node.is_local(packet.dst):
            return True
        proxied = packet.socket is not None and packet.socket.transparent
        route = self.node.tproxy_route
        routed = (packet.mark & route[1]) == route[0] if route is not None else proxied
        if routed and packet.socket is not None and proxied:
            state.tproxy_port = packet.socket.port  # an established connection of the proxy
        return routed

    def _hooks(self, state: _State, hooks: list[str], chains: tuple[tuple[str, str], ...]) -> _Verdict | None:
        """Run built-in chains in order; the first DROP ends the packet (None: every one accepted)."""
        for table_name, chain_name in chains:
            if table_name not in self.ruleset.tables:
                continue  # a table the file does not load has no rules
            hooks.append(f"{table_name}/{chain_name}")
            verdict = self._run(state, table_name, chain_name)
            if verdict.kind == "DROP":
                return verdict
        return None

    # -- one table's traversal -------------------------------------------------------------------------------

    def _run(self, state: _State, table: str, builtin: str) -> _Verdict:
        """Traverse ``table``'s built-in chain ``builtin`` with jumps, gotos and returns (the kernel's stack)."""
        chains = dict(self.ruleset.tables[table].chains)
        chains.setdefault(builtin, Chain(builtin, None, ()))  # undeclared: empty, the kernel's default policy
        stack: list[tuple[str, int]] = []  # (chain, next rule index) to return to
        chain_name, index = builtin, 0
        while True:
            chain = chains[chain_name]
            if index >= len(chain.rules):
                if chain_name == builtin:
                    return self._policy(state, table, chain)
                if not stack:
                    raise SimulationError(f"{table}/{chain_name}: returned with an empty call stack")
                chain_name, index = stack.pop()
                continue
            rule = chain.rules[index]
            step, matched = self._evaluate(state, table, chain_name, index + 1, rule)
            index += 1
            if not matched:
                continue
            target = rule.target
            if isinstance(target, Verdict):
                if target.name == "RETURN":
                    if not stack:  # RETURN in a built-in chain (or below a goto from it): the policy
                        return self._policy(state, table, chains[builtin])
                    chain_name, index = stack.pop()
                    continue
                return _Verdict("ACCEPT" if target.name == "ACCEPT" else "DROP", step)
            if isinstance(target, Reject):
                return _Verdict("DROP", step)
            if isinstance(target, Jump | Goto):
                if isinstance(target, Jump):
                    stack.append((chain_name, index))
                if len(stack) >= _MAX_DEPTH or target.chain == builtin:
                    raise SimulationError(f"{table}/{chain_name}#{index}: chain calls nest deeper than {_MAX_DEPTH} "
                                          "(a jump loop?)")  # fmt: skip
                chain_name, index = target.chain, 0
                continue
            if isinstance(target, Tproxy):
                if (table, builtin) != ("mangle", "PREROUTING"):
                    raise SimulationError(f"{step}: TPROXY reached from {table}/{builtin}; the kernel allows it "
                                          "only in mangle PREROUTING")  # fmt: skip
                verdict = self._tproxy(state, target, step)
                if verdict is not None:
                    return verdict
                continue
            self._apply(state, target)

    def _policy(self, state: _State, table: str, chain: Chain) -> _Verdict:
        policy = chain.policy or "ACCEPT"
        text = f"policy {policy}" + ("" if chain.policy else " (not set in the file: the kernel's default)")
        step = Step(table, chain.name, 0, text, True, policy)
        state.trace.append(step)
        return _Verdict(policy, step)

    def _evaluate(self, state: _State, table: str, chain: str, number: int, rule: IptRule) -> tuple[Step, bool]:
        state.rules += 1
        matched = self._matches(state, rule)
        action = ""
        if matched and rule.target is not None:
            action = _action(rule)
        step = Step(table, chain, number, self._text(rule), matched, action, rule.comments, rule.line)
        state.trace.append(step)
        return step, matched

    def _text(self, rule: IptRule) -> str:
        key = id(rule)
        if key not in self._texts:
            self._texts[key] = rule.raw.strip() or render_rule(rule)
        return self._texts[key]

    def _tproxy(self, state: _State, target: Tproxy, step: Step) -> _Verdict | None:
        """TPROXY: find the proxy's socket, set the mark, end the chain with ACCEPT (xt_TPROXY)."""
        packet = state.packet
        if packet.protocol not in (6, 17):
            return None  # iptables only loads TPROXY with -p tcp/udp; other packets never reach it
        ports = self.node.proxy_ports
        if ports is not None and target.on_port not in ports:
            return _Verdict("DROP", replace(step, action=f"TPROXY: no socket listens on port {target.on_port}"))
        mark = ((packet.mark & ~target.mask) ^ target.mark) & MARK_FULL
        socket = Socket(target.on_port, transparent=True, wildcard=target.on_ip is None)
        state.packet = replace(packet, mark=mark, socket=socket)
        state.tproxy_port = target.on_port
        state.tproxy_step = step
        return _Verdict("TPROXY", step)

    def _apply(self, state: _State, target: object) -> None:
        """Non-terminating targets: MARK, CONNMARK, LOG (and a rule without target, which only counts)."""
        packet = state.packet
        if isinstance(target, MarkTarget):
            state.packet = replace(packet, mark=target.apply(packet.mark))
        elif isinstance(target, ConnmarkTarget):
            if target.mode == "set":
                ctmark = ((packet.ctmark & ~target.mask) ^ target.value) & MARK_FULL
                state.packet = replace(packet, ctmark=ctmark)
            elif target.mode == "save":
                ctmark = (packet.ctmark & ~target.ctmask) ^ (packet.mark & target.nfmask)
                state.packet = replace(packet, ctmark=ctmark & MARK_FULL)
            else:
                mark = (packet.mark & ~target.nfmask) ^ (packet.ctmark & target.ctmask)
                state.packet = replace(packet, mark=mark & MARK_FULL)
        elif target is not None and not isinstance(target, Log):
            raise SimulationError(f"target {target!r} is not simulated")

    # -- matches -------------------------------------------------------------------------------------------------

    def _matches(self, state: _State, rule: IptRule) -> bool:
        packet = state.packet
        if rule.protocol is not None and (packet.protocol == rule.protocol.number) == rule.protocol.negated:
            return False
        if rule.source is not None and not rule.source.matches(packet.src):
            return False
        if rule.destination is not None and not rule.destination.matches(packet.dst):
            return False
        for interface, name, what in ((rule.in_interface, packet.in_interface, "input"),
                                      (rule.out_interface, packet.out_interface, "output")):  # fmt: skip
            if interface is None:
                continue
            if name is None:
                raise SimulationError(f"{self.ruleset.source}:{rule.line}: the rule tests the {what} interface, "
                                      f"but the packet's {what} interface is unknown (give the node's interfaces)")
            if not interface.matches(name):
                return False
        return all(self._match(state, match, rule) for match in rule.matches)

    def _match(self, state: _State, match: Match, rule: IptRule) -> bool:
        packet = state.packet
        if isinstance(match, CommentMatch):
            return True
        if isinstance(match, MarkMatch):
            return match.matches(packet.mark)
        if isinstance(match, ConnmarkMatch):
            return match.matches(packet.ctmark)
        if isinstance(match, ConntrackMatch):
            return match.matches(packet.ctstate)
        if isinstance(match, PortMatch):
            return _port_match(match, packet)
        if isinstance(match, MultiportMatch):
            return match.matches(packet.sport, packet.dport)
        if isinstance(match, IcmpMatch):
            return _icmp_match(match, packet)
        if isinstance(match, SetMatch):
            return self._set_match(state, match)
        if isinstance(match, AddrtypeMatch):
            return self._addrtype_match(state, match, rule)
        if isinstance(match, SocketMatch):
            return self._socket_match(state, match)
        if isinstance(match, StatisticMatch):
            return _statistic_match(match, packet, rule)
        raise SimulationError(f"match {match!r} is not simulated")

    def matches(self, packet: Packet, rule: IptRule) -> bool:
        """Whether ``rule`` matches ``packet`` (for walks of other tables, such as kube-proxy's nat
        table; what a match would change on the packet is not kept)."""
        return self._matches(_State(packet), rule)

    def _set_match(self, state: _State, match: SetMatch) -> bool:
        """xt_set: one lookup; fewer src/dst flags than the set has dimensions never matches (ip_set_test)."""
        packet = state.packet
        ipset = self.ipsets[match.name]
        state.lookups += 1
        if len(match.flags) < ipset.dimension:
            return match.negated
        address = packet.src if match.flags[0] == "src" else packet.dst
        proto: str | None = None
        port: int | None = None
        if ipset.dimension == 2:
            proto = _PORT_PROTOCOL_NAMES.get(packet.protocol) or _ICMP_PROTOCOLS.get(packet.protocol)
            if proto is None:
                return match.negated  # no port to look up: ip_set_get_ip4_port fails, the test is false
            if proto in PORTLESS_PROTOCOLS:
                port = packet.dport << 8 | packet.icmp_code
            else:
                port = packet.sport if match.flags[1] == "src" else packet.dport
        found = ipset.probe(address, proto, port)
        hit = found is True or (found is False and match.return_nomatch)
        return hit != match.negated

    def _addrtype_match(self, state: _State, match: AddrtypeMatch, rule: IptRule) -> bool:
        if match.limit_iface_in or match.limit_iface_out:
            raise SimulationError(f"{self.ruleset.source}:{rule.line}: addrtype --limit-iface-in/out needs per-"
                                  "interface addresses, which the node model does not have")  # fmt: skip
        packet = state.packet
        for address, types, negated in ((packet.src, match.src_types, match.src_negated),
                                        (packet.dst, match.dst_types, match.dst_negated)):  # fmt: skip
            if types is not None and (self._address_type(address) in types) == negated:
                return False
        return True

    def _address_type(self, address: IPAddress) -> str:
        """The routing type of an address as the node sees it (LOCAL, MULTICAST, BROADCAST, UNICAST, UNSPEC)."""
        if self.node.is_local(address):
            return "LOCAL"
        if any(address in net for net in _MULTICAST if net.version == address.version):
            return "MULTICAST"
        if address.version == 4 and int(address) == 0xFFFFFFFF:
            return "BROADCAST"
        if int(address) == 0:
            return "UNSPEC"
        return "UNICAST"

    def _socket_match(self, state: _State, match: SocketMatch) -> bool:
        """xt_socket: listeners on a wildcard address are ignored unless --nowildcard; --transparent wants
        IP_TRANSPARENT; --restore-skmark copies the socket's mark to the packet."""
        socket = state.packet.socket
        if socket is None or (socket.wildcard and not match.nowildcard):
            return False
        if match.transparent and not socket.transparent:
            return False
        if match.restore_skmark:
            state.packet = replace(state.packet, mark=socket.mark)
        return True


def _port_match(match: PortMatch, packet: Packet) -> bool:
    if match.sport is not None and match.sport.contains(packet.sport) == match.sport_negated:
        return False
    return not (match.dport is not None and match.dport.contains(packet.dport) == match.dport_negated)


def uniform_draw(*parts: object) -> float:
    """A draw in [0, 1) fixed by ``parts``: the kernel's random choices, made repeatable per flow."""
    text = "|".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def _statistic_match(match: StatisticMatch, packet: Packet, rule: IptRule) -> bool:
    """xt_statistic random mode, drawn from the connection and the rule (so a flow always takes the
    same branch, and flows spread as the probability says); nth mode counts packets, which one
    packet's simulation cannot."""
    if match.mode != "random":
        raise SimulationError(f"line {rule.line}: statistic --mode nth is not simulated")
    draw = uniform_draw(packet.src, packet.sport, packet.dst, packet.dport, packet.protocol, rule.chain, rule.line)
    return (draw < match.probability) != match.negated


def _icmp_match(match: IcmpMatch, packet: Packet) -> bool:
    if match.icmp_type is None:
        return not match.negated
    hit = packet.dport == match.icmp_type and (match.code is None or packet.icmp_code == match.code)
    return hit != match.negated


def _action(rule: IptRule) -> str:
    target = rule.target
    if isinstance(target, Verdict):
        return target.name
    if isinstance(target, Jump):
        return f"jump {target.chain}"
    if isinstance(target, Goto):
        return f"goto {target.chain}"
    if isinstance(target, Reject):
        return f"REJECT ({target.reject_with})"
    if isinstance(target, MarkTarget):
        return f"mark ^= {target.value:#x}/{target.mask:#x}"
    if isinstance(target, ConnmarkTarget):
        return f"connmark {target.mode}"
    if isinstance(target, Tproxy):
        return f"TPROXY to port {target.on_port}"
    if isinstance(target, Log):
        return "LOG"
    return ""
