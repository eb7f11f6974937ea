"""NP211: a CiliumNetworkPolicy endpointSelector that names a namespace."""

from __future__ import annotations

from collections.abc import Iterator

from compiler.inputs.ciliumpolicy import CiliumPolicy
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule

_NAMESPACE_KEYS = ("io.kubernetes.pod.namespace", "k8s:io.kubernetes.pod.namespace", "any:io.kubernetes.pod.namespace")


class EndpointSelectorNamespaceOverride(LintRule):
    """A namespaced CiliumNetworkPolicy's `endpointSelector` selects on the pod namespace label.

    ## What it does
    Flags `endpointSelector`s of CiliumNetworkPolicies (not clusterwide ones) that use
    `io.kubernetes.pod.namespace` in `matchLabels` or `matchExpressions`.

    ## Why is this bad?
    Cilium replaces that requirement with the policy's own namespace (and logs it as illegal): a
    CNP in namespace `a` cannot select pods of namespace `b`. The selector does not mean what it
    says.

    ## Example
    ```yaml
    kind: CiliumNetworkPolicy
    metadata: {name: p, namespace: a}
    spec:
      endpointSelector:
        matchLabels: {k8s:io.kubernetes.pod.namespace: b, app: web}
    ```

    ## Use instead
    Put the policy in namespace `b`, or use a CiliumClusterwideNetworkPolicy.
    """

    code = "NP211"
    name = "endpoint-selector-namespace-override"

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        for policy in ctx.inputs.policies:
            if not isinstance(policy, CiliumPolicy) or policy.clusterwide:
                continue
            for path, rule in policy.rules:
                sel = rule.endpointSelector
                if sel is None:
                    continue
                keys = list((sel.matchLabels or {}).keys()) + [e.key for e in sel.matchExpressions or []]
                if not any(k in _NAMESPACE_KEYS for k in keys):
                    continue
                yield self.finding(
                    rule.line_of("endpointSelector"),
                    f"{path}.endpointSelector selects on the namespace label; Cilium forces the policy's own "
                    f"namespace {policy.namespace!r} instead",
                    fix="move the policy to the namespace you meant, or make it a CiliumClusterwideNetworkPolicy",
                    policy=policy.display,
                )
