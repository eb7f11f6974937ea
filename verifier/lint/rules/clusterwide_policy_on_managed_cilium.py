"""NP401: a CiliumClusterwideNetworkPolicy on a managed Cilium (AKS) that does not support it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from compiler.inputs.ciliumpolicy import CiliumPolicy
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding, Severity
from verifier.lint.rule import LintRule


class ClusterwidePolicyOnManagedCilium(LintRule):
    """A CiliumClusterwideNetworkPolicy is used with `--platform aks-managed`.

    ## What it does
    With `--platform aks-managed` (Azure CNI powered by Cilium), reports every
    CiliumClusterwideNetworkPolicy.

    ## Why is this bad?
    The managed offering does not support CiliumClusterwideNetworkPolicy: the cluster-wide
    baseline you reviewed is not enforced there.

    ## Example
    ```yaml
    apiVersion: cilium.io/v2
    kind: CiliumClusterwideNetworkPolicy
    metadata: {name: baseline}
    ```

    ## Use instead
    A CiliumNetworkPolicy (or NetworkPolicy) per namespace, generated from one template.
    """

    code = "NP401"
    name = "clusterwide-policy-on-managed-cilium"
    severity: ClassVar[Severity] = Severity.ERROR

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        if ctx.options.platform != "aks-managed":
            return
        for policy in ctx.inputs.policies:
            if isinstance(policy, CiliumPolicy) and policy.clusterwide:
                yield self.finding(
                    policy.src,
                    f"{policy.display}: CiliumClusterwideNetworkPolicy is not supported on AKS-managed Cilium",
                    fix="express the baseline as one CiliumNetworkPolicy per namespace",
                    policy=policy.display,
                )
