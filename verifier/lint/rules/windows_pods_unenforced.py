"""NP402: policies selecting Windows pods on AKS-managed Cilium, which has no Windows dataplane."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from verifier.lint.context import LintContext
from verifier.lint.finding import Finding, Severity
from verifier.lint.rule import LintRule


class WindowsPodsUnenforced(LintRule):
    """With `--platform aks-managed`, a policy selects pods pinned to Windows nodes.

    ## What it does
    Reports policies whose subject includes pods with the node selector `kubernetes.io/os: windows`.

    ## Why is this bad?
    Azure CNI powered by Cilium runs on Linux node pools only; Windows node pools have no Cilium,
    so the policy is not enforced for those pods although it appears to select them.

    ## Example
    ```yaml
    kind: Deployment
    spec:
      template:
        spec:
          nodeSelector: {kubernetes.io/os: windows}
    ```

    ## Use instead
    Run the workload on Linux nodes, or protect it with controls that apply to Windows pools
    (network security groups, a separate cluster).
    """

    code = "NP402"
    name = "windows-pods-unenforced"
    severity: ClassVar[Severity] = Severity.ERROR

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        if ctx.options.platform != "aks-managed":
            return
        for lowered in ctx.lowered:
            windows: list[str] = []
            for subject in lowered.subjects:
                for ep in ctx.endpoints_of(ctx.select_endpoints(subject.subject)):
                    if ep.node_os == "windows" and ep.key not in windows:
                        windows.append(ep.key)
            if not windows:
                continue
            shown = ", ".join(windows[:3]) + (", ..." if len(windows) > 3 else "")
            yield self.finding(
                lowered.policy.src,
                f"{lowered.policy.display} selects Windows pods ({shown}); AKS-managed Cilium does not run on "
                "Windows node pools, so it is not enforced for them",
                fix="run these workloads on Linux node pools, or protect them by other means",
                policy=lowered.policy.display,
            )
