"""Output formats of ``netpolc lint``: one small renderer per format behind ``--format``."""

from __future__ import annotations

from collections.abc import Callable

from verifier.lint.engine import LintResult
from verifier.lint.render.github import render_github
from verifier.lint.render.json_report import render_json
from verifier.lint.render.sarif import render_sarif
from verifier.lint.render.text import render_text

RENDERERS: dict[str, Callable[[LintResult], str]] = {
    "text": render_text,
    "json": render_json,
    "sarif": render_sarif,
    "github": render_github,
}
