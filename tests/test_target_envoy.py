"""The Envoy target: NPDS shape (golden), listeners on the shared proxy ports, determinism,
endpoint IDs, and inexpressible peers reported with their rule (reference/cilium.md §5)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from compiler.flow import Direction, Profile
from compiler.inputs import Inputs, load_inputs
from compiler.ir.build import build_ir
from compiler.targets import TargetError, compile_targets
from compiler.targets.ebpf.endpoint_ids import ENDPOINT_ID_MAX
from compiler.targets.envoy import EnvoyTarget
from compiler.targets.proxyports import proxy_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
GOLDEN = Path(__file__).resolve().parent / "golden" / "envoy"

SMALL = """
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: broker, namespace: shop, labels: {app: broker}}
spec: {containers: [{name: c, ports: [{containerPort: 9092}]}]}
status: {podIP: 10.244.1.12}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {containers: [{name: c, ports: [{containerPort: 53, protocol: UDP}]}]}
status: {podIP: 10.244.1.53}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: api-l7, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts:
    - ports: [{port: http, protocol: TCP}]
      rules:
        http:
        - {method: GET, path: "/v1/.*", headers: ["X-Token: yes", "X-Trace"]}
        - {method: POST, host: 'api\\.shop', headerMatches: [{name: X-Debug, value: "1", mismatch: LOG}]}
  - fromCIDR: [192.0.2.0/24]
    toPorts: [{ports: [{port: "8000", endPort: 8100, protocol: TCP}]}]
  ingressDeny:
  - fromEndpoints: [{matchLabels: {app: broker}}]
  egress:
  - toEndpoints: [{matchLabels: {app: broker}}]
    toPorts:
    - ports: [{port: "9092", protocol: TCP}]
      rules:
        kafka: [{role: produce, topic: orders}, {apiKey: fetch, apiVersion: "4", clientID: cli}]
  - toEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: kube-system}}]
    toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules:
        dns: [{matchPattern: "*.shop.svc.cluster.local"}, {matchName: Example.COM}]
"""


def load(tmp_path: Path, text: str, name: str = "in.yaml") -> Inputs:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_inputs([str(path)])


def emit(inputs: Inputs, profile: Profile = Profile.CILIUM) -> dict[str, str]:
    """The envoy target's files, failing the test on any reported problem."""
    target = EnvoyTarget(build_ir(inputs, profile))
    files = target.emit()
    assert not target.problems, "\n".join(map(str, target.problems))
    return files


def test_small_policy_matches_the_golden_artifacts(tmp_path: Path) -> None:
    files = emit(load(tmp_path, SMALL))
    if not GOLDEN.exists():  # writes the golden files once, for review; the test fails until they exist
        for rel, text in files.items():
            (GOLDEN / rel).parent.mkdir(parents=True, exist_ok=True)
            (GOLDEN / rel).write_text(text)
        pytest.fail(f"golden files written to {GOLDEN}; review them and rerun")
    expected = {str(p.relative_to(GOLDEN)): p.read_text() for p in sorted(GOLDEN.rglob("*.json"))}
    assert files == expected


def test_npds_resource_has_cilium_shape_and_translated_rules(tmp_path: Path) -> None:
    files = emit(load(tmp_path, SMALL))
    npds = json.loads(files["npds/shop/api.json"])
    assert npds["endpoint_ips"] == ["10.244.1.11"] and npds["conntrack_map_name"] == "global"
    ingress = {(p.get("port", 0), p.get("end_port", 0)): p for p in npds["ingress_per_port_policies"]}
    # the named port resolves against the endpoint itself; the L7 rule names its provenance
    (http,) = ingress[(8080, 0)]["rules"]
    assert http["name"] == "CiliumNetworkPolicy shop/api-l7 spec.ingress[0]"
    by_method = {next(h["string_match"]["safe_regex"]["regex"] for h in r["headers"] if h["name"] == ":method"): r
                 for r in http["http_rules"]["http_rules"]}
    get, post = by_method["GET"], by_method["POST"]
    assert {"name": ":path", "string_match": {"safe_regex": {"regex": "/v1/.*"}}} in get["headers"]
    assert {"name": "X-Token", "string_match": {"exact": "yes"}} in get["headers"]
    assert {"name": "X-Trace", "present_match": True} in get["headers"]
    assert {"name": ":authority", "string_match": {"safe_regex": {"regex": r"api\.shop"}}} in post["headers"]
    assert post["header_matches"] == [{"mismatch_action": "CONTINUE_ON_MISMATCH", "name": "X-Debug", "value": "1"}]
    # endPort range, and a deny on every port (port 0 is omitted, §5.2)
    assert ingress[(8000, 8100)]["rules"][0]["remote_policies"]  # the CIDR identity
    deny = [r for r in ingress[(0, 0)]["rules"] if r.get("deny")]
    assert len(deny) == 1 and deny[0]["name"].endswith("spec.ingressDeny[0]")
    # egress Kafka: roles expanded to API keys, apiVersion absent = -1
    egress = {p.get("port", 0): p for p in npds["egress_per_port_policies"]}
    (kafka,) = egress[9092]["rules"]
    assert kafka["l7_proto"] == "kafka"
    assert sorted(kafka["kafka_rules"]["kafka_rules"], key=lambda r: r["api_version"]) == [
        {"api_keys": [0, 3, 18], "api_version": -1, "topic": "orders"},
        {"api_keys": [1], "api_version": 4, "client_id": "cli"},
    ]
    # DNS is the DNS proxy's (not in NPDS as L7): UDP and TCP, names with Cilium's trailing dot
    dns = json.loads(files["dns/shop/api.json"])
    assert dns["proxy_port"] == proxy_port("dns", Direction.EGRESS) and dns["reject_response_code"] == "REFUSED"
    protos = {p["protocol"] for p in dns["egress_per_port_policies"] if p.get("port") == 53}
    assert protos == {"TCP", "UDP", "SCTP"}
    rule = next(p for p in dns["egress_per_port_policies"] if p.get("port") == 53)["rules"][0]
    assert rule["dns_rules"] == [{"match_name": "example.com."}, {"match_pattern": "*.shop.svc.cluster.local."}]
    assert "dns_rules" not in json.dumps(egress[53])


def test_unenforced_direction_is_one_allow_all_tcp_port_policy(tmp_path: Path) -> None:
    files = emit(load(tmp_path, SMALL.replace("  ingressDeny:\n  - fromEndpoints: [{matchLabels: {app: broker}}]\n", "")
                      .split("  egress:\n")[0]))
    npds = json.loads(files["npds/shop/api.json"])
    assert npds["egress_per_port_policies"] == [{"protocol": "TCP"}]


def test_listeners_use_the_shared_proxy_ports(tmp_path: Path) -> None:
    files = emit(load(tmp_path, SMALL))
    lds = json.loads(files["listeners.json"])
    assert lds["type_url"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
    ports = {l_["name"]: l_["address"]["socket_address"]["port_value"] for l_ in lds["resources"]}
    assert ports == {"cilium-http-ingress": proxy_port("http", Direction.INGRESS),
                     "cilium-proxylib-egress": proxy_port("kafka", Direction.EGRESS)}
    index = json.loads(files["index.json"])
    (api,) = index["endpoints"]
    assert {(r["parser"], r["proxy_port"]) for r in api["redirects"]} == {
        ("http", 10002), ("kafka", 10003), ("dns", 10000)}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_compiling_an_example_twice_gives_identical_bytes(example: Path, tmp_path: Path) -> None:
    inputs = load_inputs([str(example)])
    ir = build_ir(inputs)
    first = compile_targets(inputs, ir, ["envoy"], tmp_path / "a")
    second = compile_targets(load_inputs([str(example)]), build_ir(load_inputs([str(example)])), ["envoy"],
                             tmp_path / "b")
    assert first == second
    for rel in first["envoy"]:
        assert (tmp_path / "a" / "envoy" / rel).read_bytes() == (tmp_path / "b" / "envoy" / rel).read_bytes()


def test_policy_order_does_not_change_the_artifacts(tmp_path: Path) -> None:
    cluster, policy = SMALL.split("---\napiVersion: cilium.io/v2\n")
    ingress, egress = policy.split("  egress:\n")
    split = ["apiVersion: cilium.io/v2\n" + ingress,
             "apiVersion: cilium.io/v2\n" + ingress.replace("name: api-l7", "name: api-out").split("  ingress:\n")[0]
             + "  egress:\n" + egress]
    forward = emit(load(tmp_path, cluster + "---\n" + "---\n".join(split), "a.yaml"))
    backward = emit(load(tmp_path, cluster + "---\n" + "---\n".join(split[::-1]), "b.yaml"))
    assert forward == backward
    assert "api-out spec.egress[0]" in forward["npds/shop/api.json"]


# --- endpoint IDs ------------------------------------------------------------------------------

def test_endpoint_ids_are_the_ebpf_targets(tmp_path: Path) -> None:
    """NPDS ``endpoint_id`` must name the same endpoint as ``cilium_policy_v2_<EPID>``."""
    from compiler.targets.ebpf.target import EbpfTarget

    ir = build_ir(load(tmp_path, SMALL))
    ebpf = EbpfTarget(ir)
    ebpf.emit()
    index = json.loads(emit(load(tmp_path, SMALL))["index.json"])
    assert index["endpoints"] and all(e["endpoint_id"] == ebpf.endpoint_ids[e["endpoint"]] for e in index["endpoints"])
    assert all(1 <= n <= ENDPOINT_ID_MAX for n in ebpf.endpoint_ids.values())


# --- what cannot be expressed ----------------------------------------------------------------

K8S_PARTIAL_CIDR = SMALL.split("---\napiVersion: cilium.io/v2")[0] + """
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: partial, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromCIDR: [10.244.1.10/32]
    toPorts:
    - ports: [{port: "8080", protocol: TCP}]
      rules: {http: [{method: GET}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web2, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.1.20}
"""


def test_k8s_cidr_holding_part_of_an_identity_is_reported_with_its_rule(tmp_path: Path) -> None:
    inputs = load(tmp_path, K8S_PARTIAL_CIDR)
    emit(inputs, Profile.CILIUM)  # cilium: CIDRs never match pods, so identities suffice
    ir = build_ir(inputs, Profile.K8S)
    with pytest.raises(TargetError) as err:
        compile_targets(inputs, ir, ["envoy"], tmp_path / "out")
    (problem,) = err.value.problems
    assert problem.rule is not None and problem.rule.path == "spec.ingress[0]" and problem.rule.line > 0
    assert problem.endpoint == "shop/api" and "some but not all" in problem.message
    assert not (tmp_path / "out" / "envoy").exists()
