"""Upstream Kubernetes NetworkPolicy conformance (the e2e x/y/z × a/b/c model) under --profile k8s.

Each file in tests/conformance/cases holds a ``ConformanceCase`` document (the expected truth
table per port, written from the upstream test) followed by the policies. The matrix computed
on the IR and by the reference evaluator must both equal the expectation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from compiler.cli import _pairwise_matrix
from compiler.flow import Profile
from compiler.ir.build import build_ir
from compiler.ir.evaluate import matrix
from tests.conformance_cases import CASES, case_ports, load_case
from verifier.simulate.source import ReferenceEvaluator


def _expected(entry: dict[str, Any], endpoints: list[str]) -> dict[str, list[str]]:
    default = entry["default"] == "allow"
    exceptions = set()
    for text in entry.get("exceptions") or []:
        src, dst = (s.strip() for s in text.split("->"))
        assert src in endpoints and dst in endpoints, text
        exceptions.add((src, dst))
    return {src: sorted(dst for dst in endpoints if ((src, dst) in exceptions) != default) for src in endpoints}


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_matrix_matches_upstream_conformance(path: Path, tmp_path: Path) -> None:
    case, inputs = load_case(path, tmp_path)
    endpoints = [ep.key for ep in inputs.cluster.endpoints]
    ports = case_ports(case)
    ir_matrix = matrix(build_ir(inputs, Profile.K8S), ports)
    ref_matrix = _pairwise_matrix(inputs.cluster, ports, ReferenceEvaluator(inputs, Profile.K8S).evaluate)
    for entry, port in zip(case["expect"], ports, strict=True):
        want = _expected(entry, endpoints)
        for name, got in (("IR", ir_matrix[str(port)]), ("reference", ref_matrix[str(port)])):
            diff = [
                f"{src} -> {dst}: expected {'allow' if dst in want[src] else 'deny'}"
                for src in endpoints
                for dst in endpoints
                if (dst in want[src]) != (dst in got.get(src, []))
            ]
            assert not diff, f"{case['name']} {port} ({name}):\n" + "\n".join(diff)


def test_there_are_enough_conformance_cases() -> None:
    assert len(CASES) >= 25
