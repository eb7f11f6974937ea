"""Value syntax of the netfilter tools: numbers, marks, ports, addresses and the name tables behind them.

Pure functions shared by the iptables and ipset Transformers (grammar/iptables_save.py, grammar/ipset.py). Each
raises ``ValueError`` with a human message; the Transformer adds the file, line and column. The rules follow the
C tools, not Python: numbers are ``strtoul(s, 0)`` (so ``010`` is octal 8, as ``-m mark --mark 010`` reads back
``0x8``), ports are inclusive ``a:b`` ranges with open ends, names map to the numbers iptables-save prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from verifier.artifacts.models import MARK_FULL, PROTOCOL_NUMBERS, Family, IPAddress, IPNetwork, PortRange

MULTIPORT_MAX_SLOTS = 15
"""libxt_multiport's XT_MULTI_PORTS; a range takes two slots (reference/iptables.md §5.3)."""


def parse_c_uint(text: str, limit: int = MARK_FULL, what: str = "number") -> int:
    """An unsigned integer as ``strtoul(text, &end, 0)`` reads it: ``0x`` hex, leading ``0`` octal, else decimal."""
    digits, base = text, 10
    if text[:2].lower() == "0x":
        digits, base = text[2:], 16
    elif len(text) > 1 and text.startswith("0"):
        digits, base = text[1:], 8
    try:
        if not digits or not digits.isalnum():
            raise ValueError
        value = int(digits, base)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a number") from None
    if value > limit:
        raise ValueError(f"{what} {text!r} is larger than {limit:#x}")
    return value


def parse_mark_mask(text: str) -> tuple[int, int]:
    """``V[/M]`` as libxtables' ``xtables_parse_mark_mask``: the mask defaults to 0xffffffff."""
    value, slash, mask = text.partition("/")
    return parse_c_uint(value, what="mark"), parse_c_uint(mask, what="mask") if slash else MARK_FULL


def parse_port(text: str) -> int:
    """A numeric port 0-65535. Service names (``http``) are refused: they depend on the reader's /etc/services."""
    if not text.isdigit():
        raise ValueError(f"port {text!r} is not a number (service names are not accepted)")
    port = int(text)
    if port > 0xFFFF:
        raise ValueError(f"port {text!r} is larger than 65535")
    return port


def parse_port_range(text: str, separator: str = ":") -> PortRange:
    """``P``, ``P:Q``, ``:Q`` (from 0) or ``P:`` (to 65535), as libxt_tcp reads them; ipset uses ``-``."""
    first, sep, last = text.partition(separator)
    low = parse_port(first) if first else 0
    high = (parse_port(last) if last else 0xFFFF) if sep else low
    if low > high:
        raise ValueError(f"port range {text!r} is empty (start after end)")
    return PortRange(low, high)


def parse_port_list(text: str) -> tuple[PortRange, ...]:
    """A multiport list ``a,b:c,...``; more than 15 slots (a range counts two) is an error, as in libxt_multiport."""
    ranges = tuple(parse_port_range(part) for part in text.split(","))
    slots = sum(1 if r.first == r.last else 2 for r in ranges)
    if slots > MULTIPORT_MAX_SLOTS:
        raise ValueError(f"multiport list {text!r} uses {slots} slots; at most {MULTIPORT_MAX_SLOTS} are allowed")
    return ranges


def _prefix_from_mask(mask_text: str, family: Family) -> int:
    """The prefix length of a dotted (IPv4) or colon (IPv6) mask; non-contiguous masks are refused."""
    mask = ip_address(mask_text)
    bits = 32 if family == 4 else 128
    if mask.version != family:
        raise ValueError(f"mask {mask_text!r} is not an IPv{family} mask")
    value = int(mask)
    inverted = value ^ ((1 << bits) - 1)
    if inverted & (inverted + 1):
        raise ValueError(f"mask {mask_text!r} is not contiguous (not supported)")
    return bits - inverted.bit_length()


def parse_network(text: str, family: Family) -> IPNetwork:
    """``ADDR[/LEN]`` or ``ADDR/MASK`` in the given family, host bits cleared as the kernel stores it.

    Host names and comma lists (which iptables expands into several rules) are refused.
    """
    if "," in text:
        raise ValueError(f"address list {text!r} expands into several rules; write one rule per address")
    address_text, slash, prefix_text = text.partition("/")
    try:
        address = ip_address(address_text)
    except ValueError:
        raise ValueError(f"{address_text!r} is not an IPv{family} address (host names are not accepted)") from None
    if address.version != family:
        raise ValueError(f"{address_text!r} is an IPv{address.version} address in an IPv{family} ruleset")
    bits = 32 if family == 4 else 128
    if not slash:
        prefix = bits
    elif prefix_text.isdigit():
        prefix = int(prefix_text)
        if prefix > bits:
            raise ValueError(f"prefix length /{prefix} is longer than {bits}")
    else:
        prefix = _prefix_from_mask(prefix_text, family)
    if family == 4:
        return IPv4Network((int(address), prefix), strict=False)
    return IPv6Network((int(address), prefix), strict=False)


def parse_address(text: str, family: Family) -> IPAddress:
    """A single address of the given family."""
    try:
        address = ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IPv{family} address") from None
    if address.version != family:
        raise ValueError(f"{text!r} is an IPv{address.version} address in an IPv{family} ruleset")
    return address


def unspecified(address: IPAddress) -> bool:
    """0.0.0.0 or :: (TPROXY's "use the packet's destination")."""
    return address in (IPv4Address(0), IPv6Address(0))


def parse_protocol(text: str) -> int:
    """``-p`` value as a number: a known name or 0-255 (``all`` is 0, i.e. no protocol match)."""
    lowered = text.lower()
    if lowered == "all":
        return 0
    if lowered in PROTOCOL_NUMBERS:
        return PROTOCOL_NUMBERS[lowered]
    if text.isdigit() and int(text) <= 255:
        return int(text)
    raise ValueError(f"unknown protocol {text!r}")


# ---------------------------------------------------------------------------------------------------------------
# ICMP type names (libipt_icmp / libip6t_icmp6 tables); value (type, code) with code None for "every code"

ICMP4_NAMES: Mapping[str, tuple[int, int | None]] = {
    "echo-reply": (0, None), "pong": (0, None),
    "destination-unreachable": (3, None), "network-unreachable": (3, 0), "host-unreachable": (3, 1),
    "protocol-unreachable": (3, 2), "port-unreachable": (3, 3), "fragmentation-needed": (3, 4),
    "source-route-failed": (3, 5), "network-unknown": (3, 6), "host-unknown": (3, 7),
    "network-prohibited": (3, 9), "host-prohibited": (3, 10), "TOS-network-unreachable": (3, 11),
    "TOS-host-unreachable": (3, 12), "communication-prohibited": (3, 13), "host-precedence-violation": (3, 14),
    "precedence-cutoff": (3, 15), "source-quench": (4, None),
    "redirect": (5, None), "network-redirect": (5, 0), "host-redirect": (5, 1), "TOS-network-redirect": (5, 2),
    "TOS-host-redirect": (5, 3), "echo-request": (8, None), "ping": (8, None),
    "router-advertisement": (9, None), "router-solicitation": (10, None),
    "time-exceeded": (11, None), "ttl-exceeded": (11, None), "ttl-zero-during-transit": (11, 0),
    "ttl-zero-during-reassembly": (11, 1), "parameter-problem": (12, None), "ip-header-bad": (12, 0),
    "required-option-missing": (12, 1), "timestamp-request": (13, None), "timestamp-reply": (14, None),
    "address-mask-request": (17, None), "address-mask-reply": (18, None),
}  # fmt: skip

ICMP6_NAMES: Mapping[str, tuple[int, int | None]] = {
    "destination-unreachable": (1, None), "no-route": (1, 0), "communication-prohibited": (1, 1),
    "beyond-scope": (1, 2), "address-unreachable": (1, 3), "port-unreachable": (1, 4), "failed-policy": (1, 5),
    "reject-route": (1, 6), "packet-too-big": (2, None), "time-exceeded": (3, None), "ttl-exceeded": (3, None),
    "ttl-zero-during-transit": (3, 0), "ttl-zero-during-reassembly": (3, 1), "parameter-problem": (4, None),
    "bad-header": (4, 0), "unknown-header-type": (4, 1), "unknown-option": (4, 2),
    "echo-request": (128, None), "ping": (128, None), "echo-reply": (129, None), "pong": (129, None),
    "router-solicitation": (133, None), "router-advertisement": (134, None),
    "neighbour-solicitation": (135, None), "neighbor-solicitation": (135, None),
    "neighbour-advertisement": (136, None), "neighbor-advertisement": (136, None), "redirect": (137, None),
}  # fmt: skip


def parse_icmp_type(text: str, version: Family) -> tuple[int | None, int | None]:
    """``--icmp-type``/``--icmpv6-type`` value: ``any``, a name, ``T`` or ``T/C``; (None, None) is ``any``."""
    if text == "any":
        return None, None
    names = ICMP4_NAMES if version == 4 else ICMP6_NAMES
    if text in names:
        return names[text]
    type_text, slash, code_text = text.partition("/")
    if not type_text.isdigit() or (slash and not code_text.isdigit()):
        raise ValueError(f"unknown ICMP{'v6' if version == 6 else ''} type {text!r}")
    icmp_type, code = int(type_text), int(code_text) if slash else None
    if icmp_type > 255 or (code is not None and code > 255):
        raise ValueError(f"ICMP type/code {text!r} out of range 0-255")
    return icmp_type, code


# ---------------------------------------------------------------------------------------------------------------
# REJECT types: alias -> the name iptables-save prints (libipt_REJECT / libip6t_REJECT)

REJECT4: Mapping[str, str] = {
    "icmp-net-unreachable": "icmp-net-unreachable", "net-unreach": "icmp-net-unreachable",
    "icmp-host-unreachable": "icmp-host-unreachable", "host-unreach": "icmp-host-unreachable",
    "icmp-proto-unreachable": "icmp-proto-unreachable", "proto-unreach": "icmp-proto-unreachable",
    "icmp-port-unreachable": "icmp-port-unreachable", "port-unreach": "icmp-port-unreachable",
    "icmp-net-prohibited": "icmp-net-prohibited", "net-prohib": "icmp-net-prohibited",
    "icmp-host-prohibited": "icmp-host-prohibited", "host-prohib": "icmp-host-prohibited",
    "icmp-admin-prohibited": "icmp-admin-prohibited", "admin-prohib": "icmp-admin-prohibited",
    "tcp-reset": "tcp-reset", "tcp-rst": "tcp-reset",
}  # fmt: skip
REJECT6: Mapping[str, str] = {
    "icmp6-no-route": "icmp6-no-route", "no-route": "icmp6-no-route",
    "icmp6-adm-prohibited": "icmp6-adm-prohibited", "adm-prohibited": "icmp6-adm-prohibited",
    "icmp6-addr-unreachable": "icmp6-addr-unreachable", "addr-unreach": "icmp6-addr-unreachable",
    "icmp6-port-unreachable": "icmp6-port-unreachable", "port-unreach": "icmp6-port-unreachable",
    "icmp6-policy-fail": "icmp6-policy-fail", "policy-fail": "icmp6-policy-fail",
    "icmp6-reject-route": "icmp6-reject-route", "reject-route": "icmp6-reject-route",
    "tcp-reset": "tcp-reset", "tcp-rst": "tcp-reset",
}  # fmt: skip
REJECT_DEFAULT: Mapping[int, str] = {4: "icmp-port-unreachable", 6: "icmp6-port-unreachable"}


def parse_reject_with(text: str, family: Family) -> str:
    table = REJECT4 if family == 4 else REJECT6
    if text not in table:
        raise ValueError(f"unknown --reject-with type {text!r} for IPv{family}")
    return table[text]


LOG_LEVELS: Mapping[str, int] = {
    "emerg": 0, "alert": 1, "crit": 2, "error": 3, "err": 3, "warning": 4, "warn": 4, "notice": 5, "info": 6,
    "debug": 7, "panic": 0,
}  # fmt: skip


def parse_log_level(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text.lower() in LOG_LEVELS:
        return LOG_LEVELS[text.lower()]
    raise ValueError(f"unknown log level {text!r}")
