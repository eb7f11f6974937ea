"""ClusterIP Services: frontends and backends (compiler/services.py) and kube-proxy's nat table
(compiler/targets/iptables/services.py): 2 + 3E rules per service port (reference/iptables.md §4.2),
kube-proxy's chain names and probabilities, read back by the services reader, and loaded by a kernel
that prints back the same rules.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from compiler.flow import Profile
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.services import DEFAULT_SERVICE_CIDR, frontends
from compiler.targets import emit_targets
from compiler.targets.iptables.services import build_nat, chain_suffix, service_rule_count
from verifier.artifacts import ArtifactError, read_iptables, read_services

ROOT = Path(__file__).resolve().parent.parent

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: a}
spec:
  replicas: {replicas}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: c, image: i, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: a}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: fixed, namespace: a}
spec:
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: a}
spec:
  selector: {app: nothing}
  ports: [{port: 1}]
"""


def _cluster(tmp_path: Path, replicas: int) -> Path:
    path = tmp_path / f"cluster-{replicas}.yaml"
    path.write_text(CLUSTER.replace("{replicas}", str(replicas)))
    return path


@pytest.mark.parametrize("replicas", [1, 2, 10])
def test_each_service_port_costs_two_plus_three_rules_per_backend(tmp_path: Path, replicas: int) -> None:
    cluster = load_inputs([str(_cluster(tmp_path, replicas))]).cluster
    found = {f.service: f for f in frontends(cluster)}
    web, fixed, empty = found["a/web"], found["a/fixed"], found["a/empty"]
    assert len(web.backends) == replicas and {b.port for b in web.backends} == {8080}  # targetPort by name
    assert {b.port for b in fixed.backends} == {9000} and str(fixed.address) == "10.96.0.10"
    assert not empty.backends
    nat = build_nat(frontends(cluster), 4, cluster.pod_cidrs)
    base = 5  # KUBE-MARK-MASQ 1, KUBE-POSTROUTING 3, the NodePorts rule (kube-proxy's 0-service count)
    assert service_rule_count(nat) == base + 2 * (2 + 3 * replicas)  # the backend-less port gets none


def test_allocated_cluster_ips_are_stable_and_inside_the_service_cidr(tmp_path: Path) -> None:
    one = {f.service: f.address for f in frontends(load_inputs([str(_cluster(tmp_path, 1))]).cluster)}
    two = {f.service: f.address for f in frontends(load_inputs([str(_cluster(tmp_path, 3))]).cluster)}
    assert one == two
    assert all(a in ipaddress.ip_network(DEFAULT_SERVICE_CIDR) for a in one.values())


def test_chain_names_and_probabilities_are_kube_proxys(tmp_path: Path) -> None:
    cluster = load_inputs([str(_cluster(tmp_path, 3))]).cluster
    text = "".join(t.render() for t in [build_nat(frontends(cluster), 4, cluster.pod_cidrs)])
    assert f"KUBE-SVC-{chain_suffix('a/web:http', 'tcp')}" in text
    assert len(chain_suffix("x")) == 16
    probabilities = [line.split("--probability ")[1].split()[0] for line in text.splitlines()
                     if "--probability" in line]
    assert probabilities[:2] == ["0.3333333333", "0.5000000000"]  # 1/(n-i), kube-proxy's %0.10f


def test_services_file_reads_back_and_the_policy_reader_refuses_nat() -> None:
    inputs = load_inputs([str(ROOT / "examples" / "shop")])
    files = emit_targets(build_ir(inputs, Profile.CILIUM), ["iptables"])[0]["iptables"]
    ruleset = read_services(files["services.v4"], "iptables/services.v4")
    assert set(ruleset.tables) == {"nat"}
    with pytest.raises(ArtifactError, match="nat"):
        read_iptables(files["services.v4"], "iptables/services.v4")
    with pytest.raises(ArtifactError, match=r"\*nat \(kube-proxy"):
        read_services(files["rules.v4"], "iptables/rules.v4")


@pytest.mark.kernel
def test_the_kernel_loads_the_services_and_prints_them_back() -> None:
    from verifier.kernel import kernel_unavailable_reason

    reason = kernel_unavailable_reason(["iptables-restore", "iptables-save", "ip"])
    if reason:
        pytest.skip(reason)
    inputs = load_inputs([str(ROOT / "examples" / "shop")])
    text = emit_targets(build_ir(inputs, Profile.CILIUM), ["iptables"])[0]["iptables"]["services.v4"]
    netns = f"npc-svc-{uuid.uuid4().hex[:8]}"
    ip = shutil.which("ip") or "ip"
    subprocess.run([ip, "netns", "add", netns], check=True)
    try:
        subprocess.run([ip, "netns", "exec", netns, "iptables-restore", "--noflush"], input=text, text=True,
                       check=True)
        saved = subprocess.run([ip, "netns", "exec", netns, "iptables-save", "-t", "nat"], capture_output=True,
                               text=True, check=True).stdout
    finally:
        subprocess.run([ip, "netns", "del", netns], check=False)
    assert read_services(saved, "iptables-save") == read_services(text, "services.v4").with_builtin_chains()
