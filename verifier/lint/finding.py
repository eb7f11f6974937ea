"""A lint finding: what rule fired, where, how bad, and what to do about it.

Message and fix hint are kept apart (ruff's habit): the message says what is wrong with this
object, the hint what to change; renderers place them as their format expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

DOCS_URL = "https://github.com/netpolc/netpolc/blob/main/docs/rules/{code}.md"


class Severity(str, Enum):
    """How bad a finding is; ``error`` makes ``netpolc lint`` exit 1."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, order=True)
class Finding:
    """One rule firing on one place of one input file."""

    file: str
    line: int
    column: int
    code: str
    name: str
    message: str
    severity: Severity
    end_line: int | None = None
    end_column: int | None = None
    policy: str | None = None  # "CiliumNetworkPolicy ns/name" the finding is about, if any
    fix: str | None = None

    @property
    def url(self) -> str:
        return DOCS_URL.format(code=self.code)
