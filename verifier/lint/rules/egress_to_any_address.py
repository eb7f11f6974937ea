"""NP302: egress allowed to every internet address."""

from __future__ import annotations

from collections.abc import Iterator

from compiler.flow import Direction
from compiler.ir.model import Action
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule, where
from verifier.lint.rules.ingress_from_world import admits_world
from verifier.lint.walk import lowered_rules


class EgressToAnyAddress(LintRule):
    """Egress to every internet address (`world`, `0.0.0.0/0`, `::/0`).

    ## What it does
    Reports egress allow rules whose peer includes the whole internet (with or without ports).

    ## Why is this bad?
    A compromised pod can exfiltrate data or reach a command-and-control server anywhere. Egress
    should name the destinations (CIDRs, `toFQDNs`) a workload needs.

    ## Example
    ```yaml
    egress:
      - to:
          - ipBlock: {cidr: 0.0.0.0/0}
    ```

    ## Use instead
    ```yaml
    egress:
      - to:
          - ipBlock: {cidr: 203.0.113.0/24}   # the payment provider
        ports: [{port: 443}]
    ```
    """

    code = "NP302"
    name = "egress-to-any-address"

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        seen: set[tuple[str, str]] = set()
        for lr in lowered_rules(ctx):
            rule = lr.template.rule
            if lr.direction is not Direction.EGRESS or lr.action is not Action.ALLOW or not admits_world(rule.peer):
                continue
            if rule.peer.any and not rule.ports and rule.l7 is None:
                continue  # allow-all: NP304's finding
            if rule.origin.key in seen:
                continue
            seen.add(rule.origin.key)
            ports = ", ".join(str(p) for p in rule.ports) or "every port"
            yield self.finding(
                where(rule.origin),
                f"{rule.origin.path}: allows egress to any internet address ({ports})",
                fix="name the destinations: CIDRs of the services needed, or toFQDNs with a DNS rule",
                policy=lr.display,
            )
