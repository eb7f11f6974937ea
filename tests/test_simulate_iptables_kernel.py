"""The simulator agrees with the kernel: a hand-written ruleset loaded into the testbed's node, real probes.

The ruleset exercises the semantics the simulator models (jump, goto and RETURN to the caller's caller, mark
bits set and tested, conntrack ESTABLISHED for replies, ipset ``nomatch`` holes, a two-dimensional set matched
with one flag, which never matches, multiport, addrtype LOCAL, REJECT, the chain policy). Every flow between
three pods, the node and the world on 80/TCP and 53/UDP is probed with real packets and simulated on the
ruleset as ``iptables-save`` prints it back; the verdicts must be the same.
"""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from compiler.cluster import Cluster, ContainerPort, Endpoint, Namespace
from compiler.flow import Flow, PortSpec, Protocol
from compiler.source import SourceRef
from verifier.artifacts import read_ipsets, read_iptables
from verifier.kernel import HOST, WORLD, Testbed, kernel_unavailable_reason, probe_flows
from verifier.simulate.iptables import Outcome
from verifier.simulate.iptables_flow import FlowSimulator

pytestmark = pytest.mark.kernel

HERE = SourceRef("test", 1)
RULES = """\
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:NPC-POLICY - [0:0]
:NPC-FROM-P0 - [0:0]
:NPC-TO-P1 - [0:0]
:NPC-ALLOW - [0:0]
-A INPUT -j NPC-POLICY
-A FORWARD -j NPC-POLICY
-A FORWARD -j ACCEPT
-A NPC-POLICY -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NPC-POLICY -j MARK --set-xmark 0x0/0x3000000
-A NPC-POLICY -s 10.244.1.10 -j NPC-FROM-P0
-A NPC-POLICY -m mark --mark 0x2000000/0x2000000 -j DROP
-A NPC-POLICY -d 10.244.1.11 -g NPC-TO-P1
-A NPC-POLICY -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 80 -j REJECT --reject-with tcp-reset
-A NPC-FROM-P0 -m set --match-set npc-except dst -j MARK --set-xmark 0x2000000/0x2000000
-A NPC-FROM-P0 -p udp -m set --match-set npc-except dst,dst -j MARK --set-xmark 0x2000000/0x2000000
-A NPC-TO-P1 -m addrtype --src-type LOCAL -j ACCEPT
-A NPC-TO-P1 -p tcp -m multiport --dports 80,8080 -m set --match-set npc-peers src -j NPC-ALLOW
-A NPC-TO-P1 -p udp -m udp --dport 53 -m set --match-set npc-peers src -j NPC-ALLOW
-A NPC-TO-P1 -m mark --mark 0x1000000/0x1000000 -j RETURN
-A NPC-TO-P1 -j DROP
-A NPC-ALLOW -j MARK --or-mark 0x1000000
COMMIT
"""
IPSETS = """\
create npc-peers hash:net family inet
add npc-peers 10.244.0.0/16
add npc-peers 10.244.1.12 nomatch
create npc-except hash:ip,port family inet
add npc-except 10.244.1.11,udp:53
add npc-except 10.244.1.12,tcp:80
"""
PORTS = (PortSpec(80, Protocol.TCP), PortSpec(53, Protocol.UDP))


@pytest.fixture(autouse=True)
def _need_kernel() -> None:
    reason = kernel_unavailable_reason(["iptables-restore", "iptables-save", "ipset"])
    if reason:
        pytest.skip(reason)


def three_pods() -> Cluster:
    ports = (ContainerPort(80, "TCP", "http"), ContainerPort(53, "UDP", "dns"))
    endpoints = tuple(
        Endpoint("a", f"p{i}", {"app": f"p{i}"}, "default", (f"10.244.1.{10 + i}",), ports, HERE) for i in range(3)
    )
    return Cluster({"a": Namespace("a", {"kubernetes.io/metadata.name": "a"}, HERE)}, endpoints)


def test_simulated_verdicts_equal_what_the_kernel_does_with_real_packets() -> None:
    cluster = three_pods()
    with Testbed(cluster, ports=PORTS, world=["192.0.2.10"]) as testbed:
        testbed.node_exec(["ipset", "restore"], input=IPSETS)
        testbed.node_exec(["iptables-restore"], input=RULES)
        saved_rules = testbed.node_exec(["iptables-save"]).stdout
        saved_sets = testbed.node_exec(["ipset", "save"]).stdout
        sites = [*(ep.key for ep in cluster.endpoints), HOST, WORLD]
        addresses = {label: ip_address(testbed.site(label).address() or "") for label in sites}
        flows = [
            Flow(addresses[src], addresses[dst], port.protocol, port.port)
            for src in sites
            for dst in sites
            if src != dst
            for port in PORTS
        ]
        probes = probe_flows(testbed, flows)
    simulator = FlowSimulator(read_iptables(saved_rules, "iptables-save"), read_ipsets(saved_sets, "ipset save"),
                              cluster)  # fmt: skip
    measured = {flow: probe.ok for flow, probe in zip(flows, probes, strict=True)}
    simulated = {flow: simulator.simulate(flow).outcome is Outcome.ACCEPT for flow in flows}
    assert simulated == measured
    # the ruleset really discriminates: both verdicts occur, for the reasons the rules give
    p0, p1, p2 = (addresses[f"a/p{i}"] for i in range(3))
    assert measured[Flow(p0, p1, Protocol.TCP, 80)] and not measured[Flow(p0, p1, Protocol.UDP, 53)]
    assert not measured[Flow(p2, p1, Protocol.TCP, 80)]  # nomatch hole in npc-peers
    assert measured[Flow(p0, p2, Protocol.TCP, 80)]  # `--match-set npc-except dst` on a 2-d set never matches
    assert not measured[Flow(p1, addresses[HOST], Protocol.TCP, 80)]  # REJECT to the node
