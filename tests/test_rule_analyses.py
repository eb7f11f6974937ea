"""The proof-backed rule analyses (verifier/proofs/rule_redundancy.py, deny_overrides.py).

A rule proved redundant must be unnecessary on every flow the reference evaluator decides: where
it matches, another rule gives the same verdict (and no proxy is in play for an allow). Checked on
random policy sets under both profiles, plus hand-made cases for each kind of answer.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from compiler.flow import Direction, Profile
from compiler.inputs import Inputs, load_inputs
from compiler.source import InputError
from tests.strategies import GeneratedCase, cases
from verifier.proofs.deny_overrides import deny_overrides
from verifier.proofs.rule_redundancy import redundant_rules
from verifier.simulate.source import ReferenceEvaluator

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: app}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: app, labels: {app: web}}
spec: {containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec: {containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: app, labels: {app: db}}
spec: {containers: [{name: c, image: i}]}
"""


def _load(tmp_path: Path, policies: str) -> Inputs:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    (tmp_path / "policies.yaml").write_text(textwrap.dedent(policies))
    return load_inputs([str(tmp_path)])


def _cnp(name: str, body: str) -> str:
    head = f"apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: app}}\nspec:\n"
    return head + textwrap.indent(textwrap.dedent(body).strip(), "  ") + "\n---\n"


#: every peer may reach web on 8000-8999
WIDE = _cnp("wide", """
    endpointSelector: {matchLabels: {app: web}}
    ingress:
      - fromEndpoints: [{}]
        toPorts: [{ports: [{port: "8000", endPort: 8999, protocol: TCP}]}]
""")


def test_a_rule_inside_a_wider_one_is_redundant_and_names_it(tmp_path: Path) -> None:
    inputs = _load(tmp_path, WIDE + _cnp("narrow", """
        endpointSelector: {matchLabels: {app: web}}
        ingress:
          - fromEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
    """))
    result = redundant_rules(inputs, Profile.CILIUM)
    assert [(r.rule.ref.policy, [c.policy for c in r.covered_by]) for r in result.redundant] == [
        ("CiliumNetworkPolicy app/narrow", ["CiliumNetworkPolicy app/wide"])]


def test_a_rule_reaching_one_port_more_is_not_redundant(tmp_path: Path) -> None:
    inputs = _load(tmp_path, WIDE + _cnp("narrow", """
        endpointSelector: {matchLabels: {app: web}}
        ingress:
          - fromEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: "8999", endPort: 9000, protocol: TCP}]}]
    """))
    assert redundant_rules(inputs, Profile.CILIUM).redundant == ()


def test_an_l4_rule_next_to_an_l7_rule_is_never_called_redundant(tmp_path: Path) -> None:
    """It lets every request through the proxy the other rule sets up: removing it matters."""
    inputs = _load(tmp_path, _cnp("l7", """
        endpointSelector: {matchLabels: {app: web}}
        ingress:
          - fromEndpoints: [{}]
            toPorts: [{ports: [{port: "8080", protocol: TCP}], rules: {http: [{method: GET}]}}]
          - fromEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
    """))
    assert redundant_rules(inputs, Profile.CILIUM).redundant == ()


def test_a_deny_of_what_nothing_allows_is_redundant(tmp_path: Path) -> None:
    inputs = _load(tmp_path, _cnp("p", """
        endpointSelector: {matchLabels: {app: web}}
        ingress:
          - fromEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
        ingressDeny:
          - fromEndpoints: [{matchLabels: {app: db}}]
    """))
    result = redundant_rules(inputs, Profile.CILIUM)
    assert [r.rule.ref.path for r in result.redundant] == ["spec.ingressDeny[0]"]


def test_a_deny_overriding_another_policys_allow_comes_with_a_confirmed_flow(tmp_path: Path) -> None:
    inputs = _load(tmp_path, _cnp("allow", """
        endpointSelector: {matchLabels: {app: web}}
        ingress:
          - fromEndpoints: [{}]
            toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
    """) + _cnp("deny", """
        endpointSelector: {matchLabels: {app: web}}
        ingressDeny:
          - fromEndpoints: [{matchLabels: {app: db}}]
            toPorts: [{ports: [{port: "8000", endPort: 8100, protocol: TCP}]}]
    """) + _cnp("other-port", """
        endpointSelector: {matchLabels: {app: web}}
        ingress:
          - fromEndpoints: [{matchLabels: {app: db}}]
            toPorts: [{ports: [{port: "9000", protocol: TCP}]}]
    """))
    result = deny_overrides(inputs, Profile.CILIUM)
    assert [(o.deny.policy, o.allow.policy) for o in result.overrides] == [
        ("CiliumNetworkPolicy app/deny", "CiliumNetworkPolicy app/allow")]
    flow = result.overrides[0].flow
    assert (str(flow.src), str(flow.dst), flow.port) == (
        str(next(ep for ep in inputs.cluster.endpoints if ep.name == "db").addresses[0]),
        str(next(ep for ep in inputs.cluster.endpoints if ep.name == "web").addresses[0]),
        8080)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_a_redundant_rule_is_never_the_one_deciding_a_flow(case: GeneratedCase) -> None:
    for profile in Profile:
        try:
            result = redundant_rules(case.inputs, profile)
            ref = ReferenceEvaluator(case.inputs, profile)
        except InputError:
            continue
        redundant = {r.rule.ref: r.rule.deny for r in result.redundant}
        if not redundant:
            continue
        for flow in case.flows:
            for direction in Direction:
                try:
                    decision, _ = ref.evaluate_direction(flow, direction)
                except ValueError:
                    continue  # that side is not an endpoint
                for rule, deny in redundant.items():
                    if deny and rule in decision.deny_rules:
                        assert decision.deny_rules - {rule} or not decision.allow_rules, (rule, flow, case.yaml)
                    if not deny and rule in decision.allow_rules and not decision.deny_rules:
                        assert decision.allow_rules - {rule} and decision.redirect is None, (rule, flow, case.yaml)
