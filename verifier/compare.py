"""Compare two decisions for the same flow on the fields every evaluator must agree on.

Used by the property tests (IR evaluator vs reference evaluator) and by ``netpolc query``, which
always cross-checks its answer against the reference semantics.
"""

from __future__ import annotations

from compiler.flow import Decision, DirectionDecision


def _side_fields(side: DirectionDecision | None) -> dict[str, object] | None:
    if side is None:
        return None
    return {
        "endpoint": side.endpoint,
        "enforced": side.enforced,
        "allowed": side.allowed,
        "reason": side.reason,
        "allow_rules": sorted(r.key for r in side.allow_rules),
        "deny_rules": sorted(r.key for r in side.deny_rules),
        "redirect": side.redirect,
        "l7_allowed": side.l7_allowed,
    }


def comparable(decision: Decision) -> dict[str, object]:
    """The agreed-upon fields of a decision as plain data."""
    return {
        "verdict": decision.verdict,
        "drop_reason": decision.drop_reason,
        "l7_denied": decision.l7_denied,
        "egress": _side_fields(decision.egress),
        "ingress": _side_fields(decision.ingress),
    }


def decisions_differ(a: Decision, b: Decision) -> list[str]:
    """Human-readable differences between two decisions (empty when they agree)."""
    left, right = comparable(a), comparable(b)
    out: list[str] = []
    for key in left:
        lv, rv = left[key], right[key]
        if isinstance(lv, dict) and isinstance(rv, dict):
            out.extend(f"{key}.{k}: {lv[k]!r} != {rv[k]!r}" for k in lv if lv[k] != rv[k])
        elif lv != rv:
            out.append(f"{key}: {lv!r} != {rv!r}")
    return out
