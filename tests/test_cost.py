"""The cost model: kube-proxy's nat walk and Cilium's lb lookups counted as each datapath does them,
the same verdicts as the policy evaluators, growth with Services (iptables linear, eBPF flat), the
``netpolc cost`` command, and the kernel agreeing with the evaluator on sampled Service flows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from compiler.cli import main
from compiler.flow import Flow, Profile, Protocol
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.ir.evaluate import IREvaluator
from compiler.services import frontends
from compiler.targets import emit_targets
from verifier.artifacts import read_services
from verifier.cost.evaluate import CostEvaluator
from verifier.cost.model import OperationCosts
from verifier.cost.sweep import Point, measure
from verifier.simulate.services import KubeProxySimulator, _Index

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"


@pytest.fixture(scope="module")
def shop() -> tuple[object, dict[str, dict[str, str]]]:
    inputs = load_inputs([str(SHOP)])
    return inputs, emit_targets(build_ir(inputs, Profile.CILIUM), ["iptables", "ebpf"])[0]


def _flows(inputs: object) -> list[Flow]:
    cluster = inputs.cluster  # type: ignore[attr-defined]
    out = []
    for ep in cluster.endpoints:
        for front in frontends(cluster):
            out.append(Flow(ep.addresses[0], front.address, Protocol[front.protocol], front.port))
        out.append(Flow(ep.addresses[0], cluster.endpoints[0].addresses[0], Protocol.TCP, 8080))
    return out


def test_the_indexed_nat_walk_counts_what_a_rule_by_rule_walk_counts(shop: tuple[object, dict]) -> None:
    inputs, files = shop
    text = files["iptables"]["services.v4"]
    node = inputs.cluster.node_address  # type: ignore[attr-defined]
    indexed = KubeProxySimulator({4: (text, "services.v4")}, node)
    plain = KubeProxySimulator({4: (text, "services.v4")}, node)
    plain.index = lambda family, chain: _Index(0, {})  # type: ignore[method-assign]
    for flow in _flows(inputs):
        for sport in (40000, 40001, 40002):
            a, b = indexed.resolve(flow, sport), plain.resolve(flow, sport)
            assert (a.address, a.port, a.rules_evaluated) == (b.address, b.port, b.rules_evaluated), flow
    # chains read one at a time are the chains of the whole file, lines included
    whole = read_services(text, "services.v4")
    for name, chain in whole.tables["nat"].chains.items():
        lazy = indexed.rules(4, name)
        assert lazy == chain.rules and [r.line for r in lazy] == [r.line for r in chain.rules]


def test_a_new_connection_walks_kube_services_to_its_service_and_others_walk_it_all(
        shop: tuple[object, dict]) -> None:
    inputs, files = shop
    cluster = inputs.cluster  # type: ignore[attr-defined]
    evaluator = CostEvaluator(files, cluster)
    fronts = [f for f in frontends(cluster) if f.backends]
    client = cluster.endpoints[0].addresses[0]
    for position, front in enumerate(fronts, 1):
        n = len(front.backends)
        counts = {evaluator.packet(Flow(client, front.address, Protocol[front.protocol], front.port),
                                   new=True, sport=s).iptables.nat_rules for s in range(40000, 40040)}
        # PREROUTING jump + scan to its rule, then SVC: masq check + 1..n jumps, then SEP: 2 rules
        assert counts <= {1 + position + 1 + k + 2 for k in range(1, n + 1)}, (front.name, counts)
        later = evaluator.packet(Flow(client, front.address, Protocol[front.protocol], front.port), new=False)
        assert later.iptables.nat_rules == 0 and later.ebpf.lb_lookups == 2
    pod = evaluator.packet(Flow(client, cluster.endpoints[1].addresses[0], Protocol.TCP, 8080), new=True)
    assert pod.iptables.nat_rules == 1 + len(fronts) + 1  # the whole scan and the NodePorts rule
    assert pod.ebpf.lb_lookups == 1  # one miss


def test_the_evaluator_gives_the_policy_verdict_of_the_backend_flow(shop: tuple[object, dict]) -> None:
    inputs, files = shop
    cluster = inputs.cluster  # type: ignore[attr-defined]
    evaluator = CostEvaluator(files, cluster)
    reference = IREvaluator(build_ir(inputs, Profile.CILIUM))  # type: ignore[arg-type]
    checked = 0
    for flow in _flows(inputs):
        cost = evaluator.packet(flow, new=True)
        expected = reference.evaluate(cost.backend)
        assert (cost.ebpf.verdict == "dropped") == (not expected.allowed), flow
        if cost.backend.dst == cost.flow.dst or cost.iptables.nat_rules:
            checked += 1
    assert checked > 10


def test_iptables_work_grows_with_services_and_ebpf_stays_flat() -> None:
    small = measure(Point(300, 10, 20), connections_=60)
    large = measure(Point(300, 600, 20), connections_=60)
    assert large.new.iptables_nat_rules.mean > 10 * small.new.iptables_nat_rules.mean
    assert large.new.ebpf_lb_lookups.mean == pytest.approx(small.new.ebpf_lb_lookups.mean, abs=0.5)
    assert large.established.iptables_rules.mean == small.established.iptables_rules.mean  # conntrack skips nat
    assert large.new.iptables_ns.mean > large.new.ebpf_ns.mean


def test_costs_profile_round_trips_and_bad_profiles_are_refused(tmp_path: Path) -> None:
    costs = OperationCosts(iptables_rule_ns=40.0, source="calibrated")
    path = tmp_path / "costs.json"
    path.write_text(costs.to_json())
    assert OperationCosts.load(path) == costs
    assert costs.lpm_lookup_ns(1) < costs.lpm_lookup_ns(10_000) < costs.lpm_lookup_ns(1_000_000)
    path.write_text('{"nope": 1}')
    with pytest.raises(ValueError, match="not a netpolc cost profile"):
        OperationCosts.load(path)


def test_cost_cli_tables_json_and_plots(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "compiler.cli", "cost", *args], capture_output=True, text=True,
                              cwd=ROOT)

    plot = tmp_path / "cost.svg"
    run = cli("--sizes", "100:5:5", "100:50:5", "--connections", "20", "-o", "json", "--plot", str(plot))
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert [p["point"] for p in doc["points"]] == ["100:5:5", "100:50:5"]
    assert plot.read_text().startswith("<?xml")
    again = tmp_path / "again.svg"
    assert cli("--sizes", "100:5:5", "100:50:5", "--connections", "20", "--plot", str(again)).returncode == 0
    assert again.read_bytes() == plot.read_bytes()  # deterministic
    assert cli("--sizes", "nope").returncode == 2
    assert cli("--sizes", "100:5:5", "--plot", str(tmp_path / "x.gif")).returncode == 2


@pytest.mark.kernel
def test_the_kernel_balances_service_connections_as_the_evaluator_says(shop: tuple[object, dict]) -> None:
    """services.v4 next to the policy rules in the testbed's node: a pod's connection to a cluster
    IP is DNATed to a backend and gets the verdict the evaluator gives the backend flow (when every
    backend of the Service gets the same verdict, since the kernel draws its own backend)."""
    from compiler.flow import PortSpec
    from verifier.kernel import Testbed, kernel_unavailable_reason
    from verifier.kernel.load_iptables import load_iptables
    from verifier.kernel.probe import ProbeRequest, probe_many

    reason = kernel_unavailable_reason(["iptables-restore", "ipset", "ip"])
    if reason:
        pytest.skip(reason)
    inputs, files = shop
    cluster = inputs.cluster  # type: ignore[attr-defined]
    evaluator = CostEvaluator(files, cluster)
    reference = IREvaluator(build_ir(inputs, Profile.CILIUM))  # type: ignore[arg-type]
    fronts = [f for f in frontends(cluster) if f.backends and f.protocol == "TCP"]
    ports = sorted({PortSpec(b.port, Protocol.TCP) for f in fronts for b in f.backends})
    cases = []
    for ep in cluster.endpoints:
        for front in fronts:
            flow = Flow(ep.addresses[0], front.address, Protocol.TCP, front.port)
            verdicts = {reference.evaluate(Flow(flow.src, b.address, Protocol.TCP, b.port)).allowed
                        for b in front.backends if b.address != flow.src}
            if len(verdicts) == 1 and all(b.address != flow.src for b in front.backends):
                cost = evaluator.packet(flow, new=True)
                cases.append((flow, cost.iptables.verdict != "dropped"))
    assert {allowed for _, allowed in cases} == {True, False}
    with Testbed(cluster, ports=ports) as tb:
        load_iptables(tb, files["iptables"])
        tb.node_exec(["iptables-restore", "--noflush"], input=files["iptables"]["services.v4"])
        requests = [ProbeRequest(tb.site_of(flow.src).netns, str(flow.dst), flow.protocol, flow.port,  # type: ignore[union-attr]
                                 str(flow.src)) for flow, _ in cases]
        results = probe_many(requests)
    wrong = [(str(flow.src), str(flow.dst), allowed, got) for (flow, allowed), got in zip(cases, results, strict=True)
             if got.ok != allowed]
    assert not wrong, wrong
    assert sum(1 for r in results if r.ok) >= 3  # connections to cluster IPs got through: DNAT happened


def test_a_corrupted_lb_map_is_named_with_its_entry(shop: tuple[object, dict]) -> None:
    from verifier.simulate.ebpf import ArtifactError
    from verifier.simulate.services import LbMapSimulator

    _, files = shop
    broken = dict(files["ebpf"])
    broken["cilium_lb4_backends_v3.json"] = '[{"key": ["0x01"], "value": []}]'
    with pytest.raises(ArtifactError, match=r"cilium_lb4_backends_v3.json: entry 0"):
        LbMapSimulator(broken)


@pytest.mark.kernel
def test_calibration_measures_every_operation_and_the_cli_writes_a_usable_profile(tmp_path: Path) -> None:
    """``netpolc cost --calibrate``: plausible magnitudes (a rule is nanoseconds, not microseconds;
    an LPM lookup costs more in a bigger trie), and the profile feeds ``--costs``."""
    from verifier.cost.calibrate import unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    path = tmp_path / "profile.json"
    assert main(["cost", "--calibrate", str(path)]) == 0
    costs = OperationCosts.load(path)
    assert costs.source.startswith("calibrated on")
    for value in (costs.iptables_rule_ns, costs.iptables_legacy_rule_ns, costs.ipset_lookup_ns,
                  costs.bpf_hash_lookup_ns):
        assert 0.5 < value < 2000, costs
    assert [n for n, _ in costs.lpm_points] == [1, 100, 1_000, 10_000, 100_000]
    assert costs.lpm_points[-1][1] > costs.lpm_points[0][1], costs
    assert set(costs.details) == {"iptables", "ipset", "service", "bpf"}


@pytest.mark.kernel
def test_kernel_times_sit_next_to_the_estimates_and_the_nat_walk_grows_with_services() -> None:
    """``netpolc cost --measure``: the nat walk measured with real packets grows with the Services
    (a ratio within one run, not a wall-clock bound), and the eBPF policy path is timed per flow."""
    from verifier.cost.calibrate import unavailable_reason

    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    few, many = (measure(Point(1000, services, 50), connections_=60, kernel=True) for services in (10, 1000))
    assert few.kernel is not None and many.kernel is not None
    assert many.kernel.nat_flows > 0 and many.kernel.policy_flows > 0
    assert many.kernel.nat_estimated_ns > 10 * few.kernel.nat_estimated_ns
    assert many.kernel.nat_measured_ns > 2 * few.kernel.nat_measured_ns, (few.kernel, many.kernel)
    assert many.kernel.policy_measured_ns > 0 and many.kernel.policy_estimated_ns > 0
