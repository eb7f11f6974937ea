"""Byte layouts of the Cilium 1.18 BPF maps the eBPF target writes, and their bpftool JSON shape.

Encoders and decoders live side by side so the simulator (verifier/simulate/ebpf.py) reads the
same bytes the kernel would get, without trusting the ``formatted`` objects:

- ``struct policy_key`` (12 B) and ``struct policy_entry`` (8 B): reference/cilium.md §1.2, §1.4.
  ``prefixlen`` and ``sec_label`` are host order (little-endian on every machine we target),
  ``dport`` and ``proxy_port`` are network order (``__be16``).
- ``struct ipcache_key`` (24 B) and ``struct remote_endpoint_info`` (24 B): reference/cilium.md §2.

The JSON shape is ``bpftool -j map dump``'s: one object per entry with ``key``/``value`` as lists
of ``"0x.."`` byte strings and a ``formatted`` object with the C field names. As bpftool prints
BTF integers in host order, ``formatted`` shows a ``__be16`` as the little-endian reading of its
bytes (port 80 → 20480), exactly as a real dump would.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from functools import cached_property
from typing import Any

# --- policy map (reference/cilium.md §1.2, §1.4) ----------------------------------------------

POLICY_KEY_SIZE = 12
POLICY_ENTRY_SIZE = 8
#: ``StaticPrefixBits``: sec_label (32) + direction byte (8) are never wildcarded (§1.2).
POLICY_STATIC_PREFIX = 40
#: ``POLICY_FULL_PREFIX`` = 8 × (12 − 4): the datapath always looks up with 64 (§1.2).
POLICY_FULL_PREFIX = 64
POLICY_FLAG_DENY = 0x01  # policyFlagDeny (§1.4)
POLICY_FLAG_LPM_SHIFT = 3  # lpm_prefix_length in flags bits 3-7 (§1.4)
INGRESS = 0  # policy_key.egress bit: 0 ingress, 1 egress (§1.2)
EGRESS = 1

_POLICY_KEY = struct.Struct("<IIBB2s")  # prefixlen, sec_label (host order), egress, protocol, dport (be16)
_POLICY_ENTRY = struct.Struct("<2sBBBBH")  # proxy_port (be16), flags, auth_type, priority, pad1, pad2


@dataclass(frozen=True, order=True)
class PolicyKey:
    """A policy-map key: remote identity (0 = any), direction, protocol (0 = any), port, and the
    proto+port prefix length ``L`` (0..24); the stored ``prefixlen`` is 40 + L (§1.2)."""

    identity: int
    egress: int
    protocol: int
    port: int
    port_prefix: int  # L: 0 (proto and port wildcarded), 8 (port wildcarded), 8+n (masked), 24 (exact)

    @property
    def prefixlen(self) -> int:
        return POLICY_STATIC_PREFIX + self.port_prefix

    def encode(self) -> bytes:
        return _POLICY_KEY.pack(self.prefixlen, self.identity, self.egress, self.protocol,
                                self.port.to_bytes(2, "big"))

    @classmethod
    def decode(cls, data: bytes) -> PolicyKey:
        if len(data) != POLICY_KEY_SIZE:
            raise ValueError(f"policy_key must be {POLICY_KEY_SIZE} bytes, got {len(data)}")
        prefixlen, identity, egress, protocol, dport = _POLICY_KEY.unpack(data)
        if not POLICY_STATIC_PREFIX <= prefixlen <= POLICY_FULL_PREFIX:
            raise ValueError(f"policy_key prefixlen {prefixlen} outside {POLICY_STATIC_PREFIX}..{POLICY_FULL_PREFIX}")
        return cls(identity, egress & 1, protocol, int.from_bytes(dport, "big"), prefixlen - POLICY_STATIC_PREFIX)

    def data_bits(self) -> int:
        """Bytes 4..11 (what the LPM trie matches on) as one 64-bit big-endian integer."""
        return int.from_bytes(self.encode()[4:], "big")

    @cached_property
    def trie_bits(self) -> int:
        """The first ``prefixlen`` bits of :meth:`data_bits`: what the trie stores the key under
        (computed once per key: a cluster's maps share their decoded keys)."""
        return self.data_bits() >> (POLICY_FULL_PREFIX - self.prefixlen)

    def formatted(self) -> dict[str, Any]:
        raw = self.encode()
        return {
            "lpm_key": {"prefixlen": self.prefixlen},
            "sec_label": self.identity,
            "egress": self.egress,
            "pad": 0,
            "protocol": self.protocol,
            "dport": int.from_bytes(raw[10:12], "little"),
        }


@dataclass(frozen=True)
class PolicyEntry:
    """A policy-map value: deny flag, proxy port and its priority, the copied prefix length (§1.4).

    Deny entries carry no proxy port, priority or auth (``NewMapStateEntry`` forces them to 0).
    """

    deny: bool
    proxy_port: int
    priority: int
    port_prefix: int
    auth_type: int = 0

    def encode(self) -> bytes:
        flags = (POLICY_FLAG_DENY if self.deny else 0) | (self.port_prefix << POLICY_FLAG_LPM_SHIFT)
        return _POLICY_ENTRY.pack(self.proxy_port.to_bytes(2, "big"), flags, self.auth_type, self.priority, 0, 0)

    @classmethod
    def decode(cls, data: bytes) -> PolicyEntry:
        if len(data) != POLICY_ENTRY_SIZE:
            raise ValueError(f"policy_entry must be {POLICY_ENTRY_SIZE} bytes, got {len(data)}")
        proxy, flags, auth, priority, _pad1, _pad2 = _POLICY_ENTRY.unpack(data)
        if flags & 0x06:
            raise ValueError(f"policy_entry reserved flag bits set (flags 0x{flags:02x})")
        return cls(bool(flags & POLICY_FLAG_DENY), int.from_bytes(proxy, "big"), priority,
                   flags >> POLICY_FLAG_LPM_SHIFT, auth)

    def formatted(self) -> dict[str, Any]:
        raw = self.encode()
        return {
            "proxy_port": int.from_bytes(raw[0:2], "little"),
            "deny": int(self.deny),
            "reserved": 0,
            "lpm_prefix_length": self.port_prefix,
            "auth_type": self.auth_type & 0x7F,
            "has_explicit_auth_type": self.auth_type >> 7,
            "proxy_port_priority": self.priority,
            "pad1": 0,
            "pad2": 0,
        }


# --- ipcache (reference/cilium.md §2) ---------------------------------------------------------

IPCACHE_KEY_SIZE = 24
IPCACHE_VALUE_SIZE = 24
IPCACHE_STATIC_PREFIX = 32  # cluster_id, pad1, family (§2)
FAMILY_IPV4 = 1  # ENDPOINT_KEY_IPV4
FAMILY_IPV6 = 2  # ENDPOINT_KEY_IPV6

_IPCACHE_KEY = struct.Struct("<IHBB16s")  # prefixlen, cluster_id, pad1, family, ip (network order)
_IPCACHE_VALUE = struct.Struct("<I16sHBB")  # sec_identity, tunnel_endpoint, pad, key, flags

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class IpcacheEntry:
    """One ``cilium_ipcache_v2`` entry: a prefix and its identity (local node: no tunnel)."""

    network: IPNetwork
    identity: int

    def encode_key(self) -> bytes:
        family = FAMILY_IPV4 if self.network.version == 4 else FAMILY_IPV6
        addr = self.network.network_address.packed.ljust(16, b"\0")
        return _IPCACHE_KEY.pack(IPCACHE_STATIC_PREFIX + self.network.prefixlen, 0, 0, family, addr)

    def encode_value(self) -> bytes:
        return _IPCACHE_VALUE.pack(self.identity, b"\0" * 16, 0, 0, 0)

    @classmethod
    def decode(cls, key: bytes, value: bytes) -> IpcacheEntry:
        if len(key) != IPCACHE_KEY_SIZE or len(value) != IPCACHE_VALUE_SIZE:
            raise ValueError(f"ipcache key/value must be {IPCACHE_KEY_SIZE}/{IPCACHE_VALUE_SIZE} bytes")
        prefixlen, cluster_id, _pad, family, addr = _IPCACHE_KEY.unpack(key)
        if cluster_id != 0:
            raise ValueError(f"ipcache key with cluster_id {cluster_id}: only the local cluster is modelled")
        identity = _IPCACHE_VALUE.unpack(value)[0]
        bits = prefixlen - IPCACHE_STATIC_PREFIX
        network: IPNetwork
        if family == FAMILY_IPV4:
            network = ipaddress.IPv4Network((addr[:4], bits))
        elif family == FAMILY_IPV6:
            network = ipaddress.IPv6Network((addr, bits))
        else:
            raise ValueError(f"ipcache key with unknown family {family}")
        return cls(network, identity)

    def formatted(self) -> dict[str, Any]:
        key = self.encode_key()
        return {
            "key": {
                "lpm_key": {"prefixlen": IPCACHE_STATIC_PREFIX + self.network.prefixlen},
                "cluster_id": 0,
                "pad1": 0,
                "family": key[7],
                "ip": str(self.network.network_address),
            },
            "value": {
                "sec_identity": self.identity,
                "tunnel_endpoint": "0.0.0.0",
                "pad": 0,
                "key": 0,
                "flag_skip_tunnel": 0,
                "flag_has_tunnel_ep": 0,
                "flag_ipv6_tunnel_ep": 0,
            },
        }


# --- bpftool JSON -----------------------------------------------------------------------------

_HEX = [f"0x{b:02x}" for b in range(256)]


def hex_bytes(data: bytes) -> list[str]:
    """``bpftool -j`` byte arrays: ``["0x28", "0x00", ...]``."""
    return [_HEX[b] for b in data]


def parse_hex_bytes(items: Any, what: str) -> bytes:
    """The inverse of :func:`hex_bytes`, refusing anything that is not a list of byte strings."""
    if not isinstance(items, list):
        raise ValueError(f"{what}: expected a list of \"0x..\" byte strings")
    n = len(items)
    if set(map(type, items)) <= {str} and set(map(len, items)) <= {4}:  # what hex_bytes writes, fast
        joined = "".join(items)
        if joined[0::4] == "0" * n and joined[1::4] == "x" * n:
            try:
                data = bytes.fromhex(joined.replace("0x", " "))
            except ValueError:
                data = b""
            if len(data) == n:
                return data  # else a bad digit: the loop below names it
    out = bytearray()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{what}: {item!r} is not a byte string")
        value = int(item, 16)
        if not 0 <= value <= 0xFF:
            raise ValueError(f"{what}: {item!r} is not one byte")
        out.append(value)
    return bytes(out)


def dump_entry(key: bytes, value: bytes, formatted: Any) -> dict[str, Any]:
    """One ``bpftool map dump -j`` entry: key and value bytes, and their ``formatted`` reading."""
    return {"key": hex_bytes(key), "value": hex_bytes(value), "formatted": formatted}


def entry_bytes(doc: Any) -> tuple[bytes, bytes]:
    """The key and value bytes of one dumped entry (what :func:`dump_entry` wrote)."""
    return parse_hex_bytes(doc["key"], "key"), parse_hex_bytes(doc["value"], "value")


def policy_dump_entry(key: PolicyKey, entry: PolicyEntry) -> dict[str, Any]:
    return dump_entry(key.encode(), entry.encode(), {"key": key.formatted(), "value": entry.formatted()})


def ipcache_dump_entry(entry: IpcacheEntry) -> dict[str, Any]:
    return dump_entry(entry.encode_key(), entry.encode_value(), entry.formatted())
