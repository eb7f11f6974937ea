"""The address trie that dispatches packets to per-identity chains (compiler/targets/iptables/dispatch.py).

Checked through the whole pipeline: compile, read the files back, simulate, compare with the IR
evaluator on every pair (so a wrong split or a leaf that misses an address shows up as a verdict),
and count the dispatch rules a packet walks (so a flat list sneaking back in shows up as cost).
"""

from __future__ import annotations

import ipaddress
import math
import random
from pathlib import Path

import pytest

from compiler.flow import Flow, Profile, Protocol
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.ir.evaluate import IREvaluator
from compiler.ir.model import IR
from compiler.targets import emit_targets
from compiler.targets.iptables import marks
from compiler.targets.iptables.dispatch import LEAF_CHAINS
from verifier.artifacts import read_ipsets, read_iptables
from verifier.simulate.iptables_flow import FlowSimulator
from verifier.simulate.targets import expected, simulators

POLICY = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: mesh, namespace: n}
spec:
  endpointSelector: {matchExpressions: [{key: app, operator: Exists}]}
  ingress:
  - fromEndpoints: [{matchLabels: {tier: a}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
  egress:
  - toEndpoints: [{matchLabels: {tier: b}}]
  - toEndpoints: [{matchLabels: {tier: a}}]
    toPorts: [{ports: [{port: "80", protocol: TCP}]}]
"""


def cluster(tmp_path: Path, pods: int, seed: int) -> IR:
    """``pods`` pods with distinct identities at scattered addresses in 10.244.0.0/16 (plus one outside)."""
    rng = random.Random(seed)
    addresses = [*rng.sample(range(1, 65534), pods - 1), ipaddress.ip_address("10.9.0.7")]
    docs = ["apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n"]
    for i, raw in enumerate(addresses):
        ip = raw if isinstance(raw, ipaddress.IPv4Address) else ipaddress.IPv4Address(0x0AF40000 + raw)
        tier = "a" if i % 3 else "b"
        docs.append(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: n, labels: "
                    f"{{app: p{i}, tier: {tier}}}}}\nspec: {{containers: [{{name: c}}]}}\nstatus: {{podIP: {ip}}}\n")
    (tmp_path / "cluster.yaml").write_text("---\n".join(docs))
    (tmp_path / "policy.yaml").write_text(POLICY)
    return build_ir(load_inputs([str(tmp_path)]), Profile.CILIUM)


def test_many_identities_are_dispatched_through_a_trie_that_keeps_every_verdict(tmp_path: Path) -> None:
    ir = cluster(tmp_path, 40, seed=7)
    artifacts, _ = emit_targets(ir, ["iptables"])
    rules = artifacts["iptables"]["rules.v4"]
    assert "-j NPC-DI4-" in rules and "-j NPC-DE4-" in rules, "40 identities must not be dispatched flat"
    sim = simulators(artifacts, ir.cluster)["iptables"]
    evaluator = IREvaluator(ir)
    outside = [ipaddress.IPv4Address("10.244.255.255"), ipaddress.IPv4Address("192.0.2.1"), ir.cluster.node_address]
    addresses = [a for ep in ir.cluster.endpoints for a in ep.addresses] + outside
    mismatches = []
    for src in addresses:
        for dst in addresses:
            if src == dst:
                continue
            for port in (80, 81):
                flow = Flow(src, dst, Protocol.TCP, port)
                answer = sim.answer(flow)
                want = expected(evaluator.evaluate(flow))
                if answer.verdict != want:
                    mismatches.append(f"{src} -> {dst}:{port}: iptables {answer.verdict}, IR {want}")
    assert not mismatches, "\n".join(mismatches[:20])


@pytest.mark.parametrize("pods", [16, 256])
def test_dispatch_rules_per_packet_grow_with_the_log_of_the_endpoints(tmp_path: Path, pods: int) -> None:
    ir = cluster(tmp_path, pods, seed=pods)
    artifacts, _ = emit_targets(ir, ["iptables"])
    files = artifacts["iptables"]
    sim = FlowSimulator(read_iptables(files["rules.v4"], "rules.v4", 4), read_ipsets(files["ipsets.v4"], "ipsets.v4"),
                        ir.cluster, tproxy_route=(marks.PROXY, marks.PROXY))
    endpoints = [ep.addresses[0] for ep in ir.cluster.endpoints]
    # per tree: at most two rules per level (a split is binary) and the leaf's set matches
    bound = 2 * (2 * math.ceil(math.log2(pods)) + LEAF_CHAINS)
    worst = 0
    for src, dst in zip(endpoints, endpoints[1:] + endpoints[:1], strict=True):
        result = sim.simulate(Flow(src, dst, Protocol.TCP, 80))
        worst = max(worst, sum(1 for s in result.trace if s.rule and s.chain.startswith(("NPC-DI", "NPC-DE"))))
    assert 0 < worst <= bound
