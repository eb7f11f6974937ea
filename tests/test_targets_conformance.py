"""Both targets, simulated from their files, equal the IR on the upstream conformance model, both profiles.

The kernel tests (test_target_iptables_kernel.py, test_kernel_ebpf_testbed.py) show kernel == IR
for the same cases; together: kernel == simulate == IR. Every pod pair (x/y/z × a/b/c, self
included: in the simulators a pod's own traffic follows policy like any other) on 80/81 TCP/UDP.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.flow import Flow, Profile, Protocol
from compiler.ir.build import build_ir
from compiler.ir.evaluate import IREvaluator
from compiler.targets import emit_targets
from tests.conformance_cases import CASES, load_case
from verifier.simulate.targets import expected, simulators

PORTS = [(proto, port) for port in (80, 81) for proto in (Protocol.TCP, Protocol.UDP)]


@pytest.mark.parametrize("profile", list(Profile), ids=[p.value for p in Profile])
@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_simulated_targets_equal_the_ir_on_the_conformance_model(path: Path, profile: Profile, tmp_path: Path) -> None:
    _, inputs = load_case(path, tmp_path)
    ir = build_ir(inputs, profile)
    artifacts, _ = emit_targets(ir, ["iptables", "ebpf"])
    sims = simulators(artifacts, ir.cluster)
    assert set(sims) == {"iptables", "ebpf"}
    evaluator = IREvaluator(ir)
    pods = [ep.addresses[0] for ep in ir.cluster.endpoints]
    differences = []
    for src in pods:
        for dst in pods:
            for proto, port in PORTS:
                flow = Flow(src, dst, proto, port)
                want = expected(evaluator.evaluate(flow))
                for name, sim in sims.items():
                    got = sim.answer(flow).verdict
                    if got != want:
                        differences.append(f"{name}: {src} -> {dst} {port}/{proto.name}: {got}, IR {want}")
    assert not differences, "\n".join(differences[:20])
