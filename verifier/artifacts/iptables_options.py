"""What each supported iptables match module and target makes of its options.

The Transformer (grammar/iptables_save.py) groups a rule's options under their module; the functions here turn
one group into one typed model object, normalizing every spelling the way the kernel stores it, so that
restore input and iptables-save output give equal objects (reference/iptables.md §5.3). The tables
``MATCH_OPTIONS``/``TARGET_OPTIONS`` are the whole supported surface: anything outside them is an error upstream.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal, TypeVar, cast

from verifier.artifacts.models import (
    ADDRESS_TYPES,
    CONNTRACK_STATES,
    MARK_FULL,
    AddrtypeMatch,
    CommentMatch,
    ConnmarkMatch,
    ConnmarkTarget,
    ConntrackMatch,
    Dnat,
    Family,
    IcmpMatch,
    Log,
    MarkMatch,
    MarkTarget,
    Masquerade,
    Match,
    MultiportMatch,
    PortMatch,
    PortRange,
    ProtocolMatch,
    Reject,
    SetMatch,
    SocketMatch,
    StatisticMatch,
    Target,
    Tproxy,
    Verdict,
)
from verifier.artifacts.values import (
    REJECT_DEFAULT,
    parse_address,
    parse_c_uint,
    parse_icmp_type,
    parse_log_level,
    parse_mark_mask,
    parse_port,
    parse_port_list,
    parse_port_range,
    parse_reject_with,
    unspecified,
)

T = TypeVar("T")

MATCH_OPTIONS: Mapping[str, frozenset[str]] = {
    "comment": frozenset({"--comment"}),
    "mark": frozenset({"--mark"}),
    "connmark": frozenset({"--mark"}),
    "set": frozenset({"--match-set", "--return-nomatch", "--update-counters", "--update-subcounters"}),
    "conntrack": frozenset({"--ctstate"}),
    "tcp": frozenset({"--sport", "--dport"}),
    "udp": frozenset({"--sport", "--dport"}),
    "sctp": frozenset({"--sport", "--dport"}),
    "multiport": frozenset({"--dports", "--sports", "--ports"}),
    "icmp": frozenset({"--icmp-type"}),
    "icmp6": frozenset({"--icmpv6-type"}),
    "addrtype": frozenset({"--src-type", "--dst-type", "--limit-iface-in", "--limit-iface-out"}),
    "socket": frozenset({"--transparent", "--nowildcard", "--restore-skmark"}),
    "statistic": frozenset({"--mode", "--probability", "--every", "--packet"}),
}
"""Supported match modules and the options each takes (canonical spellings): the dialect contract's matches
(DESIGN.md §4, reference/iptables.md §5.3) plus ``connmark``, which goes with the CONNMARK target, and
``statistic``, which kube-proxy's service chains use (services.v4, reference/iptables.md §4.1)."""

_MARK_OPS = frozenset({"--set-xmark", "--set-mark", "--and-mark", "--or-mark", "--xor-mark"})
_LOG_FLAGS = {"--log-tcp-sequence": "tcp-sequence", "--log-tcp-options": "tcp-options",
              "--log-ip-options": "ip-options", "--log-uid": "uid", "--log-macdecode": "macdecode"}  # fmt: skip

TARGET_OPTIONS: Mapping[str, frozenset[str]] = {
    "ACCEPT": frozenset(),
    "DROP": frozenset(),
    "RETURN": frozenset(),
    "REJECT": frozenset({"--reject-with"}),
    "MARK": _MARK_OPS,
    "CONNMARK": _MARK_OPS | {"--save-mark", "--restore-mark", "--nfmask", "--ctmask", "--mask"},
    "TPROXY": frozenset({"--on-port", "--on-ip", "--tproxy-mark"}),
    "LOG": frozenset({"--log-prefix", "--log-level", *_LOG_FLAGS}),
    "DNAT": frozenset({"--to-destination"}),
    "MASQUERADE": frozenset({"--to-ports", "--random", "--random-fully"}),
}
"""Supported targets and their options (DNAT and MASQUERADE: kube-proxy's nat table in services.v4).
``-j NAME`` with any other NAME must be a chain of the same table."""

_NEGATABLE = frozenset({"--mark", "--match-set", "--update-counters", "--update-subcounters", "--ctstate",
                        "--sport", "--dport", "--dports", "--sports", "--ports",
                        "--icmp-type", "--icmpv6-type", "--src-type", "--dst-type"})  # fmt: skip
_PORT_PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132}
_MULTIPORT_PROTOCOLS = frozenset({6, 17, 132, 136, 33})  # tcp udp sctp udplite dccp
_FULL_RANGE = PortRange(0, 0xFFFF)


@dataclass(frozen=True)
class Opt:
    """One option as written: canonical name, ``!`` before it, its values (unquoted), and where it stands."""

    name: str
    negated: bool
    values: tuple[str, ...]
    line: int
    column: int

    @property
    def value(self) -> str:
        return self.values[0]


class OptionError(Exception):
    """A bad option; the Transformer adds file, line and column (of ``opt`` when known)."""

    def __init__(self, message: str, opt: Opt | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.opt = opt


def _parsed(opt: Opt, parse: Callable[[str], T]) -> T:
    try:
        return parse(opt.value)
    except ValueError as e:
        raise OptionError(f"{opt.name}: {e}", opt) from None


def _check_negation(options: Mapping[str, Opt]) -> None:
    for opt in options.values():
        if opt.negated and opt.name not in _NEGATABLE:
            raise OptionError(f"{opt.name} cannot be negated", opt)


def _require(options: Mapping[str, Opt], name: str, owner: str) -> Opt:
    if name not in options:
        raise OptionError(f"{owner} needs {name}")
    return options[name]


def _uses_protocol(protocol: ProtocolMatch | None, allowed: frozenset[int] | set[int], what: str) -> None:
    if protocol is None or protocol.negated or protocol.number not in allowed:
        raise OptionError(f"{what} needs '-p {' or -p '.join(_protocol_names(allowed))}' before it in the rule")


def _protocol_names(numbers: frozenset[int] | set[int]) -> list[str]:
    names = {6: "tcp", 17: "udp", 132: "sctp", 136: "udplite", 33: "dccp", 1: "icmp", 58: "ipv6-icmp"}
    return [names.get(n, str(n)) for n in sorted(numbers)]


def build_match(module: str, options: Mapping[str, Opt], protocol: ProtocolMatch | None, family: Family) -> Match:
    """The model object for ``-m MODULE`` with ``options`` (all of which belong to MODULE)."""
    _check_negation(options)
    if module == "comment":
        text = _require(options, "--comment", "-m comment").value
        if len(text) > 255:
            raise OptionError("comments are limited to 255 characters", options["--comment"])
        return CommentMatch(text)
    if module in ("mark", "connmark"):
        opt = _require(options, "--mark", f"-m {module}")
        value, mask = _parsed(opt, parse_mark_mask)
        return (MarkMatch if module == "mark" else ConnmarkMatch)(value, mask, opt.negated)
    if module == "set":
        return _set_match(options)
    if module == "conntrack":
        opt = _require(options, "--ctstate", "-m conntrack (only --ctstate is supported)")
        states = frozenset(s.upper() for s in opt.value.split(","))
        unknown = sorted(states - set(CONNTRACK_STATES))
        if unknown:
            raise OptionError(f"unknown conntrack state {unknown[0]!r}", opt)
        return ConntrackMatch(states, opt.negated)
    if module in _PORT_PROTOCOLS:
        _uses_protocol(protocol, {_PORT_PROTOCOLS[module]}, f"-m {module}")
        return _port_match(cast(Literal["tcp", "udp", "sctp"], module), options)
    if module == "multiport":
        _uses_protocol(protocol, _MULTIPORT_PROTOCOLS, "-m multiport")
        given = [options[name] for name in ("--dports", "--sports", "--ports") if name in options]
        if len(given) != 1:
            raise OptionError("-m multiport needs exactly one of --dports, --sports, --ports")
        opt = given[0]
        direction: Literal["src", "dst", "any"] = {"--dports": "dst", "--sports": "src"}.get(  # type: ignore[assignment]
            opt.name, "any"
        )
        return MultiportMatch(direction, _parsed(opt, parse_port_list), opt.negated)
    if module in ("icmp", "icmp6"):
        version: Family = 4 if module == "icmp" else 6
        _uses_protocol(protocol, {1 if version == 4 else 58}, f"-m {module}")
        opt_or_none = options.get("--icmp-type" if version == 4 else "--icmpv6-type")
        if opt_or_none is None:
            return IcmpMatch(version, None)
        icmp_type, code = _parsed(opt_or_none, lambda text: parse_icmp_type(text, version))
        return IcmpMatch(version, icmp_type, code, opt_or_none.negated)
    if module == "addrtype":
        return _addrtype_match(options)
    if module == "statistic":
        return _statistic_match(options)
    if module == "socket":
        return SocketMatch("--transparent" in options, "--nowildcard" in options, "--restore-skmark" in options)
    raise OptionError(f"unknown match module {module!r}")


def _statistic_match(options: Mapping[str, Opt]) -> StatisticMatch:
    mode = _require(options, "--mode", "-m statistic")
    if mode.value == "random":
        opt = _require(options, "--probability", "-m statistic --mode random")
        try:
            probability = float(opt.value)
        except ValueError:
            raise OptionError(f"--probability must be a number, not {opt.value!r}", opt) from None
        if not 0.0 <= probability <= 1.0:
            raise OptionError(f"--probability must be between 0 and 1, not {opt.value}", opt)
        # libxt_statistic stores round(P * 2^31) in a u32 (and prints it back with 11 decimals)
        return StatisticMatch("random", round(probability * 0x80000000) / 0x80000000, negated=opt.negated)
    if mode.value == "nth":
        every = _parsed(_require(options, "--every", "-m statistic --mode nth"), parse_c_uint)
        packet = _parsed(options["--packet"], parse_c_uint) if "--packet" in options else 0
        if every == 0 or packet >= every:
            raise OptionError("--every must be at least 1 and --packet below it", options["--every"])
        return StatisticMatch("nth", every=every, packet=packet, negated=options["--every"].negated)
    raise OptionError(f"--mode must be random or nth, not {mode.value!r}", mode)


def _set_match(options: Mapping[str, Opt]) -> SetMatch:
    opt = _require(options, "--match-set", "-m set")
    name, flags_text = opt.values
    if len(name) > 31:
        raise OptionError(f"set name {name!r} is longer than 31 characters", opt)
    flags = tuple(flags_text.split(","))
    if not 1 <= len(flags) <= 6 or any(f not in ("src", "dst") for f in flags):
        raise OptionError(f"--match-set flags must be 1 to 6 of src/dst separated by ',', not {flags_text!r}", opt)
    nomatch = options.get("--return-nomatch")
    for name_ in ("--update-counters", "--update-subcounters"):
        if name_ in options and not options[name_].negated:
            raise OptionError(f"{name_} is the default; only '! {name_}' changes anything", options[name_])
    if nomatch is not None and nomatch.negated:
        raise OptionError("--return-nomatch cannot be negated", nomatch)
    return SetMatch(
        name,
        cast(tuple[Literal["src", "dst"], ...], flags),
        opt.negated,
        return_nomatch=nomatch is not None,
        update_counters="--update-counters" not in options,
        update_subcounters="--update-subcounters" not in options,
    )


def _port_match(protocol: Literal["tcp", "udp", "sctp"], options: Mapping[str, Opt]) -> PortMatch:
    def ports(name: str) -> tuple[PortRange | None, bool]:
        opt = options.get(name)
        if opt is None:
            return None, False
        port_range = _parsed(opt, parse_port_range)
        if port_range == _FULL_RANGE and not opt.negated:
            return None, False  # every port: iptables-save prints nothing
        return port_range, opt.negated

    sport, sport_negated = ports("--sport")
    dport, dport_negated = ports("--dport")
    return PortMatch(protocol, sport, sport_negated, dport, dport_negated)


def _addrtype_match(options: Mapping[str, Opt]) -> AddrtypeMatch:
    def types(name: str) -> tuple[frozenset[str] | None, bool]:
        opt = options.get(name)
        if opt is None:
            return None, False
        values = frozenset(t.upper() for t in opt.value.split(","))
        unknown = sorted(values - set(ADDRESS_TYPES))
        if unknown:
            raise OptionError(f"unknown address type {unknown[0]!r}", opt)
        return values, opt.negated

    src, src_negated = types("--src-type")
    dst, dst_negated = types("--dst-type")
    if src is None and dst is None:
        raise OptionError("-m addrtype needs --src-type or --dst-type")
    if "--limit-iface-in" in options and "--limit-iface-out" in options:
        raise OptionError("--limit-iface-in and --limit-iface-out cannot be combined", options["--limit-iface-in"])
    return AddrtypeMatch(src, src_negated, dst, dst_negated, "--limit-iface-in" in options,
                         "--limit-iface-out" in options)  # fmt: skip


def _xmark(options: Mapping[str, Opt], target: str) -> tuple[int, int]:
    """The ``--set-xmark V/M`` equivalent of whichever MARK/CONNMARK operation was written (libxt_MARK)."""
    ops = [options[name] for name in sorted(_MARK_OPS) if name in options]
    if len(ops) != 1:
        raise OptionError(f"-j {target} needs exactly one of {', '.join(sorted(_MARK_OPS))}")
    opt = ops[0]
    if opt.name in ("--set-xmark", "--set-mark"):
        value, mask = _parsed(opt, parse_mark_mask)
        return (value, mask) if opt.name == "--set-xmark" else (value, mask | value)
    value = _parsed(opt, parse_c_uint)
    if opt.name == "--or-mark":
        return value, value
    if opt.name == "--and-mark":
        return 0, ~value & MARK_FULL
    return value, 0  # --xor-mark


def build_target(name: str, options: Mapping[str, Opt], protocol: ProtocolMatch | None, family: Family) -> Target:
    """The model object for ``-j NAME`` (a supported target) with its ``options``."""
    _check_negation(options)
    if name in ("ACCEPT", "DROP", "RETURN"):
        return Verdict(cast(Literal["ACCEPT", "DROP", "RETURN"], name))
    if name == "REJECT":
        opt = options.get("--reject-with")
        kind = _parsed(opt, lambda text: parse_reject_with(text, family)) if opt else REJECT_DEFAULT[family]
        if kind == "tcp-reset":
            _uses_protocol(protocol, {6}, "--reject-with tcp-reset")
        return Reject(kind)
    if name == "MARK":
        return MarkTarget(*_xmark(options, name))
    if name == "CONNMARK":
        return _connmark_target(options)
    if name == "TPROXY":
        _uses_protocol(protocol, {6, 17}, "-j TPROXY")
        port = _parsed(_require(options, "--on-port", "-j TPROXY"), parse_port)
        on_ip = _parsed(options["--on-ip"], lambda text: parse_address(text, family)) if "--on-ip" in options else None
        mark, mask = _parsed(options["--tproxy-mark"], parse_mark_mask) if "--tproxy-mark" in options else (0, 0)
        return Tproxy(port, None if on_ip is None or unspecified(on_ip) else on_ip, mark, mask)
    if name == "DNAT":
        return _dnat_target(options, family)
    if name == "MASQUERADE":
        random = "random-fully" if "--random-fully" in options else "random" if "--random" in options else ""
        return Masquerade(random)
    if name == "LOG":
        prefix = options["--log-prefix"].value if "--log-prefix" in options else ""
        if len(prefix) > 29:
            raise OptionError("--log-prefix is limited to 29 characters", options["--log-prefix"])
        level = _parsed(options["--log-level"], parse_log_level) if "--log-level" in options else 4
        return Log(prefix, level, frozenset(flag for option, flag in _LOG_FLAGS.items() if option in options))
    raise OptionError(f"unknown target {name!r}")


def _dnat_target(options: Mapping[str, Opt], family: Family) -> Dnat:
    """``--to-destination 10.0.0.1:8080`` or ``[fd00::1]:8080`` (a single address, an optional port)."""
    opt = _require(options, "--to-destination", "-j DNAT")
    text = opt.value
    port: int | None = None
    if text.startswith("["):
        address_text, _, rest = text[1:].partition("]")
        if rest:
            port = _parsed(replace(opt, values=(rest.removeprefix(":"),)), parse_port)
    elif family == 4 and ":" in text:
        address_text, _, port_text = text.partition(":")
        port = _parsed(replace(opt, values=(port_text,)), parse_port)
    else:
        address_text = text
    address = _parsed(replace(opt, values=(address_text,)), lambda t: parse_address(t, family))
    return Dnat(address, port)


def _connmark_target(options: Mapping[str, Opt]) -> ConnmarkTarget:
    modes = [name for name in ("--save-mark", "--restore-mark") if name in options]
    if any(name in options for name in _MARK_OPS):
        modes.append("set")
    if len(modes) != 1:
        raise OptionError("-j CONNMARK needs exactly one of --set-xmark/--set-mark/..., --save-mark, --restore-mark")
    if modes[0] == "set":
        masks = [options[n] for n in ("--nfmask", "--ctmask", "--mask") if n in options]
        if masks:
            raise OptionError(f"{masks[0].name} only goes with --save-mark or --restore-mark", masks[0])
        value, mask = _xmark(options, "CONNMARK")
        return ConnmarkTarget("set", value, mask)
    if "--mask" in options and ("--nfmask" in options or "--ctmask" in options):
        raise OptionError("--mask cannot be combined with --nfmask/--ctmask", options["--mask"])
    both = _parsed(options["--mask"], parse_c_uint) if "--mask" in options else MARK_FULL
    nfmask = _parsed(options["--nfmask"], parse_c_uint) if "--nfmask" in options else both
    ctmask = _parsed(options["--ctmask"], parse_c_uint) if "--ctmask" in options else both
    return ConnmarkTarget("save" if modes[0] == "--save-mark" else "restore", nfmask=nfmask, ctmask=ctmask)
