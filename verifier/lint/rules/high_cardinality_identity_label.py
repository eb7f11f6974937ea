"""NP102: a label with a distinct value on every pod of a workload, giving each pod its own identity."""

from __future__ import annotations

from collections.abc import Iterator

from compiler.labels import identity_labels
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule

MIN_PODS = 3  # below this, per-pod values are not a pattern worth reporting


class HighCardinalityIdentityLabel(LintRule):
    """An identity-relevant label has a different value on every pod of one workload.

    ## What it does
    Groups pods by owner (or by namespace for bare pods) and reports label keys that survive the
    label filter and take a distinct value on each of at least three pods of the group.

    ## Why is this bad?
    Cilium allocates one identity per distinct label set, so every pod gets its own identity:
    identity churn on each restart, selector-cache and policy-map growth, and eventually the
    65,535 identity limit (NP101). Typical culprits: executor ids, job-run ids, hashes.

    ## Example
    ```yaml
    metadata:
      labels: {app: spark, spark-exec-id: "17"}
    ```

    ## Use instead
    Keep the id out of identities: cilium-config `labels: "!k8s:spark-exec-id"` (on managed
    Cilium, where cilium-config is fixed, move the value to an annotation).
    """

    code = "NP102"
    name = "high-cardinality-identity-label"

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        cluster = ctx.inputs.cluster
        groups: dict[str, list[str]] = {}
        for ep in cluster.endpoints:
            groups.setdefault(ep.owner or f"namespace {ep.namespace}", []).append(ep.key)
        for group, keys in sorted(groups.items()):
            if len(keys) < MIN_PODS:
                continue
            endpoints = [e for e in (cluster.endpoint(k) for k in keys) if e is not None]
            values: dict[str, list[str]] = {}
            for ep in endpoints:
                for label in identity_labels(ep, cluster, ctx.profile, ctx.options.label_filter):
                    if label.source == "k8s" and not label.key.startswith("io."):
                        values.setdefault(label.key, []).append(label.value)
            for key, seen in sorted(values.items()):
                if len(seen) < MIN_PODS or len(set(seen)) < len(seen):
                    continue
                carriers = [ep for ep in endpoints if key in ep.labels]
                managed = ctx.options.platform == "aks-managed"
                yield self.finding(
                    carriers[0].source,
                    f"{group}: label {key!r} has a distinct value on each of its {len(carriers)} pods, "
                    "so every pod gets its own security identity",
                    fix=(
                        f"move {key!r} to an annotation (cilium-config cannot change on AKS-managed)"
                        if managed
                        else f"exclude it from identities: cilium-config labels '!k8s:{key}'"
                    ),
                )
