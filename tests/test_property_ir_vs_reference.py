"""Property: the IR evaluator and the reference evaluator give the same decision for every flow.

Two independent readings of docs/SEMANTICS.md — the IR (identities, lowered rules) and the
reference over the parsed policies (verifier/simulate/source.py) — are run on random valid inputs
(tests/strategies.py) under both profiles. Any field that differs (verdict, drop reason,
l7_denied, and per direction enforced/allowed/reason/allow and deny rules/redirect/l7_allowed) is
a bug in one of them or an ambiguity in the spec; the failure shows the YAML, the flow and a
field-by-field diff.

Default run (the ``ci`` hypothesis profile in tests/conftest.py is derandomized): 1000 input sets
× up to 20 flows × 2 profiles; ``NETPOLC_PROPERTY_EXAMPLES`` raises it for a longer soak.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import Any

from hypothesis import HealthCheck, given, settings

from compiler.flow import Decision, Flow, Profile
from compiler.ir.build import build_ir
from compiler.ir.evaluate import IREvaluator
from compiler.source import InputError
from tests.strategies import GeneratedCase, cases
from verifier.compare import comparable
from verifier.simulate.source import ReferenceEvaluator

EXAMPLES = int(os.environ.get("NETPOLC_PROPERTY_EXAMPLES", "1000"))


def _diff(ir: dict[str, Any], ref: dict[str, Any], prefix: str = "") -> list[str]:
    lines = []
    for key in ir.keys() | ref.keys():
        a, b = ir.get(key), ref.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            lines.extend(_diff(a, b, f"{prefix}{key}."))
        elif a != b:
            lines.append(f"  {prefix}{key}:\n      IR:        {_show(a)}\n      reference: {_show(b)}")
    return sorted(lines)


def _show(value: object) -> object:
    """Enum members by name (a drop reason's number says little)."""
    return value.name if isinstance(value, Enum) else value


def describe(flow: Flow) -> str:
    return f"{flow.src} -> {flow.dst} {flow.protocol.name}/{flow.port}" + (f" [{flow.l7}]" if flow.l7 else "")


def assert_same(case: GeneratedCase, profile: Profile, flow: Flow, ir: Decision | str, ref: Decision | str) -> None:
    """Fail with the YAML, the flow and a readable field diff when the two answers differ."""
    left = comparable(ir) if isinstance(ir, Decision) else {"error": ir}
    right = comparable(ref) if isinstance(ref, Decision) else {"error": ref}
    if left == right:
        return
    diff = "\n".join(_diff(left, right))
    raise AssertionError(
        f"IR and reference disagree under --profile {profile.value} on {describe(flow)}\n{diff}\n"
        f"--- inputs ---\n{case.yaml}"
    )


def _answer(evaluate: Any, flow: Flow) -> Decision | str:
    try:
        result: Decision = evaluate(flow)
    except InputError as err:
        return f"InputError: {err}"
    return result


def check_case(case: GeneratedCase, profile: Profile) -> None:
    try:
        ir_eval: Any = IREvaluator(build_ir(case.inputs, profile)).evaluate
    except InputError as err:
        ir_eval = err
    reference = ReferenceEvaluator(case.inputs, profile)
    for flow in case.flows:
        ir_answer = f"InputError: {ir_eval}" if isinstance(ir_eval, InputError) else _answer(ir_eval, flow)
        ref_answer = _answer(reference.evaluate, flow)
        if isinstance(ir_answer, str) and isinstance(ref_answer, str):
            continue  # both refuse the inputs (e.g. conflicting L7 parsers); messages may differ
        assert_same(case, profile, flow, ir_answer, ref_answer)


@settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(case=cases())
def test_ir_and_reference_agree_on_every_flow_under_both_profiles(case: GeneratedCase) -> None:
    for profile in Profile:
        check_case(case, profile)
