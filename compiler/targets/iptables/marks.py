"""The packet-mark bits the iptables target sets and tests, all inside one mask.

Every mark our rules write or match lies in :data:`MASK` = ``0x07000000`` (bits 24-26), chosen to
stay clear of the marks other node software uses (shared/reference/iptables.md):

- kube-proxy: 0x4000 masquerade, 0x8000 drop (§4.1);
- Cilium: magic 0x0F00 (0x0200 to-proxy, 0x0A00/0x0B00 from proxy), Kubernetes bits 0xF000 (§6.2);
- Azure NPM: 0x0200/0x0400/0x0800 (v2), 0x1000/0x2000/0x3000 (v1) (§3);
- kube-router: 0x10000 and 0x20000 (§2.2); Istio: TPROXY mark 1337 = 0x539 (§6.3).

Calico's default mask 0xffff0000 and Cilium's identity-in-mark bits (upper 16) cover these bits too;
those are alternative policy engines, never installed beside this one (§8 item 2).

We write ``--set-xmark V/M`` ourselves, the form ``iptables-save`` prints back (§1.2), so what is
emitted and what is read back are the same tokens.
"""

from __future__ import annotations

#: Some allow rule of the direction being evaluated matched (cleared between directions).
ALLOW = 0x01000000
#: Some deny rule of the direction being evaluated matched: deny wins (SEMANTICS §2).
DENY = 0x02000000
#: Set by TPROXY on redirected packets and on packets of established proxied connections; the
#: policy route ``ip rule fwmark PROXY/PROXY lookup PROXY_TABLE`` delivers them locally.
PROXY = 0x04000000
#: Every bit we ever touch.
MASK = ALLOW | DENY | PROXY
#: The socket mark (``SO_MARK``, value under :data:`MASK`) a proxy's own upstream connections
#: carry, so that mangle OUTPUT does not send them back to a proxy (Cilium's proxy marks its
#: upstream sockets 0x0A00/0x0B00 for the same reason, reference/iptables.md §6.2). ALLOW and
#: DENY are both set only in the middle of a filter-table evaluation, never on a packet entering
#: mangle OUTPUT from a socket of ours, so the value is free.
FROM_PROXY = ALLOW | DENY
#: Routing table holding ``local 0.0.0.0/0 dev lo`` (and ``local ::/0``) for TPROXY'd packets,
#: after Cilium's table 2004 for its own proxy mark (reference/iptables.md §6.2).
PROXY_TABLE = 2024
#: Priority of that ``ip rule`` (Cilium uses 9 for its proxy rule; ours sits just after it).
PROXY_RULE_PRIORITY = 19


def is_value(value: int, mask: int = MASK) -> list[str]:
    """``-m mark --mark V/M``: the bits under ``mask`` are exactly ``value``."""
    return ["-m", "mark", "--mark", f"{hexmark(value)}/{hexmark(mask)}"]


def hexmark(value: int) -> str:
    """``0x1000000``: the spelling iptables-save uses for mark values and masks."""
    return f"{value:#x}"


def bits_mask(bits: int) -> str:
    """``B/B``: the value/mask pair that sets, or tests for, exactly ``bits``."""
    return f"{hexmark(bits)}/{hexmark(bits)}"


def set_bits(bits: int) -> list[str]:
    """``-j MARK --set-xmark B/B``: set ``bits``, leave every other bit alone."""
    return ["-j", "MARK", "--set-xmark", bits_mask(bits)]


def clear_bits(bits: int) -> list[str]:
    """``-j MARK --set-xmark 0x0/B``: clear ``bits``."""
    return ["-j", "MARK", "--set-xmark", f"0x0/{hexmark(bits)}"]


def has_bits(bits: int) -> list[str]:
    """``-m mark --mark B/B``: every one of ``bits`` is set."""
    return ["-m", "mark", "--mark", bits_mask(bits)]


def lacks_bits(bits: int) -> list[str]:
    """``-m mark --mark 0x0/B``: none of ``bits`` is set."""
    return ["-m", "mark", "--mark", f"0x0/{hexmark(bits)}"]
