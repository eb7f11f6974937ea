"""Reading ipset text back (grammar/ipset.lark + grammar/ipset.py): restore streams and ``ipset save`` output.

tests/data/iptables/contract.ipsets.v4 covers the ipset side of the dialect contract; contract.ipsets.saved.v4
is what ``ipset save`` printed after restoring it into a kernel (hash order, bucketsize/initval, icmp names).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from pathlib import Path

import pytest

from compiler.source import NetpolcError
from verifier.artifacts import ArtifactError, IpSet, load_ipsets, read_ipsets
from verifier.artifacts.ipsets import SetMember

DATA = Path(__file__).resolve().parent / "data" / "iptables"


def one_set(text: str) -> IpSet:
    sets = read_ipsets(text, "t.ipsets")
    assert len(sets) == 1
    return next(iter(sets.values()))


def test_restore_stream_and_save_output_of_the_contract_read_as_the_same_sets() -> None:
    written = load_ipsets(DATA / "contract.ipsets.v4")
    saved = load_ipsets(DATA / "contract.ipsets.saved.v4")
    assert written == saved
    assert list(saved) == sorted(saved)
    assert saved["npc-src"].options.maxelem == 1024
    assert saved["npc-dns"].members == (
        SetMember(IPv4Network("10.96.0.10/32"), "tcp", 53),
        SetMember(IPv4Network("10.96.0.10/32"), "udp", 53, comment="kube-dns"),
    )
    assert SetMember(IPv4Network("10.244.1.0/24"), "icmp", 8 << 8) in saved["npc-ports"].members


def test_nomatch_entries_punch_holes_and_the_most_specific_prefix_wins() -> None:
    ipset = one_set("create s hash:net family inet\nadd s 10.0.0.0/8\nadd s 10.1.0.0/16 nomatch\nadd s 10.1.2.0/24\n")
    assert ipset.lookup(IPv4Address("10.9.9.9"))
    assert not ipset.lookup(IPv4Address("10.1.9.9"))
    assert ipset.lookup(IPv4Address("10.1.2.3"))
    assert not ipset.lookup(IPv4Address("11.0.0.1"))
    assert ipset.probe(IPv4Address("10.1.9.9")) is False
    assert ipset.probe(IPv4Address("11.0.0.1")) is None


def test_port_sets_match_address_protocol_and_port_together() -> None:
    ipset = one_set("create s hash:net,port\nadd s 10.0.0.0/24,udp:53\nadd s 10.0.0.128/25,udp:53 nomatch\n"
                    "add s 10.0.0.5,80\n")  # fmt: skip
    assert ipset.lookup(IPv4Address("10.0.0.1"), "udp", 53)
    assert not ipset.lookup(IPv4Address("10.0.0.200"), "udp", 53)
    assert not ipset.lookup(IPv4Address("10.0.0.1"), "tcp", 53)
    assert ipset.lookup(IPv4Address("10.0.0.5"), "tcp", 80)  # a bare port is tcp
    assert not ipset.lookup(IPv4Address("10.0.0.5"))  # no port: a two-dimensional set cannot match


SAME_SET = [
    ("create s hash:ip\nadd s 10.0.0.1", "create s hash:ip family inet hashsize 4096 maxelem 65536\nadd s 10.0.0.1/32"),
    ("create s hash:ip\nadd s 10.0.0.0/30",
     "create s hash:ip\nadd s 10.0.0.3\nadd s 10.0.0.1\nadd s 10.0.0.2\nadd s 10.0.0.0"),
    ("create s hash:ip,port\nadd s 10.0.0.1,80-82",
     "create s hash:ip,port\nadd s 10.0.0.1,tcp:82\nadd s 10.0.0.1,tcp:80\nadd s 10.0.0.1,tcp:81"),
    ("create s hash:ip,port\nadd s 10.0.0.1,6:80", "create s hash:ip,port\nadd s 10.0.0.1,tcp:80"),
    ("create s hash:ip,port\nadd s 10.0.0.1,icmp:8/0", "create s hash:ip,port\nadd s 10.0.0.1,icmp:echo-request"),
    ("create s hash:net\nadd s 10.0.0.7/24", "create s hash:net\nadd s 10.0.0.0/24"),
    ("create s hash:net\nadd s 10.0.0.0/24\nadd -exist s 10.0.0.0/24", "create s hash:net\nadd s 10.0.0.0/24"),
    ("create t hash:net\nadd t 1.0.0.0/8\ncreate s hash:net\nswap s t\ndestroy t",
     "create s hash:net\nadd s 1.0.0.0/8"),
    ("create t hash:net\nadd t 1.0.0.0/8\nrename t s", "create s hash:net\nadd s 1.0.0.0/8"),
    ("create s hash:net\nadd s 1.0.0.0/8\nadd s 2.0.0.0/8\ndel s 2.0.0.0/8\nCOMMIT",
     "create s hash:net\nadd s 1.0.0.0/8"),
    ("create s hash:net\nadd s 1.0.0.0/8\nflush s\nadd s 2.0.0.0/8", "create s hash:net\nadd s 2.0.0.0/8"),
    ("# a comment\ncreate s hash:net comment\n  # indented\nadd s 1.0.0.0/8 comment \"x y\"",
     "create s hash:net family inet hashsize 1024 maxelem 65536 comment bucketsize 12 initval 0x1\n"
     "add s 1.0.0.0/8 comment \"x y\""),
    ("-N s hash:net\n-A s 1.0.0.0/8", "n s hash:net\na s 1.0.0.0/8"),
]  # fmt: skip


@pytest.mark.parametrize(("written", "saved"), SAME_SET)
def test_restore_spellings_equal_what_ipset_save_prints(written: str, saved: str) -> None:
    assert read_ipsets(written + "\n", "w") == read_ipsets(saved + "\n", "s")


def test_ipv6_sets_hold_ipv6_entries_only() -> None:
    ipset = one_set("create s hash:net family inet6\nadd s fd00::/64\nadd s fd00::1\n")
    assert ipset.family == 6
    assert ipset.lookup(IPv6Address("fd00::2"))
    assert not ipset.lookup(ip_address("10.0.0.1"))


def test_to_restore_reads_back_equal() -> None:
    sets = load_ipsets(DATA / "contract.ipsets.v4")
    text = "\n".join(line for ipset in sets.values() for line in ipset.to_restore()) + "\n"
    assert read_ipsets(text, "again") == sets


ERRORS = [
    ("create s bitmap:port range 1-2\n", 1, 10, "set type 'bitmap:port' is not supported"),
    ("create s hash:ip timeout 60\n", 1, 18, "create option 'timeout' is not supported"),
    ("create s hash:ip\nadd s 1.2.3.4 timeout 5\n", 2, 15, "add option 'timeout' is not supported"),
    ("create s hash:ip\nadd s 1.2.3.4 nomatch\n", 2, 15, "nomatch is only valid for"),
    ("create s hash:ip\nadd s 1.2.3.4 comment x\n", 2, 15, "without comment support"),
    ("create s hash:net\nadd s 0.0.0.0/0\n", 2, 7, "cannot hold a /0"),
    ("create s hash:net\nadd s 10.0.0.1-10.0.0.5\n", 2, 7, "address range"),
    ("create s hash:net family inet6\nadd s 10.0.0.1\n", 2, 7, "IPv4 address in an IPv6"),
    ("create s hash:ip,port\nadd s 1.2.3.4\n", 2, 7, "does not fit set 's'"),
    ("create s hash:ip,port\nadd s 1.2.3.4,gre:1\n", 2, 7, "protocol 'gre' is not supported"),
    ("create s hash:ip\nadd s 1.2.3.4\nadd s 1.2.3.4\n", 3, 7, "already in set"),
    ("create s hash:ip maxelem 1\nadd s 1.2.3.4\nadd s 1.2.3.5\n", 3, 7, "is full"),
    ("add s 1.2.3.4\n", 1, 5, "set 's' does not exist"),
    ("create s hash:ip\ncreate s hash:net\n", 2, 8, "already exists"),
    ("create s hash:ip\ncreate t hash:net\nswap s t\n", 3, 8, "types differ"),
    ("create " + "s" * 32 + " hash:ip\n", 1, 8, "longer than 31"),
    ("create s hash:ip\nlist s\n", 2, 1, "unknown ipset command 'list'"),
    ("create s hash:ip\nadd s\n", 2, 6, "need a set name and an entry"),
    ('create s hash:ip comment\nadd s 1.2.3.4 comment "x\n', 2, 23, "unterminated quoted string"),
]


@pytest.mark.parametrize(("text", "line", "column", "message"), ERRORS)
def test_bad_or_unsupported_ipset_input_is_reported_with_line_and_column(
    text: str, line: int, column: int, message: str
) -> None:
    with pytest.raises(ArtifactError) as info:
        read_ipsets(text, "bad.ipsets")
    error = info.value
    assert isinstance(error, NetpolcError)
    assert message in error.message
    assert (error.line, error.column) == (line, column)
    assert str(error).startswith(f"bad.ipsets:{line}:{column}: ")
