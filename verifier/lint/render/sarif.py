"""SARIF 2.1.0 (OASIS), the format GitHub code scanning uploads; every rule is described in the run."""

from __future__ import annotations

import json
from typing import Any

from compiler import __version__
from verifier.lint.engine import LintResult, all_rules
from verifier.lint.finding import DOCS_URL, Severity

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _rules() -> list[dict[str, Any]]:
    out = []
    for code, rule in sorted(all_rules().items()):
        sections = rule.sections()
        out.append(
            {
                "id": code,
                "name": rule.name,
                "shortDescription": {"text": rule.summary()},
                "fullDescription": {"text": sections.get("What it does", rule.summary())},
                "help": {"text": sections.get("Why is this bad?", "")},
                "helpUri": DOCS_URL.format(code=code),
                "defaultConfiguration": {"level": _LEVEL[rule.severity]},
            }
        )
    return out


def render_sarif(result: LintResult) -> str:
    rules = _rules()
    index = {r["id"]: i for i, r in enumerate(rules)}
    results = []
    for f in result.findings:
        region: dict[str, int] = {"startLine": max(f.line, 1), "startColumn": max(f.column, 1)}
        if f.end_line is not None:
            region["endLine"] = f.end_line
        if f.end_column is not None:
            region["endColumn"] = f.end_column
        entry: dict[str, Any] = {
            "ruleId": f.code,
            "ruleIndex": index[f.code],
            "level": _LEVEL[f.severity],
            "message": {"text": f.message + (f" Fix: {f.fix}" if f.fix else "")},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": f.file}, "region": region}}],
        }
        if f.policy:
            entry["properties"] = {"policy": f.policy}
        results.append(entry)
    doc = {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "netpolc",
                        "version": __version__,
                        "informationUri": "https://github.com/netpolc/netpolc",
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }
    return json.dumps(doc, indent=2) + "\n"
