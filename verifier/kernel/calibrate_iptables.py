"""Nanoseconds per iptables rule (nf_tables and legacy backends) and per ipset lookup on this kernel.

Each measurement is a fresh :func:`~verifier.kernel.netns.scratch_namespace`: a child process
inside it sends UDP packets to the address behind its veth (the far end drops them), and reports
the best of several batches in ns per packet. The
filter table's OUTPUT chain holds N rules none of which matches, written like kube-proxy's
KUBE-SERVICES rules (``-d VIP/32 -p udp -m udp --dport 80``), so every packet walks all of them:

- ns per rule = (time with N rules - time with none) / N, per backend;
- ns per ipset lookup = the same slope for N ``-m set --match-set S dst`` rules (a set of
  :data:`SET_MEMBERS` addresses, not holding the destination) minus the plain rule's slope;
- the nat walk's two fixed costs (:func:`service_costs`), measured the way ``netpolc cost
  --measure`` measures a sweep point: new TCP connections through the nat table ``netpolc
  compile`` emits for one Service of :data:`SERVICE_BACKENDS` backends, minus the same through
  that table without its ``OUTPUT`` jump, less the rules walked (counted by the evaluator's own
  walk) at the rule cost:

  - to the cluster IP: what a Service connection adds (chain jumps, the backend draw, the DNAT's
    nat setup and re-route). A bare one-rule DNAT measures only 150–330 ns here, a kube-proxy
    shaped Service path 500–1000 ns;
  - to a pod address: what the NodePort rule's ``-m addrtype --dst-type LOCAL`` (a route lookup)
    adds, paid by every new connection that is not to a Service.

Sending costs a few microseconds per packet; that cancels in the differences, and N is chosen so
the rules add tens of microseconds.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address

from compiler.flow import Flow, Protocol
from compiler.services import Backend, Frontend
from compiler.targets.iptables.render import render_rules
from compiler.targets.iptables.services import build_nat
from verifier.kernel import netns as ns
from verifier.kernel.measure_cost import connect_ns, unhook
from verifier.simulate.services import KubeProxySimulator

BACKENDS = {"nft": "iptables-nft-restore", "legacy": "iptables-legacy-restore"}
RULES = 2000
SET_MEMBERS = 1000
PACKETS = 20000
BATCHES = 5
TARGET = ns.SCRATCH_GATEWAY

#: The sender, run inside the namespace: best batch of ``PACKETS`` sendto calls, in ns per packet.
_SENDER = """
import json, socket, sys, time
count, batches, target = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * 32
best = None
for _ in range(batches):
    start = time.perf_counter_ns()
    for _ in range(count):
        s.sendto(payload, (target, 80))
    took = (time.perf_counter_ns() - start) / count
    best = took if best is None else min(best, took)
print(json.dumps(best))
"""


@dataclass(frozen=True)
class IptablesCalibration:
    rule_ns: dict[str, float]  # backend → ns per rule
    ipset_lookup_ns: float  # on the nf_tables backend
    service_ns: float  # a new connection to a Service, beyond the nat rules it walks
    addrtype_ns: float  # kube-proxy's NodePort rule, beyond a plain rule
    rules: int
    packets: int


#: backends of the calibration Service (the generator's clusters have 5–10 per Service)
SERVICE_BACKENDS = 5
SERVICE_ROUNDS = 2000
_SERVICE, _OTHER, _SOURCE, _POD_CIDR = "10.96.0.1", "10.244.100.7", "10.244.200.1", "10.244.0.0/16"


def _service_table() -> tuple[str, float, int]:
    """The calibration nat table, and how many rules a connection walks to the Service (mean over
    the backend draw) and to :data:`_OTHER`, as the evaluator counts them."""
    backends = tuple(Backend(ip_address(f"10.244.{i + 1}.5"), 8080, f"calibration/pod-{i}")
                     for i in range(SERVICE_BACKENDS))
    front = Frontend("calibration/svc", "", ip_address(_SERVICE), 80, "TCP", backends)
    text = render_rules("netpolc cost --calibrate", [build_nat([front], 4, [_POD_CIDR])])
    walk = KubeProxySimulator({4: (text, "calibration")}, ip_address("10.200.0.1"))
    source = ip_address(_SOURCE)
    hits = [walk.resolve(Flow(source, front.address, Protocol.TCP, 80), sport).rules_evaluated
            for sport in range(32768, 32768 + 1000)]
    return text, sum(hits) / len(hits), walk.resolve(Flow(source, ip_address(_OTHER), Protocol.TCP, 80)).rules_evaluated


def service_costs(rule_ns: float, rounds: int = SERVICE_ROUNDS, times: int = 7) -> tuple[float, float]:
    """(Service connection, NodePort rule) ns beyond their rules at ``rule_ns`` each: the median
    over ``times`` rounds of each round's hooked-minus-unhooked difference (one round runs the four
    (table, destination) pairs back to back, so that drift on a shared machine hits a pair alike)."""
    text, service_rules, other_rules = _service_table()
    unhooked = unhook(text)
    added: dict[str, list[float]] = {_SERVICE: [], _OTHER: []}
    for _ in range(times):
        for target in added:
            base = connect_ns(unhooked, [(target, 80)], rounds, _SOURCE)
            added[target].append(connect_ns(text, [(target, 80)], rounds, _SOURCE) - base)
    return (max(0.0, statistics.median(added[_SERVICE]) - service_rules * rule_ns),
            max(0.0, statistics.median(added[_OTHER]) - other_rules * rule_ns))


def _ruleset(kind: str, count: int) -> str:
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for i in range(count):
        if kind == "set":
            lines.append("-A OUTPUT -m set --match-set netpolc-cal dst -j ACCEPT")
        else:  # 10.96.0.0/12: the Service range, never the target
            lines.append(f"-A OUTPUT -d 10.96.{i // 250}.{i % 250 + 1}/32 -p udp -m udp --dport 80 -j ACCEPT")
    return "\n".join([*lines, "COMMIT", ""])


def _ipset_restore() -> str:
    lines = ["create netpolc-cal hash:ip family inet hashsize 1024 maxelem 65536"]
    lines += [f"add netpolc-cal 10.97.{i // 250}.{i % 250 + 1}" for i in range(SET_MEMBERS)]
    return "\n".join(lines) + "\n"


def _time_in_namespace(backend: str, kind: str, count: int, packets: int) -> float:
    """ns per packet sent through ``count`` rules of ``kind`` ("plain" or "set") on ``backend``."""
    with ns.scratch_namespace() as name:
        if kind == "set":
            ns.run(ns.exec_argv(name, ["ipset", "restore"]), input=_ipset_restore())
        ns.run(ns.exec_argv(name, [BACKENDS[backend]]), input=_ruleset(kind, count))
        proc = ns.run(ns.exec_argv(name, [sys.executable, "-c", _SENDER, str(packets), str(BATCHES), TARGET]),
                      timeout=600)
        return float(json.loads(proc.stdout))


def measure(*, rules: int = RULES, packets: int = PACKETS,
            progress: Callable[[str], None] = lambda _: None) -> IptablesCalibration:
    """Both backends' ns per rule and the ipset lookup (needs root, both iptables backends and
    ipset); raises :class:`~verifier.kernel.netns.KernelError` when a step is refused."""
    rule_ns: dict[str, float] = {}
    for backend in BACKENDS:
        progress(f"iptables ({backend}): {rules} rules")
        base = _time_in_namespace(backend, "plain", 0, packets)
        loaded = _time_in_namespace(backend, "plain", rules, packets)
        rule_ns[backend] = round(max(0.0, loaded - base) / rules, 2)
    progress(f"ipset: {rules} set-match rules")
    base = _time_in_namespace("nft", "plain", 0, packets)
    with_sets = _time_in_namespace("nft", "set", rules, packets)
    per_set_rule = max(0.0, with_sets - base) / rules
    progress(f"new connections through a Service of {SERVICE_BACKENDS} backends")
    service, addrtype = service_costs(rule_ns["nft"])
    return IptablesCalibration(rule_ns, round(max(0.0, per_set_rule - rule_ns["nft"]), 2), round(service, 1),
                               round(addrtype, 1), rules, packets)
