"""Nanoseconds per iptables rule (nf_tables and legacy backends) and per ipset lookup on this kernel.

Each measurement is a fresh network namespace with a veth pair: a child process inside it sends
UDP packets to an address behind one end (a static neighbour entry, so no ARP); the other end
receives them and drops them as not local (forwarding is off). The child reports the best of
several batches in ns per packet. The
filter table's OUTPUT chain holds N rules none of which matches, written like kube-proxy's
KUBE-SERVICES rules (``-d VIP/32 -p udp -m udp --dport 80``), so every packet walks all of them:

- ns per rule = (time with N rules - time with none) / N, per backend;
- ns per ipset lookup = the same slope for N ``-m set --match-set S dst`` rules (a set of
  :data:`SET_MEMBERS` addresses, not holding the destination) minus the plain rule's slope.

Sending costs a few microseconds per packet; that cancels in the differences, and N is chosen so
the rules add tens of microseconds.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass

from verifier.kernel import netns as ns

BACKENDS = {"nft": "iptables-nft-restore", "legacy": "iptables-legacy-restore"}
RULES = 2000
SET_MEMBERS = 1000
PACKETS = 20000
BATCHES = 5
TARGET = "10.200.0.2"

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
    rules: int
    packets: int


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
    run_id = ns.new_run_id()
    name = f"{ns.PREFIX}{run_id}-cal"
    ns.claim_run(run_id)
    try:
        ns.run(["ip", "netns", "add", name])
        ns.ip_batch(["link set lo up", "link add va type veth peer name vb", "addr add 10.200.0.1/24 dev va",
                     "link set va up", "link set vb up",
                     f"neigh add {TARGET} lladdr 02:00:00:00:00:02 dev va nud permanent"], netns=name)
        if kind == "set":
            ns.run(ns.exec_argv(name, ["ipset", "restore"]), input=_ipset_restore())
        ns.run(ns.exec_argv(name, [BACKENDS[backend]]), input=_ruleset(kind, count))
        proc = ns.run(ns.exec_argv(name, [sys.executable, "-c", _SENDER, str(packets), str(BATCHES), TARGET]),
                      timeout=600)
        return float(json.loads(proc.stdout))
    finally:
        ns.delete_namespaces([name], kill=True)
        ns.release_run(run_id)


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
    return IptablesCalibration(rule_ns, round(max(0.0, per_set_rule - rule_ns["nft"]), 2), rules, packets)
