"""Deny overrides: deny rules that take away flows another policy explicitly allows.

In Cilium a deny wins over every allow (SEMANTICS §2), so a deny written in one policy silently
cancels allow rules written in others. For each (deny rule, allow rule of a different policy)
pair applying to a common endpoint and direction, the solver looks for a packet both match on
some (endpoint kind, peer kind) case (:mod:`verifier.proofs.rule_cases`); the packet it finds is
replayed through the reference evaluator, which must name both rules, before it is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from compiler.flow import Direction, Flow, Profile, Protocol, RuleRef
from compiler.inputs import Inputs
from compiler.labels import LabelFilter
from verifier.encoding.rule_effect import overlap
from verifier.encoding.source import SourceEncoding
from verifier.proofs.rule_cases import RuleCase, rule_cases


@dataclass(frozen=True)
class Override:
    """A deny rule, an allow rule of another policy it cancels, and one flow showing it."""

    deny: RuleRef
    allow: RuleRef
    direction: Direction
    endpoint: str
    flow: Flow


@dataclass(frozen=True)
class OverrideResult:
    overrides: tuple[Override, ...]
    unknown: tuple[tuple[RuleRef, RuleRef, str], ...]


def deny_overrides(inputs: Inputs, profile: Profile, label_filter: LabelFilter | None = None,
                   progress: Callable[[int], None] = lambda _: None) -> OverrideResult:
    enc = SourceEncoding(inputs, profile, label_filter)
    found: dict[tuple[RuleRef, RuleRef], Override] = {}
    unknown: dict[tuple[RuleRef, RuleRef], str] = {}
    for count, case in enumerate(rule_cases(enc), 1):
        progress(count)
        policies = {r.ref.policy for r in case.matching if not r.deny and r.ref.file}
        if not any(r.deny and r.ref.file and policies - {r.ref.policy} for r in case.matching):
            continue  # no deny here can meet an allow of another policy
        denies = [t for t in case.rules.rules if t.rule.deny and t.matches is not False and t.rule.ref.file]
        allows = [t for t in case.rules.rules if not t.rule.deny and t.matches is not False and t.rule.ref.file]
        for deny in denies:
            for allow in allows:
                pair = (deny.rule.ref, allow.rule.ref)
                if pair[0].policy == pair[1].policy or pair in found:
                    continue
                answer = overlap(deny.matches, allow.matches, case.packet, case.domain)
                if answer.status == "unknown":
                    unknown[pair] = answer.reason
                elif answer.witness is not None:
                    override = _confirmed(enc, case, pair, answer.witness.protocol, answer.witness.port)
                    if override is None:
                        unknown[pair] = "the solver's flow is not confirmed by the reference evaluator"
                    else:
                        found[pair] = override
                        unknown.pop(pair, None)
    return OverrideResult(tuple(found[p] for p in sorted(found)),
                          tuple((d, a, why) for (d, a), why in sorted(unknown.items()) if (d, a) not in found))


def _confirmed(enc: SourceEncoding, case: RuleCase, pair: tuple[RuleRef, RuleRef], protocol: int,
               port: int) -> Override | None:
    """The witness as a concrete flow, kept only when the reference evaluator matches both rules."""
    owner = case.owner
    own = next(a for a in owner.addresses if a.version == case.peer.address.version)
    peer = case.peer.address
    src, dst = (own, peer) if case.direction is Direction.EGRESS else (peer, own)
    flow = Flow(src, dst, Protocol(protocol), port)
    decision, _ = enc.ref.direction_matches(case.direction, owner, case.peer, flow)
    if pair[0] not in decision.deny_rules or pair[1] not in decision.allow_rules:
        return None
    return Override(pair[0], pair[1], case.direction, owner.key, flow)
