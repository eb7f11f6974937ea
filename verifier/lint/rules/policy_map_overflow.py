"""NP103: an endpoint's policy map needs more entries than ``--policy-map-max``."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

from compiler.cluster import Endpoint
from compiler.flow import RuleRef
from compiler.source import SourceRef
from compiler.targets.base import TargetOptions
from compiler.targets.ebpf.target import EbpfTarget
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding, Severity
from verifier.lint.rule import LintRule


@dataclass
class _Culprit:
    """A rule that contributes the most entries to at least one overflowing map."""

    ref: RuleRef
    endpoints: list[str] = field(default_factory=list)
    worst: tuple[int, int] = (0, 0)  # (map entries, entries from this rule) of its fullest map


class PolicyMapOverflow(LintRule):
    """An endpoint's eBPF policy map would need more entries than the map holds.

    ## What it does
    Predicts each endpoint's policy map the way `netpolc compile --target ebpf` builds it (one
    entry per peer identity × protocol/port block, after Cilium's merging; reference/cilium.md
    §1.1, §4.4) and compares its size with `--policy-map-max` (`policy-map-max` in the
    configuration; Cilium's `bpf-policy-map-max`, 16,384 by default). Reported at the rule that
    contributes the most entries, with how many it adds and how many endpoints overflow.

    A cheap upper bound (distinct candidate entries) is computed for every endpoint; the exact
    map only where the bound exceeds the capacity, so the rule stays fast on large clusters.

    ## Why is this bad?
    Cilium cannot insert the surplus entries (E2BIG): endpoint regeneration fails and the endpoint
    keeps its old policy, or none. The usual causes are wide L3 selectors (every identity in the
    cluster, or a CIDR list with many prefixes) multiplied by many ports, and port ranges that
    split into many masked-port blocks.

    ## Example
    ```yaml
    ingress:
      - fromEndpoints: [{}]           # every identity in the cluster ...
        toPorts:
          - ports: [{port: "1025", endPort: 65000, protocol: TCP}]   # ... × 25 port blocks
    ```

    ## Use instead
    Narrow the peers to the workloads that connect, align port ranges to power-of-two
    boundaries, or raise `bpf-policy-map-max` (not on AKS-managed Cilium, where cilium-config is fixed):
    ```yaml
    ingress:
      - fromEndpoints: [{matchLabels: {app: frontend}}]
        toPorts:
          - ports: [{port: "32768", endPort: 65535, protocol: TCP}]
    ```
    """

    code = "NP103"
    name = "policy-map-overflow"
    severity: ClassVar[Severity] = Severity.ERROR

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        limit = ctx.options.policy_map_max
        target = EbpfTarget(ctx.ir, TargetOptions(policy_map_max=limit, allow_overflow=True))
        shapes: dict[object, list[Endpoint]] = {}
        for ep in ctx.inputs.cluster.endpoints:
            shapes.setdefault(target.map_shape(ep), []).append(ep)
        culprits: dict[RuleRef, _Culprit] = {}
        for members in shapes.values():
            first = members[0]
            if target.entry_bound(first) <= limit:
                continue
            entries, state = target.endpoint_map(first)
            if len(entries) <= limit:
                continue
            written = {ref: n for ref, n in state.origins_of(entries).items() if ref.file}  # not synthetic rules
            if not written:
                continue  # only built-in rules (e.g. allow-localhost) fill it: nothing in the input to point at
            ref, count = min(written.items(), key=lambda item: (-item[1], item[0]))
            culprit = culprits.setdefault(ref, _Culprit(ref))
            culprit.endpoints.extend(ep.key for ep in members)
            culprit.worst = max(culprit.worst, (len(entries), count))
        for culprit in sorted(culprits.values(), key=lambda c: c.ref):
            size, count = culprit.worst
            names = sorted(culprit.endpoints)
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            yield self.finding(
                SourceRef(culprit.ref.file, culprit.ref.line),
                f"{culprit.ref.path}: policy maps of {len(names)} endpoint(s) ({shown}) need up to {size} entries, "
                f"over --policy-map-max {limit} (Cilium fails with E2BIG); this rule adds {count} of them",
                fix="narrow the peers or align port ranges to power-of-two boundaries"
                + (" (bpf-policy-map-max is cilium-config, which AKS-managed Cilium does not let you change)"
                   if ctx.options.platform == "aks-managed" else ", or raise bpf-policy-map-max"),
                policy=culprit.ref.policy,
            )
