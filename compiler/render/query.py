"""Render the decision for one flow: verdict, drop reason, and the rules that decided it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from compiler.flow import Decision, DirectionDecision, Flow, RuleRef


def describe_flow(flow: Flow, names: Mapping[str, str]) -> str:
    src = names.get(str(flow.src), str(flow.src))
    dst = names.get(str(flow.dst), str(flow.dst))
    proto = flow.protocol.name
    l7 = f"  [{flow.l7}]" if flow.l7 is not None else ""
    return f"{src} ({flow.src}) -> {dst} ({flow.dst})  {flow.port}/{proto}{l7}"


def _rules(rules: frozenset[RuleRef]) -> list[str]:
    return [str(r) for r in sorted(rules)]


def _side_text(side: DirectionDecision) -> list[str]:
    head = f"{side.direction.value:7} of {side.endpoint}: "
    if not side.enforced:
        head += "not enforced (no policy selects it for this direction) -> allowed"
    elif side.allowed:
        head += "allowed"
    else:
        assert side.reason is not None
        head += f"DROPPED ({side.reason.name} {int(side.reason)}: {side.reason.text})"
    if side.redirect:
        verdict = {None: "", True: ", request allowed", False: ", request DENIED (HTTP 403)"}[side.l7_allowed]
        head += f"; redirected to the {side.redirect} proxy{verdict}"
    lines = [head]
    if side.deny_rules:
        lines.append("    denied by:")
        lines += [f"      {r}" for r in _rules(side.deny_rules)]
    if side.allow_rules and side.enforced:
        lines.append("    allowed by:" if side.allowed or side.deny_rules else "    matched allow rules:")
        lines += [f"      {r}" for r in _rules(side.allow_rules)]
    if side.enforced and not side.allow_rules and not side.deny_rules:
        lines.append("    no allow rule of the selecting policies matches this flow (default deny)")
    return lines


def render_text(decision: Decision, names: Mapping[str, str], reference_agrees: bool | None) -> str:
    lines = [f"flow:    {describe_flow(decision.flow, names)}"]
    verdict = decision.verdict.value
    if decision.drop_reason is not None:
        verdict += (
            f"  (drop reason {decision.drop_reason.name} {int(decision.drop_reason)}: {decision.drop_reason.text})"
        )
    elif decision.l7_denied:
        verdict += "  (denied by the L7 proxy: HTTP 403)"
    lines.append(f"verdict: {verdict}")
    for side in (decision.egress, decision.ingress):
        if side is not None:
            lines += _side_text(side)
    if decision.egress is None:
        lines.append("egress : source is not a cluster endpoint (no egress policy applies)")
    if decision.ingress is None:
        lines.append("ingress: destination is not a cluster endpoint (no ingress policy applies)")
    if reference_agrees is not None:
        lines.append(
            "reference semantics: agree" if reference_agrees else "reference semantics: DISAGREE (please report this)"
        )
    return "\n".join(lines) + "\n"


def _side_json(side: DirectionDecision | None) -> dict[str, Any] | None:
    if side is None:
        return None
    return {
        "direction": side.direction.value,
        "endpoint": side.endpoint,
        "enforced": side.enforced,
        "allowed": side.allowed,
        "drop_reason": side.reason.name if side.reason else None,
        "drop_reason_code": int(side.reason) if side.reason else None,
        "allow_rules": [_rule_json(r) for r in sorted(side.allow_rules)],
        "deny_rules": [_rule_json(r) for r in sorted(side.deny_rules)],
        "redirect": side.redirect,
        "l7_allowed": side.l7_allowed,
    }


def _rule_json(rule: RuleRef) -> dict[str, Any]:
    return {"policy": rule.policy, "rule": rule.path, "file": rule.file or None, "line": rule.line or None}


def render_json(decision: Decision, names: Mapping[str, str], reference_agrees: bool | None) -> str:
    flow = decision.flow
    doc = {
        "flow": {
            "from": names.get(str(flow.src), str(flow.src)),
            "to": names.get(str(flow.dst), str(flow.dst)),
            "src": str(flow.src),
            "dst": str(flow.dst),
            "protocol": flow.protocol.name,
            "port": flow.port,
            "l7": str(flow.l7) if flow.l7 is not None else None,
        },
        "verdict": decision.verdict.value,
        "drop_reason": decision.drop_reason.name if decision.drop_reason else None,
        "drop_reason_code": int(decision.drop_reason) if decision.drop_reason else None,
        "l7_denied": decision.l7_denied,
        "egress": _side_json(decision.egress),
        "ingress": _side_json(decision.ingress),
        "reference_agrees": reference_agrees,
    }
    return json.dumps(doc, indent=2) + "\n"
