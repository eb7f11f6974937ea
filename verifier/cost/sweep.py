"""Per-packet cost across cluster sizes: generate, compile, replay a traffic mix, summarise.

Each point is a synthetic cluster (:mod:`compiler.synth`, deterministic from the seed) with
``pods`` pods, ``services`` ClusterIP Services and ``policies`` policies, compiled for both
targets. The traffic mix: ``connections`` connections from random pods, 60% to a random Service
(pod → Service → pod), 40% to a random pod on one of its declared ports (pod → pod), half of them
drawn among flows the policy allows and half among flows it drops (as far as random draws find
them). Each connection sends its first packet, and each one both datapaths let through sends
``established`` more packets. Every packet is counted on both datapaths
(:class:`verifier.cost.evaluate.CostEvaluator`); the eBPF target is compiled only for the
endpoints the traffic touches (clients, destinations and the backends the load balancer picks),
which is all the packets can see, with the cluster-wide ipcache.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from compiler.cluster import Cluster
from compiler.flow import Flow, Profile, Protocol
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.ir.evaluate import IREvaluator
from compiler.services import Frontend, frontends
from compiler.synth import Scale, generate, write
from compiler.targets import TargetOptions, emit_targets
from verifier.cost.evaluate import CostEvaluator, PacketCost
from verifier.cost.model import OperationCosts
from verifier.simulate.services import lb_slot

SERVICE_SHARE = 0.6
TRIES = 200


@dataclass(frozen=True)
class Point:
    pods: int
    services: int
    policies: int

    @classmethod
    def parse(cls, text: str) -> Point:
        """``PODS:SERVICES:POLICIES``, e.g. ``20000:5000:1000``."""
        try:
            pods, services, policies = (int(x) for x in text.split(":"))
        except ValueError:
            raise ValueError(f"{text!r}: expected PODS:SERVICES:POLICIES, e.g. 20000:5000:1000") from None
        if pods < 10 or services < 0 or policies < 0:
            raise ValueError(f"{text!r}: at least 10 pods, and no negative counts")
        return cls(pods, services, policies)

    def __str__(self) -> str:
        return f"{self.pods}:{self.services}:{self.policies}"


@dataclass(frozen=True)
class Stats:
    mean: float
    p50: float
    p99: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        if not values:
            return cls(0.0, 0.0, 0.0)
        ordered = sorted(values)
        return cls(statistics.fmean(ordered), _quantile(ordered, 0.50), _quantile(ordered, 0.99))


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank quantile."""
    index = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return float(ordered[index])


@dataclass(frozen=True)
class Summary:
    """One packet class (new connections or established packets) on both datapaths."""

    packets: int
    iptables_rules: Stats
    iptables_nat_rules: Stats
    ipset_lookups: Stats
    iptables_ns: Stats
    ebpf_lookups: Stats
    ebpf_lb_lookups: Stats
    ebpf_policy_lookups: Stats
    ebpf_ns: Stats

    @classmethod
    def of(cls, packets: Sequence[PacketCost]) -> Summary:
        def stats(get: Callable[[PacketCost], float]) -> Stats:
            return Stats.of([get(p) for p in packets])

        return cls(len(packets), stats(lambda p: p.iptables.rules), stats(lambda p: p.iptables.nat_rules),
                   stats(lambda p: p.iptables.ipset_lookups), stats(lambda p: p.iptables.ns),
                   stats(lambda p: p.ebpf.lookups), stats(lambda p: p.ebpf.lb_lookups),
                   stats(lambda p: p.ebpf.policy_lookups), stats(lambda p: p.ebpf.ns))


@dataclass(frozen=True)
class KernelTimes:
    """Kernel-measured ns per new-connection packet next to the estimate of the same part
    (:mod:`verifier.kernel.measure_cost` says what each part covers)."""

    nat_measured_ns: float  # iptables: what kube-proxy's nat table adds to a first packet (TCP flows)
    nat_estimated_ns: float
    nat_flows: int
    policy_measured_ns: float  # eBPF: the policy path (both sides' TC programs), no load balancer
    policy_estimated_ns: float
    policy_flows: int

    @property
    def nat_ratio(self) -> float:
        return self.nat_measured_ns / self.nat_estimated_ns if self.nat_estimated_ns else 0.0

    @property
    def policy_ratio(self) -> float:
        return self.policy_measured_ns / self.policy_estimated_ns if self.policy_estimated_ns else 0.0


@dataclass(frozen=True)
class PointResult:
    point: Point
    endpoints: int
    frontends: int
    new: Summary
    established: Summary
    allowed_share: float  # of the connections, on iptables
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    kernel: KernelTimes | None = None


def connections(cluster: Cluster, fronts: Sequence[Frontend], count: int, seed: int,
                allowed: Callable[[Flow], bool] | None = None) -> list[tuple[Flow, int]]:
    """The traffic mix: (flow, source port) per connection (see the module docstring).

    With ``allowed`` (the policy's answer for a flow to a backend), every other connection is
    drawn until policy allows it and the rest until it drops it (up to :data:`TRIES` draws), so
    that both kinds are measured even under default-deny policies.
    """
    rng = random.Random(seed)
    endpoints = [ep for ep in cluster.endpoints if any(a.version == 4 for a in ep.addresses)]
    usable = [f for f in fronts if f.backends and f.address.version == 4 and f.protocol in ("TCP", "UDP")]

    def draw() -> tuple[Flow, Flow]:
        client = rng.choice(endpoints)
        src = next(a for a in client.addresses if a.version == 4)
        if usable and rng.random() < SERVICE_SHARE:
            front = rng.choice(usable)
            backend = front.backends[0]
            return (Flow(src, front.address, Protocol[front.protocol], front.port),
                    Flow(src, backend.address, Protocol[front.protocol], backend.port))
        dst = rng.choice(endpoints)
        port = rng.choice(dst.ports).port if dst.ports else 80
        flow = Flow(src, next(a for a in dst.addresses if a.version == 4), Protocol.TCP, port)
        return flow, flow

    out = []
    for i in range(count):
        flow, target = draw()
        if allowed is not None:
            want = i % 2 == 0
            for _ in range(TRIES):
                if allowed(target) == want:
                    break
                flow, target = draw()
        out.append((flow, 32768 + i))
    return out


def measure(point: Point, *, connections_: int = 200, established: int = 4, seed: int = 1,
            costs: OperationCosts | None = None, progress: Callable[[str], None] = lambda _: None,
            kernel: bool = False) -> PointResult:
    """Generate, compile and replay one point; with ``kernel``, also time the first packets on
    this kernel (root; :mod:`verifier.kernel.measure_cost`)."""
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str, since: float) -> float:
        now = time.perf_counter()
        phases[name] = round(now - since, 2)
        return now

    namespaces = max(1, point.pods // 100)
    with tempfile.TemporaryDirectory(prefix="netpolc-cost-") as tmp:
        paths = write(generate(Scale(point.pods, namespaces, point.policies, point.services, seed)), Path(tmp))
        inputs = load_inputs([str(p) for p in paths])
    t = phase("generate+load", started)
    cluster = inputs.cluster
    fronts = frontends(cluster)
    ir = build_ir(inputs, Profile.CILIUM)
    reference = IREvaluator(ir)
    traffic = connections(cluster, fronts, connections_, seed, lambda f: reference.evaluate(f).allowed)
    addresses = {a for f, _ in traffic for a in (f.src, f.dst)}
    touched = {ep.key for ep in cluster.endpoints if any(a in addresses for a in ep.addresses)}
    by_address = {(f.address, f.port, f.protocol): f for f in fronts}
    for flow, sport in traffic:  # the backend Cilium's lb picks (lb maps keep the frontends' backend order)
        front = by_address.get((flow.dst, flow.port, flow.protocol.name))
        if front is not None:
            touched.add(front.backends[lb_slot(flow, sport, len(front.backends)) - 1].endpoint)
    progress(f"{point}: compiling ({len(cluster.endpoints)} endpoints, {len(fronts)} frontends)")
    files = emit_targets(ir, ["iptables"])[0]
    t = phase("compile iptables", t)
    files.update(emit_targets(ir, ["ebpf"], TargetOptions(endpoints=frozenset(touched), allow_overflow=True))[0])
    t = phase("compile ebpf", t)
    evaluator = CostEvaluator(files, cluster, costs)
    progress(f"{point}: replaying {len(traffic)} connections")
    new: list[PacketCost] = []
    later: list[PacketCost] = []
    allowed = 0
    for flow, sport in traffic:
        first = evaluator.packet(flow, new=True, sport=sport)
        new.append(first)
        if first.iptables.verdict != "dropped":
            allowed += 1
        if first.iptables.verdict != "dropped" and first.ebpf.verdict != "dropped":
            later.extend([evaluator.packet(flow, new=False, sport=sport)] * established)  # all alike
    t = phase("replay", t)
    times = None
    if kernel:
        progress(f"{point}: timing first packets on the kernel")
        times = kernel_times(files, new, progress)
        phase("kernel", t)
    return PointResult(point, len(cluster.endpoints), len(fronts), Summary.of(new), Summary.of(later),
                       allowed / max(1, len(traffic)), time.perf_counter() - started, phases, times)


#: first packets timed with BPF_PROG_TEST_RUN per point (each run is one bpftool call)
KERNEL_POLICY_FLOWS = 60


def kernel_times(files: dict[str, dict[str, str]], new: Sequence[PacketCost],
                 progress: Callable[[str], None]) -> KernelTimes:
    """Measure the replayed first packets on the kernel and estimate the same parts."""
    from verifier.kernel.measure_cost import ebpf_policy_ns, mean, nat_first_packet_ns

    tcp = [p for p in new if p.flow.protocol is Protocol.TCP and p.flow.dst.version == 4]
    targets = [(str(p.flow.dst), p.flow.port) for p in tcp]
    nat = nat_first_packet_ns(files["iptables"]["services.v4"], targets, str(tcp[0].flow.src)) if tcp else 0.0
    nat_estimate = mean([p.iptables.nat_ns for p in tcp])
    sampled = [p for p in new if p.backend.src.version == 4][:KERNEL_POLICY_FLOWS]
    flows = [(str(p.backend.src), str(p.backend.dst), int(p.backend.protocol), p.backend.port) for p in sampled]
    measured = ebpf_policy_ns(files["ebpf"], flows, progress=progress)
    estimate = [p.ebpf.ns - p.ebpf.lb_ns for p in sampled]
    return KernelTimes(round(nat, 1), round(nat_estimate, 1), len(tcp), round(mean(measured), 1),
                       round(mean(estimate), 1), len(sampled))
