"""NP206: a CIDR peer inside the pod network, which never matches under Cilium."""

from __future__ import annotations

from collections.abc import Iterator

from compiler.flow import Profile
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule, where
from verifier.lint.walk import lowered_rules


class CidrCoversPodNetwork(LintRule):
    """A CIDR rule's range lies inside the pod CIDR, so under Cilium it matches no traffic.

    ## What it does
    Under the `cilium` profile, reports `ipBlock`/`toCIDR`/`fromCIDR`/`CIDRSet` peers whose prefix
    is inside a pod CIDR (`--pod-cidr`).

    ## Why is this bad?
    Cilium resolves cluster addresses to the pods' security identities before CIDR rules are
    consulted, so a CIDR rule never matches a pod (docs/SEMANTICS.md §5). The rule does nothing;
    on an iptables CNI (the `k8s` profile) it would have allowed the pods in that range, so
    behaviour changes when the cluster moves to Cilium.

    ## Example
    ```yaml
    egress:
      - to:
          - ipBlock: {cidr: 10.244.3.0/24}   # pods
    ```

    ## Use instead
    ```yaml
    egress:
      - to:
          - podSelector: {matchLabels: {app: cache}}
    ```
    """

    code = "NP206"
    name = "cidr-covers-pod-network"

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        if ctx.profile is not Profile.CILIUM:
            return
        pod_networks = ctx.inputs.cluster.pod_networks
        seen: set[tuple[tuple[str, str], str]] = set()
        for lr in lowered_rules(ctx):
            rule = lr.template.rule
            for cidr in rule.peer.cidrs:
                net = cidr.network
                inside = next(
                    (p for p in pod_networks if p.version == net.version and net.subnet_of(p)),  # type: ignore[arg-type]
                    None,
                )
                if inside is None or (rule.origin.key, str(net)) in seen:
                    continue
                seen.add((rule.origin.key, str(net)))
                yield self.finding(
                    where(rule.origin),
                    f"{rule.origin.path}: CIDR {net} is inside the pod network {inside}; under Cilium a CIDR "
                    "rule never matches pod addresses, so this peer matches nothing",
                    fix="select the pods by label (podSelector / toEndpoints) instead of by address",
                    policy=lr.display,
                )
