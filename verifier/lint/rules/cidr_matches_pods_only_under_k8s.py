"""NP214: a CIDR peer that contains pod addresses, which only iptables CNIs let it match."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from verifier.lint.context import LintContext
from verifier.lint.finding import Finding, Severity
from verifier.lint.rule import LintRule, where
from verifier.lint.walk import lowered_rules


class CidrMatchesPodsOnlyUnderK8s(LintRule):
    """A CIDR peer (other than 0.0.0.0/0 or ::/0) contains the pod network: its meaning depends on the CNI.

    ## What it does
    Reports `ipBlock`/`toCIDR`/`fromCIDR`/`CIDRSet` peers whose prefix contains a whole pod CIDR
    (`--pod-cidr`) without excepting it, such as `10.0.0.0/8` around `10.244.0.0/16`.

    ## Why is this bad?
    On iptables CNIs the block matches the pods in it (the `k8s` profile); Cilium never matches
    pod addresses with CIDR rules (the `cilium` profile). The same policy allows different traffic
    on the two datapaths, which bites during a CNI migration (`netpolc diff --profile-old k8s
    --profile-new cilium` shows the flows).

    ## Example
    ```yaml
    egress:
      - to:
          - ipBlock: {cidr: 10.0.0.0/8}   # corporate network, and the pods
    ```

    ## Use instead
    ```yaml
    egress:
      - to:
          - ipBlock: {cidr: 10.0.0.0/8, except: [10.244.0.0/16]}
          - podSelector: {}   # if pods were meant, say so
    ```
    """

    code = "NP214"
    name = "cidr-matches-pods-only-under-k8s"
    severity: ClassVar[Severity] = Severity.INFO

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        pod_networks = ctx.inputs.cluster.pod_networks
        seen: set[tuple[tuple[str, str], str]] = set()
        for lr in lowered_rules(ctx):
            rule = lr.template.rule
            for cidr in rule.peer.cidrs:
                net = cidr.network
                if net.prefixlen == 0:
                    continue  # "the internet": NP301/NP302 territory
                for pods in pod_networks:
                    if pods.version != net.version or pods == net or not pods.subnet_of(net):  # type: ignore[arg-type]
                        continue
                    if any(pods.subnet_of(e) for e in cidr.excepts):  # type: ignore[arg-type]
                        continue
                    if (rule.origin.key, str(net)) in seen:
                        continue
                    seen.add((rule.origin.key, str(net)))
                    yield self.finding(
                        where(rule.origin),
                        f"{rule.origin.path}: CIDR {net} contains the pod network {pods}: it matches pods on "
                        "iptables CNIs but never under Cilium",
                        fix=f"except {pods} from the block, and select pods by label if they are meant",
                        policy=lr.display,
                    )
