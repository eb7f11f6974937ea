"""Typed model of an iptables ruleset as read back from ``iptables-restore`` input or ``iptables-save`` output.

Why a model and not the text: the same rule has several spellings (``--set-mark`` vs ``--set-xmark``, implicit
``-m tcp``, ``/32`` suffixes, option order, long options; reference/iptables.md §5). Every spelling is parsed into
one normalized object here, so "what we emitted" and "what the kernel printed back" compare with ``==``. Source
positions (``line``, ``raw``) are kept on every rule but excluded from equality.

The grammar and the Transformer that build these objects live in ``grammar/iptables_save.{lark,py}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Literal

from compiler.source import NetpolcError

IPNetwork = IPv4Network | IPv6Network
IPAddress = IPv4Address | IPv6Address
Family = Literal[4, 6]

MARK_FULL = 0xFFFFFFFF
"""The mask libxtables assumes when a mark is written without ``/MASK`` (reference/iptables.md §5.3)."""

BUILTIN_CHAINS: Mapping[str, tuple[str, ...]] = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
"""Built-in chains per table (reference/iptables.md §5.1 lists the tables)."""


class ArtifactError(NetpolcError):
    """An artifact file that cannot be read: names ``file:line[:column]`` and what is wrong there.

    Raised for syntax errors and for anything the reader does not understand (an unknown match module, target
    or option) -- those are reported, never skipped, because a skipped match would change the rule's meaning.
    """

    def __init__(self, file: str, line: int, message: str, column: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.column = column
        self.message = message

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" + (f":{self.column}" if self.column else "")
        return f"{where}: {self.message}"


# ---------------------------------------------------------------------------------------------------------------
# Values shared by several matches and targets


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive port range; a single port has ``first == last``. Printed the way iptables-save prints it."""

    first: int
    last: int

    def contains(self, port: int) -> bool:
        return self.first <= port <= self.last

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}:{self.last}"


# ---------------------------------------------------------------------------------------------------------------
# IP-header fields (iptables-save prints them first, in this order: reference/iptables.md §5.2)


@dataclass(frozen=True)
class ProtocolMatch:
    """``[!] -p PROTO``, kept as the protocol number (``-p 6`` and ``-p tcp`` are the same rule)."""

    number: int
    negated: bool = False

    @property
    def name(self) -> str:
        return PROTOCOL_NAMES.get(self.number, str(self.number))


@dataclass(frozen=True)
class AddressMatch:
    """``[!] -s/-d ADDR[/LEN]``; the kernel clears host bits, so ``1.2.3.4/24`` is stored as ``1.2.3.0/24``."""

    network: IPNetwork
    negated: bool = False

    def matches(self, address: IPAddress) -> bool:
        return (address in self.network) != self.negated


@dataclass(frozen=True)
class InterfaceMatch:
    """``[!] -i/-o NAME``; a trailing ``+`` is a prefix wildcard (``cali+``)."""

    name: str
    negated: bool = False

    @property
    def wildcard(self) -> bool:
        return self.name.endswith("+")

    def matches(self, interface: str) -> bool:
        hit = interface.startswith(self.name[:-1]) if self.wildcard else interface == self.name
        return hit != self.negated


PROTOCOL_NUMBERS: Mapping[str, int] = {
    "tcp": 6, "udp": 17, "udplite": 136, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "esp": 50, "ah": 51,
    "sctp": 132, "mh": 135, "ipv6-mh": 135, "gre": 47, "dccp": 33,
}  # fmt: skip
"""Protocol names iptables accepts without /etc/protocols (libxtables ``xtables_chain_protos``) plus gre/dccp."""

PROTOCOL_NAMES: Mapping[int, str] = {
    6: "tcp", 17: "udp", 136: "udplite", 1: "icmp", 58: "ipv6-icmp", 50: "esp", 51: "ah", 132: "sctp",
    135: "mh", 47: "gre", 33: "dccp",
}  # fmt: skip
"""How iptables-save prints protocol numbers (ip6tables-save prints 58 as ``ipv6-icmp``)."""


# ---------------------------------------------------------------------------------------------------------------
# Matches (``-m MODULE ...``), one class per module; all of them are ANDed by the kernel


@dataclass(frozen=True)
class CommentMatch:
    """``-m comment --comment TEXT`` (no effect on matching; kept because emitters put rule ids there)."""

    text: str


@dataclass(frozen=True)
class MarkMatch:
    """``-m mark [!] --mark V[/M]``: true when ``(mark & M) == V`` (mask defaults to 0xffffffff)."""

    value: int
    mask: int = MARK_FULL
    negated: bool = False

    def matches(self, mark: int) -> bool:
        return ((mark & self.mask) == self.value) != self.negated


@dataclass(frozen=True)
class ConnmarkMatch:
    """``-m connmark [!] --mark V[/M]``: the same test as :class:`MarkMatch` on the connection's mark."""

    value: int
    mask: int = MARK_FULL
    negated: bool = False

    def matches(self, ctmark: int) -> bool:
        return ((ctmark & self.mask) == self.value) != self.negated


@dataclass(frozen=True)
class SetMatch:
    """``-m set [!] --match-set NAME FLAGS``; ``flags`` has one ``src``/``dst`` per set dimension.

    For ``hash:ip,port`` sets ``dst,dst`` means "destination address and destination port". ``return_nomatch``
    makes a ``nomatch`` hit count as a match; the counter options only change statistics.
    """

    name: str
    flags: tuple[Literal["src", "dst"], ...]
    negated: bool = False
    return_nomatch: bool = False
    update_counters: bool = True
    update_subcounters: bool = True


CONNTRACK_STATES = ("INVALID", "NEW", "RELATED", "ESTABLISHED", "UNTRACKED", "SNAT", "DNAT")
"""The ctstate names, in the order libxt_conntrack prints them (reference/iptables.md §5.3)."""


@dataclass(frozen=True)
class ConntrackMatch:
    """``-m conntrack [!] --ctstate S1,S2``: a set, because the kernel stores a bit mask (order is lost)."""

    states: frozenset[str]
    negated: bool = False

    def matches(self, state: str) -> bool:
        return (state in self.states) != self.negated


@dataclass(frozen=True)
class PortMatch:
    """``-m tcp|udp|sctp [!] --sport P[:Q] [!] --dport P[:Q]`` (explicit or implied by ``-p``).

    Several tcp matches in one rule with different options are merged into one, as the nf_tables backend does
    when it prints them back (``-m tcp --dport 80 -m tcp --sport 90`` reads back as one ``-m tcp``). A full range
    ``0:65535`` that is not negated is dropped, as iptables-save drops it.
    """

    protocol: Literal["tcp", "udp", "sctp"]
    sport: PortRange | None = None
    sport_negated: bool = False
    dport: PortRange | None = None
    dport_negated: bool = False


@dataclass(frozen=True)
class MultiportMatch:
    """``-m multiport [!] --dports|--sports|--ports LIST`` (at most 15 slots, a range counts 2); ``any`` is --ports."""

    direction: Literal["src", "dst", "any"]
    ports: tuple[PortRange, ...]
    negated: bool = False

    def matches(self, sport: int, dport: int) -> bool:
        def hit(port: int) -> bool:
            return any(r.contains(port) for r in self.ports)

        found = hit(sport) if self.direction == "src" else hit(dport) if self.direction == "dst" else (
            hit(sport) or hit(dport)
        )
        return found != self.negated


@dataclass(frozen=True)
class IcmpMatch:
    """``-m icmp [!] --icmp-type T[/C]`` (version 4) or ``-m icmp6 [!] --icmpv6-type T[/C]`` (version 6).

    ``icmp_type`` None is ``any``; ``code`` None means every code of the type. Names are resolved to numbers,
    as iptables-save prints numbers (``echo-request`` reads back as ``8``).
    """

    version: Family
    icmp_type: int | None
    code: int | None = None
    negated: bool = False


ADDRESS_TYPES = (
    "UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE", "UNREACHABLE", "PROHIBIT",
    "THROW", "NAT", "XRESOLVE",
)  # fmt: skip
"""libxt_addrtype's type names, in print order."""


@dataclass(frozen=True)
class AddrtypeMatch:
    """``-m addrtype [[!] --src-type TYPES] [[!] --dst-type TYPES] [--limit-iface-in|--limit-iface-out]``."""

    src_types: frozenset[str] | None = None
    src_negated: bool = False
    dst_types: frozenset[str] | None = None
    dst_negated: bool = False
    limit_iface_in: bool = False
    limit_iface_out: bool = False


@dataclass(frozen=True)
class SocketMatch:
    """``-m socket [--transparent] [--nowildcard] [--restore-skmark]``: a local socket exists for the packet."""

    transparent: bool = False
    nowildcard: bool = False
    restore_skmark: bool = False


@dataclass(frozen=True)
class StatisticMatch:
    """``-m statistic --mode random --probability P`` or ``--mode nth --every N [--packet K]`` (kube-proxy's
    backend choice, reference/iptables.md §4.1). ``probability`` is the kernel's: ``round(P * 2**31) / 2**31``."""

    mode: Literal["random", "nth"]
    probability: float = 0.0
    every: int = 0
    packet: int = 0
    negated: bool = False


Match = (
    CommentMatch | MarkMatch | ConnmarkMatch | SetMatch | ConntrackMatch | PortMatch | MultiportMatch | IcmpMatch
    | AddrtypeMatch | SocketMatch | StatisticMatch
)


# ---------------------------------------------------------------------------------------------------------------
# Targets (``-j TARGET ...`` or ``-g CHAIN``)


@dataclass(frozen=True)
class Verdict:
    """``-j ACCEPT``, ``-j DROP`` or ``-j RETURN``."""

    name: Literal["ACCEPT", "DROP", "RETURN"]


@dataclass(frozen=True)
class Jump:
    """``-j CHAIN``: run CHAIN, come back here on RETURN or when CHAIN falls off its end."""

    chain: str


@dataclass(frozen=True)
class Goto:
    """``-g CHAIN``: run CHAIN; its RETURN goes back to the caller of this chain, not here."""

    chain: str


@dataclass(frozen=True)
class Reject:
    """``-j REJECT --reject-with TYPE``; the default type is filled in (iptables-save always prints it)."""

    reject_with: str


@dataclass(frozen=True)
class MarkTarget:
    """``-j MARK``, always in ``--set-xmark V/M`` form: ``mark = (mark & ~M) ^ V``.

    The other spellings are mapped exactly as libxt_MARK does (reference/iptables.md §5.3): ``--set-mark V/M`` is
    ``V/(M|V)``, ``--set-mark V`` is ``V/0xffffffff``, ``--or-mark V`` is ``V/V``, ``--and-mark V`` is ``0/~V``,
    ``--xor-mark V`` is ``V/0``.
    """

    value: int
    mask: int

    def apply(self, mark: int) -> int:
        return ((mark & ~self.mask) ^ self.value) & MARK_FULL


@dataclass(frozen=True)
class ConnmarkTarget:
    """``-j CONNMARK``: ``set`` (``ctmark = (ctmark & ~mask) ^ value``, xmark form as for MARK), ``save``
    (``ctmark = (ctmark & ~ctmask) ^ (nfmark & nfmask)``) or ``restore`` (the reverse direction).

    Unused fields are zero: ``value``/``mask`` only for ``set``, ``nfmask``/``ctmask`` only for save/restore.
    """

    mode: Literal["set", "save", "restore"]
    value: int = 0
    mask: int = 0
    nfmask: int = 0
    ctmask: int = 0


@dataclass(frozen=True)
class Tproxy:
    """``-j TPROXY --on-port P [--on-ip A] [--tproxy-mark V[/M]]`` (mangle PREROUTING only).

    ``on_ip`` None means "the packet's destination" (the kernel's 0.0.0.0 / ::, which iptables-save prints);
    a missing ``--tproxy-mark`` is ``0/0`` and a mark without mask has mask 0xffffffff, as printed back.
    """

    on_port: int
    on_ip: IPAddress | None
    mark: int
    mask: int


@dataclass(frozen=True)
class Log:
    """``-j LOG [--log-prefix P] [--log-level N] [--log-tcp-sequence ...]``; level 4 (warning) is the default."""

    prefix: str = ""
    level: int = 4
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Dnat:
    """``-j DNAT --to-destination ADDR[:PORT]`` (nat PREROUTING/OUTPUT): the connection's new destination."""

    address: IPAddress
    port: int | None = None


@dataclass(frozen=True)
class Masquerade:
    """``-j MASQUERADE [--to-ports P[-Q]] [--random | --random-fully]`` (nat POSTROUTING)."""

    random: str = ""  # "", "random" or "random-fully"


Target = Verdict | Jump | Goto | Reject | MarkTarget | ConnmarkTarget | Tproxy | Log | Dnat | Masquerade


# ---------------------------------------------------------------------------------------------------------------
# Rules, chains, tables


@dataclass(frozen=True)
class IptRule:
    """One ``-A CHAIN ...`` line: header fields, the other matches in rule order, and the target.

    ``target`` None is a rule without ``-j``/``-g`` (it only counts packets). ``line`` and ``raw`` say where the
    rule came from; they are not part of equality, so a rule read from iptables-save equals the rule we wrote.
    """

    chain: str
    protocol: ProtocolMatch | None = None
    source: AddressMatch | None = None
    destination: AddressMatch | None = None
    in_interface: InterfaceMatch | None = None
    out_interface: InterfaceMatch | None = None
    matches: tuple[Match, ...] = ()
    target: Target | None = None
    line: int = field(default=0, compare=False)
    raw: str = field(default="", compare=False, repr=False)
    target_column: int = field(default=0, compare=False, repr=False)

    @property
    def comments(self) -> tuple[str, ...]:
        return tuple(m.text for m in self.matches if isinstance(m, CommentMatch))


@dataclass(frozen=True)
class Chain:
    """A chain and its rules in order. ``policy`` is ACCEPT/DROP for a built-in chain whose policy the file sets,
    None for user chains (and for built-in chains the file only appends to)."""

    name: str
    policy: Literal["ACCEPT", "DROP"] | None
    rules: tuple[IptRule, ...]
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Table:
    """One ``*table`` ... ``COMMIT`` block. ``chains`` keeps file order but compares as a mapping, because
    iptables-save sorts user chains by name."""

    name: str
    chains: Mapping[str, Chain]

    def with_builtin_chains(self, policy: Literal["ACCEPT", "DROP"] = "ACCEPT") -> Table:
        """This table as a freshly restored kernel table prints it: every built-in chain present, and built-in
        chains without a policy in the file given ``policy`` (iptables-save declares them all)."""
        chains = dict(self.chains)
        for name in BUILTIN_CHAINS.get(self.name, ()):
            chain = chains.get(name)
            if chain is None:
                chains[name] = Chain(name, policy, ())
            elif chain.policy is None:
                chains[name] = Chain(name, policy, chain.rules, chain.line)
        return Table(self.name, chains)


@dataclass(frozen=True)
class Ruleset:
    """All tables of one iptables (family 4) or ip6tables (family 6) file."""

    family: Family
    tables: Mapping[str, Table]
    source: str = field(default="<text>", compare=False)

    def chain(self, table: str, name: str) -> Chain:
        """The chain ``name`` of ``table``; KeyError naming both when either is missing."""
        try:
            return self.tables[table].chains[name]
        except KeyError:
            raise KeyError(f"no chain {name!r} in table {table!r} of {self.source}") from None

    def rules(self) -> Iterator[IptRule]:
        """Every rule of every table, in file order."""
        for table in self.tables.values():
            for chain in table.chains.values():
                yield from chain.rules

    def with_builtin_chains(self) -> Ruleset:
        """See :meth:`Table.with_builtin_chains`: what iptables-save prints after this file was restored."""
        tables = {name: table.with_builtin_chains() for name, table in self.tables.items()}
        return Ruleset(self.family, tables, self.source)
