"""Iterators the rules share: every lowered rule, every Cilium rule item, with where it was written."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from compiler.flow import Direction
from compiler.inputs.ciliumpolicy import CiliumPolicy, EgressRule, IngressRule, Rule
from compiler.ir.model import Action, RuleTemplate, SubjectRules
from verifier.lint.context import LintContext, LoweredPolicy


@dataclass(frozen=True)
class LoweredRule:
    """One IR rule template with the policy and subject it came from."""

    lowered: LoweredPolicy
    subject: SubjectRules
    direction: Direction
    action: Action
    template: RuleTemplate

    @property
    def display(self) -> str:
        return self.lowered.policy.display


def lowered_rules(ctx: LintContext) -> Iterator[LoweredRule]:
    """Every allow and deny template of every policy, in input order."""
    for lowered in ctx.lowered:
        for subject in lowered.subjects:
            for direction in Direction:
                rules = subject.direction(direction)
                for template in rules.allow:
                    yield LoweredRule(lowered, subject, direction, Action.ALLOW, template)
                for template in rules.deny:
                    yield LoweredRule(lowered, subject, direction, Action.DENY, template)


@dataclass(frozen=True)
class CiliumItem:
    """One entry of a Cilium rule's ingress/ingressDeny/egress/egressDeny list."""

    policy: CiliumPolicy
    rule: Rule
    path: str  # "spec.egress[0]" / "specs[1].ingressDeny[2]"
    direction: Direction
    deny: bool
    item: IngressRule | EgressRule


def cilium_items(ctx: LintContext) -> Iterator[CiliumItem]:
    for policy in ctx.inputs.policies:
        if not isinstance(policy, CiliumPolicy):
            continue
        for path, rule in policy.rules:
            lists: list[tuple[str, Direction, bool, Sequence[IngressRule | EgressRule] | None]] = [
                ("ingress", Direction.INGRESS, False, rule.ingress),
                ("ingressDeny", Direction.INGRESS, True, rule.ingressDeny),
                ("egress", Direction.EGRESS, False, rule.egress),
                ("egressDeny", Direction.EGRESS, True, rule.egressDeny),
            ]
            for name, direction, deny, items in lists:
                for i, item in enumerate(items or []):
                    yield CiliumItem(policy, rule, f"{path}.{name}[{i}]", direction, deny, item)
