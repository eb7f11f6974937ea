"""Envoy ≡ source at L7: proved on every example and on generated policy sets with HTTP, Kafka and
DNS rules, under both profiles; each
corrupted L7 artifact (a path regex, a header value, a Kafka topic, a DNS pattern, a rule's
remote identities, a rule's L7 list) and each L7 change of the policies gives a counterexample
request that the Envoy simulator and the reference evaluator both confirm; endpoints of one
address class are one case while their Envoy configs are equal, and a corrupted config makes its
endpoint a case of its own; the L7 formulas decide every request as the rule matchers do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import z3
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from compiler.flow import HttpRequest, Profile
from compiler.inputs import Inputs, load_inputs
from compiler.inputs.ciliumpolicy import PortRuleHTTP
from compiler.ir.build import build_ir
from compiler.l7match import http_rule_matches
from compiler.source import InputError
from compiler.targets import TargetError, emit_targets
from tests.strategies import GeneratedCase, cases
from tests.test_regex_encoding import patterns
from tests.test_verify_targets import EXAMPLES, ROOT
from verifier.encoding.l7 import HttpSpace, envoy_admits, source_admits, space_for
from verifier.proofs import ProofContext, ProofResult, SourceSpec, Status, envoy_source
from verifier.proofs.address_classes import address_classes
from verifier.proofs.l7_cases import L7Case, l7_cases
from verifier.simulate.ebpf import EbpfArtifacts
from verifier.simulate.envoy import EnvoySimulator, _http_ok
from verifier.simulate.source import ReferenceEvaluator

Files = dict[str, dict[str, str]]


def _files(inputs: Inputs, profile: Profile = Profile.CILIUM) -> Files:
    return emit_targets(build_ir(inputs, profile), ["ebpf", "envoy"])[0]


def _prove(files: Files, inputs: Inputs, profile: Profile = Profile.CILIUM) -> ProofResult:
    return envoy_source.prove(ProofContext(files, inputs.cluster, jobs=1, source=SourceSpec(inputs, profile)))


@pytest.mark.parametrize("profile", list(Profile))
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_proved_at_l7(example: Path, profile: Profile) -> None:
    inputs = load_inputs([str(example)])
    result = _prove(_files(inputs, profile), inputs, profile)
    assert result.status is Status.PROVED, result.to_json()
    if example.name in ("grpc", "kafka-pipeline"):
        assert result.slices > 0  # the proof looked at proxied connections


GENERATED = int(os.environ.get("NETPOLC_VERIFY_EXAMPLES", "40"))


@settings(max_examples=GENERATED, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_generated_policy_sets_are_proved_at_l7(case: GeneratedCase) -> None:
    """Random policy sets with HTTP, Kafka and DNS rules (tests/strategies.py), both profiles."""
    proved = 0
    for profile in Profile:
        try:
            files = _files(case.inputs, profile)
        except (InputError, TargetError):
            continue  # refused inputs: covered by the targets' own property tests
        result = _prove(files, case.inputs, profile)
        assert result.status is Status.PROVED, f"{profile.value}: {result.to_json()}\n--- inputs ---\n{case.yaml}"
        proved += 1
    assume(proved > 0)


# --- corrupted artifacts -------------------------------------------------------------------------

def _edit(files: Files, name: str, edit: Callable[[str], str]) -> Files:
    out = {t: dict(f) for t, f in files.items()}
    before = out["envoy"][name]
    out["envoy"][name] = edit(before)
    assert out["envoy"][name] != before, f"mutation did not apply to envoy/{name}"
    return out


def _json_edit(change: Callable[[dict[str, object]], None]) -> Callable[[str], str]:
    def edit(text: str) -> str:
        doc = json.loads(text)
        change(doc)
        return json.dumps(doc, indent=2, sort_keys=True)

    return edit


def _first_l7_rule(doc: dict[str, object], key: str) -> dict[str, object]:
    for policy in doc.get("ingress_per_port_policies", []) + doc.get("egress_per_port_policies", []):  # type: ignore
        for rule in policy.get("rules", []):
            if key in rule:
                return rule  # type: ignore[no-any-return]
    raise AssertionError(f"no rule with {key}")


def _drop_remotes(doc: dict[str, object]) -> None:
    rule = _first_l7_rule(doc, "http_rules")
    rule["remote_policies"] = [0]  # an identity no remote has


def _drop_http_rules(doc: dict[str, object]) -> None:
    del _first_l7_rule(doc, "http_rules")["http_rules"]


GRPC = "npds/cloudcity/door-manager-0.json"
API = "npds/pipeline/api-0.json"
KAFKA = "npds/pipeline/kafka-0.json"
DNS = "dns/pipeline/ingest-0.json"

L7_MUTATIONS: dict[str, tuple[str, Callable[[Files], Files]]] = {
    "change a path regex": ("grpc", lambda f: _edit(f, GRPC, lambda t: t.replace('GetLocation"', 'GetLocatio[nN]"'))),
    "change a header value": ("kafka-pipeline", lambda f: _edit(
        f, API, lambda t: t.replace('"exact": "application/json"', '"exact": "application/xml"', 1))),
    "change a Kafka topic": ("kafka-pipeline", lambda f: _edit(
        f, KAFKA, lambda t: re.sub(r'"topic": "([a-z-]+)"', r'"topic": "\1x"', t, count=1))),
    "change a DNS pattern": ("kafka-pipeline", lambda f: _edit(
        f, DNS, lambda t: t.replace("*.pipeline.svc.cluster.local.", "*.pipeline.svc.cluster.loca.", 1))),
    "drop a rule's remote identities": ("grpc", lambda f: _edit(f, GRPC, _json_edit(_drop_remotes))),
    "drop a rule's L7 rules": ("grpc", lambda f: _edit(f, GRPC, _json_edit(_drop_http_rules))),
}


@pytest.mark.parametrize("mutation", sorted(L7_MUTATIONS))
def test_a_corrupted_l7_artifact_gives_a_confirmed_counterexample(mutation: str) -> None:
    example, mutate = L7_MUTATIONS[mutation]
    inputs = load_inputs([str(ROOT / "examples" / example)])
    files = _files(inputs)
    assert _prove(files, inputs).status is Status.PROVED
    result = _prove(mutate(files), inputs)
    assert result.status is Status.COUNTEREXAMPLE, result.to_json()
    found = result.counterexamples[0]
    envoy, source = found.sides
    assert (envoy.name, source.name) == ("envoy", "source")
    assert found.request, "an L7 counterexample names the request"
    assert ("allowed" in envoy.verdict) != source.verdict.startswith("allowed") or "denied" in envoy.verdict
    assert envoy.trace


def test_artifacts_of_another_l7_policy_version_give_a_counterexample(tmp_path: Path) -> None:
    """Compile the grpc example, then change which method spaceships may call: the old artifacts
    against the new policies differ on exactly that method."""
    old = tmp_path / "old"
    shutil.copytree(ROOT / "examples" / "grpc", old)
    new = tmp_path / "new"
    shutil.copytree(old, new)
    policy = new / "door-manager-policy.yaml"
    policy.write_text(policy.read_text().replace("DoorManager/GetLocation", "DoorManager/SetAccessCode"))
    files = _files(load_inputs([str(old)]))
    inputs = load_inputs([str(new)])
    result = _prove(files, inputs)
    assert result.status is Status.COUNTEREXAMPLE, result.to_json()
    requests = {c.request for c in result.counterexamples}
    assert requests <= {"POST /cloudcity.DoorManager/GetLocation", "POST /cloudcity.DoorManager/SetAccessCode"}, \
        requests


def test_a_regex_outside_the_subset_is_unknown_never_proved(tmp_path: Path) -> None:
    folder = tmp_path / "grpc"
    shutil.copytree(ROOT / "examples" / "grpc", folder)
    policy = folder / "door-manager-policy.yaml"
    policy.write_text(policy.read_text().replace(r"'/cloudcity\.DoorManager/.*'", r"'(?i)/cloudcity\.DoorManager/.*'"))
    inputs = load_inputs([str(folder)])
    result = _prove(_files(inputs), inputs)
    assert result.status is Status.UNKNOWN, result.to_json()
    assert any("outside the encoded RE2 subset" in reason for reason in result.unknown)


# --- one case per class and Envoy config ---------------------------------------------------------

API_1 = "npds/pipeline/api-1.json"


def _cases(files: Files, inputs: Inputs) -> list[L7Case]:
    """The L7 cases as the proof enumerates them (classes under the eBPF side and the source)."""
    spec = SourceSpec(inputs, Profile.CILIUM)
    classes = address_classes(files, inputs.cluster, ("ebpf", "source"), spec)
    ipcache = EbpfArtifacts.of(files["ebpf"]).ipcache
    return list(l7_cases(ReferenceEvaluator(inputs), EnvoySimulator(files["envoy"]), ipcache, classes))


def _pipeline() -> tuple[Files, Inputs]:
    """The kafka-pipeline example, whose api-0 and api-1 are one address class."""
    inputs = load_inputs([str(ROOT / "examples" / "kafka-pipeline")])
    files = _files(inputs)
    classes = address_classes(files, inputs.cluster, ("ebpf", "source"), SourceSpec(inputs, Profile.CILIUM))
    assert ("pipeline/api-0", "pipeline/api-1") in classes.members.values()
    return files, inputs


def test_endpoints_of_one_class_with_equal_envoy_configs_are_one_case() -> None:
    files, inputs = _pipeline()
    names = [case.name for case in _cases(files, inputs) if case.name.startswith("pipeline/api-")]
    assert names, "api's proxied connections are cases"
    assert all(name.startswith("pipeline/api-0 (+1 alike) ingress ") for name in names), names
    assert _prove(files, inputs).status is Status.PROVED


def test_endpoints_of_one_class_with_different_envoy_configs_are_two_cases() -> None:
    """api-1's NPDS resource loses a header value: api-1 is a case of its own (not represented by
    api-0, whose config is intact), and the proof finds the difference there."""
    files, inputs = _pipeline()
    corrupted = _edit(files, API_1, lambda t: t.replace('"exact": "application/json"', '"exact": "application/xml"', 1))
    names = [case.name for case in _cases(corrupted, inputs) if case.name.startswith("pipeline/api-")]
    assert {name.split(" ")[0] for name in names} == {"pipeline/api-0", "pipeline/api-1"}, names
    assert not any("alike) ingress" in name for name in names), names
    result = _prove(corrupted, inputs)
    assert result.status is Status.COUNTEREXAMPLE, result.to_json()
    assert result.counterexamples
    assert all(found.slice.startswith("pipeline/api-1 ingress ") for found in result.counterexamples), \
        [found.slice for found in result.counterexamples]
    api_1 = next(ep for ep in inputs.cluster.endpoints if ep.key == "pipeline/api-1")
    assert {found.dst for found in result.counterexamples} == {str(api_1.addresses[0])}


# --- the formulas against the matchers -------------------------------------------------------------

_NAMES = st.sampled_from(["X-Token", "x-token", "Accept"])
_VALUES = st.sampled_from(["", "a", "ab", "b/", "0"])


@st.composite
def http_rules(draw: st.DrawFn) -> PortRuleHTTP:
    fields = {}
    for field in ("method", "path", "host"):
        if draw(st.booleans()):
            fields[field] = draw(patterns())
    headers = draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=2))
    fields["headers"] = [f"{name}: {value}" if value else name for name, value in headers] or None
    return PortRuleHTTP.model_validate(fields)


def _envoy_rule(rule: PortRuleHTTP) -> dict[str, object]:
    """The NPDS form of one HTTP rule, as the envoy target writes it."""
    from compiler.targets.envoy.l7rules import http_rule

    return http_rule(rule)


@settings(max_examples=120, deadline=None)
@given(rules=st.lists(http_rules(), min_size=1, max_size=2),
       method=st.sampled_from(["GET", "a", "ab"]), path=st.text(alphabet="ab/.-_0", max_size=4),
       headers=st.lists(st.tuples(_NAMES, _VALUES), max_size=3))
def test_http_formulas_decide_requests_as_the_matchers_do(rules: list[PortRuleHTTP], method: str, path: str,
                                                          headers: list[tuple[str, str]]) -> None:
    request = HttpRequest(method, path, "h", tuple(headers))
    envoy_rules = [{"http_rules": {"http_rules": [_envoy_rule(r) for r in rules]}}]
    space = space_for("http", envoy_rules, [rules])
    assert isinstance(space, HttpSpace)
    solver = z3.Solver()
    solver.add(space.method == z3.StringVal(request.method), space.path == z3.StringVal(request.path),
               space.host == z3.StringVal(request.host))
    for name, (count, values) in space.headers.items():
        given_values = [v for n, v in request.headers if n.lower() == name]
        if len(given_values) > len(values):
            return  # more values than the space holds: outside what this check constructs
        solver.add(count == len(given_values))
        solver.add(*(values[i] == z3.StringVal(v) for i, v in enumerate(given_values)))
    for formula, expected in ((envoy_admits(envoy_rules, space),
                               any(_http_ok(_envoy_rule(r), request) for r in rules)),
                              (source_admits([rules], space), any(http_rule_matches(r, request) for r in rules))):
        solver.push()
        solver.add(formula != expected)
        assert solver.check() == z3.unsat, (rules, request, expected)
        solver.pop()
