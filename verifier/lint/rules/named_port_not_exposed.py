"""NP205: a named port that no pod it could apply to declares."""

from __future__ import annotations

from collections.abc import Iterator

from compiler.flow import Direction, Profile
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule, where
from verifier.lint.walk import lowered_rules


class NamedPortNotExposed(LintRule):
    """A rule names a port (`port: http`) that no pod it applies to declares in `containerPorts`.

    ## What it does
    For ingress, checks the endpoints the policy selects; for egress, the peer endpoints (`k8s`
    profile) or every endpoint of the cluster (`cilium` profile, where named ports resolve
    cluster-wide). Reports named ports that resolve on none of them.

    ## Why is this bad?
    A named port that resolves nowhere matches no traffic: the allow is a no-op and the traffic is
    dropped by default deny.

    ## Example
    ```yaml
    ports:
      - port: htttp
    ```

    ## Use instead
    ```yaml
    ports:
      - port: http   # as in the pod's containerPorts[].name
    ```
    """

    code = "NP205"
    name = "named-port-not-exposed"

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        cluster = ctx.inputs.cluster
        seen: set[tuple[tuple[str, str], str]] = set()
        for lr in lowered_rules(ctx):
            rule = lr.template.rule
            for match in rule.ports:
                if match.name is None or match.protocol is None:
                    continue
                if lr.direction is Direction.INGRESS:
                    candidates = ctx.endpoints_of(ctx.select_endpoints(lr.subject.subject))
                elif ctx.profile is Profile.K8S:
                    candidates = ctx.endpoints_of(rule.peer.identities & ctx.endpoint_identities)
                    if rule.peer.any or rule.peer.cidrs:
                        candidates = list(cluster.endpoints)
                else:
                    candidates = list(cluster.endpoints)
                proto = match.protocol.name
                if any(ep.named_port(match.name, proto) is not None for ep in candidates):
                    continue
                if (rule.origin.key, match.name) in seen:
                    continue
                seen.add((rule.origin.key, match.name))
                whose = "selected pod" if lr.direction is Direction.INGRESS else "peer pod"
                yield self.finding(
                    where(rule.origin),
                    f"{rule.origin.path}: named port {match.name!r}/{proto} is declared by no {whose}",
                    fix="use a containerPorts[].name the pods declare, or the port number",
                    policy=lr.display,
                )
