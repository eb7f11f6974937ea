"""NP305: ingress allowed from every namespace (``namespaceSelector: {}``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from compiler.inputs.networkpolicy import NetworkPolicy
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding, Severity
from verifier.lint.rule import LintRule


class AnyNamespacePeer(LintRule):
    """An ingress peer is `namespaceSelector: {}` without a `podSelector`: every pod of every namespace.

    ## What it does
    Reports NetworkPolicy ingress peers with an empty `namespaceSelector` and no `podSelector`.

    ## Why is this bad?
    Every workload in the cluster, including other tenants' and any namespace created later, may
    connect. It is rarely what "allow from the cluster" was meant to be.

    ## Example
    ```yaml
    ingress:
      - from:
          - namespaceSelector: {}
    ```

    ## Use instead
    ```yaml
    ingress:
      - from:
          - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
    ```
    """

    code = "NP305"
    name = "any-namespace-peer"
    severity: ClassVar[Severity] = Severity.INFO

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        for policy in ctx.inputs.policies:
            if not isinstance(policy, NetworkPolicy):
                continue
            for i, rule in enumerate(policy.spec.ingress or []):
                for j, peer in enumerate(rule.from_ or []):
                    sel = peer.namespaceSelector
                    if sel is None or peer.podSelector is not None or sel.matchLabels or sel.matchExpressions:
                        continue
                    yield self.finding(
                        peer.src,
                        f"spec.ingress[{i}].from[{j}]: namespaceSelector {{}} admits every pod of every namespace",
                        fix="name the namespaces (kubernetes.io/metadata.name) that need access",
                        policy=policy.display,
                    )
