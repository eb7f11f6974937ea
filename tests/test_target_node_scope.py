"""``compile --node``: per-node policy maps and NPDS, as one Cilium agent holds them.

A node holds the maps of its own endpoints only; the ipcache (every address's identity) stays
cluster-wide. So a node-scoped compile must give each local endpoint exactly the map the
whole-cluster compile gives it, and the node's datapath must decide a flow's local sides as the
whole-cluster datapath does, leaving remote endpoints' sides to their own nodes.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.scale import Scale, generate, node_name, write
from compiler.flow import Flow, Protocol
from compiler.inputs import Inputs, load_inputs
from compiler.ir.build import build_ir
from compiler.targets import TargetOptions, emit_targets
from verifier.simulate.ebpf import EbpfArtifacts, EbpfSimulator

ROOT = Path(__file__).resolve().parent.parent
SCALE = Scale(pods=240, namespaces=6, policies=40, pods_per_node=60)  # four nodes
NODE = node_name(1)


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write(generate(SCALE), tmp_path_factory.mktemp("scheduled"))


@pytest.fixture(scope="module")
def inputs(scheduled: list[Path]) -> Inputs:
    return load_inputs([str(p) for p in scheduled])


@pytest.fixture(scope="module")
def whole(inputs: Inputs) -> dict[str, dict[str, str]]:
    return emit_targets(build_ir(inputs), ["ebpf", "envoy"])[0]


@pytest.fixture(scope="module")
def scoped(inputs: Inputs) -> dict[str, dict[str, str]]:
    return emit_targets(build_ir(inputs), ["ebpf", "envoy"], TargetOptions(node=NODE))[0]


def _maps_by_endpoint(files: dict[str, str]) -> dict[str, str]:
    return {f"{e['namespace']}/{e['name']}": files[e["policy_map"] + ".json"]
            for e in json.loads(files["endpoints.json"])}


def test_scheduled_pods_make_the_same_cluster_as_the_workloads(tmp_path: Path, inputs: Inputs) -> None:
    unscheduled = load_inputs([str(p) for p in write(generate(Scale(240, 6, 40)), tmp_path)])
    ours = {ep.key: (dict(ep.labels), ep.ips, ep.ports) for ep in inputs.cluster.endpoints}
    theirs = {ep.key: (dict(ep.labels), ep.ips, ep.ports) for ep in unscheduled.cluster.endpoints}
    assert ours == theirs
    nodes = [ep.node for ep in inputs.cluster.endpoints]
    assert sorted(set(nodes)) == [node_name(i) for i in range(4)]
    assert all(nodes.count(node_name(i)) == 60 for i in range(4))
    assert {ep.node for ep in unscheduled.cluster.endpoints} == {None}


def test_a_node_gets_the_maps_of_its_endpoints_and_the_whole_ipcache(
        inputs: Inputs, whole: dict[str, dict[str, str]], scoped: dict[str, dict[str, str]]) -> None:
    local = {ep.key for ep in inputs.cluster.endpoints if ep.node == NODE}
    mine, all_maps = _maps_by_endpoint(scoped["ebpf"]), _maps_by_endpoint(whole["ebpf"])
    assert set(mine) == local and len(all_maps) == 240
    assert all(mine[key] == all_maps[key] for key in local)
    assert scoped["ebpf"]["ipcache.json"] == whole["ebpf"]["ipcache.json"]
    summary = json.loads(scoped["ebpf"]["summary.json"])
    assert summary["node"] == NODE and len(summary["endpoints"]) == 60
    assert "node" not in json.loads(whole["ebpf"]["summary.json"])
    ids = [e["id"] for e in json.loads(scoped["ebpf"]["endpoints.json"])]
    assert len(set(ids)) == len(ids) and all(1 <= i <= 4095 for i in ids)  # the node's own ID space


def test_the_node_decides_its_own_sides_as_the_whole_cluster_does(
        inputs: Inputs, whole: dict[str, dict[str, str]], scoped: dict[str, dict[str, str]]) -> None:
    full, node = EbpfSimulator(EbpfArtifacts(whole["ebpf"])), EbpfSimulator(EbpfArtifacts(scoped["ebpf"]))
    endpoints = sorted(inputs.cluster.endpoints, key=lambda e: e.key)
    local = [ep for ep in endpoints if ep.node == NODE]
    remote = [ep for ep in endpoints if ep.node != NODE][::7]
    world = ipaddress.ip_address("203.0.113.9")
    checked = 0
    for a in local:
        for b in [*local[::5], *remote]:
            for port, proto in ((8080, Protocol.TCP), (5432, Protocol.TCP), (53, Protocol.UDP)):
                for src, dst, src_local, dst_local in ((a.addresses[0], b.addresses[0], True, b.node == NODE),
                                                       (b.addresses[0], a.addresses[0], b.node == NODE, True),
                                                       (world, a.addresses[0], False, True)):
                    got, want = node.evaluate(Flow(src, dst, proto, port)), full.evaluate(Flow(src, dst, proto, port))
                    assert (got.egress is not None) == src_local and (got.ingress is not None) == dst_local
                    if src_local:  # endpoint IDs are per node: the rest must be the same
                        assert got.egress is not None and want.egress is not None
                        assert replace(got.egress, endpoint_id=0) == replace(want.egress, endpoint_id=0)
                    if dst_local:
                        assert got.ingress is not None and want.ingress is not None
                        assert replace(got.ingress, endpoint_id=0) == replace(want.ingress, endpoint_id=0)
                    checked += 1
    assert checked > 1000


def test_envoy_holds_the_npds_of_the_node_endpoints_only(
        inputs: Inputs, whole: dict[str, dict[str, str]], scoped: dict[str, dict[str, str]]) -> None:
    local = {ep.key for ep in inputs.cluster.endpoints if ep.node == NODE}
    index = json.loads(scoped["envoy"]["index.json"])
    full = {e["endpoint"]: e for e in json.loads(whole["envoy"]["index.json"])["endpoints"]}
    assert index["node"] == NODE and index["endpoints"]
    assert {e["endpoint"] for e in index["endpoints"]} == {k for k in full if k in local}
    for entry in index["endpoints"]:
        assert entry["redirects"] == full[entry["endpoint"]]["redirects"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "compiler.cli", *args], capture_output=True, text=True, cwd=ROOT)


def test_cli_compiles_one_node_and_refuses_what_has_no_node_form(scheduled: list[Path], tmp_path: Path) -> None:
    files = [a for p in scheduled for a in ("-f", str(p))]
    out = tmp_path / "out"
    done = _cli("compile", *files, "-o", str(out), "--node", NODE)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["ebpf", "envoy", "manifest.json"]  # no iptables
    typo = _cli("compile", *files, "-o", str(tmp_path / "typo"), "--node", "node-9")
    assert typo.returncode == 2 and "no pod has spec.nodeName 'node-9'" in typo.stderr
    assert "node-0000, node-0001, node-0002, node-0003" in typo.stderr and not (tmp_path / "typo").exists()
    iptables = _cli("compile", *files, "-o", str(tmp_path / "ipt"), "--node", NODE, "--target", "iptables")
    assert iptables.returncode == 2 and "iptables target has no per-node form" in iptables.stderr
    matrix = _cli("matrix", *files, "--port", "8080/TCP", "--target", "ebpf", "--artifacts", str(out))
    assert matrix.returncode == 2 and f"compiled with --node {NODE}" in matrix.stderr
    assert "Traceback" not in typo.stderr + iptables.stderr + matrix.stderr


def test_cli_node_needs_scheduled_pods(tmp_path: Path) -> None:
    done = _cli("compile", "-f", str(ROOT / "examples" / "shop"), "-o", str(tmp_path), "--node", "aks-1")
    assert done.returncode == 2 and "no pod in the inputs has spec.nodeName" in done.stderr
