"""Where an input object came from, and the one error type that carries it.

Every parsed object keeps a :class:`SourceRef` so that verdicts, lint findings and errors can
name ``file:line``. :class:`InputError` is the only exception the CLI turns into an exit code 2
message; anything else escaping is a bug.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class SourceRef:
    """A position in an input file (1-based line and column)."""

    file: str
    line: int
    column: int = 1

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class NetpolcError(Exception):
    """Base class of errors reported to the user (never shown as a traceback)."""

    exit_code = 2


class InputError(NetpolcError):
    """Bad input: names the file, line and field it is about."""

    def __init__(
        self, message: str, *, source: SourceRef | None = None, field: str | None = None, subject: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.field = field
        self.subject = subject  # the object the error is about, e.g. "NetworkPolicy shop/allow-api"

    def __str__(self) -> str:
        where = f"{self.source.file}:{self.source.line}: " if self.source else ""
        who = f"{self.subject}: " if self.subject else ""
        what = f"{self.field}: " if self.field else ""
        return f"{where}{who}{what}{self.message}"


class InputErrors(NetpolcError):
    """Several input errors found in one run (all are reported, not just the first)."""

    def __init__(self, errors: list[InputError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors
