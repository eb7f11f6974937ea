"""NP212: a Cilium rule with ``nodeSelector`` (host firewall), which endpoint verdicts never see."""

from __future__ import annotations

from collections.abc import Iterator

from compiler.inputs.ciliumpolicy import CiliumPolicy
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule


class HostFirewallRuleIgnored(LintRule):
    """A Cilium rule selects nodes (`nodeSelector`): a host-firewall rule netpolc does not model.

    ## What it does
    Reports every `spec`/`specs[i]` of a CiliumClusterwideNetworkPolicy that uses `nodeSelector`.

    ## Why is this bad?
    Host policies only take effect when Cilium's host firewall is enabled, and they govern the
    node's own traffic, not the pods'. netpolc's verdicts, targets and proofs cover endpoints only,
    so these rules are not part of any verdict it reports; review them separately.

    ## Example
    ```yaml
    kind: CiliumClusterwideNetworkPolicy
    spec:
      nodeSelector: {matchLabels: {node-role.kubernetes.io/worker: ""}}
      ingress: [{fromEntities: [cluster]}]
    ```

    ## Use instead
    Keep host-firewall policies in their own files and verify them with the host firewall enabled;
    use `endpointSelector` for pod policy.
    """

    code = "NP212"
    name = "host-firewall-rule-ignored"

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        for policy in ctx.inputs.policies:
            if not isinstance(policy, CiliumPolicy):
                continue
            for path, rule in policy.rules:
                if rule.nodeSelector is None:
                    continue
                yield self.finding(
                    rule.line_of("nodeSelector"),
                    f"{path}: nodeSelector makes this a host-firewall rule; it is not part of endpoint verdicts",
                    fix="review host policy separately (it needs Cilium's host firewall enabled)",
                    policy=policy.display,
                )
