"""NP101: more security identities than Cilium can allocate."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import ClassVar

from compiler.source import SourceRef
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding, Severity
from verifier.lint.rule import LintRule


class IdentityLimitExceeded(LintRule):
    """The predicted number of security identities exceeds the cluster limit.

    ## What it does
    Counts the identities Cilium would allocate for the pods (one per distinct set of
    identity-relevant labels, after the label filter) and the policies' CIDRs, and compares the
    count with the limit (65,535 by default; `identity-limit` in the configuration). Names the
    label keys with the most distinct values, which drive the count.

    ## Why is this bad?
    When identities run out, new pods cannot get one: they stay unmanaged or are dropped, and
    policy regeneration slows as every identity multiplies selector-cache work.

    ## Example
    A Spark job that labels every executor pod with `spark-exec-id: <n>`.

    ## Use instead
    Exclude the per-pod label from identities with the label filter (cilium-config `labels`,
    e.g. `!k8s:spark-exec-id`); on managed Cilium where cilium-config cannot change, drop the
    label from the pod template.
    """

    code = "NP101"
    name = "identity-limit-exceeded"
    severity: ClassVar[Severity] = Severity.ERROR

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        identities = [i for i in ctx.identities.identities() if i.number >= 256]  # reserved ones are fixed
        limit = ctx.options.identity_limit
        if len(identities) <= limit:
            return
        values: dict[str, set[str]] = {}
        for ident in identities:
            for label in ident.labels:
                if label.source == "k8s" and not label.key.startswith(("io.kubernetes.", "io.cilium.k8s.")):
                    values.setdefault(label.key, set()).add(label.value)
        drivers = Counter({k: len(v) for k, v in values.items()}).most_common(3)
        named = ", ".join(f"{k} ({n} values)" for k, n in drivers)
        # reported at the largest workload: the usual source of per-pod label values
        groups: dict[str, list[SourceRef]] = {}
        for ep in ctx.inputs.cluster.endpoints:
            groups.setdefault(ep.owner or ep.key, []).append(ep.source)
        biggest = max(groups.values(), key=len, default=[SourceRef("-", 1)])
        first = biggest[0]
        yield self.finding(
            first,
            f"{len(identities)} identities predicted, over the limit of {limit}; driven by {named or 'CIDRs'}",
            fix="exclude per-pod labels from identities with the label filter"
            + (" (not possible on AKS-managed: remove the labels instead)" if ctx.options.platform else ""),
        )
