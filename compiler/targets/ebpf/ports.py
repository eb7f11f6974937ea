"""Protocol/port matches → policy-key (protocol, port, prefix) triples, as Cilium 1.18 keys them.

``PortRangeToMaskedPorts`` (reference/cilium.md §1.3): a range becomes the minimal set of
power-of-two aligned (port, mask) blocks, each its own key with port prefix ``16 − wildcard bits``;
the key's proto+port prefix length is then ``8 + port prefix`` (§1.2), 0 when the protocol is
wildcarded too.
"""

from __future__ import annotations

import functools

MAX_PORT = 0xFFFF

#: A policy key's L4 part: protocol (0 = any), port (host order), proto+port prefix length L (0..24).
L4Key = tuple[int, int, int]

L4_ANY: L4Key = (0, 0, 0)


def masked_ports(lo: int, hi: int) -> list[tuple[int, int]]:
    """``[lo, hi]`` as (port, port-prefix bits) blocks; (0, 0) is every port (§1.3).

    80-90 → (80, 13), (88, 15), (90, 16); a start of 0 with an end of 0 or 65535 is all ports;
    ``hi <= lo`` is the single port ``lo``.
    """
    if lo == 0 and hi in (0, MAX_PORT):
        return [(0, 0)]
    if hi <= lo:
        return [(lo, 16)]
    out = []
    port = lo
    while port <= hi:
        size = 1 << 16 if port == 0 else port & -port  # largest power of two that aligns ``port``
        while port + size - 1 > hi:
            size >>= 1
        out.append((port, 16 - size.bit_length() + 1))
        port += size
    return out


def l4_keys(protocol: int, lo: int, hi: int) -> list[L4Key]:
    """The keys of one protocol and port range (protocol 0 only as the full wildcard)."""
    if protocol == 0:
        return [L4_ANY]
    return [(protocol, port, 8 + bits) for port, bits in masked_ports(lo, hi)]


def exact_key(protocol: int, port: int) -> L4Key:
    """One exact protocol and port (or ICMP type: type 0 stays exact, never "all types")."""
    return (protocol, port, 24)


def key_range(key: L4Key) -> tuple[int, int]:
    """The ports a key covers: ``lo + (0xffff >> port prefix)`` is the end (§1.2 ``EndPort``)."""
    _protocol, port, prefix = key
    if prefix <= 8:
        return 0, MAX_PORT
    return port, port + (MAX_PORT >> (prefix - 8))


@functools.lru_cache(maxsize=65536)
def covering(key: L4Key) -> tuple[L4Key, ...]:
    """Every broader-or-equal L4 key of ``key`` (itself included), broadest first."""
    return tuple(_covering(key))


def _covering(key: L4Key) -> list[L4Key]:
    protocol, port, prefix = key
    out = [L4_ANY]
    for length in range(8, prefix + 1):
        bits = length - 8
        mask = (MAX_PORT << (16 - bits)) & MAX_PORT
        out.append((protocol, port & mask, length))
    return out if prefix else [L4_ANY]


def port_proto_string(key: L4Key) -> str:
    """``cilium-dbg bpf policy get``'s PORT/PROTO column (``PortProtoString``, §1.3, §6.1)."""
    protocol, port, prefix = key
    if prefix == 0:
        return "ANY"
    name = PROTOCOL_NAMES.get(protocol, str(protocol))
    if prefix == 8:
        return name
    if prefix == 24:
        return f"{port}/{name}"
    lo, hi = key_range(key)
    return f"{lo}-{hi}/{name}"


PROTOCOL_NAMES = {0: "ANY", 1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}
