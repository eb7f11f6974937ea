"""NP204: a peer selector (from/toEndpoints, pod/namespace selector, service) that matches nothing."""

from __future__ import annotations

from collections.abc import Iterator

from verifier.lint.context import LintContext
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule, where
from verifier.lint.walk import lowered_rules

#: Peers that match nothing by design or by what netpolc can know offline (SEMANTICS §4.2).
_NOT_SELECTORS = ("entity:", "toFQDNs", "fromNodes", "toNodes", "fromGroups", "toGroups")


class PeerSelectsNothing(LintRule):
    """A rule's peer selector matches no endpoint, so the rule allows (or denies) nothing.

    ## What it does
    Resolves every endpoint peer (NetworkPolicy `podSelector`/`namespaceSelector`, Cilium
    `fromEndpoints`/`toEndpoints`, `toServices`) and reports rules whose peer selects no endpoint
    and has no CIDR or entity part either.

    ## Why is this bad?
    A typo in a label silently turns an allow into a no-op: the traffic you meant to allow is
    dropped by default deny.

    ## Example
    ```yaml
    ingress:
      - from:
          - podSelector: {matchLabels: {app: frontnd}}
    ```

    ## Use instead
    ```yaml
    ingress:
      - from:
          - podSelector: {matchLabels: {app: frontend}}
    ```
    """

    code = "NP204"
    name = "peer-selects-nothing"

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        seen: set[tuple[str, str]] = set()
        for lr in lowered_rules(ctx):
            template = lr.template
            peer = template.rule.peer
            if not peer.is_empty or not peer.selectors:
                continue
            selectors = [s for s in peer.selectors if not s.startswith(_NOT_SELECTORS)]
            if not selectors or (template.selectors and any(ctx.select(s) for s in template.selectors)):
                continue
            origin = template.rule.origin
            if origin.key in seen:
                continue
            seen.add(origin.key)
            yield self.finding(
                where(origin),
                f"{origin.path}: peer selects no endpoint ({'; '.join(selectors)})",
                fix="check the peer's labels and namespace against the pods",
                policy=lr.display,
            )
