"""NP301: ingress allowed from the internet to a workload that is not an ingress workload."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

from compiler.flow import Direction
from compiler.ir.model import Action, Peer
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule, where
from verifier.lint.walk import lowered_rules

_ANY4 = ipaddress.ip_network("0.0.0.0/0")
_ANY6 = ipaddress.ip_network("::/0")


def admits_world(peer: Peer) -> bool:
    """The peer includes every internet address: `world`/`all` entities or a /0 CIDR."""
    if peer.any or peer.world_families:
        return True
    if any(s in ("entity:world", "entity:all") for s in peer.selectors):
        return True
    return any(c.network in (_ANY4, _ANY6) and not c.excepts for c in peer.cidrs)


def is_ingress_workload(labels: dict[str, str]) -> bool:
    """Workloads meant to face the internet: ingress controllers and gateways, by their labels."""
    text = " ".join(f"{k}={v}" for k, v in labels.items()).lower()
    return any(w in text for w in ("ingress", "gateway", "edge", "loadbalancer"))


class IngressFromWorld(LintRule):
    """Ingress from the whole internet (`world`, `all`, `0.0.0.0/0`) to a workload that is not an ingress.

    ## What it does
    Reports allow rules whose peer includes every internet address on endpoints whose labels do not
    mark them as ingress controllers or gateways.

    ## Why is this bad?
    Only the edge of the cluster should accept connections from anywhere; an internal service
    reachable from `0.0.0.0/0` is one Service type change away from being public.

    ## Example
    ```yaml
    ingress:
      - fromEntities: [world]
    ```

    ## Use instead
    ```yaml
    ingress:
      - fromEndpoints: [{matchLabels: {app.kubernetes.io/name: ingress-nginx}}]
    ```
    """

    code = "NP301"
    name = "ingress-from-world"

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        seen: set[tuple[str, str]] = set()
        for lr in lowered_rules(ctx):
            rule = lr.template.rule
            if lr.direction is not Direction.INGRESS or lr.action is not Action.ALLOW or not admits_world(rule.peer):
                continue
            if rule.peer.any and not rule.ports and rule.l7 is None:
                continue  # allow-all: NP304's finding
            exposed = [
                ep
                for ep in ctx.endpoints_of(ctx.select_endpoints(lr.subject.subject))
                if not is_ingress_workload(dict(ep.labels))
            ]
            if not exposed or rule.origin.key in seen:
                continue
            seen.add(rule.origin.key)
            names = ", ".join(ep.key for ep in exposed[:3]) + (", ..." if len(exposed) > 3 else "")
            yield self.finding(
                where(rule.origin),
                f"{rule.origin.path}: allows ingress from any internet address to {names}",
                fix="allow only the ingress controller / gateway, or the client CIDRs that need access",
                policy=lr.display,
            )
