"""NP209: ``toFQDNs`` on endpoints whose policy has no DNS rule to learn names from."""

from __future__ import annotations

from collections.abc import Iterator

from compiler.flow import Direction
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule
from verifier.lint.walk import cilium_items, lowered_rules


class FqdnWithoutDnsRule(LintRule):
    """A `toFQDNs` rule applies to endpoints whose egress policy has no DNS L7 rule.

    ## What it does
    For every Cilium egress rule with `toFQDNs`, checks that some egress rule selecting the same
    endpoints redirects DNS (`toPorts` with `rules.dns`) so that the DNS proxy sees the lookups.

    ## Why is this bad?
    Cilium learns the addresses behind a name only from DNS answers its proxy observed. Without a
    DNS rule no name is ever learned and the `toFQDNs` rule matches nothing.

    ## Example
    ```yaml
    egress:
      - toFQDNs: [{matchName: api.example.com}]
    ```

    ## Use instead
    ```yaml
    egress:
      - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system, k8s-app: kube-dns}}]
        toPorts: [{ports: [{port: "53", protocol: ANY}], rules: {dns: [{matchPattern: "*"}]}}]
      - toFQDNs: [{matchName: api.example.com}]
    ```
    """

    code = "NP209"
    name = "fqdn-without-dns-rule"

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        # endpoints (identities) whose egress has a DNS redirect
        learning: set[int] = set()
        for lr in lowered_rules(ctx):
            l7 = lr.template.rule.l7
            if lr.direction is Direction.EGRESS and l7 is not None and l7.parser == "dns":
                learning |= ctx.select_endpoints(lr.subject.subject)
        for item in cilium_items(ctx):
            fqdns = getattr(item.item, "toFQDNs", None)
            if not fqdns or item.deny:
                continue
            from compiler.ir.lower_cilium import subject_selector

            subject = subject_selector(item.rule, item.policy)
            if subject is None:
                continue
            missing = ctx.select_endpoints(subject) - learning
            if not missing:
                continue
            names = ", ".join(ctx.identities.by_number(n).endpoints[0] for n in sorted(missing)[:3])
            yield self.finding(
                item.item.line_of("toFQDNs"),
                f"{item.path}: toFQDNs on endpoints without a DNS rule (e.g. {names}); no name is ever learned",
                fix="add an egress rule to the DNS servers with toPorts rules.dns (e.g. matchPattern: '*')",
                policy=item.policy.display,
            )
