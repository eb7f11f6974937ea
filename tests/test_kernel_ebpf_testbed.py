"""Real packets through the TC datapath in the kernel testbed, compared with the IR evaluator.

The eBPF target's artifacts (``netpolc compile --target ebpf``, read back from files) are loaded
into ``policy.bpf.c`` attached to every endpoint's node-side veth; TCP/UDP probes between all
endpoints, and between endpoints and the host and a world namespace, must get through exactly
when ``compiler.ir.evaluate.IREvaluator`` says the flow is allowed (REDIRECTED counts as allowed:
the testbed has no Envoy, the datapath passes redirected flows and counts them).

One exception, by construction of the testbed and of real pods: a pod reaching its own address
stays on its loopback and never meets the node, so the diagonal is not compared (the IR applies
policy to it; see the report of this helper).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from ipaddress import ip_address
from pathlib import Path

import pytest

from compiler.flow import Flow, PortSpec, Profile, Protocol
from compiler.inputs import Inputs, load_inputs
from compiler.ir.build import build_ir
from compiler.ir.evaluate import IREvaluator, matrix
from compiler.ir.model import IR
from compiler.targets import compile_targets
from tests.conformance_cases import CASES, HERE, case_ports, load_case, load_model
from tests.test_kernel_testbed import make_cluster
from verifier.kernel import HOST, WORLD, Testbed, cleanup_stale, kernel_matrix, probe_flows
from verifier.kernel import bpf_layout as L
from verifier.kernel.bpf import BPFFS_ROOT, _is_mountpoint, ebpf_unavailable_reason
from verifier.kernel.load_ebpf import EbpfArtifacts, load_ebpf
from verifier.kernel.netns import list_namespaces

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if (p / "ports").exists())
#: A handful of conformance cases in the fast suite; all of them in the slow one.
QUICK_CASES = ("02-default-deny-all", "03-podselector-same-namespace")
TCP80, UDP53 = PortSpec(80, Protocol.TCP), PortSpec(53, Protocol.UDP)


@pytest.fixture(autouse=True)
def _need_ebpf() -> None:
    reason = ebpf_unavailable_reason()
    if reason:
        pytest.skip(reason)


def _ports(example: Path) -> list[PortSpec]:
    return [PortSpec.parse(p) for p in (example / "ports").read_text().split()]


def _compile(inputs: Inputs, profile: Profile, out: Path) -> IR:
    ir = build_ir(inputs, profile)
    compile_targets(inputs, ir, ["ebpf"], out)
    return ir


def matrix_differences(testbed: Testbed, ir: IR, ports: Sequence[PortSpec]) -> list[str]:
    """Endpoint pairs (not a pod to itself) where the kernel and the IR evaluator disagree."""
    got = kernel_matrix(testbed, ports, skip_unsupported=True)
    want = matrix(ir, [PortSpec.parse(p) for p in got])
    keys = list(testbed.topology.endpoints)
    out = []
    for port, rows in got.items():
        for src in keys:
            for dst in keys:
                if src == dst:
                    continue
                kernel, model = dst in rows[src], dst in want[port][src]
                if kernel != model:
                    out.append(f"{port} {src} -> {dst}: kernel {'allows' if kernel else 'drops'}, IR the opposite")
    return out


def edge_flows(testbed: Testbed, ports: Sequence[PortSpec]) -> list[Flow]:
    """Host <-> every endpoint and world <-> every endpoint, on every TCP/UDP port."""
    flows = []
    outside = [ip_address(testbed.site(HOST).addresses[0])]
    if testbed.topology.world is not None:
        outside += [ip_address(a) for a in testbed.site(WORLD).addresses]
    for site in testbed.topology.endpoints.values():
        if site.netns == testbed.node_netns:
            continue
        ep = ip_address(site.address(4) or site.addresses[0])
        for other in outside:
            if other.version != ep.version:
                continue
            for port in ports:
                if port.protocol in (Protocol.TCP, Protocol.UDP):
                    flows += [Flow(other, ep, port.protocol, port.port), Flow(ep, other, port.protocol, port.port)]
    return flows


def edge_differences(testbed: Testbed, ir: IR, ports: Sequence[PortSpec]) -> list[str]:
    flows = edge_flows(testbed, ports)
    evaluator = IREvaluator(ir)
    out = []
    for flow, result in zip(flows, probe_flows(testbed, flows), strict=True):
        model = evaluator.evaluate(flow).allowed
        if result.ok != model:
            where = f"{flow.src} -> {flow.dst} {flow.port}/{flow.protocol.name}"
            out.append(f"{where}: kernel {result}, IR allowed={model}")
    return out


# --- hand-written artifacts ----------------------------------------------------------------------


def _fixture_artifacts(cluster_ips: dict[str, str]) -> EbpfArtifacts:
    """p0 may reach p1 on 80/TCP only; p1 and p2 are unenforced (one allow-all entry per direction)."""
    identities = {"a/p0": 1000, "b/p1": 1001, "a/p2": 1002}
    endpoints, maps = [], {}
    for epid, (key, identity) in enumerate(sorted(identities.items()), start=1):
        ns_name, name = key.split("/")
        endpoints.append(
            {
                "id": epid,
                "namespace": ns_name,
                "name": name,
                "ips": [cluster_ips[key]],
                "identity": identity,
                "policy_map": f"cilium_policy_v2_{epid:05d}",
                "ingress_enforced": key == "a/p0",
                "egress_enforced": key == "a/p0",
            }
        )
        allow_all = [L.policy_key(0, True), L.policy_key(0, False)]
        keys = [L.policy_key(1001, True, 6, 80)] if key == "a/p0" else allow_all
        maps[f"cilium_policy_v2_{epid:05d}"] = [L.dump_entry(k, L.policy_entry(prefix=L.key_prefix(k))) for k in keys]
    ipcache = [L.dump_entry(L.ipcache_key(cluster_ips[k]), L.ipcache_value(i)) for k, i in identities.items()]
    return EbpfArtifacts.from_json(endpoints, ipcache, maps)


def test_hand_written_maps_drop_exactly_what_they_do_not_allow_and_replies_pass() -> None:
    cluster = make_cluster(3)  # a/p0, b/p1, a/p2 serving 80/TCP and 53/UDP
    ips = {ep.key: ep.ips[0] for ep in cluster.endpoints}
    with Testbed(cluster, ports=[TCP80, UDP53]) as tb, load_ebpf(tb, _fixture_artifacts(ips)) as dp:
        got = kernel_matrix(tb, [TCP80, UDP53])
        counters = dp.counters()
        bpffs = dp.fs.path
        assert _is_mountpoint(bpffs)
    assert got == {
        "80/TCP": {"a/p0": ["a/p0", "b/p1"], "a/p2": ["a/p2", "b/p1"], "b/p1": ["a/p2", "b/p1"]},
        "53/UDP": {"a/p0": ["a/p0"], "a/p2": ["a/p2", "b/p1"], "b/p1": ["a/p2", "b/p1"]},
    }
    assert counters["allowed"] > 0 and counters["ct-reply"] > 0 and counters["POLICY_DENIED"] > 0
    assert not _is_mountpoint(bpffs) and not bpffs.exists()


# --- compiled examples ----------------------------------------------------------------------------


@pytest.mark.parametrize("profile", [Profile.CILIUM, Profile.K8S], ids=lambda p: p.value)
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_compiled_example_in_the_kernel_equals_the_ir_evaluator(
    example: Path, profile: Profile, tmp_path: Path
) -> None:
    inputs = load_inputs([str(example)])
    ir = _compile(inputs, profile, tmp_path)
    ports = _ports(example)
    with Testbed(inputs.cluster, ports=ports, world=True) as tb, load_ebpf(tb, tmp_path) as dp:
        differences = matrix_differences(tb, ir, ports) + edge_differences(tb, ir, ports)
        counters = dp.counters()
    assert differences == [], "\n".join(differences)
    assert counters.get("drop-unknown-endpoint", 0) == 0 and counters.get("drop-malformed", 0) == 0, counters


# --- upstream conformance model (both profiles) -----------------------------------------------


@pytest.fixture(scope="module")
def conformance_testbed() -> Iterator[Testbed]:
    """One testbed of the x/y/z × a/b/c model for every case (only the maps change between cases)."""
    cluster = load_model().cluster
    ports = [PortSpec(p, proto) for p in (80, 81) for proto in (Protocol.TCP, Protocol.UDP)]
    with Testbed(cluster, ports=ports) as tb:
        yield tb


def _conformance_differences(
    testbed: Testbed, path: Path, tmp_path: Path, profile: Profile = Profile.K8S
) -> list[str]:
    case, inputs = load_case(path, tmp_path)
    ports = case_ports(case)
    out = tmp_path / f"{path.stem}-{profile.value}"
    ir = _compile(inputs, profile, out)
    with load_ebpf(testbed, out):
        return [f"{path.stem} ({profile.value}): {d}" for d in matrix_differences(testbed, ir, ports)]


@pytest.mark.parametrize("name", QUICK_CASES)
def test_conformance_cases_in_the_kernel_equal_the_ir_evaluator(
    conformance_testbed: Testbed, name: str, tmp_path: Path
) -> None:
    differences = _conformance_differences(conformance_testbed, HERE / "cases" / f"{name}.yaml", tmp_path)
    assert differences == [], "\n".join(differences)


@pytest.mark.slow
@pytest.mark.parametrize("profile", list(Profile), ids=[p.value for p in Profile])
def test_every_conformance_case_in_the_kernel_equals_the_ir_evaluator(
    conformance_testbed: Testbed, tmp_path: Path, profile: Profile
) -> None:
    differences = [d for path in CASES for d in _conformance_differences(conformance_testbed, path, tmp_path, profile)]
    assert differences == [], "\n".join(differences)


# --- cleanup ----------------------------------------------------------------------------------------


def _loaded_child(then: str) -> subprocess.Popen[str]:
    """A process with a 3-endpoint testbed and fixture maps loaded: prints its bpffs and namespaces, runs ``then``."""
    code = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_kernel_testbed import make_cluster, TCP80
        from tests.test_kernel_ebpf_testbed import _fixture_artifacts
        from verifier.kernel import Testbed
        from verifier.kernel.load_ebpf import load_ebpf
        cluster = make_cluster(3)
        tb = Testbed(cluster, ports=[TCP80])
        tb.build()
        with load_ebpf(tb, _fixture_artifacts({{ep.key: ep.ips[0] for ep in cluster.endpoints}})) as dp:
            print(dp.fs.path, " ".join(tb.namespaces), flush=True)
            {then}
    """)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigterm_during_a_loaded_run_unmounts_the_bpffs_and_deletes_the_namespaces() -> None:
    child = _loaded_child("time.sleep(60)")
    assert child.stdout is not None
    line = child.stdout.readline().split()
    assert line, child.stderr.read() if child.stderr else ""
    bpffs = Path(line[0])
    assert bpffs.parent == BPFFS_ROOT and _is_mountpoint(bpffs)
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=20) == -signal.SIGTERM
    assert not _is_mountpoint(bpffs) and not bpffs.exists()
    assert not set(line[1:]) & set(list_namespaces())


def test_a_killed_runs_bpffs_is_unmounted_by_the_next_load() -> None:
    child = _loaded_child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert child.stdout is not None
    line = child.stdout.readline().split()
    assert line, child.stderr.read() if child.stderr else ""
    assert child.wait(timeout=20) == -signal.SIGKILL
    bpffs = Path(line[0])
    cluster = make_cluster(3)
    ips = {ep.key: ep.ips[0] for ep in cluster.endpoints}
    with Testbed(cluster, ports=[TCP80]) as tb, load_ebpf(tb, _fixture_artifacts(ips)):
        # (A concurrent run's load may have unmounted it first: only the outcome is asserted.)
        assert not _is_mountpoint(bpffs) and not bpffs.exists()
    cleanup_stale()
    assert not set(line[1:]) & set(list_namespaces())
