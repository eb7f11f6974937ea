"""What a flow's decision means to a reviewer, and when two of them differ.

A flow is dropped (with Hubble's reason), forwarded, or redirected to an L7 parser
(:class:`Outcome`). When both versions redirect, the requests the proxy then admits may still
differ: :func:`l7_admitted` reduces the allow rules behind a redirect to the L7 rules they carry,
by content — not by where they were written, so moving a policy within a file is not a change,
and editing an HTTP path in place is one. Two rule sets that differ in text but admit the same
requests (``/a.*`` and ``/a(.*)``) are still reported, as "with different L7 rules": the
comparison is syntactic on the L7 rules, never blind to a change.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from compiler.flow import Decision, Direction, DirectionDecision, Flow, RuleRef, Verdict
from verifier.simulate.source import ReferenceEvaluator, RuleMatch

#: The L7 requests a redirect admits: None for every request, else the L7 rules (as canonical JSON)
#: of which one must admit it.
L7Admitted = frozenset[str] | None


@dataclass(frozen=True, order=True)
class Outcome:
    """What happens to a flow, in the terms a reviewer cares about."""

    verdict: str  # "allowed", "dropped", "redirected"
    detail: str = ""  # drop reason name, or the L7 parser(s)

    def __str__(self) -> str:
        return f"{self.verdict} ({self.detail})" if self.detail else self.verdict


@dataclass(frozen=True)
class Side:
    """One version's answer for a flow: the outcome, the rules that decided it (deny rules if
    denied, else allow rules), and per redirected direction the L7 requests admitted."""

    outcome: Outcome
    rules: tuple[RuleRef, ...]
    l7: tuple[tuple[str, str, L7Admitted], ...] = ()  # (direction, parser, admitted) per redirect

    def l7_changed(self, other: Side) -> bool:
        """Same redirect in both, different L7 rules behind it."""
        return self.outcome == other.outcome and self.outcome.verdict == "redirected" and self.l7 != other.l7

    def differs(self, other: Side) -> bool:
        return self.outcome != other.outcome or self.l7_changed(other)


def decided_side(
    decision: Decision, egress: tuple[RuleMatch, ...] = (), ingress: tuple[RuleMatch, ...] = ()
) -> Side:
    """The :class:`Side` of a decision, given the allow rules that matched in each direction."""
    sides = [s for s in (decision.egress, decision.ingress) if s is not None]
    if decision.verdict is Verdict.DROPPED:
        reason = decision.drop_reason.name if decision.drop_reason is not None else ""
        blocking = next((s for s in sides if not s.allowed), None)
        rules = _deciding(blocking) if blocking is not None else ()
        return Side(Outcome("dropped", reason), rules)
    redirects = [s for s in sides if s.redirect]
    # the rules of enforced directions decide; an unenforced side only contributes its synthetic allow
    rules = tuple(sorted({r for s in sides if s.enforced for r in _deciding(s)}))
    rules = rules or tuple(sorted({r for s in sides for r in _deciding(s)}))
    if redirects:
        parsers = "+".join(f"{s.direction.value} {s.redirect}" for s in redirects)
        matches = {Direction.EGRESS: egress, Direction.INGRESS: ingress}
        l7 = tuple((s.direction.value, s.redirect or "", l7_admitted(matches[s.direction])) for s in redirects)
        return Side(Outcome("redirected", parsers), rules, l7)
    return Side(Outcome("allowed"), rules)


def side_of(reference: ReferenceEvaluator, flow: Flow) -> Side:
    """Evaluate one flow with the reference semantics and reduce it to a :class:`Side` (what the
    brute-force checks of the diff compare)."""
    src, dst = reference.view(flow.src), reference.view(flow.dst)
    egress = ingress = None
    eg_matches: tuple[RuleMatch, ...] = ()
    in_matches: tuple[RuleMatch, ...] = ()
    if src.endpoint is not None:
        egress, eg_matches = reference.direction_matches(Direction.EGRESS, src.endpoint, dst, flow)
    if dst.endpoint is not None:
        ingress, in_matches = reference.direction_matches(Direction.INGRESS, dst.endpoint, src, flow)
    return decided_side(Decision.combine(flow, egress, ingress), eg_matches, in_matches)


def l7_admitted(matches: tuple[RuleMatch, ...]) -> L7Admitted:
    """The L7 rules behind a redirect, by content: the proxy admits a request when any matching
    allow admits it (``RuleMatch.admits``), and an allow without L7 rules admits every request."""
    if any(m.l7 is None for m in matches):
        return None
    return frozenset(_canonical(item) for m in matches for item in m.l7 or ())


def _canonical(item: Any) -> str:
    """One L7 rule as JSON with sorted keys and without unset fields or source positions."""
    if hasattr(item, "model_dump"):
        item = item.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps(item, sort_keys=True, default=str)


def _deciding(side: DirectionDecision) -> tuple[RuleRef, ...]:
    if side.deny_rules:
        return tuple(sorted(side.deny_rules))
    return tuple(sorted(side.allow_rules))
