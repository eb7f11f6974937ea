"""GitHub Actions workflow commands: ``::error file=…,line=…,col=…,title=…::message``."""

from __future__ import annotations

from verifier.lint.engine import LintResult
from verifier.lint.finding import Severity

_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(result: LintResult) -> str:
    lines = []
    for f in result.findings:
        props = [f"file={_escape_property(f.file)}", f"line={f.line}", f"col={f.column}"]
        if f.end_line is not None:
            props.append(f"endLine={f.end_line}")
        if f.end_column is not None:
            props.append(f"endColumn={f.end_column}")
        props.append(f"title={_escape_property(f'{f.code} {f.name}')}")
        message = f.message + (f" (fix: {f.fix})" if f.fix else "")
        lines.append(f"::{_LEVEL[f.severity]} {','.join(props)}::{_escape_data(message)}")
    return "".join(line + "\n" for line in lines)
