"""Nanoseconds per iptables rule (nf_tables and legacy backends) and per ipset lookup on this kernel.

Each measurement is a fresh :func:`~verifier.kernel.netns.scratch_namespace`: a child process
inside it sends UDP packets to the address behind its veth (the far end drops them), and reports
the best of several batches in ns per packet. The
filter table's OUTPUT chain holds N rules none of which matches, written like kube-proxy's
KUBE-SERVICES rules (``-d VIP/32 -p udp -m udp --dport 80``), so every packet walks all of them:

- ns per rule = (time with N rules - time with none) / N, per backend;
- ns per ipset lookup = the same slope for N ``-m set --match-set S dst`` rules (a set of
  :data:`SET_MEMBERS` addresses, not holding the destination) minus the plain rule's slope;
- ns per DNAT (:func:`dnat_ns`): TCP connections through a one-rule nat ``OUTPUT`` chain, to the
  rule's address (rewritten, as a ``KUBE-SEP`` does) minus to another address (same walk).

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
    dnat_ns: float  # a new connection's DNAT (nat setup), over walking the same rule without it
    rules: int
    packets: int


_SERVICE, _BACKEND, _SOURCE = "10.96.0.1", "10.244.0.5:8080", "10.244.200.1"


def _dnat_table() -> str:
    return "\n".join(["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                      ":POSTROUTING ACCEPT [0:0]",
                      f"-A OUTPUT -d {_SERVICE}/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination {_BACKEND}",
                      "COMMIT", ""])


def dnat_ns(rounds: int = 2000) -> float:
    """What a DNAT costs a new TCP connection: connections to the rule's address (rewritten) minus
    connections to a neighbour address (the same one rule walked, no match)."""
    from verifier.kernel.measure_cost import alternating, connect_ns

    plain, rewritten = alternating(lambda: connect_ns(_dnat_table(), [("10.96.0.2", 80)], rounds, _SOURCE),
                                   lambda: connect_ns(_dnat_table(), [(_SERVICE, 80)], rounds, _SOURCE))
    return max(0.0, rewritten - plain)


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
    progress("DNAT of a new connection")
    return IptablesCalibration(rule_ns, round(max(0.0, per_set_rule - rule_ns["nft"]), 2), round(dnat_ns(), 1),
                               rules, packets)
