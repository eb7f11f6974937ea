"""Byte layouts against reference/cilium.md §1.2, §1.4 (policy map), §2 (ipcache), and §1.3 (ports)."""

from __future__ import annotations

import ipaddress

import pytest

from compiler.targets.ebpf.layout import (
    IpcacheEntry,
    PolicyEntry,
    PolicyKey,
    hex_bytes,
    parse_hex_bytes,
    policy_dump_entry,
)
from compiler.targets.ebpf.ports import covering, key_range, masked_ports, port_proto_string


def test_policy_key_is_12_bytes_prefix_le_identity_le_direction_proto_and_be16_port() -> None:
    key = PolicyKey(identity=0x01020304, egress=1, protocol=6, port=80, port_prefix=24)
    assert key.encode() == bytes([
        64, 0, 0, 0,  # lpm prefixlen 40 + 24, host order (LE)
        0x04, 0x03, 0x02, 0x01,  # sec_label, host order
        0x01,  # egress:1
        0x06,  # protocol TCP
        0x00, 0x50,  # dport 80, network order
    ])
    assert PolicyKey.decode(key.encode()) == key


@pytest.mark.parametrize(("port_prefix", "prefixlen"), [(0, 40), (8, 48), (13, 53), (24, 64)])
def test_stored_prefix_length_is_40_plus_proto_port_prefix(port_prefix: int, prefixlen: int) -> None:
    assert PolicyKey(1, 0, 6 if port_prefix else 0, 0, port_prefix).encode()[0] == prefixlen


def test_policy_entry_is_8_bytes_be16_proxy_port_flags_with_prefix_and_priority() -> None:
    entry = PolicyEntry(deny=False, proxy_port=10002, priority=27, port_prefix=13)
    assert entry.encode() == bytes([0x27, 0x12, 13 << 3, 0, 27, 0, 0, 0])
    deny = PolicyEntry(deny=True, proxy_port=0, priority=0, port_prefix=24)
    assert deny.encode() == bytes([0, 0, 0x01 | (24 << 3), 0, 0, 0, 0, 0])
    assert PolicyEntry.decode(entry.encode()) == entry
    with pytest.raises(ValueError, match="reserved"):
        PolicyEntry.decode(bytes([0, 0, 0x02, 0, 0, 0, 0, 0]))


def test_ipcache_key_and_value_are_24_bytes_each() -> None:
    entry = IpcacheEntry(ipaddress.ip_network("10.244.1.0/24"), (1 << 24) | 5)
    key = entry.encode_key()
    assert key == bytes([56, 0, 0, 0, 0, 0, 0, 1, 10, 244, 1, 0]) + bytes(12)  # 32 + 24, family IPv4
    value = entry.encode_value()
    assert value[:4] == bytes([5, 0, 0, 1]) and value[4:] == bytes(20)
    assert IpcacheEntry.decode(key, value) == entry
    v6 = IpcacheEntry(ipaddress.ip_network("fd00::/64"), 10)
    assert v6.encode_key()[:8] == bytes([96, 0, 0, 0, 0, 0, 0, 2])
    assert IpcacheEntry.decode(v6.encode_key(), v6.encode_value()) == v6


def test_bpftool_json_shape_and_formatted_fields() -> None:
    doc = policy_dump_entry(PolicyKey(256, 0, 6, 80, 24), PolicyEntry(False, 0, 0, 24))
    assert doc["key"] == ["0x40", "0x00", "0x00", "0x00", "0x00", "0x01", "0x00", "0x00", "0x00", "0x06", "0x00",
                          "0x50"]
    assert len(doc["value"]) == 8
    assert doc["formatted"]["key"]["dport"] == 0x5000  # bpftool prints the __be16 as host-order u16
    assert doc["formatted"]["key"]["sec_label"] == 256
    assert parse_hex_bytes(hex_bytes(b"\x00\xff"), "x") == b"\x00\xff"
    with pytest.raises(ValueError):
        parse_hex_bytes(["0x100"], "x")


@pytest.mark.parametrize(("lo", "hi", "expected"), [
    (80, 90, [(80, 13), (88, 15), (90, 16)]),
    (8000, 8080, [(8000, 10), (8064, 12), (8080, 16)]),
    (1024, 65535, [(1024, 6), (2048, 5), (4096, 4), (8192, 3), (16384, 2), (32768, 1)]),
    (16, 31, [(16, 12)]),
    (0, 65535, [(0, 0)]),
    (443, 443, [(443, 16)]),
    (0, 10, [(0, 13), (8, 15), (10, 16)]),
])
def test_port_ranges_split_into_masked_ports_as_cilium(lo: int, hi: int, expected: list[tuple[int, int]]) -> None:
    assert masked_ports(lo, hi) == expected
    covered = [p for port, bits in expected for p in range(port, port + (1 << (16 - bits)))]
    assert covered == list(range(lo, hi + 1))


def test_port_proto_strings_and_covering_keys() -> None:
    assert port_proto_string((0, 0, 0)) == "ANY"
    assert port_proto_string((17, 0, 8)) == "UDP"
    assert port_proto_string((6, 80, 21)) == "80-87/TCP"
    assert port_proto_string((58, 128, 24)) == "128/ICMPv6"
    assert key_range((6, 88, 23)) == (88, 89)
    assert list(covering((6, 90, 24))) == [(0, 0, 0), (6, 0, 8)] + [
        (6, 90 & ((0xFFFF << (16 - b)) & 0xFFFF), 8 + b) for b in range(1, 17)]
