"""One JSON array of findings (code, name, message, severity, file, line, column, end, policy, fix, url)."""

from __future__ import annotations

import json

from verifier.lint.engine import LintResult


def render_json(result: LintResult) -> str:
    rows = [
        {
            "code": f.code,
            "name": f.name,
            "message": f.message,
            "severity": f.severity.value,
            "file": f.file,
            "line": f.line,
            "column": f.column,
            "end": {"line": f.end_line, "column": f.end_column} if f.end_line is not None else None,
            "policy": f.policy,
            "fix": f.fix,
            "url": f.url,
        }
        for f in result.findings
    ]
    return json.dumps(rows, indent=2) + "\n"
