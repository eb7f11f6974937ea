"""Flows in, comparable verdicts out: the bridge between :mod:`compiler.flow` and the iptables simulator.

A :class:`~compiler.flow.Flow` (source, destination, protocol, destination port or ICMP type) becomes the first
packet of that connection on the node the rules are loaded on (the cluster's ``node_ip``, DESIGN.md §2 "host"),
from a fixed ephemeral source port. The simulator's answer and an evaluator's :class:`~compiler.flow.Decision`
both map to a :class:`FlowVerdict` (allowed / dropped / redirected to a proxy port), so tests can compare the
artifact with :class:`compiler.ir.evaluate.IREvaluator` or the reference evaluator flow by flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from compiler.cluster import Cluster
from compiler.flow import Decision, Flow, Protocol
from verifier.artifacts.ipsets import IpSet
from verifier.artifacts.models import IPAddress, Ruleset
from verifier.simulate.iptables import CtState, IptablesSimulator, Node, Outcome, Packet, Result, Socket
from verifier.simulate.targets import Kind, expected

EPHEMERAL_PORT = 40000
"""Source port of simulated connections (inside Linux's default ip_local_port_range 32768-60999)."""


@dataclass(frozen=True, order=True)
class FlowVerdict:
    """What happened to a connection at L3/L4: ``allowed``, ``dropped``, or ``redirected`` to ``proxy_port``."""

    kind: Kind
    proxy_port: int | None = None

    def __str__(self) -> str:
        return f"{self.kind} to proxy port {self.proxy_port}" if self.kind == "redirected" else self.kind


def verdict_of_result(result: Result) -> FlowVerdict:
    """The simulator's outcome as a :class:`FlowVerdict`."""
    if result.outcome is Outcome.DROP:
        return FlowVerdict("dropped")
    if result.outcome is Outcome.REDIRECT:
        return FlowVerdict("redirected", result.proxy_port)
    return FlowVerdict("allowed")


def verdict_of_decision(decision: Decision) -> FlowVerdict:
    """An evaluator's :class:`Decision` at L3/L4 as a :class:`FlowVerdict` (what a target must do with the flow:
    :func:`verifier.simulate.targets.expected`, which every target comparison uses)."""
    kind, port = expected(decision)
    return FlowVerdict(kind, port)


def packet_of(
    flow: Flow,
    *,
    ctstate: CtState = "NEW",
    interfaces: Mapping[IPAddress, str] | None = None,
    socket: Socket | None = None,
) -> Packet:
    """The packet a connection of ``flow`` sends; ``interfaces`` maps an address to the node-side interface it
    sits behind (needed only by rules that test ``-i``/``-o``)."""
    names = interfaces or {}
    icmp = flow.protocol in (Protocol.ICMP, Protocol.ICMPV6)
    return Packet(
        src=flow.src,
        dst=flow.dst,
        protocol=int(flow.protocol),
        sport=0 if icmp else EPHEMERAL_PORT,
        dport=flow.port,
        icmp_code=0,
        in_interface=names.get(flow.src),
        out_interface=names.get(flow.dst),
        ctstate=ctstate,
        socket=socket,
    )


class FlowSimulator:
    """:class:`IptablesSimulator` for one cluster's node, answering :class:`Flow` s."""

    def __init__(
        self,
        ruleset: Ruleset,
        ipsets: Mapping[str, IpSet],
        cluster: Cluster,
        *,
        tproxy_route: tuple[int, int] | None = None,
        interfaces: Mapping[IPAddress, str] | None = None,
    ) -> None:
        """``tproxy_route`` is the ``ip rule fwmark V/M`` the loader installs for proxied packets, if any."""
        self.node = Node(frozenset({cluster.node_address}), tproxy_route)
        self.simulator = IptablesSimulator(ruleset, ipsets, self.node)
        self.interfaces = dict(interfaces or {})

    def simulate(self, flow: Flow, ctstate: CtState = "NEW") -> Result:
        """The first packet of ``flow`` (NEW), or a later one (ESTABLISHED: for the cost model).

        A later packet of a connection that was redirected carries the proxy's accepted socket (transparent,
        not a wildcard listener), as ``-m socket`` would find it.
        """
        packet = packet_of(flow, interfaces=self.interfaces)
        if ctstate == "NEW":
            return self.simulator.simulate(packet)
        first = self.simulator.simulate(packet)
        socket = Socket(first.proxy_port) if first.proxy_port is not None else None
        return self.simulator.simulate(packet_of(flow, ctstate=ctstate, interfaces=self.interfaces, socket=socket))

    def verdict(self, flow: Flow) -> FlowVerdict:
        """The comparable verdict of ``flow``'s first packet."""
        return verdict_of_result(self.simulate(flow))
