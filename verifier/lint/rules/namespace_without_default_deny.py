"""NP303: a namespace with pods that no policy puts under ingress default deny."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from compiler.flow import Direction
from compiler.source import SourceRef
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding, Severity
from verifier.lint.rule import LintRule

#: Namespaces run by the platform, where policy is the platform's business.
_SYSTEM = frozenset({"kube-system", "kube-public", "kube-node-lease"})


class NamespaceWithoutDefaultDeny(LintRule):
    """A namespace has pods whose ingress no policy enforces (no default deny).

    ## What it does
    For each namespace with pods (system namespaces excepted), reports pods whose ingress direction
    is not enforced by any policy, i.e. every peer may connect to them.

    ## Why is this bad?
    Kubernetes allows everything to a pod no policy selects. New workloads in the namespace are
    open until someone remembers to write their policy; a namespace-wide default deny makes
    "forgot the policy" fail closed.

    ## Example
    A namespace `shop` with only `allow-api` selecting `app: api`: the `db` pods accept ingress
    from anywhere.

    ## Use instead
    ```yaml
    kind: NetworkPolicy
    metadata: {name: default-deny, namespace: shop}
    spec:
      podSelector: {}
      policyTypes: [Ingress]
    ```
    """

    code = "NP303"
    name = "namespace-without-default-deny"
    severity: ClassVar[Severity] = Severity.INFO

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        ir = ctx.ir
        cluster = ctx.inputs.cluster
        open_by_ns: dict[str, list[str]] = {}
        for ep in cluster.endpoints:
            if ep.namespace in _SYSTEM or ep.host_network:
                continue
            if not ir.policy(ep.key, Direction.INGRESS).enforced:
                open_by_ns.setdefault(ep.namespace, []).append(ep.key)
        namespaces = cluster.namespaces
        for name, open_eps in sorted(open_by_ns.items()):
            ns = namespaces.get(name)
            first = cluster.endpoint(open_eps[0])
            source = ns.source if ns is not None and not ns.implicit else (first.source if first else SourceRef("-", 1))
            shown = ", ".join(open_eps[:3]) + (", ..." if len(open_eps) > 3 else "")
            yield self.finding(
                source,
                f"namespace {name}: {len(open_eps)} pod(s) accept ingress from anywhere ({shown})",
                fix=f"add a default-deny NetworkPolicy (podSelector: {{}}, policyTypes: [Ingress]) to {name}",
            )
