"""NP501: a rule that never changes a verdict (proved with Z3)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from compiler.source import SourceRef
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding, Severity
from verifier.lint.rule import LintRule

_ANYWAY = {
    "default-allow": "enableDefaultDeny: false allows these flows anyway",
    "allow-localhost": "the node may always reach its endpoints",
}


class RedundantRule(LintRule):
    """An allow or deny rule that never changes any verdict: other rules already decide every flow it matches.

    ## What it does
    For every endpoint the rule applies to and every peer it matches, asks Z3 for a packet whose
    verdict or proxy port would differ if the rule were deleted
    (`verifier/proofs/rule_redundancy.py`). When there is none, the rule is reported with some
    of the rules that match the same packets. A rule allowing a connection that is sent to an L7
    proxy is never reported (it may widen what the proxy admits); an undecided query never
    reports.

    ## Why is this bad?
    A shadowed rule misleads reviewers: it looks like it grants (or blocks) something, yet
    deleting it changes nothing — often because a wider rule elsewhere already allows more than
    intended, or a deny was written for flows nothing allows. It also adds policy-map entries.

    ## Example
    ```yaml
    # policy A
    ingress:
      - fromEndpoints: [{}]
        toPorts: [{ports: [{port: "8000", endPort: 8999, protocol: TCP}]}]
    # policy B, same endpoints: inside A's rule
    ingress:
      - fromEndpoints: [{matchLabels: {app: client}}]
        toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
    ```

    ## Use instead
    Delete the redundant rule, or narrow the wider rule so each rule states one intent. Two
    identical rules are each reported (either can go, not both).
    """

    code = "NP501"
    name = "redundant-rule"
    severity: ClassVar[Severity] = Severity.WARNING
    needs_verifier = True
    opt_in = True

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        from verifier.proofs.rule_redundancy import redundant_rules

        result = redundant_rules(ctx.inputs, ctx.profile, ctx.options.label_filter)
        for item in result.redundant:
            ref = item.rule.ref
            what = "denies" if item.rule.deny else "allows"
            parts = []
            if item.covered_by:
                parts.append("also matched by " + "; ".join(str(c) for c in item.covered_by))
            parts.extend(_ANYWAY[reason] for reason in item.anyway)
            if item.rule.deny and not item.covered_by:
                parts.append("no rule allows what it denies")
            yield self.finding(
                SourceRef(ref.file, ref.line),
                f"{ref.path}: never changes a verdict (proved): every flow it {what} gets the same verdict "
                f"without it; {', '.join(parts) or 'other rules decide them'}",
                fix="delete the rule, or narrow the rule that covers it",
                policy=ref.policy,
            )
