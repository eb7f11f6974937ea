"""The base class of lint rules, and the documentation every rule carries.

A rule is one file under ``verifier/lint/rules/`` holding one :class:`LintRule` subclass; its code
is listed in :mod:`verifier.lint.codes`. Its docstring has the fixed sections ``## What it does``,
``## Why is this bad?``, ``## Example`` and ``## Use instead``, from which ``docs/rules/<code>.md``
is generated (:mod:`verifier.lint.docs`), so the docs cannot drift from the code.

Rules see the inputs through a :class:`~verifier.lint.context.LintContext`. A rule may also
*claim* input errors (:attr:`LintRule.claims`): when the loader rejects an object for a reason the
rule is about (e.g. an ``except`` outside its CIDR), the error becomes that rule's finding instead
of the generic invalid-input one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

from compiler.flow import RuleRef
from compiler.source import SourceRef
from verifier.lint.finding import Finding, Severity

if TYPE_CHECKING:
    from verifier.lint.context import LintContext

SECTIONS = ("What it does", "Why is this bad?", "Example", "Use instead")


class LintRule:
    """One lint rule. Subclasses set ``code``, ``name``, ``severity`` and implement :meth:`check`."""

    code: ClassVar[str]
    name: ClassVar[str]  # kebab-case, names the pattern flagged (e.g. "policy-selects-nothing")
    severity: ClassVar[Severity] = Severity.WARNING
    #: input-error messages this rule reports (instead of the generic invalid-input finding)
    claims: ClassVar[re.Pattern[str] | None] = None
    #: the rule needs the Z3 verifier (only run when it is installed)
    needs_verifier: ClassVar[bool] = False
    #: runs only when selected by its code or a prefix (``--select NP5``), not by ``ALL``: it asks
    #: the solver per rule and costs far more than the others on large clusters
    opt_in: ClassVar[bool] = False

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        """The findings of this rule on the inputs (none by default: a claims-only rule)."""
        return iter(())

    def finding(
        self,
        where: SourceRef,
        message: str,
        *,
        fix: str | None = None,
        policy: str | None = None,
        end: SourceRef | None = None,
    ) -> Finding:
        """A finding of this rule at ``where``."""
        return Finding(
            file=where.file,
            line=where.line,
            column=where.column,
            code=self.code,
            name=self.name,
            message=message,
            severity=self.severity,
            end_line=end.line if end is not None else None,
            end_column=end.column if end is not None else None,
            policy=policy,
            fix=fix,
        )

    @classmethod
    def sections(cls) -> dict[str, str]:
        """The docstring's sections by title (the summary line under ``""``)."""
        doc = (cls.__doc__ or "").strip("\n")
        lines = _dedent(doc).splitlines()
        out: dict[str, list[str]] = {"": []}
        current = ""
        for line in lines:
            if line.startswith("## "):
                current = line[3:].strip()
                out[current] = []
            else:
                out[current].append(line)
        return {k: "\n".join(v).strip("\n") for k, v in out.items()}

    @classmethod
    def summary(cls) -> str:
        return cls.sections()[""].strip().splitlines()[0] if cls.__doc__ else ""


def where(origin: RuleRef) -> SourceRef:
    """The source position of a lowered rule."""
    return SourceRef(origin.file or "-", origin.line or 1)


def _dedent(text: str) -> str:
    import textwrap

    first, _, rest = text.partition("\n")
    return first.strip() + "\n" + textwrap.dedent(rest)
