"""Property: the eBPF artifacts, simulated, agree with the IR evaluator at L3/L4 and on redirects.

Random valid inputs (tests/strategies.py) under both profiles are compiled by the eBPF target,
read back from the emitted JSON, and every generated flow is compared with the IR evaluator
(verdict and drop reason per direction, proxy port; L7 request outcomes are Envoy's). Inputs the
target refuses must be refused for a documented reason; ``assume`` makes hypothesis fail the run
if too few inputs compile, so the property cannot pass vacuously.

``NETPOLC_EBPF_EXAMPLES`` raises the number of input sets for a longer soak (default 120).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, assume, given, settings

from compiler.flow import Profile
from compiler.ir.build import build_ir
from compiler.ir.evaluate import IREvaluator
from compiler.source import InputError
from compiler.targets.ebpf import EbpfTarget
from tests.strategies import GeneratedCase, cases
from verifier.simulate.ebpf import EbpfArtifacts, EbpfSimulator, compare_with_ir

EXAMPLES = int(os.environ.get("NETPOLC_EBPF_EXAMPLES", "120"))


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_simulation_equals_ir_on_generated_policy_sets_under_both_profiles(case: GeneratedCase) -> None:
    checked = 0
    for profile in Profile:
        try:
            ir = build_ir(case.inputs, profile)
        except InputError:
            continue  # refused inputs (conflicting L7 parsers): nothing to compile
        target = EbpfTarget(ir)
        files = target.emit()
        if target.problems:
            # only the documented inexpressible constructs (peers.py, target.py) may be refused
            assert all("whole identity" in p.message or "cannot tell them apart" in p.message
                       for p in target.problems), [str(p) for p in target.problems]
            continue
        sim, evaluator = EbpfSimulator(EbpfArtifacts(files)), IREvaluator(ir)
        for flow in case.flows:
            diff = compare_with_ir(evaluator.evaluate(flow), sim.evaluate(flow))
            assert not diff, f"{profile.value} {flow}: {diff}\n--- inputs ---\n{case.yaml}"
        checked += 1
    assume(checked > 0)  # hypothesis fails the run if too many sets compile under neither profile


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_entry_bound_never_undercounts_the_final_map(case: GeneratedCase) -> None:
    """NP103 skips the exact map where the bound fits, so the bound must hold on every endpoint."""
    checked = 0
    for profile in Profile:
        try:
            ir = build_ir(case.inputs, profile)
        except InputError:
            continue
        target = EbpfTarget(ir)
        for ep in ir.cluster.endpoints:
            assert target.entry_bound(ep) >= len(target.endpoint_entries(ep)), (profile.value, ep.key, case.yaml)
            checked += 1
    assume(checked > 0)
