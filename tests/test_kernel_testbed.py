"""The kernel testbed: namespaces routed through a node, real probes, and cleanup that always happens.

Every test needs root and a kernel with network namespaces; elsewhere they skip with the reason
(and fail under NETPOLC_REQUIRE_KERNEL=1, see conftest.py). Traffic only ever goes to addresses
inside namespaces the tests create.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from compiler.cluster import Cluster, ContainerPort, Endpoint, Namespace
from compiler.flow import Flow, PortSpec, Protocol
from compiler.source import SourceRef
from verifier.kernel import (
    HOST,
    WORLD,
    ProbeRequest,
    ProbeStatus,
    Testbed,
    UnsupportedProbeError,
    cleanup_stale,
    kernel_matrix,
    kernel_unavailable_reason,
    probe,
    probe_flows,
    probe_many,
    sctp_supported,
)
from verifier.kernel.netns import list_namespaces

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent
TCP80 = PortSpec(80, Protocol.TCP)
UDP53 = PortSpec(53, Protocol.UDP)
SCTP80 = PortSpec(80, Protocol.SCTP)
HERE = SourceRef("test", 1)


@pytest.fixture(autouse=True)
def _need_kernel() -> None:
    reason = kernel_unavailable_reason(["iptables"])
    if reason:
        pytest.skip(reason)


def make_cluster(count: int, *, ipv6: bool = False) -> Cluster:
    """``count`` pods spread over namespaces a and b, serving 80/TCP and 53/UDP."""
    namespaces = {n: Namespace(n, {"kubernetes.io/metadata.name": n}, HERE) for n in ("a", "b")}
    endpoints = []
    for i in range(count):
        ns = "a" if i % 2 == 0 else "b"
        ips = (f"10.244.1.{10 + i}",) + ((f"fd00:10:244::{10 + i:x}",) if ipv6 else ())
        ports = (ContainerPort(80, "TCP", "http"), ContainerPort(53, "UDP", "dns"))
        endpoints.append(Endpoint(ns, f"p{i}", {"app": f"p{i}"}, "default", ips, ports, HERE))
    return Cluster(namespaces, tuple(sorted(endpoints, key=lambda e: e.key)))


def full(cluster: Cluster) -> dict[str, list[str]]:
    keys = sorted(ep.key for ep in cluster.endpoints)
    return {k: keys for k in keys}


def ours(testbed: Testbed) -> set[str]:
    return set(testbed.namespaces) & set(list_namespaces())


@pytest.fixture
def cluster4() -> Cluster:
    return make_cluster(4)


@pytest.fixture
def testbed(cluster4: Cluster) -> Iterator[Testbed]:
    with Testbed(cluster4, ports=[TCP80, UDP53, SCTP80], world=True) as tb:
        yield tb


def test_without_rules_every_endpoint_reaches_every_endpoint(testbed: Testbed, cluster4: Cluster) -> None:
    start = time.monotonic()
    matrix = kernel_matrix(testbed, [TCP80, UDP53])
    elapsed = time.monotonic() - start
    assert matrix == {"80/TCP": full(cluster4), "53/UDP": full(cluster4)}
    assert elapsed < 5, f"4x4x2 matrix took {elapsed:.2f}s"
    assert testbed.build_seconds < 5, testbed.timings


def test_a_forward_drop_to_one_endpoint_blocks_exactly_the_pairs_to_it(testbed: Testbed, cluster4: Cluster) -> None:
    target = cluster4.endpoints[1]
    testbed.node_exec(["iptables", "-A", "FORWARD", "-d", target.ips[0], "-p", "tcp", "--dport", "80", "-j", "DROP"])
    matrix = kernel_matrix(testbed, [TCP80, UDP53])
    expected = full(cluster4)
    # Only forwarded traffic meets the rule: the target reaching itself stays on its loopback.
    expected_tcp = {src: [d for d in dsts if d != target.key or src == target.key] for src, dsts in expected.items()}
    assert matrix["80/TCP"] == expected_tcp
    assert matrix["53/UDP"] == expected
    blocked = probe(testbed.site(cluster4.endpoints[0].key).netns, target.ips[0], Protocol.TCP, 80, timeout=0.3)
    assert blocked.status is ProbeStatus.TIMEOUT and not blocked.ok


def test_a_reject_rule_shows_as_refused_or_unreachable_not_timeout(testbed: Testbed, cluster4: Cluster) -> None:
    target = cluster4.endpoints[2]
    testbed.node_exec(["iptables", "-A", "FORWARD", "-d", target.ips[0], "-p", "udp", "-j", "REJECT"])
    result = probe(testbed.site(cluster4.endpoints[0].key).netns, target.ips[0], Protocol.UDP, 53)
    assert result.status is ProbeStatus.REFUSED, result  # default reject-with icmp-port-unreachable


def test_host_reaches_endpoints_and_endpoints_reach_host(testbed: Testbed, cluster4: Cluster) -> None:
    node = testbed.site(HOST)
    requests = [
        ProbeRequest(node.netns, ep.ips[0], p.protocol, p.port) for ep in cluster4.endpoints for p in (TCP80, UDP53)
    ]
    requests += [
        ProbeRequest(testbed.site(ep.key).netns, cluster4.node_ip, p.protocol, p.port)
        for ep in cluster4.endpoints
        for p in (TCP80, UDP53)
    ]
    results = probe_many(requests)
    assert all(r.ok for r in results), [str(r) for r in results]


def test_host_traffic_uses_the_node_ip_and_the_input_output_paths(testbed: Testbed, cluster4: Cluster) -> None:
    target = cluster4.endpoints[0]
    testbed.node_exec(["iptables", "-A", "FORWARD", "-j", "DROP"])  # host traffic is not forwarded
    testbed.exec(
        testbed.site(target.key).netns,
        ["iptables", "-A", "INPUT", "!", "-s", cluster4.node_ip, "-p", "tcp", "-j", "DROP"],
    )
    assert probe(testbed.node_netns, target.ips[0], Protocol.TCP, 80).ok


def test_world_addresses_are_reachable_both_ways_through_the_node(testbed: Testbed, cluster4: Cluster) -> None:
    world = [ip_address(a) for a in testbed.site(WORLD).addresses]
    ep = cluster4.endpoints[3].addresses[0]
    flows = [Flow(world[0], ep, Protocol.TCP, 80), Flow(ep, world[1], Protocol.UDP, 53)]
    results = probe_flows(testbed, flows)
    assert all(r.ok for r in results), [str(r) for r in results]
    testbed.node_exec(["iptables", "-A", "FORWARD", "-s", str(world[0]), "-j", "DROP"])
    assert [r.ok for r in probe_flows(testbed, flows, timeout=0.3)] == [False, True]


def test_sctp_is_reported_unsupported_never_silently_denied(testbed: Testbed, cluster4: Cluster) -> None:
    a, b = cluster4.endpoints[:2]
    result = probe(testbed.site(a.key).netns, b.ips[0], Protocol.SCTP, 80)
    if sctp_supported():
        assert result.ok, result
        return
    assert result.status is ProbeStatus.UNSUPPORTED and "SCTP" in result.detail
    with pytest.raises(UnsupportedProbeError, match="SCTP"):
        kernel_matrix(testbed, [TCP80, SCTP80])
    assert list(kernel_matrix(testbed, [TCP80, SCTP80], skip_unsupported=True)) == ["80/TCP"]


def test_ports_the_testbed_does_not_serve_are_refused_and_rejected_by_the_matrix(
    testbed: Testbed, cluster4: Cluster
) -> None:
    a, b = cluster4.endpoints[:2]
    assert probe(testbed.site(a.key).netns, b.ips[0], Protocol.TCP, 8080).status is ProbeStatus.REFUSED
    with pytest.raises(ValueError, match="not served"):
        kernel_matrix(testbed, [PortSpec(8080, Protocol.TCP)])


def test_probes_refuse_to_run_outside_testbed_namespaces() -> None:
    with pytest.raises(ValueError, match="only testbed namespaces"):
        probe("some-other-netns", "10.244.1.10", Protocol.TCP, 80)


def test_ipv6_endpoints_are_routed_through_the_node_too() -> None:
    cluster = make_cluster(2, ipv6=True)
    a, b = cluster.endpoints
    with Testbed(cluster, ports=[TCP80, UDP53]) as tb:
        assert probe(tb.site(a.key).netns, b.ips[1], Protocol.TCP, 80).ok
        assert probe(tb.site(a.key).netns, b.ips[1], Protocol.UDP, 53).ok
        tb.node_exec(["ip6tables", "-A", "FORWARD", "-d", b.ips[1], "-j", "DROP"])
        assert probe(tb.site(a.key).netns, b.ips[1], Protocol.TCP, 80, timeout=0.3).status is ProbeStatus.TIMEOUT
        assert probe(tb.site(a.key).netns, b.ips[0], Protocol.TCP, 80).ok  # IPv4 untouched


def test_every_namespace_is_gone_after_the_with_block() -> None:
    with Testbed(make_cluster(4), ports=[TCP80], world=True) as tb:
        names = set(tb.namespaces)
        assert ours(tb) == names and len(names) == 6  # node, 4 endpoints, world
        pids = [p.pid for p in tb.listeners.values()]
    assert not names & set(list_namespaces())
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_every_namespace_is_gone_after_an_exception_in_the_with_block() -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), Testbed(make_cluster(4), ports=[TCP80]) as tb:
        names = set(tb.namespaces)
        raise Boom
    assert not names & set(list_namespaces())


def test_a_failed_build_removes_what_it_had_made(monkeypatch: pytest.MonkeyPatch) -> None:
    from verifier.kernel import netns

    def broken(batches: object) -> None:
        raise netns.KernelError(["ip", "-batch"], 1, "injected failure")

    testbed = Testbed(make_cluster(3), ports=[TCP80])
    monkeypatch.setattr(netns, "ip_batch_many", broken)
    with pytest.raises(netns.KernelError, match="injected"):
        testbed.build()
    assert not set(testbed.namespaces) & set(list_namespaces())


def _child(body: str) -> subprocess.Popen[str]:
    """A Python process that builds a 3-endpoint testbed, prints its namespaces, then runs ``body``."""
    code = textwrap.dedent(f"""
        import sys, time, os, signal
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_kernel_testbed import make_cluster, TCP80
        from verifier.kernel import Testbed
        tb = Testbed(make_cluster(3), ports=[TCP80])
        tb.build()
        print(" ".join(tb.namespaces), flush=True)
    """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_cleans_up_then_terminates() -> None:
    child = _child("time.sleep(60)")
    assert child.stdout is not None
    names = set(child.stdout.readline().split())
    assert len(names) == 4 and names <= set(list_namespaces())
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=20) == -signal.SIGTERM
    assert not names & set(list_namespaces())


def test_sigint_cleans_up_then_raises_keyboard_interrupt() -> None:
    child = _child("time.sleep(60)")
    assert child.stdout is not None and child.stderr is not None
    names = set(child.stdout.readline().split())
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=20) in (1, -signal.SIGINT)  # Python ≥ 3.8 re-raises SIGINT on exit
    assert "KeyboardInterrupt" in child.stderr.read()
    assert not names & set(list_namespaces())


def test_cleanup_stale_removes_what_a_killed_run_left_behind() -> None:
    child = _child("os.kill(os.getpid(), signal.SIGKILL)")
    assert child.stdout is not None
    names = set(child.stdout.readline().split())
    assert child.wait(timeout=20) == -signal.SIGKILL
    # Nothing in the child could clean up. (A concurrent test run's cleanup_stale may already
    # have removed them, which is the behaviour under test, so only the outcome is asserted.)
    with Testbed(make_cluster(1), ports=[TCP80]) as live:
        removed = set(cleanup_stale())
        assert not names & set(list_namespaces())
        assert not removed & set(live.namespaces)  # a live run is left alone
        assert ours(live) == set(live.namespaces)


def test_thirty_endpoints_build_in_seconds_and_nine_by_nine_probes_fast() -> None:
    with Testbed(make_cluster(30), ports=[TCP80, UDP53]) as tb:
        assert tb.build_seconds < 5, tb.timings
    ports = [TCP80, PortSpec(81, Protocol.TCP), UDP53, PortSpec(81, Protocol.UDP)]
    cluster = make_cluster(9)
    with Testbed(cluster, ports=ports) as tb:
        target = cluster.endpoints[4]
        tb.node_exec(["iptables", "-A", "FORWARD", "-d", target.ips[0], "-j", "DROP"])  # worst case: timeouts
        start = time.monotonic()
        matrix = kernel_matrix(tb, ports)
        elapsed = time.monotonic() - start
    assert elapsed < 10, f"9x9x4 matrix took {elapsed:.2f}s"
    # The rule drops everything addressed to the target, so also the answers to its own
    # connections: it reaches only itself (over its loopback); everyone else reaches all but it.
    for rows in matrix.values():
        for src, dsts in rows.items():
            assert dsts == ([target.key] if src == target.key else [k for k in sorted(rows) if k != target.key])
