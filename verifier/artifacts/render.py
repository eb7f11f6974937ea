"""Print the typed iptables model back as text, in the form ``iptables-save`` prints it.

Used for traces (a rule built in memory has no source line) and for round-trip tests: render -> parse must give
the same model. The layout follows iptables-save: header fields first, then matches in rule order, then the
target (``print_rule4`` order, reference/iptables.md §5.2), with each module's save form (§5.3): hex marks,
``--set-xmark``, explicit ``-m tcp``, ctstates in the kernel's print order, comments quoted unless they are
entirely ``[A-Za-z0-9_-]``.
"""

from __future__ import annotations

import re

from verifier.artifacts.models import (
    ADDRESS_TYPES,
    CONNTRACK_STATES,
    MARK_FULL,
    AddrtypeMatch,
    CommentMatch,
    ConnmarkMatch,
    ConnmarkTarget,
    ConntrackMatch,
    Goto,
    IcmpMatch,
    IptRule,
    Jump,
    Log,
    MarkMatch,
    MarkTarget,
    Match,
    MultiportMatch,
    PortMatch,
    Reject,
    Ruleset,
    SetMatch,
    SocketMatch,
    Target,
    Tproxy,
    Verdict,
)

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def quote(text: str) -> str:
    """A value as ``xtables_save_string`` prints it: bare when it is all ``[A-Za-z0-9_-]``, else double-quoted
    with ``"`` and ``\\`` escaped (reference/iptables.md §5.3, comment)."""
    if _BARE.fullmatch(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bang(negated: bool) -> str:
    return "! " if negated else ""


def _mark(value: int, mask: int) -> str:
    return f"{value:#x}" if mask == MARK_FULL else f"{value:#x}/{mask:#x}"


def _ordered(names: frozenset[str], order: tuple[str, ...]) -> str:
    return ",".join(name for name in order if name in names)


def render_match(match: Match) -> str:
    """One ``-m MODULE options`` group."""
    if isinstance(match, CommentMatch):
        return f"-m comment --comment {quote(match.text)}"
    if isinstance(match, MarkMatch | ConnmarkMatch):
        module = "mark" if isinstance(match, MarkMatch) else "connmark"
        return f"-m {module} {_bang(match.negated)}--mark {_mark(match.value, match.mask)}"
    if isinstance(match, SetMatch):
        text = f"-m set {_bang(match.negated)}--match-set {match.name} {','.join(match.flags)}"
        text += " --return-nomatch" * match.return_nomatch
        text += " ! --update-counters" * (not match.update_counters)
        return text + " ! --update-subcounters" * (not match.update_subcounters)
    if isinstance(match, ConntrackMatch):
        return f"-m conntrack {_bang(match.negated)}--ctstate {_ordered(match.states, CONNTRACK_STATES)}"
    if isinstance(match, PortMatch):
        parts = [f"-m {match.protocol}"]
        if match.sport is not None:
            parts.append(f"{_bang(match.sport_negated)}--sport {match.sport}")
        if match.dport is not None:
            parts.append(f"{_bang(match.dport_negated)}--dport {match.dport}")
        return " ".join(parts)
    if isinstance(match, MultiportMatch):
        option = {"src": "--sports", "dst": "--dports", "any": "--ports"}[match.direction]
        return f"-m multiport {_bang(match.negated)}{option} {','.join(str(p) for p in match.ports)}"
    if isinstance(match, IcmpMatch):
        module, option = ("icmp", "--icmp-type") if match.version == 4 else ("icmp6", "--icmpv6-type")
        value = "any" if match.icmp_type is None else str(match.icmp_type)
        if match.icmp_type is not None and match.code is not None:
            value += f"/{match.code}"
        return f"-m {module} {_bang(match.negated)}{option} {value}"
    if isinstance(match, AddrtypeMatch):
        parts = ["-m addrtype"]
        if match.src_types is not None:
            parts.append(f"{_bang(match.src_negated)}--src-type {_ordered(match.src_types, ADDRESS_TYPES)}")
        if match.dst_types is not None:
            parts.append(f"{_bang(match.dst_negated)}--dst-type {_ordered(match.dst_types, ADDRESS_TYPES)}")
        parts += ["--limit-iface-in"] * match.limit_iface_in + ["--limit-iface-out"] * match.limit_iface_out
        return " ".join(parts)
    if isinstance(match, SocketMatch):
        flags = [("--transparent", match.transparent), ("--nowildcard", match.nowildcard),
                 ("--restore-skmark", match.restore_skmark)]  # fmt: skip
        return " ".join(["-m socket", *(name for name, on in flags if on)])
    raise TypeError(f"no renderer for {match!r}")


def render_target(target: Target) -> str:
    """``-j TARGET options`` or ``-g CHAIN``."""
    if isinstance(target, Verdict):
        return f"-j {target.name}"
    if isinstance(target, Jump):
        return f"-j {target.chain}"
    if isinstance(target, Goto):
        return f"-g {target.chain}"
    if isinstance(target, Reject):
        return f"-j REJECT --reject-with {target.reject_with}"
    if isinstance(target, MarkTarget):
        return f"-j MARK --set-xmark {target.value:#x}/{target.mask:#x}"
    if isinstance(target, ConnmarkTarget):
        if target.mode == "set":
            return f"-j CONNMARK --set-xmark {target.value:#x}/{target.mask:#x}"
        return f"-j CONNMARK --{target.mode}-mark --nfmask {target.nfmask:#x} --ctmask {target.ctmask:#x}"
    if isinstance(target, Tproxy):
        text = f"-j TPROXY --on-port {target.on_port}"
        text += f" --on-ip {target.on_ip}" if target.on_ip is not None else ""
        return text + f" --tproxy-mark {target.mark:#x}/{target.mask:#x}"
    if isinstance(target, Log):
        parts = ["-j LOG"]
        if target.prefix:
            parts.append(f"--log-prefix {quote(target.prefix)}")
        if target.level != 4:
            parts.append(f"--log-level {target.level}")
        parts += [f"--log-{flag}" for flag in sorted(target.flags)]
        return " ".join(parts)
    raise TypeError(f"no renderer for {target!r}")


def render_rule(rule: IptRule) -> str:
    """``-A CHAIN …`` as iptables-save prints the rule."""
    parts = [f"-A {rule.chain}"]
    for option, address in (("-s", rule.source), ("-d", rule.destination)):
        if address is not None:
            parts.append(f"{_bang(address.negated)}{option} {address.network}")
    for option, interface in (("-i", rule.in_interface), ("-o", rule.out_interface)):
        if interface is not None:
            parts.append(f"{_bang(interface.negated)}{option} {interface.name}")
    if rule.protocol is not None:
        parts.append(f"{_bang(rule.protocol.negated)}-p {rule.protocol.name}")
    parts += [render_match(match) for match in rule.matches]
    if rule.target is not None:
        parts.append(render_target(rule.target))
    return " ".join(parts)


def render_ruleset(ruleset: Ruleset) -> str:
    """The whole ruleset as iptables-restore input (tables in file order, user chains declared as ``-``)."""
    lines: list[str] = []
    for table in ruleset.tables.values():
        lines.append(f"*{table.name}")
        for chain in table.chains.values():
            lines.append(f":{chain.name} {chain.policy or '-'} [0:0]")
        for chain in table.chains.values():
            lines += [render_rule(rule) for rule in chain.rules]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"
