"""NP304: a rule that allows every peer on every port."""

from __future__ import annotations

from collections.abc import Iterator

from compiler.ir.model import Action
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule, where
from verifier.lint.walk import lowered_rules


class AllowAllRule(LintRule):
    """A rule allows every peer (cluster and internet) on every port and protocol.

    ## What it does
    Reports allow rules with an empty peer list and no ports (`ingress: [{}]`, `egress: [{}]`) or
    `fromEntities`/`toEntities: [all]` without `toPorts`.

    ## Why is this bad?
    The direction is enforced in name only: every flow is allowed, including from the internet,
    and any deny-by-default posture of the namespace is undone for the selected pods.

    ## Example
    ```yaml
    spec:
      podSelector: {}
      ingress:
        - {}
    ```

    ## Use instead
    ```yaml
    spec:
      podSelector: {}
      ingress:
        - from:
            - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}
    ```
    """

    code = "NP304"
    name = "allow-all-rule"

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        seen: set[tuple[str, str]] = set()
        for lr in lowered_rules(ctx):
            rule = lr.template.rule
            if lr.action is not Action.ALLOW or not rule.peer.any or rule.ports or rule.l7 is not None:
                continue
            if lr.template.selectors and lr.subject.direction(lr.direction).allow_requirements:
                continue  # narrowed by fromRequires/toRequires
            if rule.origin.key in seen:
                continue
            seen.add(rule.origin.key)
            yield self.finding(
                where(rule.origin),
                f"{rule.origin.path}: allows every {lr.direction.value} flow of the selected endpoints",
                fix="name the peers and ports this workload needs",
                policy=lr.display,
            )
