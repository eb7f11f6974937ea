"""NP104: a port range that Cilium's policy map stores as many masked-port entries."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from compiler.flow import Protocol
from compiler.source import SourceRef
from compiler.targets.ebpf.ports import masked_ports
from verifier.lint.context import LintContext
from verifier.lint.finding import Finding, Severity
from verifier.lint.rule import LintRule

#: Entries per peer identity and protocol from which a range is worth realigning (a range on
#: power-of-two boundaries needs one; the worst 16-bit range needs 30).
EXPANSION_THRESHOLD = 8


class PortRangeExpansion(LintRule):
    """A `port`–`endPort` range is not aligned, so each peer identity costs many policy-map entries.

    ## What it does
    Splits every port range the way Cilium's policy map stores it — one LPM entry per
    power-of-two-aligned block (reference/cilium.md §1.3: 80-90 is 80/13, 88/15, 90/16) — and
    reports ranges that need at least 8 entries per protocol.

    ## Why is this bad?
    The entries are multiplied by every peer identity the rule selects and every endpoint the
    policy applies to. Wide selectors with such a range fill the per-endpoint policy map
    (16,384 entries by default), and Cilium then fails to regenerate the endpoint (E2BIG).

    ## Example
    ```yaml
    toPorts:
      - ports: [{port: "1025", endPort: 65000, protocol: TCP}]
    ```

    ## Use instead
    A range on power-of-two boundaries (one or two entries), or the ports really used:
    ```yaml
    toPorts:
      - ports: [{port: "32768", endPort: 65535, protocol: TCP}]
    ```
    """

    code = "NP104"
    name = "port-range-expansion"
    severity: ClassVar[Severity] = Severity.WARNING

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        seen: set[tuple[str, int, int, int, int]] = set()
        for lowered in ctx.lowered:
            for subject in lowered.subjects:
                for rules in (subject.ingress, subject.egress):
                    for template in (*rules.allow, *rules.deny):
                        rule = template.rule
                        for port in rule.ports:
                            protocol = port.protocol
                            if protocol in (None, Protocol.ICMP, Protocol.ICMPV6) or port.name or port.lo == port.hi:
                                continue
                            assert protocol is not None
                            entries = len(masked_ports(port.lo, port.hi))
                            key = (rule.origin.file, rule.origin.line, port.lo, port.hi, int(protocol))
                            if entries < EXPANSION_THRESHOLD or key in seen:
                                continue
                            seen.add(key)
                            yield self.finding(
                                SourceRef(rule.origin.file, rule.origin.line),
                                f"{rule.origin.path}: ports {port.lo}-{port.hi}/{protocol.name} take {entries} "
                                "policy-map entries per peer identity (masked-port blocks)",
                                fix="align the range to power-of-two boundaries or list the ports used",
                                policy=lowered.policy.display,
                            )
