"""Typed model of ipsets as ``ipset restore`` leaves them (and ``ipset save`` prints them), with kernel lookup.

An :class:`IpSet` holds its members in one canonical order, so a set read from our restore file equals the same
set read back from ``ipset save`` (which prints in hash order). :meth:`IpSet.lookup` implements the kernel's
test, including ``nomatch``: ipset(8) says that for the hash types holding networks "the most specific prefix
wins" and a matching ``nomatch`` entry makes the test fail, so ``add S 10.0.0.0/8`` plus
``add S 10.1.0.0/16 nomatch`` means "10/8 except 10.1/16" (reference/iptables.md §5.5).

Only the set types of the iptables dialect contract are modelled: hash:ip, hash:net, hash:ip,port and
hash:net,port; the reader (grammar/ipset.py) reports any other type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network
from typing import Literal

from verifier.artifacts.models import Family, IPAddress, IPNetwork

SetType = Literal["hash:net", "hash:ip", "hash:ip,port", "hash:net,port"]
SET_TYPES: tuple[SetType, ...] = ("hash:ip", "hash:ip,port", "hash:net", "hash:net,port")
"""The set types of the iptables dialect contract (reference/iptables.md §5.5, "Entries by type")."""
NET_TYPES = frozenset({"hash:net", "hash:net,port"})
"""Types whose entries are networks; only these accept ``nomatch`` and use longest-prefix lookup."""
PORT_TYPES = frozenset({"hash:ip,port", "hash:net,port"})
"""Two-dimensional types: address and (protocol, port)."""

SET_NAME_MAX = 31  # IPSET_MAXNAMELEN - 1 (reference/iptables.md §5.5, "Limits")
DEFAULT_HASHSIZE = 1024
DEFAULT_MAXELEM = 65536  # reference/iptables.md §5.5, "Limits"

SET_PROTOCOLS: Mapping[str, int] = {"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136, "icmp": 1, "icmpv6": 58}
"""Protocols an ``IP,proto:port`` entry may name (a bare port is tcp), with their numbers."""
PORTLESS_PROTOCOLS = frozenset({"icmp", "icmpv6"})
"""Protocols whose "port" is ``type << 8 | code`` (the kernel's encoding in ip_set_get_ip4_port)."""

ICMP_CODES: Mapping[str, tuple[int, int]] = {
    "echo-reply": (0, 0), "pong": (0, 0), "network-unreachable": (3, 0), "host-unreachable": (3, 1),
    "protocol-unreachable": (3, 2), "port-unreachable": (3, 3), "fragmentation-needed": (3, 4),
    "source-route-failed": (3, 5), "network-unknown": (3, 6), "host-unknown": (3, 7),
    "network-prohibited": (3, 9), "host-prohibited": (3, 10), "TOS-network-unreachable": (3, 11),
    "TOS-host-unreachable": (3, 12), "communication-prohibited": (3, 13), "host-precedence-violation": (3, 14),
    "precedence-cutoff": (3, 15), "source-quench": (4, 0), "network-redirect": (5, 0), "host-redirect": (5, 1),
    "TOS-network-redirect": (5, 2), "TOS-host-redirect": (5, 3), "echo-request": (8, 0), "ping": (8, 0),
    "router-advertisement": (9, 0), "router-solicitation": (10, 0), "ttl-zero-during-transit": (11, 0),
    "ttl-zero-during-reassembly": (11, 1), "ip-header-bad": (12, 0), "required-option-missing": (12, 1),
    "timestamp-request": (13, 0), "timestamp-reply": (14, 0), "address-mask-request": (17, 0),
    "address-mask-reply": (18, 0),
}  # fmt: skip
"""``icmp:NAME`` type/code pairs of ipset's ``hash:*,port`` entries (libipset icmp.c); ``icmp:T/C`` also works.
``ipset save`` prints a pair by its name when it has one (``10.0.0.1,icmp:echo-request``)."""

ICMPV6_CODES: Mapping[str, tuple[int, int]] = {
    "no-route": (1, 0), "communication-prohibited": (1, 1), "address-unreachable": (1, 3),
    "port-unreachable": (1, 4), "packet-too-big": (2, 0), "ttl-zero-during-transit": (3, 0),
    "ttl-zero-during-reassembly": (3, 1), "bad-header": (4, 0), "unknown-header-type": (4, 1),
    "unknown-option": (4, 2), "echo-request": (128, 0), "ping": (128, 0), "echo-reply": (129, 0), "pong": (129, 0),
    "router-solicitation": (133, 0), "router-advertisement": (134, 0), "neighbour-solicitation": (135, 0),
    "neighbor-solicitation": (135, 0), "neighbour-advertisement": (136, 0), "neighbor-advertisement": (136, 0),
    "redirect": (137, 0),
}  # fmt: skip
"""``icmpv6:NAME`` pairs (libipset icmpv6.c)."""


@dataclass(frozen=True)
class SetMember:
    """One entry. ``network`` is the address part (a host is a /32 or /128); ``proto`` and ``port`` are set for
    the ``,port`` types. For icmp/icmpv6 entries ``port`` is ``type << 8 | code``, the kernel's encoding.
    ``nomatch`` only exists on the hash:net types; ``comment`` only on sets created with ``comment``."""

    network: IPNetwork
    proto: str | None = None
    port: int | None = None
    nomatch: bool = False
    comment: str | None = None

    @property
    def key(self) -> tuple[IPNetwork, str | None, int | None]:
        """What identifies the entry in the kernel's hash (nomatch and comment are its data)."""
        return self.network, self.proto, self.port

    @property
    def value(self) -> str:
        """The entry as ``ipset add`` takes it (hosts without ``/32``; icmp as ``icmp:T/C``)."""
        host = self.network.prefixlen == self.network.max_prefixlen
        text = str(self.network.network_address) if host else str(self.network)
        if self.port is None:
            return text
        if self.proto in PORTLESS_PROTOCOLS:
            return f"{text},{self.proto}:{self.port >> 8}/{self.port & 0xFF}"
        return f"{text},{self.proto}:{self.port}"

    def sort_key(self) -> tuple[int, int, int, str, int]:
        net = self.network
        return (net.version, int(net.network_address), net.prefixlen, self.proto or "", self.port or 0)


@dataclass(frozen=True)
class SetOptions:
    """``create`` options. Sizing and hashing parameters do not change membership, so ``hashsize``,
    ``bucketsize``, ``initval`` (random per create) and ``revision`` are not compared; ``maxelem`` is."""

    maxelem: int = DEFAULT_MAXELEM
    comment: bool = False
    counters: bool = False
    hashsize: int | None = field(default=None, compare=False)
    bucketsize: int | None = field(default=None, compare=False)
    initval: int | None = field(default=None, compare=False)
    revision: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class IpSet:
    """A set as the kernel holds it after a restore stream: members in canonical order (not file order)."""

    name: str
    type: SetType
    family: Family
    members: tuple[SetMember, ...]
    options: SetOptions = SetOptions()
    line: int = field(default=0, compare=False)

    @property
    def dimension(self) -> int:
        """1 for hash:ip/hash:net, 2 for the ``,port`` types (the kernel's ``set->type->dimension``)."""
        return 2 if self.type in PORT_TYPES else 1

    @cached_property
    def _index(self) -> dict[tuple[str | None, int | None], dict[int, dict[int, bool]]]:
        """(proto, port) -> prefix length -> network address -> nomatch; for the longest-prefix walk."""
        index: dict[tuple[str | None, int | None], dict[int, dict[int, bool]]] = {}
        for member in self.members:
            by_prefix = index.setdefault((member.proto, member.port), {})
            by_prefix.setdefault(member.network.prefixlen, {})[int(member.network.network_address)] = member.nomatch
        return index

    def lookup(self, address: IPAddress, proto: str | None = None, port: int | None = None) -> bool:
        """Kernel semantics of ``ipset test`` / ``-m set``: is (address[, proto, port]) in the set?

        The walk goes over prefix lengths from the most specific down; the first entry that contains the
        address decides, and a ``nomatch`` entry decides "no" (ipset(8), "nomatch"; the kernel's
        hash:net ``mtype_test_cidrs``). Timeouts are not modelled (the contract has none).
        """
        return self.probe(address, proto, port) is True

    def probe(self, address: IPAddress, proto: str | None = None, port: int | None = None) -> bool | None:
        """The entry that decides a lookup: True (a match), False (a ``nomatch`` entry, which ``-m set
        --return-nomatch`` turns into a match) or None (no entry contains the key)."""
        if address.version != self.family:
            return None
        key: tuple[str | None, int | None] = (None, None)
        if self.type in PORT_TYPES:
            if proto is None or port is None:
                return None
            key = (proto, port)
        by_prefix = self._index.get(key)
        if not by_prefix:
            return None
        value = int(address)
        bits = address.max_prefixlen
        for prefix in self._prefixes(key):
            network = value & (((1 << prefix) - 1) << (bits - prefix))
            nomatch = by_prefix[prefix].get(network)
            if nomatch is not None:
                return not nomatch
        return None

    def _prefixes(self, key: tuple[str | None, int | None]) -> list[int]:
        """Prefix lengths present under ``key``, most specific first (cached per key)."""
        cache = self._prefix_cache
        if key not in cache:
            cache[key] = sorted(self._index.get(key, {}), reverse=True)
        return cache[key]

    @cached_property
    def _prefix_cache(self) -> dict[tuple[str | None, int | None], list[int]]:
        return {}

    def to_restore(self) -> list[str]:
        """This set as ``ipset restore`` lines (``create`` then one ``add`` per member, canonical order)."""
        family = "inet" if self.family == 4 else "inet6"
        create = f"create {self.name} {self.type} family {family} maxelem {self.options.maxelem}"
        create += " comment" * self.options.comment + " counters" * self.options.counters
        lines = [create]
        for member in self.members:
            line = f"add {self.name} {member.value}" + " nomatch" * member.nomatch
            if member.comment is not None:
                line += f' comment "{member.comment}"'
            lines.append(line)
        return lines


def network_of(address: IPAddress, prefix: int) -> IPNetwork:
    """``address/prefix`` with host bits cleared, as the kernel stores a hash:net entry."""
    if address.version == 4:
        return IPv4Network((int(address), prefix), strict=False)
    return IPv6Network((int(address), prefix), strict=False)
