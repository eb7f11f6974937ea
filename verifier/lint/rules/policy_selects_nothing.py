"""NP203: a policy whose subject selector matches no endpoint."""

from __future__ import annotations

from collections.abc import Iterator

from verifier.lint.context import LintContext
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule


class PolicySelectsNothing(LintRule):
    """A policy (or one `specs` entry) selects no endpoint of the cluster.

    ## What it does
    Resolves each NetworkPolicy `podSelector` and each Cilium `endpointSelector` (namespaced as
    Cilium does) against the cluster's pods and reports those that select none.

    ## Why is this bad?
    The policy protects nothing. Usually a label is misspelled, or the policy lives in the wrong
    namespace (a CiliumNetworkPolicy only ever selects pods of its own namespace).

    ## Example
    ```yaml
    kind: NetworkPolicy
    metadata: {name: api, namespace: shop}
    spec:
      podSelector: {matchLabels: {app: apii}}
    ```

    ## Use instead
    ```yaml
    spec:
      podSelector: {matchLabels: {app: api}}
    ```
    """

    code = "NP203"
    name = "policy-selects-nothing"

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        for lowered in ctx.lowered:
            policy = lowered.policy
            for subject in lowered.subjects:
                if ctx.select_endpoints(subject.subject):
                    continue
                where = policy.src
                yield self.finding(
                    where,
                    f"{subject.origin} selects no endpoint ({subject.subject})",
                    fix="check the selector's labels and the policy's namespace against the pods",
                    policy=policy.display,
                )
