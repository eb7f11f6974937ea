"""NP502: a deny rule that cancels an allow written in another policy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

from compiler.flow import RuleRef
from compiler.source import SourceRef
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding, Severity
from verifier.lint.rule import LintRule

if TYPE_CHECKING:
    from verifier.proofs.deny_overrides import Override

#: allow rules named per finding
SHOWN = 3


class DenyOverridesAllow(LintRule):
    """A deny rule takes away flows that another policy explicitly allows.

    ## What it does
    For each deny rule and each allow rule of a *different* policy on a common endpoint and
    direction, asks Z3 for a packet both match (`verifier/proofs/deny_overrides.py`), replays it
    through the reference evaluator, and reports the deny with the allows it cancels and one
    concrete flow.

    ## Why is this bad?
    In Cilium a deny wins over every allow, whoever wrote it. The owner of the allowing policy
    sees a rule that looks effective but is not, and the traffic is dropped with "Policy denied
    by denylist". Often intended (tenant isolation, a metadata-endpoint block) — then say so in
    the policy, or suppress the finding with the `netpolc.io/ignore` annotation.

    ## Example
    ```yaml
    # team policy
    ingress:
      - fromEntities: [cluster]
        toPorts: [{ports: [{port: "9090", protocol: TCP}]}]
    # platform policy on the same pods
    ingressDeny:
      - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: other}}]
    ```

    ## Use instead
    Narrow the allow so it no longer includes what the deny removes (here: list the namespaces
    that may scrape), or annotate the deny as an intended override.
    """

    code = "NP502"
    name = "deny-overrides-allow"
    severity: ClassVar[Severity] = Severity.WARNING
    needs_verifier = True
    opt_in = True

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        from verifier.proofs.deny_overrides import deny_overrides
        from verifier.proofs.run import flow_text

        result = deny_overrides(ctx.inputs, ctx.profile, ctx.options.label_filter)
        by_deny: dict[RuleRef, list[RuleRef]] = {}
        first: dict[RuleRef, Override] = {}
        for item in result.overrides:
            by_deny.setdefault(item.deny, []).append(item.allow)
            first.setdefault(item.deny, item)
        for deny, allows in sorted(by_deny.items()):
            example = first[deny]
            listed = "; ".join(str(a) for a in allows[:SHOWN])
            more = f" and {len(allows) - SHOWN} more" if len(allows) > SHOWN else ""
            yield self.finding(
                SourceRef(deny.file, deny.line),
                f"{deny.path}: denies flows that {listed}{more} allow(s), e.g. {flow_text(example.flow)} "
                f"({example.direction.value} of {example.endpoint}); a deny always wins",
                fix="narrow the allow, or annotate the deny as an intended override",
                policy=deny.policy,
            )
