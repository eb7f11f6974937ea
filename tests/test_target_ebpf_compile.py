"""The eBPF target end to end: files, determinism, stable endpoint IDs, E2BIG overflow, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.flow import Direction, Profile
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.source import InputErrors
from compiler.targets import TargetError, TargetOptions, compile_targets
from compiler.targets.ebpf.endpoint_ids import allocate_endpoint_ids
from compiler.targets.proxyports import proxy_port

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"
TENANT = ROOT / "examples" / "multi-tenant"


def _compile(path: Path, out: Path, profile: Profile = Profile.CILIUM,
             options: TargetOptions | None = None) -> dict[str, str]:
    inputs = load_inputs([str(path)])
    return compile_targets(inputs, build_ir(inputs, profile), ["ebpf"], out, options)["ebpf"]


def test_writes_endpoints_ipcache_one_map_per_endpoint_policy_table_and_summary(tmp_path: Path) -> None:
    files = _compile(SHOP, tmp_path)
    endpoints = json.loads((tmp_path / "ebpf" / "endpoints.json").read_text())
    assert endpoints and {e["policy_map"] + ".json" for e in endpoints} <= set(files)
    for ep in endpoints:
        assert ep["policy_map"] == f"cilium_policy_v2_{ep['id']:05d}" and 1 <= ep["id"] <= 4095
        assert set(ep) == {"id", "namespace", "name", "ips", "identity", "policy_map", "ingress_enforced",
                           "egress_enforced"}
        dump = json.loads(files[ep["policy_map"] + ".json"])
        assert all(len(e["key"]) == 12 and len(e["value"]) == 8 and "formatted" in e for e in dump)
    ipcache = json.loads(files["ipcache.json"])
    assert all(len(e["key"]) == 24 and len(e["value"]) == 24 for e in ipcache)
    ips = {e["formatted"]["key"]["ip"]: e["formatted"]["value"]["sec_identity"] for e in ipcache}
    assert ips["10.244.0.1"] == 1 and ips["0.0.0.0"] == 9 and ips["::"] == 10
    assert all(ips[ip] == ep["identity"] for ep in endpoints for ip in ep["ips"])
    summary = json.loads(files["summary.json"])
    assert summary["policy_map_max"] == 16384
    assert [s["entries"] for s in summary["endpoints"]] == [
        len(json.loads(files[s["policy_map"] + ".json"])) for s in summary["endpoints"]]
    text = files["policy.txt"]
    tables = text.count("POLICY  DIRECTION  LABELS (source:key[=value])")
    assert tables + text.count("same entries as endpoint ") == len(endpoints) == text.count("\nEndpoint ") + 1
    assert tables == len({(ep["identity"], files[ep["policy_map"] + ".json"]) for ep in endpoints})


@pytest.mark.parametrize("profile", list(Profile))
def test_output_is_byte_identical_across_runs(tmp_path: Path, profile: Profile) -> None:
    first = _compile(TENANT, tmp_path / "a", profile)
    second = _compile(TENANT, tmp_path / "b", profile)
    assert first == second
    assert (tmp_path / "a" / "manifest.json").read_bytes() == (tmp_path / "b" / "manifest.json").read_bytes()


def test_endpoint_ids_hash_names_and_survive_unrelated_endpoints() -> None:
    keys = [f"ns/pod-{i}" for i in range(300)]
    ids = allocate_endpoint_ids(keys)
    assert len(set(ids.values())) == 300 and all(1 <= n <= 4095 for n in ids.values())
    more = allocate_endpoint_ids([*keys, "other/new-pod", "other/new-pod-2"])
    moved = [k for k in keys if ids[k] != more[k]]
    assert len(moved) <= 2  # only an endpoint whose slot a new one really hashes onto can move
    assert allocate_endpoint_ids(list(reversed(keys))) == ids
    with pytest.raises(ValueError):
        allocate_endpoint_ids(keys, id_max=100)


def test_policy_map_overflow_is_reported_with_the_policies_responsible(tmp_path: Path) -> None:
    with pytest.raises(TargetError) as err:
        _compile(TENANT, tmp_path, options=TargetOptions(policy_map_max=8))
    text = str(err.value)
    assert "E2BIG" in text and "more than --policy-map-max 8" in text
    assert "cilium_policy_v2_" in text and "CiliumClusterwideNetworkPolicy tenant-baseline" in text
    assert ".yaml:" in text  # the rule with the most entries, by file:line
    assert not (tmp_path / "ebpf").exists()  # nothing written


def test_allow_overflow_writes_the_maps_and_flags_them_in_the_summary(tmp_path: Path) -> None:
    files = _compile(TENANT, tmp_path, options=TargetOptions(policy_map_max=8, allow_overflow=True))
    summary = json.loads(files["summary.json"])
    assert summary["overflowing_endpoints"] > 0
    assert all(s["overflow"] == (s["entries"] > 8) for s in summary["endpoints"])


def test_dns_redirect_on_ingress_has_no_proxy_port_and_is_refused_with_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("""
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.1.10}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: dns-in, namespace: default}
spec:
  endpointSelector: {}
  ingress:
    - toPorts: [{ports: [{port: "53", protocol: UDP}], rules: {dns: [{matchPattern: "*"}]}}]
""")
    with pytest.raises(ValueError, match="egress-only"):
        proxy_port("dns", Direction.INGRESS)  # the target reports it through unsupported() if it gets there
    with pytest.raises(InputErrors, match=r"c.yaml:14: .*DNS rules are only allowed on egress"):
        load_inputs([str(tmp_path / "c.yaml")])


def test_cli_compile_target_ebpf(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "compiler.cli", "compile", "-f", str(SHOP), "-o", str(tmp_path),
                          "--target", "ebpf"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "ebpf" / "policy.txt").exists()
    small = subprocess.run([sys.executable, "-m", "compiler.cli", "compile", "-f", str(SHOP), "-o",
                            str(tmp_path / "x"), "--target", "ebpf", "--policy-map-max", "3"],
                           capture_output=True, text=True, cwd=ROOT)
    assert small.returncode != 0 and "E2BIG" in small.stderr + small.stdout


TWINS = """
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: default, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 80}]}]}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: default, labels: {app: web}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.244.1.11}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: default}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
    - from: [{ipBlock: {cidr: 10.244.1.10/32}}]
  egress:
    - ports: [{port: http}]
"""


def test_k8s_profile_refuses_what_one_identity_cannot_express_naming_rule_and_endpoint(tmp_path: Path) -> None:
    (tmp_path / "twins.yaml").write_text(TWINS)
    inputs = load_inputs([str(tmp_path / "twins.yaml")])
    with pytest.raises(TargetError) as err:
        compile_targets(inputs, build_ir(inputs, Profile.K8S), ["ebpf"], tmp_path / "out")
    problems = err.value.problems
    ipblock = [p for p in problems if "whole identity" in p.message]
    named = [p for p in problems if "cannot tell them apart" in p.message]
    assert ipblock and all(p.rule is not None and p.rule.line == 21 for p in ipblock)
    assert "CIDR 10.244.1.10/32 contains 1 of the 2 addresses" in ipblock[0].message
    assert named and "means 80, 8080 on the endpoints" in named[0].message
    assert {p.endpoint for p in problems} == {"default/web-1", "default/web-2"}
    # the cilium profile has neither problem: CIDRs never match pods, named ports resolve cluster-wide
    compile_targets(inputs, build_ir(inputs, Profile.CILIUM), ["ebpf"], tmp_path / "out")
