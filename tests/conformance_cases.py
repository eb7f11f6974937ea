"""The upstream Kubernetes conformance model (tests/conformance): its cases, and loading one.

Each case file holds a ``ConformanceCase`` document (the expected truth table per port) followed
by the policies; they apply to the shared x/y/z × a/b/c cluster in ``model.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from compiler.flow import PortSpec
from compiler.inputs import Inputs, load_inputs

HERE = Path(__file__).parent / "conformance"
MODEL = HERE / "model.yaml"
CASES = sorted((HERE / "cases").glob("*.yaml"))


def load_case(path: Path, tmp_path: Path) -> tuple[dict[str, Any], Inputs]:
    """The case document and the model with the case's policies (written to ``tmp_path/<case>.yaml``)."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    case: dict[str, Any] = docs[0]
    assert case["kind"] == "ConformanceCase", path
    paths = [str(MODEL)]
    if docs[1:]:
        policies = tmp_path / f"{path.stem}.yaml"
        policies.write_text(yaml.safe_dump_all(docs[1:]))
        paths.append(str(policies))
    return case, load_inputs(paths)


def case_ports(case: dict[str, Any]) -> list[PortSpec]:
    """The ports the case's truth table covers."""
    return [PortSpec.parse(entry["port"]) for entry in case["expect"]]


def load_model() -> Inputs:
    """The cluster alone (no policies)."""
    return load_inputs([str(MODEL)])
