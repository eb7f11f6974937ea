"""Kernel-measured per-packet times for ``netpolc cost --measure``, next to the estimates.

Two measurements of one sweep point's artifacts, each on the traffic the evaluator replayed:

- **iptables, Service lookup** (:func:`nat_first_packet_ns`): the point's ``services.v4``
  (kube-proxy's nat table) is loaded with ``iptables-nft-restore`` into a network namespace whose
  default route leaves through a veth (a static neighbour; the far end drops what arrives). A
  child process opens one TCP connection per sampled destination (Service cluster IPs and pod
  addresses), so each SYN is a new conntrack entry that walks the nat ``OUTPUT`` hook →
  ``KUBE-SERVICES``; the baseline is the same table without its ``OUTPUT`` jump (conntrack and
  the nat hooks cost the same in both). The
  difference is what the nat walk costs a new connection's first packet. The policy (filter) part
  is not loaded: it needs one namespace per endpoint, which a 20k-pod point does not fit.
- **eBPF, policy path** (:func:`ebpf_policy_ns`): the point's ``OUT/ebpf`` maps (ipcache, endpoint
  table, the touched endpoints' policy maps) go into the TC datapath of
  ``verifier/kernel/policy.bpf.c``, and each first packet (after the load balancer, as the
  policy sees it) is timed with ``BPF_PROG_TEST_RUN`` through ``from_endpoint`` (the source's
  egress) and ``to_endpoint`` (the destination's ingress), conntrack creation off. That program
  has no load balancer: the Service lookup is the part the estimate adds from the calibrated hash
  lookup cost.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from verifier.kernel import bpf_packets as packets
from verifier.kernel import netns as ns
from verifier.kernel.bpf import private_bpffs, prog_run
from verifier.kernel.load_ebpf import CONFIG_NO_CT_CREATE, EbpfArtifacts, EbpfDatapath

BATCHES = 5

#: The connector, run inside the namespace: best batch, in ns per connection attempt.
_CONNECTOR = """
import json, socket, sys, time
targets = json.loads(sys.argv[1])
batches, rounds = int(sys.argv[2]), int(sys.argv[3])
best = None
for _ in range(batches):
    start = time.perf_counter_ns()
    for _ in range(rounds):
        for host, port in targets:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.connect_ex((host, port))
            s.close()
    took = (time.perf_counter_ns() - start) / (rounds * len(targets))
    best = took if best is None else min(best, took)
print(json.dumps(best))
"""


def connect_ns(nat_table: str, targets: Sequence[tuple[str, int]], rounds: int, source: str | None = None) -> float:
    """Best-batch ns per TCP connection attempt to ``targets`` in a scratch namespace holding
    ``nat_table`` (an ``iptables-restore`` text), sent from ``source`` when given."""
    with ns.scratch_namespace(source) as name:
        ns.run(ns.exec_argv(name, ["iptables-nft-restore"]), input=nat_table, timeout=600)
        argv = [sys.executable, "-c", _CONNECTOR, json.dumps(list(targets)), str(BATCHES), str(rounds)]
        return float(json.loads(ns.run(ns.exec_argv(name, argv), timeout=600).stdout))


def nat_first_packet_ns(services_v4: str, targets: Sequence[tuple[str, int]], source: str, *,
                        rounds: int = 20) -> float:
    """Mean ns the nat table adds to a new TCP connection's first packet, over ``targets``
    (``(address, port)``; each sent ``rounds`` times per batch) from ``source`` (a pod address,
    so that kube-proxy does not masquerade, as for pod traffic)."""
    if not targets:
        return 0.0
    unhooked = unhook(services_v4)
    base, loaded = alternating(lambda: connect_ns(unhooked, targets, rounds, source),
                               lambda: connect_ns(services_v4, targets, rounds, source))
    return max(0.0, loaded - base)


def unhook(nat_table: str) -> str:
    """``nat_table`` without its ``OUTPUT`` jump: the baseline of a nat walk. Conntrack and the nat
    hooks run in both (its DNAT rules keep conntrack on), so only the walk of KUBE-SERVICES (and
    the DNAT it ends in) differs."""
    return "\n".join(line for line in nat_table.splitlines() if not line.startswith("-A OUTPUT ")) + "\n"


def alternating(first: Callable[[], float], second: Callable[[], float], times: int = 3) -> tuple[float, float]:
    """The best of ``times`` runs of each, interleaved so that drift on a shared machine hits both
    alike (one namespace's run varies by about ±150 ns per connection here)."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(times):
        a.append(first())
        b.append(second())
    return min(a), min(b)


def ebpf_policy_ns(files: Mapping[str, str], flows: Sequence[tuple[str, str, int, int]], *, repeat: int = 2000,
                   progress: Callable[[str], None] = lambda _: None) -> list[float]:
    """ns per first packet on the policy path, one per ``(src, dst, protocol, port)`` flow (both
    sides' programs where both are endpoints in the maps)."""
    policy_maps = {name.removesuffix(".json"): json.loads(text) for name, text in files.items()
                   if name.startswith("cilium_policy_v2_")}
    artifacts = EbpfArtifacts.from_json(json.loads(files["endpoints.json"]), json.loads(files["ipcache.json"]),
                                        policy_maps)
    local = {address for ep in artifacts.endpoints for address in ep.ips}
    out: list[float] = []
    with private_bpffs() as fs, tempfile.TemporaryDirectory(prefix="netpolc-measure-") as tmp:
        work = Path(tmp)
        dp = EbpfDatapath(fs)
        progress(f"loading the maps of {len(artifacts.endpoints)} endpoints")
        dp.load(artifacts)
        dp.set_config(CONFIG_NO_CT_CREATE)
        for i, (src, dst, protocol, port) in enumerate(flows):
            if i % 20 == 0:
                progress(f"BPF_PROG_TEST_RUN {i}/{len(flows)}")
            frame = packets.frame(src, dst, protocol, port)
            total = 0.0
            if src in local:
                total += prog_run(dp.from_endpoint, frame, work, repeat=repeat).ns_per_run
            if dst in local:
                total += prog_run(dp.to_endpoint, frame, work, repeat=repeat).ns_per_run
            out.append(total)
    return out


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0
