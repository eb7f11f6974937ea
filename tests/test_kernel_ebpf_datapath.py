"""The TC datapath (verifier/kernel/policy.bpf.c) decides crafted packets as Cilium 1.18 would.

Hand-written maps in the exact JSON shape the eBPF target emits (bpftool dump: hex byte arrays),
loaded into a private bpffs, and packets run through the programs with BPF_PROG_TEST_RUN: no
interfaces, so each case costs milliseconds. Lookup order and precedence: reference/cilium.md
§1.7; layouts §1.2/§1.4/§2.

Endpoints: A = 10.0.0.1 (EPID 1, identity 1001), B = 10.0.0.2 (EPID 2, identity 1002).
``egress(A → dst)`` runs ``from_endpoint`` (A's egress policy), ``ingress(src → B)`` runs
``to_endpoint`` (B's ingress policy).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from verifier.kernel import bpf_layout as L
from verifier.kernel import bpf_packets as P
from verifier.kernel import netns as ns
from verifier.kernel.bpf import BpfFs, _is_mountpoint, bpftool, ebpf_unavailable_reason, prog_run
from verifier.kernel.load_ebpf import EbpfArtifacts, EbpfDatapath

pytestmark = pytest.mark.kernel

A, B = "10.0.0.1", "10.0.0.2"
A6 = "fd00::1"
TCP, UDP, SCTP, ICMP = 6, 17, 132, 1
OK, SHOT = 0, 2


@pytest.fixture(autouse=True)
def _need_ebpf() -> None:
    reason = ebpf_unavailable_reason()
    if reason:
        pytest.skip(reason)


# --- tiny constructors (STYLE.md: expected map state as literal tables) ------------------------


def allow(identity: int, egress: bool, proto: int = 0, port: int = 0, prefix: int | None = None, **kw: int) -> Row:
    return Row(L.policy_key(identity, egress, proto, port, prefix), False, kw)


def deny(identity: int, egress: bool, proto: int = 0, port: int = 0, prefix: int | None = None) -> Row:
    return Row(L.policy_key(identity, egress, proto, port, prefix), True, {})


@dataclass(frozen=True)
class Row:
    key: bytes
    is_deny: bool
    extra: dict[str, int]

    def dump(self) -> dict[str, object]:
        value = L.policy_entry(prefix=L.key_prefix(self.key), deny=self.is_deny, **self.extra)
        return L.dump_entry(self.key, value)


EGRESS, INGRESS = True, False
IPCACHE = {A: 1001, B: 1002, A6: 1001, "10.0.0.3": 1003, "10.9.0.0/16": 1 << 24 | 1, "10.9.9.0/24": 1 << 24 | 2}


def artifacts(a: list[Row], b: list[Row] | None = None, ipcache: dict[str, int] | None = None) -> EbpfArtifacts:
    endpoints = [
        {
            "id": 1,
            "namespace": "t",
            "name": "a",
            "ips": [A, A6],
            "identity": 1001,
            "policy_map": "cilium_policy_v2_00001",
            "ingress_enforced": True,
            "egress_enforced": True,
        },
        {
            "id": 2,
            "namespace": "t",
            "name": "b",
            "ips": [B],
            "identity": 1002,
            "policy_map": "cilium_policy_v2_00002",
            "ingress_enforced": True,
            "egress_enforced": True,
        },
    ]
    cache = [L.dump_entry(L.ipcache_key(p), L.ipcache_value(i)) for p, i in (ipcache or IPCACHE).items()]
    maps = {"cilium_policy_v2_00001": [r.dump() for r in a], "cilium_policy_v2_00002": [r.dump() for r in b or []]}
    return EbpfArtifacts.from_json(endpoints, cache, maps)


class Harness:
    """A loaded datapath plus helpers that run one packet and report (return value, counters that moved)."""

    def __init__(self, dp: EbpfDatapath, work: Path) -> None:
        self.dp = dp
        self.work = work

    def run(self, prog: Path, frame: bytes) -> tuple[int, set[str]]:
        before = self.dp.counters()
        retval = prog_run(prog, frame, self.work).retval
        after = self.dp.counters()
        return retval, {k for k in after if after[k] != before.get(k, 0)}

    def egress(self, dst: str, proto: int, port: int, *, src: str = A, sport: int = 40000) -> tuple[int, set[str]]:
        return self.run(self.dp.from_endpoint, P.frame(src, dst, proto, port, sport=sport))

    def ingress(self, src: str, proto: int, port: int, *, dst: str = B, sport: int = 40000) -> tuple[int, set[str]]:
        return self.run(self.dp.to_endpoint, P.frame(src, dst, proto, port, sport=sport))


Loader = Callable[[EbpfArtifacts], Harness]


@pytest.fixture
def load() -> Iterator[Loader]:
    run_id = ns.new_run_id()
    ns.claim_run(run_id)
    fs = BpfFs(run_id)
    fs.mount()
    tmp = tempfile.TemporaryDirectory(prefix="netpolc-test-")

    loads = []

    def _load(data: EbpfArtifacts) -> Harness:
        loads.append(data)
        dp = EbpfDatapath(fs, name=f"load{len(loads)}")  # a fresh set of programs and maps each time
        dp.load(data)
        return Harness(dp, Path(tmp.name))

    try:
        yield _load
    finally:
        fs.close()
        tmp.cleanup()
        ns.release_run(run_id)
        assert not _is_mountpoint(fs.path) and not fs.path.exists()


# --- lookup 1 / lookup 2 ----------------------------------------------------------------------


def test_l3_only_allow_admits_every_protocol_and_port_of_that_identity_only(load: Loader) -> None:
    h = load(artifacts([allow(1002, EGRESS)]))
    assert h.egress(B, TCP, 80) == (OK, {"allowed"})
    assert h.egress(B, UDP, 53) == (OK, {"allowed"})
    assert h.egress(B, SCTP, 9) == (OK, {"allowed"})
    assert h.egress("10.0.0.3", TCP, 80) == (SHOT, {"POLICY_DENIED"})


def test_l4_only_entry_with_identity_0_admits_any_peer_on_that_port_only(load: Loader) -> None:
    h = load(artifacts([allow(0, EGRESS, TCP, 443)]))
    assert h.egress(B, TCP, 443)[0] == OK
    assert h.egress("10.0.0.3", TCP, 443)[0] == OK
    assert h.egress("192.0.2.1", TCP, 443)[0] == OK  # not in the ipcache: WORLD_ID, still identity 0
    assert h.egress(B, TCP, 444) == (SHOT, {"POLICY_DENIED"})
    assert h.egress(B, UDP, 443) == (SHOT, {"POLICY_DENIED"})


def test_direction_bit_separates_ingress_from_egress_entries(load: Loader) -> None:
    h = load(artifacts([], [allow(1001, INGRESS, TCP, 80)]))
    assert h.ingress(A, TCP, 80) == (OK, {"allowed"})
    h2 = load(artifacts([], [allow(1001, EGRESS, TCP, 80)]))
    assert h2.ingress(A, TCP, 81) == (SHOT, {"POLICY_DENIED"})


def test_deny_on_the_identity_wins_over_an_l4_only_allow(load: Loader) -> None:
    h = load(artifacts([deny(1002, EGRESS), allow(0, EGRESS, TCP, 80)]))
    assert h.egress(B, TCP, 80) == (SHOT, {"POLICY_DENY"})
    assert h.egress("10.0.0.3", TCP, 80)[0] == OK


def test_l4_only_deny_wins_over_a_more_specific_l3_allow(load: Loader) -> None:
    h = load(artifacts([allow(1002, EGRESS, TCP, 80), deny(0, EGRESS, TCP)]))
    assert h.egress(B, TCP, 80) == (SHOT, {"POLICY_DENY"})
    assert h.egress(B, UDP, 80) == (SHOT, {"POLICY_DENIED"})


def test_port_range_80_90_as_masked_ports_80_13_88_15_90_16(load: Loader) -> None:
    # cilium.md §1.3: 80-90 -> 80/13 (80-87), 88/15 (88-89), 90/16.
    rows = [allow(1002, EGRESS, TCP, 80, 13), allow(1002, EGRESS, TCP, 88, 15), allow(1002, EGRESS, TCP, 90, 16)]
    h = load(artifacts(rows))
    verdicts = {port: h.egress(B, TCP, port, sport=41000 + port)[0] for port in range(78, 93)}
    assert [p for p, v in verdicts.items() if v == OK] == list(range(80, 91))


def test_l4_only_entry_with_higher_proxy_priority_wins_and_is_counted_as_redirect(load: Loader) -> None:
    h = load(artifacts([allow(1002, EGRESS, TCP, 80), allow(0, EGRESS, TCP, 80, proxy_port=15001, priority=27)]))
    assert h.egress(B, TCP, 80) == (OK, {"redirected"})


def test_equal_priority_longer_l4_only_prefix_wins_and_a_tie_keeps_the_identity_entry(load: Loader) -> None:
    # L3 entry on TCP/any-port with a redirect; L4-only exact port without: the longer prefix wins.
    h = load(artifacts([allow(1002, EGRESS, TCP, proxy_port=15001, priority=1), allow(0, EGRESS, TCP, 80, priority=1)]))
    assert h.egress(B, TCP, 80) == (OK, {"allowed"})
    assert h.egress(B, TCP, 81) == (OK, {"redirected"})  # only the L3 entry matches
    # Same prefix length on both sides: the specific identity wins (its redirect applies).
    l3_redirect = allow(1002, EGRESS, TCP, 80, proxy_port=15001, priority=1)
    h = load(artifacts([l3_redirect, allow(0, EGRESS, TCP, 80, priority=1)]))
    assert h.egress(B, TCP, 80) == (OK, {"redirected"})


def test_auth_required_entry_drops_with_189(load: Loader) -> None:
    h = load(artifacts([allow(1002, EGRESS, auth=1)]))
    assert h.egress(B, TCP, 80) == (SHOT, {"AUTH_REQUIRED"})


# --- ipcache ------------------------------------------------------------------------------------


def test_ipcache_is_longest_prefix_match_and_a_miss_is_world(load: Loader) -> None:
    h = load(artifacts([allow(1 << 24 | 1, EGRESS, TCP, 80), allow(2, EGRESS, TCP, 81)]))
    assert h.egress("10.9.1.1", TCP, 80)[0] == OK  # 10.9.0.0/16
    assert h.egress("10.9.9.9", TCP, 80) == (SHOT, {"POLICY_DENIED"})  # the /24 carves out another identity
    assert h.egress("192.0.2.1", TCP, 81)[0] == OK  # miss: WORLD_ID 2
    assert h.egress("10.9.1.1", TCP, 81)[0] == SHOT


def test_ingress_uses_the_source_address_identity_and_the_destination_endpoint_policy(load: Loader) -> None:
    h = load(artifacts([allow(1002, INGRESS, TCP, 80)], [allow(1001, INGRESS, TCP, 80)]))
    assert h.ingress(A, TCP, 80) == (OK, {"allowed"})  # B's map admits A's identity
    assert h.ingress("10.0.0.3", TCP, 80) == (SHOT, {"POLICY_DENIED"})


# --- conntrack ----------------------------------------------------------------------------------


def test_reply_of_an_allowed_connection_passes_although_policy_would_drop_it(load: Loader) -> None:
    h = load(artifacts([allow(1002, EGRESS, TCP, 80)]))
    reply = P.ethernet(P.ETH_P_IP, P.ipv4(B, A, TCP, P.tcp(80, 40000, P.TCP_SYN | P.TCP_ACK)))
    assert h.run(h.dp.to_endpoint, reply) == (SHOT, {"POLICY_DENIED"})  # no connection yet
    assert h.egress(B, TCP, 80) == (OK, {"allowed"})
    assert h.egress(B, TCP, 80) == (OK, {"ct-established"})
    assert h.run(h.dp.to_endpoint, reply) == (OK, {"ct-reply"})
    other_port = P.ethernet(P.ETH_P_IP, P.ipv4(B, A, TCP, P.tcp(80, 40001, P.TCP_SYN | P.TCP_ACK)))
    assert h.run(h.dp.to_endpoint, other_port)[0] == SHOT


def test_a_dropped_packet_creates_no_connection(load: Loader) -> None:
    h = load(artifacts([]))
    assert h.egress(B, UDP, 53)[0] == SHOT
    reply = P.ethernet(P.ETH_P_IP, P.ipv4(B, A, UDP, P.udp(53, 40000)))
    assert h.run(h.dp.to_endpoint, reply)[0] == SHOT


# --- parsing ------------------------------------------------------------------------------------


def test_ipv6_ports_are_read_after_extension_headers(load: Loader) -> None:
    cache = {**IPCACHE, "fd00::2": 1002}
    h = load(artifacts([allow(1002, EGRESS, TCP, 80)], ipcache=cache))
    framed = P.ethernet(P.ETH_P_IPV6, P.ipv6(A6, "fd00::2", 0, P.tcp(40000, 80), extensions=P.hop_by_hop(TCP)))
    assert h.run(h.dp.from_endpoint, framed) == (OK, {"allowed"})
    assert h.egress("fd00::2", TCP, 81, src=A6) == (SHOT, {"POLICY_DENIED"})


def test_icmp_type_is_the_port_of_the_lookup(load: Loader) -> None:
    h = load(artifacts([allow(1002, EGRESS, ICMP, 8)]))
    assert h.egress(B, ICMP, 8) == (OK, {"allowed"})  # echo request
    assert h.egress(B, ICMP, 13) == (SHOT, {"POLICY_DENIED"})  # timestamp request


def test_non_first_fragment_needs_a_wildcard_port_entry_else_drops_157(load: Loader) -> None:
    fragment = P.ethernet(P.ETH_P_IP, P.ipv4(A, B, UDP, b"\0" * 16, frag_offset=185))
    h = load(artifacts([allow(1002, EGRESS, UDP, 53)]))
    assert h.run(h.dp.from_endpoint, fragment) == (SHOT, {"IP_FRAGMENTATION_NOT_SUPPORTED"})
    h = load(artifacts([allow(1002, EGRESS, UDP)]))
    assert h.run(h.dp.from_endpoint, fragment) == (OK, {"allowed"})


def test_non_ip_and_ipv6_link_local_pass_and_unknown_endpoints_drop(load: Loader) -> None:
    h = load(artifacts([]))
    arp = P.ethernet(P.ETH_P_ARP, bytes(28))
    assert h.run(h.dp.from_endpoint, arp) == (OK, {"pass-non-ip"})
    solicit = P.ethernet(P.ETH_P_IPV6, P.ipv6("fe80::1", "ff02::1:ff00:2", 58, P.icmp(135)))
    assert h.run(h.dp.from_endpoint, solicit) == (OK, {"pass-ipv6-link-local"})
    assert h.egress(B, TCP, 80, src="10.0.0.99") == (SHOT, {"drop-unknown-endpoint"})
    truncated = P.ethernet(P.ETH_P_IP, P.ipv4(A, B, TCP, b""))  # a TCP packet without its ports
    assert h.run(h.dp.from_endpoint, truncated) == (SHOT, {"drop-malformed"})


def test_an_endpoint_without_a_policy_map_drops_203(load: Loader) -> None:
    h = load(artifacts([allow(1002, EGRESS)]))
    bpftool(["map", "delete", "pinned", str(h.dp.maps / "netpolc_policy_maps"), "key", "hex", "01", "00", "00", "00"])
    assert h.egress(B, TCP, 80) == (SHOT, {"DROP_EP_NOT_READY"})
