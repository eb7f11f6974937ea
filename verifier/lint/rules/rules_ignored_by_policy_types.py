"""NP213: NetworkPolicy rules of a direction its ``policyTypes`` leaves out."""

from __future__ import annotations

from collections.abc import Iterator

from compiler.inputs.networkpolicy import NetworkPolicy
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule


class RulesIgnoredByPolicyTypes(LintRule):
    """A NetworkPolicy has `egress` (or `ingress`) rules but its `policyTypes` omits that direction.

    ## What it does
    Reports NetworkPolicies whose explicit `policyTypes` does not list a direction for which the
    spec has rules.

    ## Why is this bad?
    Kubernetes ignores the rules of a direction not in `policyTypes`: the egress allows you wrote
    are never applied, and the direction is not enforced by this policy at all.

    ## Example
    ```yaml
    spec:
      podSelector: {matchLabels: {app: api}}
      policyTypes: [Ingress]
      egress:
        - to: [{podSelector: {matchLabels: {app: db}}}]
    ```

    ## Use instead
    ```yaml
    spec:
      podSelector: {matchLabels: {app: api}}
      policyTypes: [Ingress, Egress]
      egress:
        - to: [{podSelector: {matchLabels: {app: db}}}]
    ```
    """

    code = "NP213"
    name = "rules-ignored-by-policy-types"

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        for policy in ctx.inputs.policies:
            if not isinstance(policy, NetworkPolicy) or not policy.spec.policyTypes:
                continue
            for direction, rules in (("Ingress", policy.spec.ingress), ("Egress", policy.spec.egress)):
                if rules and direction not in policy.spec.policyTypes:
                    field = direction.lower()
                    yield self.finding(
                        policy.spec.line_of(field),
                        f"spec.{field} has {len(rules)} rule(s) but policyTypes {policy.spec.policyTypes} "
                        f"omits {direction}: Kubernetes ignores them",
                        fix=f"add {direction} to policyTypes, or delete spec.{field}",
                        policy=policy.display,
                    )
