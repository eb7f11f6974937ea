"""The fast artifact readers (verifier/artifacts/fast_read.py) held against the lark readers.

For the compiler's own output the fast readers must answer (not decline) and give exactly the lark readers'
models -- down to the fields equality ignores: line numbers, raw text, target columns, ipset sizing options. For
anything else (hand-made spellings, hypothesis-made rules and sets, mutations of compiled files) they give the
same models or decline, and whenever lark reports an error they decline, so the public readers report exactly
lark's error (file, line, column and message).
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compiler.flow import Profile
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.targets.iptables import IptablesTarget
from grammar.iptables_save import SERVICE_TABLES, SUPPORTED_TABLES
from verifier.artifacts import ArtifactError, read_ipsets, read_iptables, read_services
from verifier.artifacts.fast_read import _arity, read_ipsets_fast, read_iptables_fast
from verifier.artifacts.iptables import _read_ipsets_lark, _read_iptables_lark
from verifier.artifacts.models import Family

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
DATA = ROOT / "tests" / "data" / "iptables"


# -- comparing the two readers -------------------------------------------------------------------------------------


def exact(value: Any) -> Any:
    """``value`` as nested tuples of every dataclass field, ``compare=False`` ones included, keeping mapping order
    and classes: two models with equal ``exact`` are the same objects field for field."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = tuple((f.name, exact(getattr(value, f.name))) for f in dataclasses.fields(value))
        return type(value).__name__, fields
    if isinstance(value, Mapping):
        return "mapping", tuple((key, exact(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return type(value).__name__, tuple(exact(item) for item in value)
    return type(value).__name__, value


def outcome(read: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", exact model) or ("error", (file, line, column, message))."""
    try:
        return "ok", exact(read())
    except ArtifactError as error:
        return "error", (error.file, error.line, error.column, error.message)


def rules_agree(text: str, family: Family = 4, services: bool = False) -> bool:
    """Assert that the fast reader gives lark's ruleset or declines (always when lark reports an error), and that
    the public reader gives lark's outcome; True when the fast reader answered."""
    tables = SERVICE_TABLES if services else SUPPORTED_TABLES
    slow = outcome(lambda: _read_iptables_lark(text, "t.rules", family, tables))
    fast = read_iptables_fast(text, "t.rules", family, tables)
    public = read_services if services else read_iptables
    assert outcome(lambda: public(text, "t.rules", family)) == slow
    if slow[0] == "error":
        assert fast is None, slow
        return False
    if fast is not None:
        assert exact(fast) == slow[1]
    return fast is not None


def sets_agree(text: str) -> bool:
    """:func:`rules_agree` for ipset texts."""
    slow = outcome(lambda: _read_ipsets_lark(text, "t.ipsets"))
    fast = read_ipsets_fast(text, "t.ipsets")
    assert outcome(lambda: read_ipsets(text, "t.ipsets")) == slow
    if slow[0] == "error":
        assert fast is None, slow
        return False
    if fast is not None:
        assert exact(fast) == slow[1]
    return fast is not None


@cache
def compiled(example: str, profile: Profile) -> dict[str, str]:
    """The iptables target's files for one example directory."""
    return IptablesTarget(build_ir(load_inputs([example]), profile)).emit()


def file_agrees(name: str, text: str) -> bool:
    family: Family = 6 if name.endswith("6") else 4
    if name.startswith("ipsets"):
        return sets_agree(text)
    return rules_agree(text, family, services=name.startswith("services"))


# -- the compiler's output: always the fast reader, always the same objects --------------------------------------


@pytest.mark.parametrize("profile", list(Profile), ids=lambda p: p.value)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_compiled_example_is_read_fast_into_exactly_the_lark_models(example: Path, profile: Profile) -> None:
    files = compiled(str(example), profile)
    assert {"rules.v4", "ipsets.v4"} <= set(files)
    for name, text in files.items():
        assert file_agrees(name, text), f"the fast reader declined {example.name} {name}"


DUAL_STACK = """\
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}, {ip: 'fd00::10'}]}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec:
  containers: [{name: c, ports: [{containerPort: 9090}]}]
status: {podIP: 10.244.1.11, podIPs: [{ip: 10.244.1.11}, {ip: 'fd00::11'}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    - ipBlock: {cidr: 'fd00::/8', except: ['fd00:1::/32']}
    - podSelector: {matchLabels: {app: api}}
    ports: [{port: http}]
"""


def test_dual_stack_output_is_read_fast_in_both_families(tmp_path: Path) -> None:
    (tmp_path / "dual.yaml").write_text(DUAL_STACK)
    for profile in Profile:
        files = IptablesTarget(build_ir(load_inputs([str(tmp_path / "dual.yaml")]), profile)).emit()
        assert {"rules.v6", "ipsets.v6"} <= set(files)
        for name, text in files.items():
            assert file_agrees(name, text), name


# -- other spellings: the same objects, or lark ------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(DATA.iterdir()), ids=lambda p: p.name)
def test_the_contract_files_read_the_same_whichever_reader_answers(path: Path) -> None:
    file_agrees("ipsets.v4" if "ipsets" in path.name else "rules.v4", path.read_text())


def table(rules: str, name: str = "filter", chains: str = "X Y") -> str:
    declared = "".join(f":{chain} - [0:0]\n" for chain in chains.split())
    return f"*{name}\n{declared}{rules}COMMIT\n"


CANONICAL_RULES = [
    table("-A X\n-A X -j RETURN\n-A X -g Y\n"),
    table("-A X -p tcp -m tcp --dport 80 -m tcp --sport 1:1024 -j ACCEPT\n-A X -p tcp --dport 0:65535 -j DROP\n"),
    table("-A X ! -p tcp -j DROP\n-A X -p 6 -j ACCEPT\n-A X -p all -j ACCEPT\n"
          "-A X ! -s 10.0.0.0/8 -d 0.0.0.0/0 -j X\n"),
    table("-A X -s 10.1.2.3/8 -i eth0 ! -o cali+ -j ACCEPT\n-A X -i + -j ACCEPT\n-A Y -s 10.1.2.3/8 -j X\n"),
    table('-A X -m comment --comment "a \\" b" -j ACCEPT\n-A X -m comment --comment "x y"z -j ACCEPT\n'),
    table('-A X -m comment --comment "" -j ACCEPT\n-A X -m comment --comment plain -j ACCEPT\n'),
    table("-A X --jump ACCEPT\n-A X --goto Y\n-A X --protocol tcp --destination-port 22 -j DROP\n"),
    table("-A X -m set --match-set s src --return-nomatch ! --update-counters -j ACCEPT\n"
          "-A X -m set ! --set s dst,dst -j DROP\n"),
    table("-A X -m mark --mark 0x1/0x1 -m mark ! --mark 010 -j MARK --set-mark 0x2\n-A X -j MARK --or-mark 4\n"
          "-A X -j CONNMARK --save-mark --nfmask 0xff\n-A X -j CONNMARK --restore-mark\n"),
    table("-A X -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A X -m conntrack ! --ctstate NEW -j RETURN\n"),
    table("-A X -p tcp -m multiport --dports 80,443:445 -j ACCEPT\n"
          "-A X -p icmp -m icmp --icmp-type echo-request -j ACCEPT\n"
          "-A X -m addrtype --dst-type LOCAL --limit-iface-in -j ACCEPT\n"),
    table("-A X -j REJECT\n-A X -p tcp -j REJECT --reject-with tcp-reset\n"
          '-A X -j LOG --log-prefix "p: " --log-level 7 --log-uid\n'),
    table("-A PREROUTING -p tcp -m socket --transparent -j MARK --set-xmark 0x1/0x1\n"
          "-A PREROUTING -p tcp -j TPROXY --on-port 15001 --on-ip 127.0.0.1 --tproxy-mark 0x1/0x1\n",
          "mangle", "PREROUTING X"),
    table(":LOG - [0:0]\n-A X -j LOG\n", chains="X"),  # a chain named like a target: the LOG target wins
    "# header\n\n*filter\n# inside\n:INPUT DROP [12:345]\n\n-A INPUT -j ACCEPT\nCOMMIT\n\n# after\n*mangle\nCOMMIT",
    "",
    "# only a comment",
    table("-A X -m set --match-set -j dst\n-A X -m set --match-set -j src\n"),  # "-j" as a value, not a target
    table("-A X -m set --match-set s dst -j Y\n-A X -m set --match-set s dst -j X\n"
          "-A X -m set --match-set s dst -g Y\n-A X -m set --match-set s dst -j ACCEPT\n"),
    table("-A X -m comment --comment -j -j Y\n"),
]  # fmt: skip
"""Canonical and valid: the fast reader must answer."""

OTHER_RULES = [
    table("-A X -i eth0 -i + -j ACCEPT\n"),
    table("-A X -j Y\n-A X -m set --match-set s dst -j !\n"),
    table("-A X -j Y\n-A Y  -j Y\n-A X -j X\n-A X -g Y\n-A X  -g X\n"),  # blanks before the target
    table("-A X -j Y\n-A X x-j Y\n"),
    table("-A X -j Y\n-A X -j Z\n"),
    table("-A X -j MARK\n"),
    table("-A X -m limit --limit 1/s -j ACCEPT\n"),
    table("-A X -j ACCEPT\n", "nat"),
    table("-A X -j ACCEPT\n", "raw"),
    table("-A X -p tcp -j TPROXY --on-port 1\n"),
    table(":X - [0:0]\n-A X -j ACCEPT\n", chains="X"),
    "*filter\n-A INPUT -j ACCEPT\n",
    "-A INPUT -j ACCEPT\n",
    "*filter\nCOMMIT\n*filter\nCOMMIT\n",
    table("-A X -m comment --comment ! -j ACCEPT\n"),  # NAME ! VALUE
    table("-A X -m set --match-set ! dst -j ACCEPT\n"),
    table('-A X -m comment --comment "!" -j ACCEPT\n'),  # a quoted "!" is a value
    table("-A X -j ACCEPT !\n"),  # negates nothing
    table("-A X ! ! -p tcp -j ACCEPT\n"),
    table("-A X -m comment --comment a\tb -j ACCEPT\n"),  # a tab ends a word
    table('-A X -m comment --comment "a\tb" -j ACCEPT\n'),  # but not inside quotes
    table("-A X -j ACCEPT\n", chains="X " + "C" * 29),
    table("-A " + "C" * 29 + " -j ACCEPT\n"),
    table(":-X - [0:0]\n"),
    table(":X ACCEPT [0:0]\n"),
]
"""Anything else: the fast reader gives lark's models or declines (lark reports most of these)."""

NOT_CANONICAL_RULES = [
    table("-A X\t-j ACCEPT\n"),
    table("-A X -j ACCEPT \n"),
    table("-A X  -j ACCEPT\n"),
    table("-I X 1 -j ACCEPT\n-N Z\n-P INPUT DROP\n"),
    table("[1:2] -A X -j ACCEPT\n"),
    table(":Z - -\n:W -\n-A X -j ACCEPT\n"),
    "*filter\r\n:X - [0:0]\r\n-A X -j ACCEPT\r\nCOMMIT\r\n",
    "*filter\n:X - [0:0]\n  -A X -j ACCEPT\nCOMMIT\n",
]
"""Valid, but not how the compiler writes: lark reads these."""


@pytest.mark.parametrize("text", CANONICAL_RULES)
def test_canonical_hand_made_rules_are_read_fast_into_exactly_the_lark_models(text: str) -> None:
    assert rules_agree(text)


@pytest.mark.parametrize("text", OTHER_RULES)
def test_other_rule_texts_read_the_same(text: str) -> None:
    rules_agree(text)


@pytest.mark.parametrize("text", NOT_CANONICAL_RULES)
def test_the_fast_reader_leaves_other_spellings_to_lark(text: str) -> None:
    assert not rules_agree(text)
    assert read_iptables(text, "t.rules") == _read_iptables_lark(text, "t.rules", 4)


CANONICAL_SETS = [
    "create s hash:ip family inet hashsize 1024 maxelem 65536\nadd s 10.0.0.1\nadd s 10.0.0.8/30\n",
    "create s hash:net family inet\nadd s 10.0.0.0/8\nadd s 10.1.0.0/16 nomatch\nadd s 10.1.2.3\nCOMMIT\n",
    "create s hash:ip,port family inet\nadd s 10.0.0.1,tcp:80\nadd s 10.0.0.2,80\nadd s 10.0.0.1,udp:080\n",
    "create s hash:net,port family inet\nadd s 10.0.0.0/24,sctp:1\nadd s 10.0.0.0/25,sctp:1 nomatch\n",
    "create s hash:ip,port family inet\nadd s 10.0.0.1,icmp:ping\nadd s 10.0.0.1,tcp:80-82\n",
    "create s hash:ip family inet6\nadd s fd00::1\nadd s fd00::2\n",
    "create b hash:ip family inet\ncreate a hash:net family inet\nadd b 10.0.0.1\nadd a 10.0.0.1\nadd a 10.0.0.1/31\n",
    "# header\n\ncreate s hash:ip family inet comment counters\n\nadd s 10.0.0.1\n",
    "",
]
"""Canonical and valid: the fast reader must answer."""

OTHER_SETS = [
    "create s hash:net family inet\nadd s 10.0.0.1\nadd s 10.0.0.1/32\n",  # the same element twice
    "create s hash:ip family inet maxelem 1\nadd s 10.0.0.1\nadd s 10.0.0.2\n",
    "create s hash:ip family inet\nadd s 10.0.0.1 nomatch\n",
    "create s hash:ip family inet\ncreate s hash:ip family inet\n",
    "create s hash:ip family inet\nadd s 10.0.0.256\n",
    "create s hash:ip family inet\nadd t 10.0.0.1\n",
    "create s hash:ip family inet\nadd s 010.0.0.1\n",
    "create s hash:ip family inet\nadd s 10.0.0.0/0\n",
    "create s hash:net family inet\nadd s 10.0.0.0/0\n",
    "create s hash:ip family inet timeout 5\n",
    "create s hash:mac family inet\n",
    "create s hash:ip,port family inet\nadd s 10.0.0.1,tcp:70000\n",
    "create s hash:ip,port family inet\nadd s 10.0.0.1\n",
    "create s hash:ip family inet\nadd s 10.0.0.1,tcp:80\n",
    "create s hash:net,port family inet\nadd s 10.0.0.0/0,tcp:80\n",
    "create s hash:ip family inet\nadd s 10.0.0.1\ncreate -exist s hash:ip family inet\n",
]
"""Anything else: the fast reader gives lark's sets or declines (lark reports most of these)."""

NOT_CANONICAL_SETS = [
    'create s hash:ip family inet comment\nadd s 10.0.0.1 comment "web"\n',
    "create s hash:ip family inet counters\nadd s 10.0.0.1 packets 1 bytes 2\n",
    "create -exist s hash:ip family inet\nadd -exist s 10.0.0.1\n",
    "# header\n\n  # indented\ncreate s hash:ip family inet\n\nadd s 10.0.0.1\n",
    "create s hash:ip family inet\nadd s 10.0.0.1\ndel s 10.0.0.1\n",
    "create s hash:ip family inet\nadd s 10.0.0.1\t\n",
    "n s hash:ip family inet\na s 10.0.0.1\n",
    'create s hash:ip family inet\nadd s "10.0.0.1"\n',
]
"""Valid, but not how the compiler writes: lark reads these."""


@pytest.mark.parametrize("text", CANONICAL_SETS)
def test_canonical_hand_made_sets_are_read_fast_into_exactly_the_lark_sets(text: str) -> None:
    assert sets_agree(text)


@pytest.mark.parametrize("text", OTHER_SETS)
def test_other_ipset_texts_read_the_same(text: str) -> None:
    sets_agree(text)


@pytest.mark.parametrize("text", NOT_CANONICAL_SETS)
def test_the_fast_reader_leaves_other_ipset_spellings_to_lark(text: str) -> None:
    assert not sets_agree(text)
    assert read_ipsets(text, "t.ipsets") == _read_ipsets_lark(text, "t.ipsets")


# -- hypothesis: random rules and sets, mostly valid ----------------------------------------------------------------

PROTOCOLS = ["tcp", "udp", "icmp", "all", "6", "sctp"]
PORT_OPTIONS = ["--dport 80", "--sport 1:1024", "! --dport 53", "--dport 0:65535", "--destination-port 22"]
MATCHES = [
    "-m set --match-set s1 src", "-m set ! --match-set s2 dst,dst", "-m set --match-set s1 dst --return-nomatch",
    "-m mark --mark 0x1/0x1", "-m mark ! --mark 0x0/0x3", '-m comment --comment "a b"', '-m comment --comment "q\\"t"',
    "-m comment --comment x", "-m conntrack --ctstate NEW", "-m conntrack ! --ctstate RELATED,ESTABLISHED",
    "-m addrtype --dst-type LOCAL", "-m connmark --mark 0x4/0x4",
]  # fmt: skip
HEADERS = [["-s 10.0.0.0/8", "! -s 10.1.2.3", "--source 192.0.2.0/24"], ["-d 0.0.0.0/0", "-d 10.0.0.1/32"],
           ["-i eth0", "! -i lo", "-i +"], ["-o cali+"]]  # fmt: skip
TARGETS = [
    "-j ACCEPT", "-j DROP", "-j RETURN", "-j X", "-j Y", "-g Y", "--jump Y", "-j MARK --set-xmark 0x1/0x1",
    "-j MARK --and-mark 0x2", "-j CONNMARK --save-mark", "-j REJECT", '-j LOG --log-prefix "p "', "",
]  # fmt: skip
BROKEN = ["-m limit", "--foo", "-f", "!", "--dport ! 80", "-j", '"-j" X', "0x1", "-j Z", "-j NOPE", "-m", "\t"]


@st.composite
def rule_lines(draw: st.DrawFn) -> str:
    """A rule of the filter dialect, mostly valid (one in twenty gets a broken word)."""
    words: list[str] = []
    protocol = draw(st.sampled_from([None, *PROTOCOLS]))
    ports = protocol in ("tcp", "udp", "6") and draw(st.booleans())
    if protocol is not None:
        negated = not ports and protocol != "all" and draw(st.integers(0, 3)) == 0
        words.append(f"{'! ' if negated else ''}-p {protocol}")
    words += [draw(st.sampled_from(choices)) for choices in HEADERS if draw(st.integers(0, 2)) == 0]
    matches = draw(st.lists(st.sampled_from(MATCHES), max_size=3))
    if ports:
        module = "tcp" if protocol == "6" else protocol
        matches.append(f"{draw(st.sampled_from(['', f'-m {module} ']))}{draw(st.sampled_from(PORT_OPTIONS))}")
        matches += draw(st.lists(st.just("-m multiport --dports 80,443"), max_size=1))
    if protocol == "icmp":
        matches += draw(
            st.lists(st.sampled_from(["-m icmp --icmp-type 8", "-m icmp --icmp-type echo-reply"]), max_size=1)
        )
    words += draw(st.permutations(matches))
    words.append(draw(st.sampled_from(TARGETS)))
    if draw(st.integers(0, 19)) == 0:
        words.insert(draw(st.integers(0, len(words))), draw(st.sampled_from(BROKEN)))
    chain = draw(st.sampled_from(["X", "Y", "INPUT"]))
    return " ".join(["-A", chain, *(word for word in words if word)])


@st.composite
def rule_texts(draw: st.DrawFn) -> str:
    lines = draw(st.lists(rule_lines(), min_size=1, max_size=8))
    for line in draw(st.lists(st.sampled_from(lines), max_size=3)):
        # rules that differ from another only in the jumped chain or in one blank: they share work, or must not
        start = line.rsplit(" ", 1)[0]
        lines.append(f"{start} {draw(st.sampled_from(['X', 'Y', 'ACCEPT', '!', '-j']))}")
        blanks = [at for at, char in enumerate(line) if char == " "][1:]  # not inside "-A CHAIN"
        if blanks:
            at = draw(st.sampled_from(blanks))
            lines.append(line[:at] + draw(st.sampled_from([" ", " ", "\t", '"', " !"])) + line[at:])
    lines = draw(st.permutations(lines))
    for _ in range(draw(st.integers(0, 3))):  # bare targets, after one blank or two, after rules like them
        chain, target = draw(st.sampled_from(["X", "Y"])), draw(st.sampled_from(["-j X", "-j Y", "-g Y", "-j DROP"]))
        lines.append(f"-A {chain}{draw(st.sampled_from([' ', ' ', '  ']))}{target}")
    return table("\n".join(lines) + "\n", draw(st.sampled_from(["filter", "filter", "filter", "mangle", "raw"])), "X Y")


@given(rule_texts())
def test_random_rule_texts_read_the_same(text: str) -> None:
    rules_agree(text)


BEFORE_TARGET = ["", "", "-p tcp", "-m set --match-set s dst", '-m comment --comment "a -j"',
                 "-m set --match-set -j dst", "-m comment --comment", "!"]  # fmt: skip
JUMPS = ["-j X", "-j Y", "-j X", "-j Y", "-g X", "-g Y", "-j ACCEPT", "-j !", "-j -j"]


@st.composite
def jump_variants(draw: st.DrawFn) -> list[str]:
    """A rule, then the same rule jumping elsewhere, then (maybe) that with two blanks before the jump."""
    chain, before = draw(st.sampled_from(["X", "Y"])), draw(st.sampled_from(BEFORE_TARGET))
    jumps = [draw(st.sampled_from(JUMPS)), draw(st.sampled_from(JUMPS))]
    blanks = [" ", " ", draw(st.sampled_from([" ", "  "]))]
    return [f"-A {chain} {before}{blank}{jump}" if before else f"-A {chain}{blank}{jump}"
            for blank, jump in zip(blanks, [*jumps, jumps[1]], strict=True)]  # fmt: skip


@given(st.lists(jump_variants(), min_size=1, max_size=3))
def test_rules_that_differ_in_the_jumped_chain_or_a_blank_read_the_same(variants: list[list[str]]) -> None:
    rules_agree(table("".join(f"{line}\n" for lines in variants for line in lines)))


NETWORKS = ["10.0.0.1", "10.0.0.2", "10.0.0.0/8", "10.1.0.0/16", "10.0.0.1/32", "10.0.0.0/30", "192.0.2.9"]
HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "192.0.2.9", "10.0.0.1/32", "10.0.0.0/30"]  # a CIDR: one entry each
PORTS = [",tcp:80", ",udp:53", ",80", ",sctp:9", ",tcp:80-81", ",icmp:8/0"]
BROKEN_ENTRIES = ["0.0.0.0/0", "10.0.0.256", "010.0.0.1", "fd00::1", "10.0.0.1-10.0.0.2", '"10.0.0.3"', "x",
                  "10.0.0.1,tcp:70000", "10.0.0.1 comment \"c\"", "10.0.0.1\t", "10.0.0.1 nomatch"]  # fmt: skip
TYPES = ["hash:ip", "hash:net", "hash:ip,port", "hash:net,port"]


@st.composite
def ipset_texts(draw: st.DrawFn) -> str:
    """Sets of the four types and adds that fit them, valid more often than not."""
    lines: list[str] = []
    kinds: dict[str, str] = {}
    for name in draw(st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True)):
        kinds[name] = draw(st.sampled_from(TYPES))
        options = draw(st.sampled_from([" hashsize 1024 maxelem 65536", "", " maxelem 3", " hashsize 64"]))
        lines.append(f"create {name} {kinds[name]} family inet{options}")
    for _ in range(draw(st.integers(0, 10))):
        name = draw(st.sampled_from(sorted(kinds)))
        address = draw(st.sampled_from(NETWORKS if kinds[name].startswith("hash:net") else HOSTS))
        entry = address + (draw(st.sampled_from(PORTS)) if kinds[name].endswith(",port") else "")
        if draw(st.integers(0, 9)) == 0:
            entry = draw(st.sampled_from(BROKEN_ENTRIES))
        nomatch = " nomatch" if "net" in kinds[name] and draw(st.integers(0, 3)) == 0 else ""
        lines.append(f"add {name} {entry}{nomatch}")
    if draw(st.integers(0, 4)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["COMMIT", "# c", "", "del a 10.0.0.1"])))
    return "\n".join(lines) + "\n"


@given(ipset_texts())
def test_random_ipset_texts_read_the_same(text: str) -> None:
    sets_agree(text)


# -- one line of a compiled file changed: the same objects, or lark's error -----------------------------------------

REPLACEMENTS = [
    "!", "-j", "ACCEPT", "--dport", "80", "--match-set", "src", "\t", "", "  ", '"', "-m", "set", "COMMIT",
    "NPC-NOWHERE", "0xz", "*filter", ":X", "--comment", "nomatch", "add", "10.0.0.300", "hash:ip",
]  # fmt: skip


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    lines = text.split("\n")
    index = draw(st.integers(0, len(lines) - 1))
    words = lines[index].split(" ")
    at = draw(st.integers(0, len(words)))
    replacement = draw(st.sampled_from(REPLACEMENTS))
    lines[index] = " ".join([*words[:at], replacement, *words[at + draw(st.integers(0, 1)) :]])
    return "\n".join(lines)


def shop_files() -> dict[str, str]:
    return compiled(str(ROOT / "examples" / "shop"), Profile.CILIUM)


@given(st.data())
def test_a_compiled_rules_file_with_one_line_changed_reads_the_same(data: st.DataObject) -> None:
    rules_agree(data.draw(mutated(shop_files()["rules.v4"])))


@given(st.data())
def test_a_compiled_ipsets_file_with_one_line_changed_reads_the_same(data: st.DataObject) -> None:
    sets_agree(data.draw(mutated(shop_files()["ipsets.v4"])))


# -- errors stay lark's --------------------------------------------------------------------------------------------


def test_a_malformed_rule_in_compiled_output_gives_lark_error_with_file_line_and_field() -> None:
    text = shop_files()["rules.v4"]
    lines = text.split("\n")
    number = next(i for i, line in enumerate(lines) if "--match-set" in line and " -j " in line)
    lines[number] = lines[number].replace(" src ", " sideways ").replace(" dst ", " sideways ")
    bad = "\n".join(lines)
    assert read_iptables_fast(bad, "iptables/rules.v4", 4, SUPPORTED_TABLES) is None
    with pytest.raises(ArtifactError) as info:
        read_iptables(bad, "iptables/rules.v4")
    error = info.value
    assert (error.file, error.line) == ("iptables/rules.v4", number + 1)
    assert error.column == lines[number].index("--match-set") + 1
    assert "flags must be 1 to 6 of src/dst" in error.message
    assert outcome(lambda: _read_iptables_lark(bad, "iptables/rules.v4", 4)) == (
        "error", (error.file, error.line, error.column, error.message))  # fmt: skip


def test_a_malformed_ipset_entry_in_compiled_output_gives_lark_error_with_file_line_and_field() -> None:
    text = shop_files()["ipsets.v4"]
    lines = text.split("\n")
    number = next(i for i, line in enumerate(lines) if line.startswith("add "))
    name = lines[number].split(" ")[1]
    lines[number] = f"add {name} 10.0.0.300"
    bad = "\n".join(lines)
    assert read_ipsets_fast(bad, "iptables/ipsets.v4") is None
    with pytest.raises(ArtifactError) as info:
        read_ipsets(bad, "iptables/ipsets.v4")
    error = info.value
    assert (error.file, error.line, error.column) == ("iptables/ipsets.v4", number + 1, len(f"add {name} ") + 1)
    assert "10.0.0.300" in error.message
    assert outcome(lambda: _read_ipsets_lark(bad, "iptables/ipsets.v4")) == (
        "error", (error.file, error.line, error.column, error.message))  # fmt: skip


def test_an_unknown_option_in_compiled_output_is_reported_where_it_stands() -> None:
    lines = shop_files()["rules.v4"].split("\n")
    number = next(i for i, line in enumerate(lines) if line.startswith("-A "))
    lines[number] += " --syn"
    with pytest.raises(ArtifactError) as info:
        read_iptables("\n".join(lines), "iptables/rules.v4")
    assert (info.value.line, info.value.column) == (number + 1, len(lines[number]) - len("--syn") + 1)
    assert "unknown option '--syn'" in info.value.message


# -- the pieces ----------------------------------------------------------------------------------------------------


def test_words_are_classified_by_the_grammars_own_terminals() -> None:
    assert [_arity(word) for word in ("!", "--random", "-f", "-j", "--dport", "--dports", "--match-set", "--set")] == [
        -1, 0, 0, 1, 1, 1, 2, 2]  # fmt: skip
    unknown = ("--syn", "-jACCEPT", "ACCEPT", '"-j"', "")
    assert [_arity(word) for word in unknown] == [None] * len(unknown)


def test_the_readers_restore_the_garbage_collector_state() -> None:
    text = shop_files()["rules.v4"]
    assert gc.isenabled()
    assert read_iptables_fast(text, "t", 4, SUPPORTED_TABLES) is not None
    assert read_iptables_fast("*filter\n", "t", 4, SUPPORTED_TABLES) is None
    assert read_ipsets_fast(shop_files()["ipsets.v4"], "t") is not None
    assert gc.isenabled()
    gc.disable()
    try:
        read_ipsets_fast(shop_files()["ipsets.v4"], "t")
        assert not gc.isenabled()
    finally:
        gc.enable()
