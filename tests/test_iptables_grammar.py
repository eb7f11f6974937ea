"""Reading iptables text back (grammar/iptables_save.lark + verifier/artifacts): both dialects, one model.

tests/data/iptables/contract.rules.v4 uses every construct of the iptables dialect contract in the spellings
restore input allows (long options, ``--set-mark``/``--or-mark``/``--and-mark``, implicit ``-m tcp``, names for
protocols and ICMP types, ``:CHAIN - -``); contract.saved.v4 is what ``iptables-save`` printed after that file
was loaded into a kernel. Reading either gives the same model.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path

import pytest

from compiler.source import NetpolcError
from verifier.artifacts import ArtifactError, load_iptables, read_iptables
from verifier.artifacts.models import (
    AddressMatch,
    AddrtypeMatch,
    CommentMatch,
    ConntrackMatch,
    Goto,
    IcmpMatch,
    InterfaceMatch,
    IptRule,
    Jump,
    Log,
    MarkMatch,
    MarkTarget,
    MultiportMatch,
    PortMatch,
    PortRange,
    ProtocolMatch,
    Reject,
    SetMatch,
    SocketMatch,
    Tproxy,
    Verdict,
)
from verifier.artifacts.render import render_ruleset

DATA = Path(__file__).resolve().parent / "data" / "iptables"
CONTRACT_RULES = DATA / "contract.rules.v4"
CONTRACT_SAVED = DATA / "contract.saved.v4"


def rule(text: str, table: str = "filter", chains: str = "X Y") -> IptRule:
    """The single rule of ``text`` (an ``-A`` line) inside a table that declares ``chains``."""
    declared = "\n".join(f":{name} - [0:0]" for name in chains.split())
    ruleset = read_iptables(f"*{table}\n{declared}\n{text}\nCOMMIT\n", "t.rules")
    return next(iter(ruleset.rules()))


def error_of(text: str) -> ArtifactError:
    with pytest.raises(ArtifactError) as info:
        read_iptables(text, "bad.rules")
    return info.value


# -- the contract file, in both dialects -------------------------------------------------------------------------


def test_restore_input_and_save_output_of_the_contract_read_as_the_same_model() -> None:
    written = load_iptables(CONTRACT_RULES)
    saved = load_iptables(CONTRACT_SAVED)
    assert written.with_builtin_chains() == saved
    assert set(saved.tables) == {"filter", "mangle", "raw"}
    assert sum(1 for _ in saved.rules()) == sum(1 for _ in written.rules()) == 35


def test_save_output_keeps_positions_and_text_for_traces() -> None:
    saved = load_iptables(CONTRACT_SAVED)
    tproxy = saved.chain("mangle", "NPC-L7").rules[0]
    assert tproxy.line == 12
    assert tproxy.raw.startswith("-A NPC-L7 -p tcp -m tcp --dport 8080")
    assert tproxy.comments == ('L7 "http" redirect',)
    assert saved.chain("filter", "FORWARD").policy == "DROP"


def test_rendering_the_model_gives_text_that_reads_back_equal() -> None:
    saved = load_iptables(CONTRACT_SAVED)
    assert read_iptables(render_ruleset(saved), "rendered") == saved


def test_the_contract_constructs_become_these_objects() -> None:
    saved = load_iptables(CONTRACT_SAVED)
    tproxy_udp = saved.chain("mangle", "NPC-L7").rules[1].target
    assert tproxy_udp == Tproxy(10000, None, 0x4000000, 0xFFFFFFFF)
    forward = saved.chain("filter", "FORWARD").rules
    assert forward[0].out_interface == InterfaceMatch("vworld", negated=True)
    assert forward[1].matches == (PortMatch("udp", dport=PortRange(53, 53)),)
    egress = saved.chain("filter", "NPC-E").rules
    assert egress[0].matches == (MultiportMatch("dst", (PortRange(80, 80), PortRange(8000, 8100))),)
    assert egress[1].matches == (SetMatch("npc-dns", ("dst", "dst")),)
    assert egress[2].matches == (IcmpMatch(4, 8),)
    assert egress[3].destination == AddressMatch(IPv4Network("10.0.0.0/8"), negated=True)
    assert egress[4].matches == (SetMatch("npc-except", ("dst",), negated=True),
                                 PortMatch("tcp", dport=PortRange(22, 22), dport_negated=True))  # fmt: skip
    assert egress[6].matches == (MarkMatch(0, 0x1000000, negated=True),)
    ingress = saved.chain("filter", "NPC-I").rules
    assert ingress[2].target == Reject("tcp-reset")
    assert ingress[4].matches == (AddrtypeMatch(dst_types=frozenset({"LOCAL"}), dst_negated=True),)
    assert ingress[5].matches == (MultiportMatch("src", (PortRange(1, 1023),), negated=True), CommentMatch("plain"))
    assert ingress[6].target == Goto("NPC-E")
    policy = saved.chain("filter", "NPC-POLICY").rules
    assert policy[0].matches == (ConntrackMatch(frozenset({"ESTABLISHED", "RELATED"})),)
    assert policy[1].target == MarkTarget(0, 0x3000000)
    assert policy[6].target == Log("npc drop: ")
    assert policy[7].target == Reject("icmp-port-unreachable")
    socket = saved.chain("mangle", "NPC-PREROUTING").rules[0]
    assert socket.matches == (SocketMatch(transparent=True),)


# -- one construct, several spellings -----------------------------------------------------------------------------

SAME_RULE = [
    ("-A X -p tcp --dport 80 -j ACCEPT", "-A X -p tcp -m tcp --dport 80 -j ACCEPT"),
    ("-A X --protocol 6 --match tcp --destination-port 80 --jump ACCEPT", "-A X -p tcp -m tcp --dport 80 -j ACCEPT"),
    ("-A X -s 10.0.0.1 -j ACCEPT", "-A X -s 10.0.0.1/32 -j ACCEPT"),
    ("-A X -s 10.1.2.3/255.255.0.0 -j ACCEPT", "-A X -s 10.1.0.0/16 -j ACCEPT"),
    ("-A X -s 0.0.0.0/0 -i + -j ACCEPT", "-A X -j ACCEPT"),
    ("-A X -p tcp --dport 0:65535 -j ACCEPT", "-A X -p tcp -m tcp -j ACCEPT"),
    ("-A X -j MARK --set-mark 0x10/0x30", "-A X -j MARK --set-xmark 0x10/0x30"),
    ("-A X -j MARK --set-mark 16", "-A X -j MARK --set-xmark 0x10/0xffffffff"),
    ("-A X -j MARK --or-mark 0x4", "-A X -j MARK --set-xmark 0x4/0x4"),
    ("-A X -j MARK --and-mark 0xfffffffb", "-A X -j MARK --set-xmark 0x0/0x4"),
    ("-A X -j MARK --xor-mark 0x4", "-A X -j MARK --set-xmark 0x4/0x0"),
    ("-A X -m mark --mark 0x10", "-A X -m mark --mark 0x10/0xffffffff"),
    ("-A X -m mark --mark 010/0x8", "-A X -m mark --mark 0x8/0x8"),
    ("-A X -m conntrack --ctstate established,NEW", "-A X -m conntrack --ctstate NEW,ESTABLISHED"),
    ("-A X -p icmp --icmp-type echo-request", "-A X -p icmp -m icmp --icmp-type 8"),
    ("-A X -p icmp -m icmp --icmp-type port-unreachable", "-A X -p icmp -m icmp --icmp-type 3/3"),
    ("-A X -j REJECT", "-A X -j REJECT --reject-with icmp-port-unreachable"),
    ("-A X -p tcp -j REJECT --reject-with tcp-rst", "-A X -p tcp -j REJECT --reject-with tcp-reset"),
    ("-A X -m set --set s src", "-A X -m set --match-set s src"),
    ("-A X -m comment --comment plain", '-A X -m comment --comment "plain"'),
    ("-A X -p udp -m multiport --destination-ports 53,5353", "-A X -p udp -m multiport --dports 53,5353"),
    ("-A X -p tcp -m tcp --dport 80 -m tcp --sport 90", "-A X -p tcp -m tcp --sport 90 --dport 80"),
]


@pytest.mark.parametrize(("written", "saved"), SAME_RULE)
def test_restore_spellings_equal_what_iptables_save_prints(written: str, saved: str) -> None:
    assert rule(written) == rule(saved)


def test_tproxy_spellings_equal_the_saved_form() -> None:
    written = rule("-A PREROUTING -p udp -j TPROXY --tproxy-mark 0x4 --on-port 53", "mangle", "")
    saved = rule("-A PREROUTING -p udp -j TPROXY --on-port 53 --on-ip 0.0.0.0 --tproxy-mark 0x4/0xffffffff",
                 "mangle", "")  # fmt: skip
    assert written == saved
    assert rule("-A PREROUTING -p tcp -j TPROXY --on-port 1 --on-ip 127.0.0.1", "mangle", "").target == Tproxy(
        1, IPv4Address("127.0.0.1"), 0, 0
    )


def test_comments_follow_the_iptables_quoting_rules() -> None:
    assert rule(r'-A X -m comment --comment "a \"b\" \\ c"').comments == ('a "b" \\ c',)
    assert rule("-A X -m comment --comment it's").comments == ("it's",)
    assert rule('-A X -m comment --comment "#not a comment line"').comments == ("#not a comment line",)


def test_chain_declarations_accept_the_restore_variants() -> None:
    ruleset = read_iptables("*filter\n:INPUT DROP [1:2]\n:A - -\n:B -\n-N C\n-P OUTPUT DROP\n-A A -j B\n"
                            "-I A -j C\n-I A 2 -j RETURN\nCOMMIT\n", "t")  # fmt: skip
    chains = ruleset.tables["filter"].chains
    assert chains["INPUT"].policy == "DROP" and chains["OUTPUT"].policy == "DROP"
    assert [r.target for r in chains["A"].rules] == [Jump("C"), Verdict("RETURN"), Jump("B")]
    assert set(chains) == {"INPUT", "A", "B", "C", "OUTPUT"}


def test_ip6tables_text_reads_with_family_6() -> None:
    text = "*filter\n:X - [0:0]\n-A X -s fd00::/64 -p ipv6-icmp -m icmp6 --icmpv6-type echo-request -j ACCEPT\nCOMMIT\n"
    only = next(iter(read_iptables(text, "t.v6", family=6).rules()))
    assert only.source == AddressMatch(IPv6Network("fd00::/64"))
    assert only.protocol == ProtocolMatch(58)
    assert only.matches == (IcmpMatch(6, 128),)


# -- errors: file, line, column and what is wrong -------------------------------------------------------------------

ERRORS = [
    ("*filter\n:X - [0:0]\n-A X -m limit --limit 1/s -j ACCEPT\nCOMMIT\n", 3, 6, "unknown match module 'limit'"),
    ("*filter\n:X - [0:0]\n-A X -j NFLOG\nCOMMIT\n", 3, 6, "-j NFLOG: not a supported target"),
    ("*filter\n:X - [0:0]\n-A X -p tcp --syn -j ACCEPT\nCOMMIT\n", 3, 13, "unknown option '--syn'"),
    ("*filter\n:X - [0:0]\n-A X -p tcp -m tcp --dport\nCOMMIT\n", 3, 20, "option --dport needs a value"),
    ("*filter\n:X - [0:0]\n-A X --dport 80 -j ACCEPT\nCOMMIT\n", 3, 6, "needs -m tcp or -m udp or -m sctp"),
    ("*filter\n:X - [0:0]\n-A X -p tcp --dport ! 80\nCOMMIT\n", 3, 13, "write '! --dport VALUE'"),
    ("*filter\n-A Y -j ACCEPT\nCOMMIT\n", 2, 1, "chain Y does not exist"),
    ("*filter\n:X - [0:0]\n-A X -j Z\nCOMMIT\n", 3, 6, "-j Z: not a supported target and no chain"),
    ("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", 1, 1, "table *nat is not supported"),
    ("*raw\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j ACCEPT\nCOMMIT\n", 3, 1, "rules in table *raw"),
    ("*filter\n:X - [0:0]\n-A X -p tcp -j TPROXY --on-port 1\nCOMMIT\n", 3, 13, "TPROXY is only valid in mangle"),
    ("*filter\n:X - [0:0]\n-A X -m comment --comment \"open\nCOMMIT\n", 3, 27, "unterminated quoted string"),
    ("*filter\n:X - [0:0]\n-A X -j ACCEPT\n", 3, None, "'COMMIT' is missing"),
    ("*filter\n:X - [0:0]\n-A X -m mark --mark 0xz -j ACCEPT\nCOMMIT\n", 3, 14, "mark '0xz' is not a number"),
    ("*filter\n:X - [0:0]\n-A X -s 10.0.0.300 -j ACCEPT\nCOMMIT\n", 3, 6, "'10.0.0.300' is not an IPv4 address"),
    ("*filter\n:X - [0:0]\n-A X -m set --match-set s sideways\nCOMMIT\n", 3, 13, "flags must be 1 to 6 of src/dst"),
    ("*filter\n:X - [0:0]\n-A X ! -j ACCEPT\nCOMMIT\n", 3, 8, "-j cannot be negated"),
    ("*filter\n:X - [0:0]\n-D X 1\nCOMMIT\n", 3, 1, "-D: only -A, -I, -N, -P"),
    ("*filter\n:X - [0:0]\nfoo\nCOMMIT\n", 3, 1, "unknown command 'foo'"),
    ("-A INPUT -j ACCEPT\n", 1, 1, "outside a table"),
    ("*filter\n:" + "C" * 29 + " - [0:0]\nCOMMIT\n", 2, 1, "longer than 28"),
]


@pytest.mark.parametrize(("text", "line", "column", "message"), ERRORS)
def test_bad_or_unsupported_input_is_reported_with_line_and_column(
    text: str, line: int, column: int | None, message: str
) -> None:
    error = error_of(text)
    assert isinstance(error, NetpolcError)
    assert (error.line, error.column) == (line, column) if column is not None else error.line == line
    assert message in error.message
    assert str(error).startswith(f"bad.rules:{line}")
