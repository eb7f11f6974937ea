"""What one rule does to one direction of one endpoint: the two questions the rule analyses ask.

Given :class:`verifier.encoding.source.DirectionRules` for an (endpoint, direction, peer), only
the protocol and port are symbolic:

- :func:`rule_changes`: is there a packet the rule matches whose verdict or proxy port would
  differ if the rule were not written? For an allow rule, a packet that is redirected to a proxy
  counts as a change too, because the rule may widen what the proxy admits (its L7 rules, or
  "every request" when it has none) — so "never changes" is never claimed where L7 is in play.
- :func:`overlap`: is there a packet two rules both match?

Both answer ``unknown`` on a solver timeout, never a false "never".
"""

from __future__ import annotations

from dataclasses import dataclass

import z3

from verifier.encoding.solve import check_bv, packet_of
from verifier.encoding.source import DirectionRules, RuleTerm
from verifier.encoding.terms import Cond, SymPacket, and_, or_
from verifier.proofs.slices import Slice

#: per query; these formulas hold one endpoint's rules, so they are small
TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class PortWitness:
    """The symbolic fields of a packet found by the solver."""

    protocol: int
    port: int


@dataclass(frozen=True)
class EffectAnswer:
    """``changes`` (with a packet), ``never`` (proved) or ``unknown`` (with the solver's reason)."""

    status: str
    witness: PortWitness | None = None
    reason: str = ""


_NO_PROXY = z3.BitVecVal(0, 16)


def _differ(first: Cond, second: Cond) -> Cond:
    if isinstance(first, bool) and isinstance(second, bool):
        return first != second
    return z3.Xor(z3.BoolVal(first) if isinstance(first, bool) else first,
                  z3.BoolVal(second) if isinstance(second, bool) else second)


def _solve(query: Cond, packet: SymPacket, timeout_ms: int) -> EffectAnswer:
    if query is False:
        return EffectAnswer("never")
    status, value, reason = check_bv(query, timeout_ms=timeout_ms)
    if status == "unsat":
        return EffectAnswer("never")
    if value is None:
        return EffectAnswer("unknown", reason=reason)
    return EffectAnswer("changes", PortWitness(value(packet.protocol), value(packet.dport)))


def rule_changes(rules: DirectionRules, term: RuleTerm, packet: SymPacket, domain: Cond,
                 timeout_ms: int = TIMEOUT_MS) -> EffectAnswer:
    """A packet ``term`` matches on which dropping the rule would change something (see module)."""
    if term.matches is False:
        return EffectAnswer("never")
    with_rule = rules.outcome
    without = rules.combine(without=term.rule)
    differs: list[Cond] = [_differ(with_rule.allowed, without.allowed)]
    if not with_rule.proxy.eq(without.proxy):
        differs.append(with_rule.proxy != without.proxy)
    if not term.rule.deny and not with_rule.proxy.eq(_NO_PROXY):
        differs.append(and_(with_rule.allowed, with_rule.proxy != 0))  # the rule may widen the proxy's rules
    return _solve(and_(domain, term.matches, or_(*differs)), packet, timeout_ms)


def overlap(first: Cond, second: Cond, packet: SymPacket, domain: Cond, timeout_ms: int = TIMEOUT_MS) -> EffectAnswer:
    """A packet both conditions hold on (``changes`` carries it), or ``never``."""
    return _solve(and_(domain, first, second), packet, timeout_ms)


def port_packet(family: int) -> tuple[SymPacket, Cond]:
    """A packet whose protocol and port are free (addresses play no part: rule terms are built
    on concrete address views), with the domain every proof uses for them."""
    return packet_of(Slice("rule", family, 0, 0, False, False))
