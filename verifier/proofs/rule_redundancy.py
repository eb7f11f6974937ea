"""Rule redundancy: written rules that never change a verdict (DESIGN.md §5).

A rule is *redundant* when, on every endpoint it applies to and every peer it matches, each
packet it matches gets the same verdict and proxy port without it: the flows it allows are also
allowed by other rules (or denied anyway), the flows it denies are also denied by another deny
(or allowed by nothing). Per direction: a rule that matters only for flows the other side's
policy always drops still counts as mattering. An allow rule that matches a connection sent to
an L7 proxy is never called redundant, since it may widen what the proxy admits
(:func:`verifier.encoding.rule_effect.rule_changes`).

Each rule is asked on every (endpoint kind, peer kind) case it matches
(:mod:`verifier.proofs.rule_cases`) until one case shows a change; a rule no case can change is
reported with a few of the rules that match the same packets. A solver timeout makes the rule
``unknown``, never redundant. Rules that match no peer at all are left to the lint rules about
empty selectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from compiler.flow import Profile, RuleRef
from compiler.inputs import Inputs
from compiler.labels import LabelFilter
from verifier.encoding.rule_effect import overlap, rule_changes
from verifier.encoding.source import SourceEncoding
from verifier.proofs.rule_cases import rule_cases
from verifier.simulate.source_rules import SourceRule

#: how many covering rules a finding names
NAMED = 3


@dataclass(frozen=True)
class Redundant:
    """A rule proved never to change a verdict, and some rules matching the same packets."""

    rule: SourceRule
    covered_by: tuple[RuleRef, ...]
    #: why flows are allowed without it where no other rule matches: "default-allow" (every
    #: selecting policy sets enableDefaultDeny false) and/or "allow-localhost" (the node)
    anyway: tuple[str, ...] = ()


@dataclass(frozen=True)
class RedundancyResult:
    redundant: tuple[Redundant, ...]
    unknown: tuple[tuple[RuleRef, str], ...]  # rules the solver could not decide, with why
    cases: int


def redundant_rules(inputs: Inputs, profile: Profile, label_filter: LabelFilter | None = None,
                    progress: Callable[[int], None] = lambda _: None) -> RedundancyResult:
    enc = SourceEncoding(inputs, profile, label_filter)
    matters: set[RuleRef] = set()
    matched: dict[RuleRef, SourceRule] = {}
    covering: dict[RuleRef, set[RuleRef]] = {}
    unknown: dict[RuleRef, str] = {}
    count = 0
    anyway: dict[RuleRef, set[str]] = {}
    for count, case in enumerate(rule_cases(enc), 1):
        progress(count)
        if all(rule.ref in matters or not rule.ref.file for rule in case.matching):
            continue  # every rule this peer can match is already known to matter
        for term in case.rules.rules:
            ref = term.rule.ref
            if term.matches is False or ref in matters or not ref.file:
                continue
            matched[ref] = term.rule
            answer = rule_changes(case.rules, term, case.packet, case.domain)
            if answer.status == "changes":
                matters.add(ref)
                unknown.pop(ref, None)
                continue
            if answer.status == "unknown":
                unknown[ref] = answer.reason
                continue
            reasons = anyway.setdefault(ref, set())
            if case.rules.default_allow:
                reasons.add("default-allow")
            if case.rules.localhost:
                reasons.add("allow-localhost")
            named = covering.setdefault(ref, set())
            for other in case.rules.rules:
                if len(named) >= NAMED:
                    break
                if other.rule is term.rule or other.matches is False or other.rule.ref in named:
                    continue
                if overlap(term.matches, other.matches, case.packet, case.domain).status == "changes":
                    named.add(other.rule.ref)
    found = tuple(Redundant(rule, tuple(sorted(covering.get(ref, ()))), tuple(sorted(anyway.get(ref, ()))))
                  for ref, rule in sorted(matched.items()) if ref not in matters and ref not in unknown)
    return RedundancyResult(found, tuple(sorted(unknown.items())), count)
