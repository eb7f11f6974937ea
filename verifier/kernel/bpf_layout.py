"""Byte layouts of the maps the TC datapath (``policy.bpf.c``) reads, and bpftool's JSON dump shape.

Cilium 1.18 layouts, as the kernel map holds them (shared/reference/cilium.md):
- ``struct policy_key`` (§1.2, 12 bytes): LPM prefix length, identity (host order), direction
  byte, protocol, port (network order); prefix 40 + proto/port prefix length.
- ``struct policy_entry`` (§1.4 [1.18], 8 bytes): proxy port (network order), deny bit and LPM
  prefix copy, auth, proxy-port priority.
- ``struct ipcache_key`` / ``struct remote_endpoint_info`` (§2, 24 + 24 bytes).
The endpoint table (:func:`endpoint_key`, :func:`endpoint_value`) is netpolc's own map.

The testbed loader only moves bytes from the emitted JSON into the kernel; this module is for
building fixtures and benchmark maps, and for decoding what the kernel hands back.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Any

POLICY_KEY_SIZE = 12
POLICY_ENTRY_SIZE = 8
IPCACHE_KEY_SIZE = 24
IPCACHE_VALUE_SIZE = 24
ENDPOINT_KEY_SIZE = 20
ENDPOINT_VALUE_SIZE = 12
#: Identity + direction bits, never wildcarded (cilium.md §1.2 StaticPrefixBits).
POLICY_STATIC_PREFIX = 40
#: cluster_id + pad + family (cilium.md §2 IPCACHE_STATIC_PREFIX).
IPCACHE_STATIC_PREFIX = 32
#: ``bpf-policy-map-max`` default (cilium.md §1.1); the datapath's inner-map template has exactly this size.
POLICY_MAP_SIZE = 16384
#: ``struct ipcache_key.family`` (cilium.md §2).
FAMILY_IPV4 = 1
FAMILY_IPV6 = 2
#: ``policy_entry.flags`` bits (cilium.md §1.4).
FLAG_DENY = 0x1
LPM_SHIFT = 3

INGRESS = 0
EGRESS = 1


def policy_key(identity: int, egress: bool, protocol: int = 0, port: int = 0, port_prefix: int | None = None) -> bytes:
    """A policy-map key; ``port_prefix`` is the port's significant bits (16 = one port, default).

    Wildcards follow ``NewKeyFromPolicyKey`` (cilium.md §1.2): protocol 0 wildcards the port
    too (prefix 40); port 0 wildcards the port (48); a port with n significant bits gives 48+n.
    """
    if protocol == 0:
        if port or port_prefix:
            raise ValueError("the protocol can only be wildcarded together with the port")
        proto_port_bits = 0
    elif port == 0 and not port_prefix:
        proto_port_bits = 8
    else:
        bits = 16 if port_prefix is None else port_prefix
        if not 1 <= bits <= 16:
            raise ValueError(f"port prefix {bits} out of range 1-16")
        proto_port_bits = 8 + bits
    prefixlen = POLICY_STATIC_PREFIX + proto_port_bits
    return struct.pack("<IIBB", prefixlen, identity, 1 if egress else 0, protocol) + struct.pack(">H", port)


def key_prefix(key: bytes) -> int:
    """The proto/port prefix length (0..24) of a policy key: its stored prefix minus 40."""
    return int(struct.unpack_from("<I", key)[0]) - POLICY_STATIC_PREFIX


def policy_entry(*, prefix: int, deny: bool = False, proxy_port: int = 0, priority: int = 0, auth: int = 0) -> bytes:
    """A policy-map value; ``prefix`` must equal the key's proto/port prefix (cilium.md §1.4 IsValid)."""
    if not 0 <= prefix <= 24:
        raise ValueError(f"LPM prefix length {prefix} out of range 0-24")
    if deny and (proxy_port or priority or auth):
        raise ValueError("deny entries carry no proxy port, priority or auth (cilium.md §1.4)")
    flags = (FLAG_DENY if deny else 0) | (prefix << LPM_SHIFT)
    return struct.pack(">H", proxy_port) + struct.pack("<BBBBH", flags, auth, priority, 0, 0)


def _address(text: str) -> tuple[int, bytes, int]:
    """(family, 16 address bytes, address bits) of an address or prefix."""
    net = ipaddress.ip_network(text, strict=False)
    raw = net.network_address.packed
    family = FAMILY_IPV4 if net.version == 4 else FAMILY_IPV6
    return family, raw.ljust(16, b"\0"), net.prefixlen


def ipcache_key(prefix: str) -> bytes:
    """An ipcache key for an address (full length) or a CIDR (cilium.md §2)."""
    family, raw, bits = _address(prefix)
    return struct.pack("<IHBB", IPCACHE_STATIC_PREFIX + bits, 0, 0, family) + raw


def ipcache_value(identity: int) -> bytes:
    """A ``remote_endpoint_info`` with only the identity set (no tunnel, no IPsec key)."""
    return struct.pack("<I", identity) + bytes(16) + struct.pack("<HBB", 0, 0, 0)


def endpoint_key(address: str) -> bytes:
    """netpolc's endpoint-table key: 16 address bytes, family, 3 bytes padding."""
    family, raw, bits = _address(address)
    if bits not in (32, 128):
        raise ValueError(f"endpoint address {address!r} must be a single address")
    return raw + struct.pack("<B3x", family)


def endpoint_value(epid: int, identity: int, *, ingress_enforced: bool, egress_enforced: bool) -> bytes:
    """netpolc's endpoint-table value: endpoint ID, identity, enforcement flags (informational)."""
    flags = (1 if ingress_enforced else 0) | (2 if egress_enforced else 0)
    return struct.pack("<III", epid, identity, flags)


def epid_key(epid: int) -> bytes:
    """Key of the policy map-in-map: the endpoint ID as a host-order u32."""
    return struct.pack("<I", epid)


def hex_list(data: bytes) -> list[str]:
    """Bytes as bpftool prints them in JSON: ``["0x0c", "0x00", …]``."""
    return [f"0x{b:02x}" for b in data]


def parse_hex_list(items: object, what: str) -> bytes:
    """The inverse of :func:`hex_list`; ValueError names ``what`` on anything else."""
    if not isinstance(items, list) or not items:
        raise ValueError(f'{what}: expected a non-empty list of "0x.." byte strings')
    out = bytearray()
    for item in items:
        if not isinstance(item, str) or not item.lower().startswith("0x"):
            raise ValueError(f'{what}: {item!r} is not a "0x.." byte string')
        try:
            value = int(item, 16)
        except ValueError:
            raise ValueError(f"{what}: {item!r} is not hexadecimal") from None
        if not 0 <= value <= 0xFF:
            raise ValueError(f"{what}: {item!r} is not one byte")
        out.append(value)
    return bytes(out)


def dump_entry(key: bytes, value: bytes, formatted: dict[str, Any] | None = None) -> dict[str, Any]:
    """One element of ``bpftool map dump -j`` output."""
    entry: dict[str, Any] = {"key": hex_list(key), "value": hex_list(value)}
    if formatted is not None:
        entry["formatted"] = formatted
    return entry


@dataclass(frozen=True)
class PolicyEntryView:
    """A decoded ``policy_entry`` (for traces and tests)."""

    proxy_port: int
    deny: bool
    prefix: int
    auth: int
    priority: int

    @classmethod
    def decode(cls, value: bytes) -> PolicyEntryView:
        if len(value) != POLICY_ENTRY_SIZE:
            raise ValueError(f"policy_entry has {len(value)} bytes, expected {POLICY_ENTRY_SIZE}")
        (proxy_port,) = struct.unpack_from(">H", value)
        flags, auth, priority = value[2], value[3], value[4]
        return cls(proxy_port, bool(flags & FLAG_DENY), flags >> LPM_SHIFT, auth, priority)
