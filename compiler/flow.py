"""The vocabulary of a verdict: flows, L7 requests, decisions, drop reasons, profiles.

Every evaluator (the IR evaluator, the reference evaluator over the parsed policies, and later
the artifact simulators) answers a :class:`Flow` with a :class:`Decision`, so their answers can be
compared field by field. The meaning of each field is DESIGN.md §2.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import Enum, IntEnum

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Profile(str, Enum):
    """Semantic profile (DESIGN.md §2): where CNIs disagree, the profile decides."""

    CILIUM = "cilium"
    K8S = "k8s"


class Protocol(IntEnum):
    """IP protocol numbers."""

    ICMP = 1
    TCP = 6
    UDP = 17
    ICMPV6 = 58
    SCTP = 132

    @classmethod
    def parse(cls, text: str) -> Protocol:
        try:
            return cls[text.upper()]
        except KeyError:
            raise ValueError(f"unknown protocol {text!r} (TCP, UDP, SCTP, ICMP, ICMPv6)") from None


#: The protocols Cilium's ``ANY`` expands to (reference/cilium.md §4.3).
ANY_PROTOCOLS = (Protocol.TCP, Protocol.UDP, Protocol.SCTP)
PORT_PROTOCOLS = frozenset(ANY_PROTOCOLS)


@dataclass(frozen=True, order=True)
class PortSpec:
    """``80/TCP`` as used on the command line."""

    port: int
    protocol: Protocol

    @classmethod
    def parse(cls, text: str) -> PortSpec:
        port, sep, proto = text.partition("/")
        if not sep or not port.isdigit():
            raise ValueError(f"invalid port {text!r}: expected PORT/PROTOCOL such as 80/TCP")
        number = int(port)
        protocol = Protocol.parse(proto)
        if protocol in PORT_PROTOCOLS and not 1 <= number <= 65535:
            raise ValueError(f"port {number} is out of range 1-65535")
        if protocol not in PORT_PROTOCOLS and not 0 <= number <= 255:
            raise ValueError(f"ICMP type {number} is out of range 0-255")
        return cls(number, protocol)

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol.name}"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    host: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, text: str) -> HttpRequest:
        """``GET:/api/v1`` (method, colon, path; path may contain colons)."""
        method, sep, path = text.partition(":")
        if not sep or not method or not path.startswith("/"):
            raise ValueError(f"invalid HTTP request {text!r}: expected METHOD:/path such as GET:/api/v1")
        return cls(method.upper(), path)

    def __str__(self) -> str:
        extra = ([f"Host: {self.host}"] if self.host else []) + [f"{n}: {v}" for n, v in self.headers]
        return f"{self.method} {self.path}" + (f" ({'; '.join(extra)})" if extra else "")


@dataclass(frozen=True)
class KafkaRequest:
    api_key: int
    api_version: int = 0
    client_id: str = ""
    topic: str = ""

    def __str__(self) -> str:
        return f"kafka apiKey={self.api_key} v{self.api_version} client={self.client_id!r} topic={self.topic!r}"


@dataclass(frozen=True)
class DnsRequest:
    name: str

    def __str__(self) -> str:
        return f"dns {self.name}"


L7Request = HttpRequest | KafkaRequest | DnsRequest


@dataclass(frozen=True)
class Flow:
    """A connection attempt: source and destination address, protocol, destination port (or ICMP type)."""

    src: IPAddress
    dst: IPAddress
    protocol: Protocol
    port: int
    l7: L7Request | None = None


class Verdict(str, Enum):
    """Hubble's verdict names for the outcome of a flow."""

    FORWARDED = "FORWARDED"
    DROPPED = "DROPPED"
    REDIRECTED = "REDIRECTED"  # allowed at L3/L4 and sent to an L7 proxy; no request was given to judge


class DropReason(IntEnum):
    """Hubble drop-reason codes (reference/cilium.md §6.5)."""

    POLICY_DENIED = 133  # no allow rule matched (default deny)
    POLICY_DENY = 181  # an explicit deny rule matched

    @property
    def text(self) -> str:
        return {133: "Policy denied", 181: "Policy denied by denylist"}[int(self)]


@dataclass(frozen=True, order=True)
class RuleRef:
    """One rule of one policy: ``NetworkPolicy shop/allow-api`` ``spec.ingress[0]`` at ``file:line``.

    Synthetic rules (allow-localhost, unenforced directions, default-allow policies) use a policy
    name in angle brackets, e.g. ``<allow-localhost>``, and no file.
    """

    policy: str
    path: str
    file: str = ""
    line: int = 0

    def __str__(self) -> str:
        where = f" ({self.file}:{self.line})" if self.file else ""
        return f"{self.policy} {self.path}{where}".strip()

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the rule, independent of where it was read."""
        return (self.policy, self.path)


class Direction(str, Enum):
    INGRESS = "ingress"
    EGRESS = "egress"


@dataclass(frozen=True)
class DirectionDecision:
    """The verdict of one endpoint's policy in one direction (egress of the source, ingress of the destination)."""

    direction: Direction
    endpoint: str  # namespace/name of the endpoint whose policy this is
    enforced: bool
    allowed: bool
    reason: DropReason | None = None
    allow_rules: frozenset[RuleRef] = frozenset()  # every allow rule that matched at L3/L4
    deny_rules: frozenset[RuleRef] = frozenset()  # every deny rule that matched
    redirect: str | None = None  # L7 parser ("http", "kafka", "dns", ...) when sent to a proxy
    l7_allowed: bool | None = None  # the proxy's answer to the flow's request, when one was given


@dataclass(frozen=True)
class Decision:
    """The verdict for a flow: both directions, combined per DESIGN.md §2."""

    flow: Flow
    verdict: Verdict
    drop_reason: DropReason | None
    egress: DirectionDecision | None  # None when the source is not an endpoint
    ingress: DirectionDecision | None  # None when the destination is not an endpoint
    l7_denied: bool = False  # dropped by an L7 proxy (HTTP 403) rather than at L3/L4

    @property
    def allowed(self) -> bool:
        """True when the connection gets through L3/L4 policy (possibly to a proxy)."""
        return self.verdict is not Verdict.DROPPED

    @staticmethod
    def combine(flow: Flow, egress: DirectionDecision | None, ingress: DirectionDecision | None) -> Decision:
        """Combine the two directions: both must allow; the source's egress is checked first."""
        for side in (egress, ingress):
            if side is not None and not side.allowed:
                return Decision(flow, Verdict.DROPPED, side.reason, egress, ingress)
        redirects = [s for s in (egress, ingress) if s is not None and s.redirect]
        if not redirects:
            return Decision(flow, Verdict.FORWARDED, None, egress, ingress)
        if flow.l7 is None:
            return Decision(flow, Verdict.REDIRECTED, None, egress, ingress)
        if all(s.l7_allowed for s in redirects):
            return Decision(flow, Verdict.FORWARDED, None, egress, ingress)
        return Decision(flow, Verdict.DROPPED, None, egress, ingress, l7_denied=True)
