"""Render a semantic diff: text for terminals, markdown for pull-request comments, JSON for machines."""

from __future__ import annotations

import json
from typing import Any

from compiler.flow import RuleRef
from verifier.diff.compute import DiffResult, Region

MAX_SOURCES_SHOWN = 6


def _names(names: tuple[str, ...]) -> str:
    shown = list(names[:MAX_SOURCES_SHOWN])
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" (+{more} more)" if more > 0 else "")


def _rules(rules: tuple[RuleRef, ...]) -> str:
    return "; ".join(str(r) for r in rules) if rules else "default (no rule)"


def _change(region: Region) -> str:
    if region.l7_changed:
        return f"{region.old} → {region.new} with different L7 rules"
    return f"{region.old} → {region.new}"


def _profiles(result: DiffResult) -> str:
    if result.profile_old == result.profile_new:
        return f"profile {result.profile_new.value}"
    return f"profile {result.profile_old.value} → {result.profile_new.value}"


def _coverage(result: DiffResult) -> str:
    """How much was compared: every flow cell, decided by evaluation or by the restriction."""
    text = f"{result.cells} flow cells compared"
    if result.scope:
        text += f" ({result.evaluated} evaluated: {result.scope})"
    return text


def render_text(result: DiffResult) -> str:
    if result.equivalent:
        return f"equivalent: no flow changes ({_profiles(result)}; {_coverage(result)}, exhaustive)\n"
    lines = [f"{len(result.regions)} changed region(s) ({_profiles(result)}; {_coverage(result)}):"]
    for r in result.regions:
        lines.append(f"- {_names(r.sources)} -> {_names(r.destinations)} {r.port_text}: {_change(r)}")
        lines.append(f"    old: {_rules(r.old_rules)}")
        lines.append(f"    new: {_rules(r.new_rules)}")
    return "\n".join(lines) + "\n"


def render_markdown(result: DiffResult) -> str:
    head = "### netpolc: semantic policy diff\n\n"
    if result.equivalent:
        return head + f"**Equivalent**: no flow changes ({_profiles(result)}, {_coverage(result)}).\n"
    allowed = sum(1 for r in result.regions if r.new.verdict != "dropped" and r.old.verdict == "dropped")
    denied = sum(1 for r in result.regions if r.new.verdict == "dropped" and r.old.verdict != "dropped")
    lines = [
        head + f"**{len(result.regions)} changed region(s)** ({_profiles(result)}): "
        f"{allowed} newly allowed, {denied} newly denied, {len(result.regions) - allowed - denied} other.\n",
        "| from | to | ports | old → new | old rules | new rules |",
        "|---|---|---|---|---|---|",
    ]
    for r in result.regions:
        cells = [
            _names(r.sources),
            _names(r.destinations),
            r.port_text,
            _change(r),
            _rules(r.old_rules),
            _rules(r.new_rules),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _rule_json(rule: RuleRef) -> dict[str, Any]:
    return {"policy": rule.policy, "path": rule.path, "file": rule.file, "line": rule.line}


def render_json(result: DiffResult) -> str:
    doc = {
        "equivalent": result.equivalent,
        "profile_old": result.profile_old.value,
        "profile_new": result.profile_new.value,
        "cells": result.cells,
        "evaluated": result.evaluated,
        "scope": result.scope,
        "regions": [
            {
                "sources": list(r.sources),
                "destinations": list(r.destinations),
                "ports": [{"protocol": proto, "ranges": [[lo, hi] for lo, hi in spans]} for proto, spans in r.ports],
                "old": {
                    "verdict": r.old.verdict,
                    "detail": r.old.detail,
                    "rules": [_rule_json(x) for x in r.old_rules],
                },
                "new": {
                    "verdict": r.new.verdict,
                    "detail": r.new.detail,
                    "rules": [_rule_json(x) for x in r.new_rules],
                },
                "l7_changed": r.l7_changed,
            }
            for r in result.regions
        ],
    }
    return json.dumps(doc, indent=2) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}
