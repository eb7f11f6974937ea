"""Each target ≡ source: the iptables and eBPF artifacts do what the policies say, proved on every
example and conformance case under both profiles; a corrupted artifact, or artifacts compiled
from another version of the policies, give a counterexample the simulators confirm.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.flow import Flow, Profile, Protocol
from compiler.inputs import Inputs, load_inputs
from tests.conformance_cases import CASES, load_case
from tests.test_diff import CLUSTER, PAIRS
from tests.test_verify_targets import EXAMPLES, MUTATIONS, ROOT, Files, _files
from verifier.diff.compute import semantic_diff
from verifier.proofs import Counterexample, ProofContext, ProofResult, SourceSpec, Status, ebpf_source, iptables_source
from verifier.simulate.targets import SourceSimulator, simulators

PROOFS = {"iptables": iptables_source, "ebpf": ebpf_source}


def _prove(target: str, files: Files, inputs: Inputs, profile: Profile = Profile.CILIUM) -> ProofResult:
    return PROOFS[target].prove(ProofContext(files, inputs.cluster, jobs=1, source=SourceSpec(inputs, profile)))


@pytest.mark.parametrize("profile", list(Profile))
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_proved_against_the_source(example: Path, profile: Profile) -> None:
    inputs = load_inputs([str(example)])
    files = _files(inputs, profile)
    for target in PROOFS:
        result = _prove(target, files, inputs, profile)
        assert result.status is Status.PROVED, result.to_json()


@pytest.mark.parametrize("profile", list(Profile))
def test_every_conformance_case_is_proved_against_the_source(profile: Profile, tmp_path: Path) -> None:
    failures = []
    for path in CASES:
        _, inputs = load_case(path, tmp_path)
        files = _files(inputs, profile)
        for target in PROOFS:
            result = _prove(target, files, inputs, profile)
            if result.status is not Status.PROVED:
                failures.append((path.stem, target, result.to_json()))
    assert not failures


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_corrupted_artifact_differs_from_the_source(mutation: str) -> None:
    example, mutate = MUTATIONS[mutation]
    inputs = load_inputs([str(ROOT / "examples" / example)])
    files = _files(inputs)
    mutated = mutate(files)
    target = next(t for t in files if files[t] != mutated[t])
    result = _prove(target, mutated, inputs)
    assert result.status is Status.COUNTEREXAMPLE, result.to_json()
    found = result.counterexamples[0]
    assert [s.name for s in found.sides] == [target, "source"]
    flow = _flow(found)
    corrupted = simulators({target: mutated[target]}, inputs.cluster)[target].answer(flow)
    assert corrupted.verdict != SourceSimulator(inputs, Profile.CILIUM).answer(flow).verdict
    # the untouched target agrees with the source there
    other = next(t for t in files if t != target)
    assert _prove(other, mutated, inputs).status is Status.PROVED


def _flow(found: Counterexample) -> Flow:
    return Flow(ipaddress.ip_address(found.src), ipaddress.ip_address(found.dst), Protocol[found.protocol],
                found.port)


def _visible(old: str, new: str, old_detail: str, new_detail: str) -> bool:
    """Whether a change of outcome shows in what a target does with the first packet."""
    return old != new or (old == "redirected" and old_detail != new_detail)


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("profile", list(Profile))
def test_artifacts_of_one_version_against_the_policies_of_another(name: str, profile: Profile,
                                                                  tmp_path: Path) -> None:
    """Compile OLD, prove against NEW: a counterexample exactly when the diff has a change a
    target can show at L3/L4, and the counterexample is a flow whose verdict changed."""
    old_text, new_text = PAIRS[name]
    versions = []
    for tag, policy in (("old", old_text), ("new", new_text)):
        folder = tmp_path / tag
        folder.mkdir()
        (folder / "cluster.yaml").write_text(CLUSTER)
        (folder / "policy.yaml").write_text(policy)
        versions.append(load_inputs([str(folder)]))
    old, new = versions
    diff = semantic_diff(old, new, profile, profile)
    visible = any(_visible(r.old.verdict, r.new.verdict, r.old.detail, r.new.detail) for r in diff.regions)
    files = _files(old, profile)
    for target in PROOFS:
        result = _prove(target, files, new, profile)
        assert result.status is (Status.COUNTEREXAMPLE if visible else Status.PROVED), result.to_json()
        for found in result.counterexamples:
            flow = _flow(found)
            before = SourceSimulator(old, profile).answer(flow).verdict
            after = SourceSimulator(new, profile).answer(flow).verdict
            assert before != after, (found.flow, before, after)


def test_verify_cli_runs_the_source_proofs(tmp_path: Path) -> None:
    shop = str(ROOT / "examples" / "shop")
    run = subprocess.run([sys.executable, "-m", "compiler.cli", "verify", "-f", shop, "-o", "json", "-j", "1"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    statuses = {p["name"]: p["status"] for p in json.loads(run.stdout)["proofs"]}
    assert statuses["iptables-source"] == statuses["ebpf-source"] == "proved"
