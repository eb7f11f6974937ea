"""Loading: every input kind, multi-document files, Lists, directories, stdin, workloads, addresses."""

from __future__ import annotations

import io
import ipaddress
import textwrap
from pathlib import Path

import pytest

from compiler.inputs import load_inputs

NAMESPACE = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: web}}
"""

WORKLOADS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 3
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: web-sa
      containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: db}}
    spec: {containers: [{name: c, ports: [{containerPort: 5432, name: pg}]}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: shop}
spec:
  schedule: "0 * * * *"
  jobTemplate:
    spec:
      template:
        metadata: {labels: {app: report}}
        spec: {containers: [{name: c}], restartPolicy: Never}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: shop}
spec:
  template:
    metadata: {labels: {app: agent}}
    spec: {containers: [{name: c}]}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_workloads_become_endpoints_with_controller_labels(tmp_path: Path) -> None:
    inputs = load_inputs([write(tmp_path, "c.yaml", NAMESPACE + "---" + WORKLOADS)])
    keys = [ep.key for ep in inputs.cluster.endpoints]
    assert keys == ["shop/agent-0", "shop/db-0", "shop/db-1", "shop/report-0", "shop/web-0", "shop/web-1", "shop/web-2"]
    web = inputs.cluster.endpoint("shop/web-1")
    assert web is not None
    assert web.service_account == "web-sa"
    assert web.labels["app"] == "web" and "pod-template-hash" in web.labels
    assert web.named_port("http", "TCP") == 8080
    db = inputs.cluster.endpoint("shop/db-1")
    assert db is not None and db.labels["statefulset.kubernetes.io/pod-name"] == "db-1"
    report = inputs.cluster.endpoint("shop/report-0")
    assert report is not None and "batch.kubernetes.io/job-name" in report.labels


def test_every_endpoint_gets_a_unique_address_inside_the_pod_cidr(tmp_path: Path) -> None:
    inputs = load_inputs([write(tmp_path, "c.yaml", WORKLOADS)], pod_cidrs=("10.9.0.0/24",))
    addresses = [ip for ep in inputs.cluster.endpoints for ip in ep.ips]
    assert len(addresses) == len(set(addresses)) == 7
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.9.0.0/24") for a in addresses)
    assert "10.9.0.1" not in addresses and "10.9.0.0" not in addresses


def test_addresses_are_stable_when_unrelated_pods_are_added(tmp_path: Path) -> None:
    before = load_inputs([write(tmp_path, "a.yaml", WORKLOADS)])
    extra = """
    apiVersion: v1
    kind: Pod
    metadata: {name: other, namespace: elsewhere}
    spec: {containers: [{name: c}]}
    """
    after = load_inputs([str(tmp_path / "a.yaml"), write(tmp_path, "b.yaml", extra)])
    old = {ep.key: ep.ips for ep in before.cluster.endpoints}
    new = {ep.key: ep.ips for ep in after.cluster.endpoints}
    assert all(new[k] == v for k, v in old.items())


def test_dual_stack_pod_cidrs_give_one_address_per_family(tmp_path: Path) -> None:
    inputs = load_inputs([write(tmp_path, "c.yaml", WORKLOADS)], pod_cidrs=("10.244.0.0/16", "fd00:10:244::/64"))
    for ep in inputs.cluster.endpoints:
        assert sorted(a.version for a in ep.addresses) == [4, 6]


def test_explicit_pod_ips_are_kept(tmp_path: Path) -> None:
    pod = """
    apiVersion: v1
    kind: Pod
    metadata: {name: a, namespace: x, labels: {pod: a}}
    spec: {containers: [{name: c}]}
    status: {podIP: 10.1.2.3, podIPs: [{ip: 10.1.2.3}, {ip: "fd00::3"}]}
    """
    inputs = load_inputs([write(tmp_path, "p.yaml", pod)])
    assert inputs.cluster.endpoints[0].ips == ("10.1.2.3", "fd00::3")


def test_list_kinds_directories_and_multi_document_files_load_alike(tmp_path: Path) -> None:
    as_list = """
    apiVersion: v1
    kind: List
    items:
    - apiVersion: v1
      kind: Pod
      metadata: {name: a, namespace: x}
      spec: {containers: [{name: c}]}
    - apiVersion: v1
      kind: PodList
      items:
      - apiVersion: v1
        kind: Pod
        metadata: {name: b, namespace: x}
        spec: {containers: [{name: c}]}
    """
    write(tmp_path, "dir/sub/list.yaml", as_list)
    write(tmp_path, "dir/ns.yml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n")
    write(tmp_path, "dir/notes.txt", "not yaml")
    inputs = load_inputs([str(tmp_path / "dir")])
    assert [ep.key for ep in inputs.cluster.endpoints] == ["x/a", "x/b"]
    assert not inputs.cluster.namespaces["x"].implicit


def test_stdin_is_read_with_dash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: c}]}\n"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    inputs = load_inputs(["-"])
    assert [ep.key for ep in inputs.cluster.endpoints] == ["default/a"]


def test_objects_remember_file_and_line(tmp_path: Path) -> None:
    policy = """
    # comment
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: p, namespace: x}
    spec:
      podSelector: {}
      ingress:
      - from:
        - podSelector: {matchLabels: {a: b}}
    """
    path = write(tmp_path, "p.yaml", policy)
    (np,) = load_inputs([path]).policies
    assert str(np.src) == f"{path}:3"
    assert np.spec.ingress is not None
    assert np.spec.ingress[0].src.line == 9
    assert np.spec.line_of("ingress").line == 8


def test_namespaces_always_carry_their_name_label(tmp_path: Path) -> None:
    inputs = load_inputs([write(tmp_path, "n.yaml", NAMESPACE + "---" + WORKLOADS)])
    assert inputs.cluster.namespace_labels("shop") == {"team": "web", "kubernetes.io/metadata.name": "shop"}
    assert inputs.cluster.namespace_labels("nowhere") == {"kubernetes.io/metadata.name": "nowhere"}


def test_irrelevant_kinds_are_counted_not_refused(tmp_path: Path) -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n"
    inputs = load_inputs([write(tmp_path, "cm.yaml", text)])
    assert inputs.skipped_kinds == (("ConfigMap", 1),)


def test_policy_types_default_per_the_api_server(tmp_path: Path) -> None:
    text = """
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: a, namespace: x}
    spec: {podSelector: {}, egress: []}
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: b, namespace: x}
    spec: {podSelector: {}, egress: [{}]}
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: c, namespace: x}
    spec: {podSelector: {}, policyTypes: [Egress]}
    """
    a, b, c = load_inputs([write(tmp_path, "p.yaml", text)]).policies
    assert a.policy_types == ("Ingress",)  # type: ignore[union-attr]
    assert b.policy_types == ("Ingress", "Egress")  # type: ignore[union-attr]
    assert c.policy_types == ("Egress",)  # type: ignore[union-attr]
