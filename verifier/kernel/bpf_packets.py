"""Crafted Ethernet frames for ``BPF_PROG_TEST_RUN`` (tests and benchmarks of the TC datapath).

Only what the datapath parses has to be right (EtherType, IP version/IHL/protocol/fragment
fields/addresses, IPv6 extension headers, L4 ports, ICMP type and echo identifier); checksums are
filled in anyway so a frame is also valid on a wire.
"""

from __future__ import annotations

import ipaddress
import struct

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ARP = 0x0806
TCP_SYN = 0x02
TCP_ACK = 0x10
_MACS = bytes.fromhex("020000000002") + bytes.fromhex("020000000001")


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int(word) for word in struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ethernet(ethertype: int, payload: bytes) -> bytes:
    return _MACS + struct.pack("!H", ethertype) + payload


def tcp(sport: int, dport: int, flags: int = TCP_SYN) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)


def udp(sport: int, dport: int, payload: bytes = b"netpolc") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def sctp(sport: int, dport: int) -> bytes:
    """Common header plus an INIT chunk header (the datapath reads the ports only)."""
    return struct.pack("!HHII", sport, dport, 0, 0) + struct.pack("!BBH", 1, 0, 4)


def icmp(icmp_type: int, code: int = 0, ident: int = 0x1234, seq: int = 1) -> bytes:
    body = struct.pack("!BBHHH", icmp_type, code, 0, ident, seq)
    return body[:2] + struct.pack("!H", _checksum(body)) + body[4:]


def ipv4(src: str, dst: str, protocol: int, payload: bytes, *, frag_offset: int = 0, more: bool = False) -> bytes:
    """An IPv4 packet; ``frag_offset`` in 8-byte units (non-zero = a non-first fragment)."""
    flags_frag = (0x2000 if more else 0) | frag_offset
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(payload),
        1,
        flags_frag,
        64,
        protocol,
        0,
        ipaddress.IPv4Address(src).packed,
        ipaddress.IPv4Address(dst).packed,
    )
    header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    return header + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes, *, extensions: bytes = b"") -> bytes:
    """An IPv6 packet; ``extensions`` are pre-built extension headers (the first one's type is ``next_header``)."""
    body = extensions + payload
    return (
        struct.pack("!IHBB", 6 << 28, len(body), next_header, 64)
        + ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + body
    )


def hop_by_hop(next_header: int) -> bytes:
    """An 8-byte hop-by-hop options header (PadN only)."""
    return struct.pack("!BB", next_header, 0) + bytes([1, 4, 0, 0, 0, 0])


def l4(protocol: int, sport: int, dport: int) -> bytes:
    """The upper-layer header for a protocol: ports for TCP/UDP/SCTP, ``dport`` as ICMP type."""
    if protocol == 6:
        return tcp(sport, dport)
    if protocol == 17:
        return udp(sport, dport)
    if protocol == 132:
        return sctp(sport, dport)
    if protocol in (1, 58):
        return icmp(dport)
    raise ValueError(f"no upper-layer builder for protocol {protocol}")


def frame(src: str, dst: str, protocol: int, dport: int, *, sport: int = 40000) -> bytes:
    """A full frame from ``src`` to ``dst`` (IPv4 or IPv6 by address) for one protocol and port/type."""
    payload = l4(protocol, sport, dport)
    if ipaddress.ip_address(src).version == 4:
        return ethernet(ETH_P_IP, ipv4(src, dst, protocol, payload))
    return ethernet(ETH_P_IPV6, ipv6(src, dst, protocol, payload))
