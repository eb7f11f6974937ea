"""The iptables simulator (verifier/simulate/iptables.py): one packet through the node's hooks, as the kernel.

Each test loads a small hand-written ruleset (and ipsets) through the real reader, so the simulator is tested on
exactly what verifier.artifacts produces from text.
"""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from compiler.cluster import Cluster
from compiler.flow import Decision, Direction, DirectionDecision, DropReason, Flow, Protocol, Verdict
from compiler.targets.proxyports import proxy_port
from verifier.artifacts import load_ipsets, load_iptables, read_ipsets, read_iptables
from verifier.simulate.iptables import (
    IptablesSimulator,
    Node,
    Outcome,
    Packet,
    Result,
    SimulationError,
    Socket,
)
from verifier.simulate.iptables_flow import FlowSimulator, FlowVerdict, verdict_of_decision, verdict_of_result

DATA = Path(__file__).resolve().parent / "data" / "iptables"
NODE = IPv4Address("10.244.0.1")
POD_A = IPv4Address("10.244.1.10")
POD_B = IPv4Address("10.244.1.11")
WORLD = IPv4Address("192.0.2.10")


def sim(filter_rules: str, *, mangle: str = "", ipsets: str = "", node: Node | None = None) -> IptablesSimulator:
    """A simulator for a filter table (and optional mangle table) given as its chain lines and rules."""
    text = f"*filter\n{filter_rules}\nCOMMIT\n" + (f"*mangle\n{mangle}\nCOMMIT\n" if mangle else "")
    return IptablesSimulator(read_iptables(text, "t.rules"), read_ipsets(ipsets, "t.ipsets"),
                             node or Node(frozenset({NODE})))  # fmt: skip


def tcp(src: IPv4Address = POD_A, dst: IPv4Address = POD_B, dport: int = 80, **kw: object) -> Packet:
    return Packet(src, dst, 6, 40000, dport, **kw)  # type: ignore[arg-type]


def fired(result: Result) -> list[str]:
    """``table/chain#n`` of every rule that matched, then the policy steps, in order."""
    return [f"{s.table}/{s.chain}#{s.rule}" for s in result.trace if s.matched]


# -- the path through the hooks -----------------------------------------------------------------------------------

HOOKS = ":INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]"
MANGLE_HOOKS = ":PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]"


@pytest.mark.parametrize(
    ("src", "dst", "hooks"),
    [
        (POD_A, POD_B, ["mangle/PREROUTING", "mangle/FORWARD", "filter/FORWARD", "mangle/POSTROUTING"]),
        (WORLD, NODE, ["mangle/PREROUTING", "mangle/INPUT", "filter/INPUT"]),
        (NODE, POD_A, ["mangle/OUTPUT", "filter/OUTPUT", "mangle/POSTROUTING"]),
        (NODE, NODE, ["mangle/OUTPUT", "filter/OUTPUT", "mangle/POSTROUTING", "mangle/PREROUTING", "mangle/INPUT",
                      "filter/INPUT"]),
        (IPv4Address("127.0.0.1"), NODE, ["mangle/OUTPUT", "filter/OUTPUT", "mangle/POSTROUTING",
                                          "mangle/PREROUTING", "mangle/INPUT", "filter/INPUT"]),
    ],
)
def test_forwarded_node_originated_and_node_destined_packets_take_their_hooks(
    src: IPv4Address, dst: IPv4Address, hooks: list[str]
) -> None:
    result = sim(HOOKS, mangle=MANGLE_HOOKS).simulate(tcp(src, dst))
    assert list(result.hooks) == hooks
    assert result.outcome is Outcome.ACCEPT


def test_the_builtin_policy_decides_when_no_rule_does_and_is_the_drop_cause() -> None:
    result = sim(":FORWARD DROP [0:0]\n:X - [0:0]\n-A FORWARD -j X\n-A X -p udp -j ACCEPT").simulate(tcp())
    assert result.outcome is Outcome.DROP
    assert result.cause is not None and (result.cause.chain, result.cause.rule) == ("FORWARD", 0)
    assert fired(result) == ["filter/FORWARD#1", "filter/FORWARD#0"]


def test_a_chain_without_policy_in_the_file_accepts_like_the_kernel_default() -> None:
    assert sim("-N X\n-A FORWARD -j X").simulate(tcp()).outcome is Outcome.ACCEPT


# -- first match, jumps, gotos, returns -----------------------------------------------------------------------------


def test_first_terminating_match_wins() -> None:
    rules = ":FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp -m tcp --dport 80 -j DROP\n-A FORWARD -p tcp -j ACCEPT"
    result = sim(rules).simulate(tcp())
    assert result.outcome is Outcome.DROP and result.cause is not None and result.cause.rule == 1
    assert result.cost.rules_evaluated == 1
    assert sim(rules).simulate(tcp(dport=81)).outcome is Outcome.ACCEPT


def test_reject_is_a_drop_with_its_rule_as_cause() -> None:
    result = sim(":FORWARD ACCEPT [0:0]\n-A FORWARD -j REJECT").simulate(tcp())
    assert result.outcome is Outcome.DROP
    assert result.cause is not None and result.cause.action == "REJECT (icmp-port-unreachable)"


def test_jump_comes_back_to_the_next_rule_and_goto_to_the_callers_caller() -> None:
    rules = (":FORWARD DROP [0:0]\n:A - [0:0]\n:B - [0:0]\n:C - [0:0]\n"
             "-A FORWARD -j A\n-A FORWARD -j ACCEPT\n"
             "-A A -g B\n-A A -j DROP\n"  # the goto's return skips A's DROP
             "-A B -j C\n-A B -j RETURN\n-A B -j DROP\n"
             "-A C -p udp -j DROP")  # fmt: skip
    result = sim(rules).simulate(tcp())
    assert result.outcome is Outcome.ACCEPT
    assert fired(result) == ["filter/FORWARD#1", "filter/A#1", "filter/B#1", "filter/B#2", "filter/FORWARD#2"]
    assert result.cost.rules_evaluated == 6


def test_return_from_a_builtin_chain_applies_its_policy() -> None:
    result = sim(":FORWARD DROP [0:0]\n-A FORWARD -j RETURN\n-A FORWARD -j ACCEPT").simulate(tcp())
    assert result.outcome is Outcome.DROP and result.cause is not None and result.cause.rule == 0


def test_a_jump_loop_is_reported_not_followed_forever() -> None:
    loop = sim(":A - [0:0]\n:B - [0:0]\n-A FORWARD -j A\n-A A -j B\n-A B -j A")
    with pytest.raises(SimulationError, match="jump loop"):
        loop.simulate(tcp())


# -- marks and conntrack -----------------------------------------------------------------------------------------


def test_mark_targets_are_xmark_operations_and_mark_matches_test_them() -> None:
    rules = (":FORWARD DROP [0:0]\n-A FORWARD -j MARK --set-mark 0x3/0x3\n-A FORWARD -j MARK --and-mark 0xfffffffe\n"
             "-A FORWARD -m mark --mark 0x1/0x1 -j DROP\n-A FORWARD -m mark --mark 0x2/0x3 -j ACCEPT")  # fmt: skip
    result = sim(rules).simulate(tcp(mark=0x100))
    assert result.outcome is Outcome.ACCEPT
    assert result.mark == 0x102
    assert fired(result) == ["filter/FORWARD#1", "filter/FORWARD#2", "filter/FORWARD#4"]


def test_connmark_saves_and_restores_between_packet_and_connection_marks() -> None:
    rules = (":FORWARD DROP [0:0]\n-A FORWARD -j CONNMARK --set-mark 0x10\n-A FORWARD -j CONNMARK --restore-mark\n"
             "-A FORWARD -m connmark --mark 0x10 -m mark --mark 0x10 -j ACCEPT")  # fmt: skip
    assert sim(rules).simulate(tcp()).outcome is Outcome.ACCEPT


def test_first_packets_are_new_and_later_ones_established() -> None:
    rules = ":FORWARD DROP [0:0]\n-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    assert sim(rules).simulate(tcp()).outcome is Outcome.DROP
    assert sim(rules).simulate(tcp(ctstate="ESTABLISHED")).outcome is Outcome.ACCEPT
    negated = sim(":FORWARD DROP [0:0]\n-A FORWARD -m conntrack ! --ctstate NEW -j ACCEPT")
    assert negated.simulate(tcp()).outcome is Outcome.DROP


# -- ipsets ------------------------------------------------------------------------------------------------------

SETS = """\
create nets hash:net family inet
add nets 10.244.0.0/16
add nets 10.244.1.10 nomatch
create ports hash:ip,port family inet
add ports 10.244.1.11,tcp:80
add ports 10.244.1.11,icmp:echo-request
"""


@pytest.mark.parametrize(
    ("match", "packet", "accepted"),
    [
        ("-m set --match-set nets dst", tcp(dst=POD_B), True),
        ("-m set --match-set nets src", tcp(src=POD_A), False),  # the nomatch entry is more specific
        ("-m set --match-set nets src --return-nomatch", tcp(src=POD_A), True),
        ("-m set ! --match-set nets src", tcp(src=POD_A), True),
        ("-m set --match-set ports dst,dst", tcp(dport=80), True),
        ("-m set --match-set ports dst,dst", tcp(dport=81), False),
        ("-m set --match-set ports dst,src", tcp(dport=80), False),  # port from the source side: 40000
        ("-m set --match-set ports dst", tcp(dport=80), False),  # fewer flags than dimensions never match
        ("-m set --match-set ports dst,dst", Packet(POD_A, POD_B, 1, 0, 8), True),  # icmp: type 8 code 0
        ("-m set --match-set ports dst,dst", Packet(POD_A, POD_B, 1, 0, 8, icmp_code=1), False),
        ("-m set --match-set ports dst,dst", Packet(POD_A, POD_B, 47), False),  # no ports: no match
    ],
)
def test_set_matches_follow_the_kernel(match: str, packet: Packet, accepted: bool) -> None:
    result = sim(f":FORWARD DROP [0:0]\n-A FORWARD {match} -j ACCEPT", ipsets=SETS).simulate(packet)
    assert (result.outcome is Outcome.ACCEPT) == accepted
    assert result.cost.ipset_lookups == 1


def test_a_rule_naming_a_missing_set_is_refused_up_front() -> None:
    with pytest.raises(SimulationError, match=r"t\.rules:4: set 'nope' is not defined"):
        sim(":FORWARD DROP [0:0]\n-A FORWARD -j ACCEPT\n-A FORWARD -m set --match-set nope src -j ACCEPT")


# -- ports, protocols, icmp, addresses, interfaces, comments ----------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "packet", "accepted"),
    [
        ("-p tcp -m tcp --dport 80:90", tcp(dport=90), True),
        ("-p tcp -m tcp --dport 80:90", tcp(dport=91), False),
        ("-p tcp -m tcp ! --dport 80:90", tcp(dport=91), True),
        ("-p tcp -m tcp --sport 40000 --dport 80", tcp(), True),
        ("-p udp -m udp --dport 80", tcp(), False),
        ("! -p udp", tcp(), True),
        ("-p sctp -m sctp --dport 80", Packet(POD_A, POD_B, 132, 40000, 80), True),
        ("-p tcp -m multiport --dports 22,80:81", tcp(dport=81), True),
        ("-p tcp -m multiport ! --dports 22,80:81", tcp(dport=81), False),
        ("-p tcp -m multiport --sports 40000", tcp(), True),
        ("-p tcp -m multiport --ports 443", tcp(dport=443), True),
        ("-p icmp -m icmp --icmp-type 8", Packet(POD_A, POD_B, 1, 0, 8), True),
        ("-p icmp -m icmp --icmp-type 3/4", Packet(POD_A, POD_B, 1, 0, 3, icmp_code=3), False),
        ("-p icmp -m icmp --icmp-type any", Packet(POD_A, POD_B, 1, 0, 3), True),
        ("-p icmp -m icmp ! --icmp-type 8", Packet(POD_A, POD_B, 1, 0, 0), True),
        ("-s 10.244.1.0/24 ! -d 10.244.1.10", tcp(), True),
        ("! -s 10.244.1.0/24", tcp(), False),
        ("-m comment --comment \"only a note\"", tcp(), True),
        ("-i v0 ! -o v1", tcp(in_interface="v0", out_interface="v2"), True),
        ("-i v+", tcp(in_interface="vworld", out_interface="v1"), True),
        ("-o vworld", tcp(in_interface="v0", out_interface="v1"), False),
    ],
)
def test_header_fields_and_match_modules(match: str, packet: Packet, accepted: bool) -> None:
    result = sim(f":FORWARD DROP [0:0]\n-A FORWARD {match} -j ACCEPT").simulate(packet)
    assert (result.outcome is Outcome.ACCEPT) == accepted


def test_a_rule_testing_an_unknown_interface_is_an_error_not_a_guess() -> None:
    with pytest.raises(SimulationError, match="input interface is unknown"):
        sim(":FORWARD DROP [0:0]\n-A FORWARD -i v0 -j ACCEPT").simulate(tcp())


def test_node_originated_packets_have_no_input_interface() -> None:
    result = sim(":OUTPUT DROP [0:0]\n-A OUTPUT ! -o lo -j ACCEPT").simulate(tcp(NODE, POD_A, out_interface="v0"))
    assert result.outcome is Outcome.ACCEPT


def test_addrtype_local_is_the_node_address() -> None:
    rules = ":INPUT DROP [0:0]\n:OUTPUT DROP [0:0]\n:X - [0:0]\n-A INPUT -j X\n-A OUTPUT -j X\n" \
        "-A X -m addrtype --src-type LOCAL ! --dst-type LOCAL -j ACCEPT\n-A X -m addrtype --dst-type LOCAL -j ACCEPT"
    simulator = sim(rules)
    assert simulator.simulate(tcp(NODE, POD_A)).outcome is Outcome.ACCEPT
    assert fired(simulator.simulate(tcp(WORLD, NODE)))[-1] == "filter/X#2"
    assert simulator.simulate(tcp(NODE, NODE)).outcome is Outcome.ACCEPT


def test_log_does_not_terminate() -> None:
    result = sim(':FORWARD DROP [0:0]\n-A FORWARD -j LOG --log-prefix "x: "\n-A FORWARD -j ACCEPT').simulate(tcp())
    assert result.outcome is Outcome.ACCEPT and fired(result) == ["filter/FORWARD#1", "filter/FORWARD#2"]


# -- TPROXY, sockets and redirects -----------------------------------------------------------------------------------

MANGLE = """\
:PREROUTING ACCEPT [0:0]
:NPC-L7 - [0:0]
-A PREROUTING -p tcp -m socket --transparent -j MARK --set-xmark 0x4000000/0x4000000
-A PREROUTING -m mark --mark 0x4000000/0x4000000 -j ACCEPT
-A PREROUTING -d 10.244.1.11 -j NPC-L7
-A NPC-L7 -p tcp -m tcp --dport 80 -m comment --comment "to http proxy" -j TPROXY --on-port 10002 \
--tproxy-mark 0x4000000/0x4000000
-A NPC-L7 -p udp -j TPROXY --on-port 10000 --on-ip 127.0.0.1 --tproxy-mark 0x4000000/0x4000000"""
POLICY = ":INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n-A INPUT -s 10.244.1.10 -j ACCEPT\n-A FORWARD -j ACCEPT"


def test_tproxy_delivers_locally_and_the_verdict_is_a_redirect_to_its_port() -> None:
    result = sim(POLICY, mangle=MANGLE).simulate(tcp())
    assert result.outcome is Outcome.REDIRECT and result.proxy_port == 10002
    assert list(result.hooks) == ["mangle/PREROUTING", "mangle/INPUT", "filter/INPUT"]
    assert result.mark & 0x4000000
    assert result.cause is not None and result.cause.comments == ("to http proxy",)
    assert "mangle/NPC-L7#1" in result.render() and "to http proxy" in result.render()


def test_a_redirected_packet_that_input_drops_is_dropped() -> None:
    result = sim(POLICY, mangle=MANGLE).simulate(tcp(src=WORLD))
    assert result.outcome is Outcome.DROP
    assert result.cause is not None and (result.cause.table, result.cause.chain) == ("filter", "INPUT")


def test_no_socket_exists_for_a_new_flow_but_an_established_proxied_one_has_the_proxys() -> None:
    simulator = sim(POLICY, mangle=MANGLE)
    first = simulator.simulate(tcp())
    assert [s.matched for s in first.trace[:1]] == [False]  # -m socket --transparent
    later = simulator.simulate(tcp(ctstate="ESTABLISHED", socket=Socket(10002)))
    assert later.outcome is Outcome.REDIRECT and later.proxy_port == 10002
    assert fired(later)[:2] == ["mangle/PREROUTING#1", "mangle/PREROUTING#2"]


def test_socket_match_ignores_wildcard_listeners_unless_nowildcard() -> None:
    rules = ":INPUT DROP [0:0]\n-A INPUT -m socket -j DROP\n-A INPUT -m socket --nowildcard -j ACCEPT"
    wildcard = Socket(80, transparent=False, wildcard=True)
    assert sim(rules).simulate(tcp(WORLD, NODE, socket=wildcard)).outcome is Outcome.ACCEPT


def test_tproxy_to_a_port_nobody_listens_on_drops() -> None:
    node = Node(frozenset({NODE}), proxy_ports=frozenset({10000}))
    result = sim(POLICY, mangle=MANGLE, node=node).simulate(tcp())
    assert result.outcome is Outcome.DROP and "no socket listens on port 10002" in (result.cause.action or "")


def test_the_fwmark_route_decides_local_delivery_when_given() -> None:
    node = Node(frozenset({NODE}), tproxy_route=(0x4000000, 0x4000000))
    later = sim(POLICY, mangle=MANGLE, node=node).simulate(tcp(ctstate="ESTABLISHED", socket=Socket(10002)))
    assert later.outcome is Outcome.REDIRECT and list(later.hooks)[-1] == "filter/INPUT"
    unmarked = sim(POLICY, node=node).simulate(tcp(ctstate="ESTABLISHED", socket=Socket(10002)))
    assert unmarked.outcome is Outcome.ACCEPT and list(unmarked.hooks) == ["filter/FORWARD"]


# -- the contract ruleset, written and as read back ---------------------------------------------------------------

CONTRACT_PACKETS = [
    tcp(POD_A, POD_B, 80),
    tcp(POD_A, POD_B, 8080),
    tcp(POD_A, IPv4Address("10.96.0.10"), 53),
    Packet(POD_A, IPv4Address("10.96.0.10"), 17, 40000, 53),
    Packet(POD_A, POD_B, 1, 0, 8),
    Packet(POD_A, IPv4Address("192.168.7.1"), 6, 40000, 443),
    Packet(POD_A, IPv4Address("192.168.1.1"), 6, 40000, 22),
    Packet(WORLD, POD_B, 6, 40000, 23),
    Packet(WORLD, POD_A, 132, 40000, 9000),
    tcp(NODE, POD_B, 80),
    tcp(IPv4Address("127.0.0.1"), NODE, 22),
    tcp(POD_A, POD_B, 80, ctstate="ESTABLISHED"),
]
INTERFACES = {POD_A: "v0", POD_B: "v1", IPv4Address("10.96.0.10"): "v2"}


def _interface(address: IPv4Address) -> str:
    return INTERFACES.get(address, "vworld")


def _with_interfaces(packet: Packet) -> Packet:
    return Packet(packet.src, packet.dst, packet.protocol, packet.sport, packet.dport, packet.icmp_code,
                  _interface(packet.src), _interface(packet.dst), ctstate=packet.ctstate)  # fmt: skip


def test_the_contract_ruleset_simulates_identically_as_written_and_as_saved() -> None:
    node = Node(frozenset({NODE}))
    written = IptablesSimulator(load_iptables(DATA / "contract.rules.v4"), load_ipsets(DATA / "contract.ipsets.v4"),
                                node)  # fmt: skip
    saved = IptablesSimulator(load_iptables(DATA / "contract.saved.v4"),
                              load_ipsets(DATA / "contract.ipsets.saved.v4"), node)  # fmt: skip
    outcomes = []
    for packet in map(_with_interfaces, CONTRACT_PACKETS):
        a, b = written.simulate(packet), saved.simulate(packet)
        assert (a.outcome, a.proxy_port, a.cost, a.hooks, a.mark) == (b.outcome, b.proxy_port, b.cost, b.hooks, b.mark)
        assert [(s.table, s.chain, s.rule, s.matched) for s in a.trace] == [
            (s.table, s.chain, s.rule, s.matched) for s in b.trace
        ]
        outcomes.append(a.outcome)
    assert Outcome.ACCEPT in outcomes and Outcome.DROP in outcomes


# -- the Flow adapter ------------------------------------------------------------------------------------------------


def test_flow_simulator_maps_flows_to_packets_on_the_clusters_node() -> None:
    cluster = Cluster({}, (), node_ip=str(NODE))
    rules = read_iptables(f"*filter\n{POLICY}\nCOMMIT\n*mangle\n{MANGLE}\nCOMMIT\n", "t")
    flows = FlowSimulator(rules, {}, cluster)
    assert flows.verdict(Flow(POD_A, POD_B, Protocol.TCP, 80)) == FlowVerdict("redirected", 10002)
    assert flows.verdict(Flow(WORLD, POD_B, Protocol.TCP, 80)) == FlowVerdict("dropped")
    assert flows.verdict(Flow(WORLD, POD_A, Protocol.TCP, 80)) == FlowVerdict("allowed")
    later = flows.simulate(Flow(POD_A, POD_B, Protocol.TCP, 80), "ESTABLISHED")
    assert verdict_of_result(later) == FlowVerdict("redirected", 10002)
    assert later.cost.rules_evaluated == 3  # the socket rule marks, the mark rule accepts, INPUT accepts


def _side(direction: str, allowed: bool, redirect: str | None = None) -> DirectionDecision:
    return DirectionDecision(Direction(direction), "ns/pod", True, allowed,
                             None if allowed else DropReason.POLICY_DENIED, redirect=redirect)  # fmt: skip


def test_decisions_map_to_the_same_comparable_verdicts() -> None:
    flow = Flow(POD_A, POD_B, Protocol.TCP, 80)
    dropped = Decision(flow, Verdict.DROPPED, DropReason.POLICY_DENIED, _side("egress", False), None)
    assert verdict_of_decision(dropped) == FlowVerdict("dropped")
    both = Decision(flow, Verdict.REDIRECTED, None, _side("egress", True, "kafka"), _side("ingress", True, "http"))
    assert verdict_of_decision(both) == FlowVerdict("redirected", proxy_port("kafka", Direction.EGRESS))
    ingress = Decision(flow, Verdict.REDIRECTED, None, None, _side("ingress", True, "http"))
    assert verdict_of_decision(ingress) == FlowVerdict("redirected", proxy_port("http", Direction.INGRESS))
    l7_denied = Decision(flow, Verdict.DROPPED, None, None, _side("ingress", True, "http"), l7_denied=True)
    assert verdict_of_decision(l7_denied) == verdict_of_decision(ingress)
    assert str(verdict_of_decision(ingress)) == "redirected to proxy port 10002"
