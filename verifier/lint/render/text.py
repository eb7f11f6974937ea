"""``file:line:col: CODE message`` with the offending source line and a caret, then a summary."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from verifier.lint.engine import LintResult
from verifier.lint.finding import Finding


@cache
def _lines(file: str) -> tuple[str, ...]:
    try:
        return tuple(Path(file).read_text(errors="replace").splitlines())
    except OSError:
        return ()


def excerpt(finding: Finding) -> list[str]:
    """The source line with a caret under the column (nothing for stdin or unreadable files)."""
    lines = _lines(finding.file) if finding.file not in ("-", "<stdin>") else ()
    if not 1 <= finding.line <= len(lines):
        return []
    text = lines[finding.line - 1]
    gutter = f"{finding.line} | "
    return [f"  {gutter}{text}", f"  {' ' * len(gutter)}{' ' * (finding.column - 1)}^"]


def render_text(result: LintResult) -> str:
    out: list[str] = []
    for f in result.findings:
        out.append(f"{f.file}:{f.line}:{f.column}: {f.code} [{f.severity.value}] {f.message}")
        out.extend(excerpt(f))
        if f.fix:
            out.append(f"  help: {f.fix}")
    counts = {s: sum(1 for f in result.findings if f.severity.value == s) for s in ("error", "warning", "info")}
    if result.findings:
        summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n)
        out.append(f"Found {len(result.findings)} finding(s) ({summary}) in {len(result.files)} file(s).")
    else:
        out.append(f"All checks passed ({len(result.rules_run)} rules, {len(result.files)} file(s)).")
    return "\n".join(out) + "\n"
