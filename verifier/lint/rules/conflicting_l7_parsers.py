"""NP208: two L7 parsers on the same port of the same endpoint."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import ClassVar

from verifier.lint.context import LintContext
from verifier.lint.finding import Finding, Severity
from verifier.lint.rule import LintRule


class ConflictingL7Parsers(LintRule):
    """Rules selecting one endpoint ask for different L7 parsers (e.g. HTTP and Kafka) on one port.

    ## What it does
    Builds the policy of every endpoint and reports the first pair of rules that redirect the same
    port of the same endpoint to different parsers, naming both rules.

    ## Why is this bad?
    Cilium cannot merge the two ("cannot merge conflicting L7 parsers") and fails to regenerate the
    endpoint's policy: the endpoint keeps its old policy, or none.

    ## Example
    ```yaml
    # policy a
    toPorts: [{ports: [{port: "9092"}], rules: {kafka: [{role: produce}]}}]
    # policy b, same endpoints
    toPorts: [{ports: [{port: "9092"}], rules: {http: [{method: GET}]}}]
    ```

    ## Use instead
    Use one parser per port: move the HTTP endpoint to its own port, or drop one of the rules.
    """

    code = "NP208"
    name = "conflicting-l7-parsers"
    severity: ClassVar[Severity] = Severity.ERROR
    claims: ClassVar[re.Pattern[str] | None] = re.compile(r"cannot merge conflicting L7 parsers")

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        ctx.ir  # noqa: B018 -- building the IR raises the conflict, which the engine reports as this rule
        return iter(())
