"""Property: any contract ruleset, rendered as iptables-save prints it or in restore spellings, reads back equal.

Hypothesis draws normalised rule models (what the reader produces), renders them either with
verifier.artifacts.render (the save dialect) or with randomly chosen restore spellings (long options, header
fields anywhere, ``--set-mark``/``--or-mark``/``--and-mark``, implicit ``-m tcp``, decimal marks, ICMP names,
host bits in addresses, shuffled ctstates), and checks the parse gives the model back.
"""

from __future__ import annotations

from ipaddress import IPv4Network

from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.artifacts import read_iptables
from verifier.artifacts.models import (
    ADDRESS_TYPES,
    CONNTRACK_STATES,
    MARK_FULL,
    AddressMatch,
    AddrtypeMatch,
    Chain,
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
    Match,
    MultiportMatch,
    PortMatch,
    PortRange,
    ProtocolMatch,
    Reject,
    Ruleset,
    SetMatch,
    Table,
    Target,
    Verdict,
)
from verifier.artifacts.render import quote, render_match, render_ruleset, render_target
from verifier.artifacts.values import ICMP4_NAMES

USER_CHAINS = ("NPC-A", "NPC-B", "NPC-C")
PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1}
marks = st.integers(0, MARK_FULL)
text = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=20)


@st.composite
def networks(draw: st.DrawFn) -> IPv4Network:
    prefix = draw(st.integers(1, 32))
    return IPv4Network((draw(st.integers(0, MARK_FULL)), prefix), strict=False)


@st.composite
def port_ranges(draw: st.DrawFn, full_ok: bool = False) -> PortRange:
    first = draw(st.integers(0, 65535))
    last = draw(st.one_of(st.just(first), st.integers(first, 65535)))
    return PortRange(first, last) if full_ok or (first, last) != (0, 65535) else PortRange(1, 1)


@st.composite
def protocol_matches(draw: st.DrawFn, protocol: str | None) -> list[Match]:
    """Matches that depend on the rule's protocol (ports, multiport, icmp)."""
    out: list[Match] = []
    if protocol in ("tcp", "udp", "sctp") and draw(st.booleans()):
        sport = draw(st.none() | port_ranges())
        dport = draw(st.none() | port_ranges())
        out.append(PortMatch(protocol, sport, sport is not None and draw(st.booleans()),  # type: ignore[arg-type]
                             dport, dport is not None and draw(st.booleans())))  # fmt: skip
    if protocol in ("tcp", "udp", "sctp") and draw(st.booleans()):
        ports = draw(st.lists(port_ranges(full_ok=True), min_size=1, max_size=7))
        direction = draw(st.sampled_from(["src", "dst", "any"]))
        out.append(MultiportMatch(direction, tuple(ports), draw(st.booleans())))
    if protocol == "icmp" and draw(st.booleans()):
        icmp_type = draw(st.integers(0, 255))
        out.append(IcmpMatch(4, icmp_type, draw(st.none() | st.integers(0, 255)), draw(st.booleans())))
    return out


plain_matches = st.one_of(
    text.map(CommentMatch),
    st.builds(MarkMatch, marks, marks, st.booleans()),
    st.builds(ConntrackMatch, st.frozensets(st.sampled_from(CONNTRACK_STATES), min_size=1), st.booleans()),
    st.builds(SetMatch, st.sampled_from(["npc-a", "npc-b2"]),
              st.lists(st.sampled_from(["src", "dst"]), min_size=1, max_size=2).map(tuple), st.booleans(),
              st.booleans()),
    st.builds(AddrtypeMatch, st.frozensets(st.sampled_from(ADDRESS_TYPES), min_size=1), st.booleans(),
              st.frozensets(st.sampled_from(ADDRESS_TYPES), min_size=1), st.booleans()),
    st.builds(AddrtypeMatch, st.none(), st.just(False), st.frozensets(st.sampled_from(ADDRESS_TYPES), min_size=1),
              st.booleans()),
)


@st.composite
def targets(draw: st.DrawFn, protocol: str | None) -> Target | None:
    choices: list[st.SearchStrategy[Target | None]] = [
        st.none(),
        st.sampled_from(["ACCEPT", "DROP", "RETURN"]).map(Verdict),
        st.sampled_from(USER_CHAINS).map(Jump),
        st.sampled_from(USER_CHAINS).map(Goto),
        st.builds(MarkTarget, marks, marks),
        st.sampled_from(["icmp-port-unreachable", "icmp-host-prohibited", "icmp-admin-prohibited"]).map(Reject),
        st.builds(Log, text.map(lambda t: t[:29]), st.integers(0, 7)),
    ]
    if protocol == "tcp":
        choices.append(st.just(Reject("tcp-reset")))
    return draw(st.one_of(choices))


@st.composite
def rules(draw: st.DrawFn, chain: str) -> IptRule:
    protocol = draw(st.none() | st.sampled_from(sorted(PROTOCOLS)))
    negated_protocol = protocol is not None and draw(st.booleans())
    dependent = [] if negated_protocol else draw(protocol_matches(protocol))
    matches = draw(st.lists(plain_matches, max_size=2)) + dependent
    matches = draw(st.permutations(matches))
    name = st.sampled_from(["lo", "eth0", "v0", "v+", "cali+", "vworld"])
    return IptRule(
        chain,
        ProtocolMatch(PROTOCOLS[protocol], negated_protocol) if protocol else None,
        draw(st.none() | st.builds(AddressMatch, networks(), st.booleans())),
        draw(st.none() | st.builds(AddressMatch, networks(), st.booleans())),
        draw(st.none() | st.builds(InterfaceMatch, name, st.booleans())),
        draw(st.none() | st.builds(InterfaceMatch, name, st.booleans())),
        tuple(matches),
        draw(targets(None if negated_protocol else protocol)),
    )


@st.composite
def rulesets(draw: st.DrawFn) -> Ruleset:
    chains: dict[str, Chain] = {}
    for name, policy in (("INPUT", "ACCEPT"), ("FORWARD", "DROP"), ("OUTPUT", None)):
        chains[name] = Chain(name, policy, tuple(draw(st.lists(rules(name), max_size=2))))  # type: ignore[arg-type]
    for name in USER_CHAINS:
        chains[name] = Chain(name, None, tuple(draw(st.lists(rules(name), max_size=2))))
    return Ruleset(4, {"filter": Table("filter", chains)})


# -- restore spellings ----------------------------------------------------------------------------------------------


def spell_match(match: Match, draw: st.DrawFn, implicit: bool) -> str:
    """``match`` in one of the spellings restore input may use."""
    bang = "! " if getattr(match, "negated", False) else ""
    if isinstance(match, MarkMatch):
        value = draw(st.sampled_from([f"{match.value:#x}", str(match.value)]))
        mask = "" if match.mask == MARK_FULL and draw(st.booleans()) else f"/{match.mask:#x}"
        return f"--match mark {bang}--mark {value}{mask}"
    if isinstance(match, ConntrackMatch):
        states = draw(st.permutations(sorted(match.states)))
        return f"-m conntrack {bang}--ctstate {','.join(s.lower() if draw(st.booleans()) else s for s in states)}"
    if isinstance(match, SetMatch) and draw(st.booleans()):
        return render_match(match).replace("--match-set", "--set")
    if isinstance(match, PortMatch):
        parts = [] if implicit else [f"-m {match.protocol}"]
        if match.dport is not None:
            parts.append(f"{'! ' if match.dport_negated else ''}--destination-port {match.dport}")
        if match.sport is not None:
            parts.append(f"{'! ' if match.sport_negated else ''}--source-port {match.sport}")
        return " ".join(parts) or f"-m {match.protocol}"  # without options the module must be named
    if isinstance(match, MultiportMatch):
        long = {"src": "--source-ports", "dst": "--destination-ports", "any": "--ports"}[match.direction]
        return f"-m multiport {bang}{long} {','.join(map(str, match.ports))}"
    if isinstance(match, IcmpMatch) and match.code is None and match.icmp_type is not None:
        names = [n for n, (t, c) in ICMP4_NAMES.items() if (t, c) == (match.icmp_type, None)]
        if names:
            return f"-m icmp {bang}--icmp-type {draw(st.sampled_from(names))}"
    return render_match(match)


def spell_target(target: Target, draw: st.DrawFn) -> str:
    if isinstance(target, MarkTarget):
        value, mask = target.value, target.mask
        options = [f"--set-xmark {value:#x}/{mask:#x}"]
        if mask == MARK_FULL:
            options.append(f"--set-mark {value}")
        if value & mask == value:
            options.append(f"--set-mark {value:#x}/{mask:#x}")
        if value == mask:
            options.append(f"--or-mark {value:#x}")
        if value == 0:
            options.append(f"--and-mark {~mask & MARK_FULL:#x}")
        if mask == 0:
            options.append(f"--xor-mark {value:#x}")
        return f"--jump MARK {draw(st.sampled_from(options))}"
    if isinstance(target, Reject) and target.reject_with == "icmp-port-unreachable" and draw(st.booleans()):
        return "-j REJECT"
    if isinstance(target, Jump):
        return f"--jump {target.chain}"
    if isinstance(target, Goto):
        return f"--goto {target.chain}"
    return render_target(target)


def spell_rule(rule: IptRule, draw: st.DrawFn) -> str:
    header: list[str] = []
    for long, address in (("--source", rule.source), ("--destination", rule.destination)):
        if address is not None:
            net = address.network
            host_bits = draw(st.integers(0, net.num_addresses - 1))
            written = f"{net.network_address + host_bits}" + ("" if net.prefixlen == 32 else f"/{net.prefixlen}")
            header.append(f"{'! ' if address.negated else ''}{long} {written}")
    for long, interface in (("--in-interface", rule.in_interface), ("--out-interface", rule.out_interface)):
        if interface is not None:
            header.append(f"{'! ' if interface.negated else ''}{long} {interface.name}")
    protocol = rule.protocol
    if protocol is not None:
        name = draw(st.sampled_from([protocol.name, str(protocol.number)]))
        header.append(f"{'! ' if protocol.negated else ''}--protocol {name}")
    ports = [m for m in rule.matches if isinstance(m, PortMatch)]
    implicit = len(ports) == 1 and draw(st.booleans())
    matches = [spell_match(m, draw, implicit and isinstance(m, PortMatch)) for m in rule.matches]
    # header fields may stand anywhere before the first option that needs them, here: before the matches
    parts = [*draw(st.permutations(header)), *matches]
    if rule.target is not None:
        parts.append(spell_target(rule.target, draw))
    return " ".join([f"-A {rule.chain}", *(p for p in parts if p)])


def spell_ruleset(ruleset: Ruleset, draw: st.DrawFn) -> str:
    lines = ["# restore input"]
    for table in ruleset.tables.values():
        lines.append(f"*{table.name}")
        for chain in table.chains.values():
            lines.append(f":{chain.name} {chain.policy or '-'} " + draw(st.sampled_from(["[0:0]", "-", "[7:99]"])))
        lines += [spell_rule(rule, draw) for chain in table.chains.values() for rule in chain.rules]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"


@settings(max_examples=60)
@given(rulesets())
def test_the_save_dialect_reads_back_to_the_same_model(ruleset: Ruleset) -> None:
    assert read_iptables(render_ruleset(ruleset), "rendered") == ruleset


@settings(max_examples=60)
@given(rulesets(), st.data())
def test_restore_spellings_read_back_to_the_same_model(ruleset: Ruleset, data: st.DataObject) -> None:
    text_ = spell_ruleset(ruleset, data.draw)
    assert read_iptables(text_, "spelled") == ruleset, text_


def test_quote_is_the_inverse_of_the_readers_unquoting() -> None:
    for value in ['a "b"', "back\\slash", "it's", "#hash", "plain_text-1"]:
        only = read_iptables(f"*filter\n:X - -\n-A X -m comment --comment {quote(value)}\nCOMMIT\n", "q")
        assert next(iter(only.rules())).comments == (value,)
