"""The formulas mean what the simulators do: a wrong encoding could otherwise "prove" anything.

For each example and profile, every target's outcome formula is built over a fully free packet
(the path a proof takes) and evaluated on concrete flows — pod pairs, the world, the node, many
protocols and ports — and must equal the simulator's answer for that flow on the same artifacts.
The source semantics' formula (verifier/encoding/source.py) must equal the reference evaluator.
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest
import z3
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from compiler.flow import Flow, Profile, Protocol
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.source import InputError
from compiler.targets import TargetError, emit_targets
from compiler.targets.ebpf.layout import IpcacheEntry, PolicyEntry, PolicyKey, ipcache_dump_entry, policy_dump_entry
from tests.strategies import GeneratedCase, cases
from verifier.encoding.ebpf import EbpfEncoding
from verifier.encoding.solve import packet_of
from verifier.encoding.targets import TargetEncodings
from verifier.encoding.terms import SymPacket, decode_outcome
from verifier.proofs import ProofContext, SourceSpec, Status, ebpf_source, iptables_ebpf
from verifier.proofs.slices import Slice
from verifier.simulate.ebpf import EbpfArtifacts, EbpfSimulator
from verifier.simulate.targets import SourceSimulator, simulators

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
PORTS = ((Protocol.TCP, 80), (Protocol.TCP, 8080), (Protocol.TCP, 9090), (Protocol.TCP, 5432),
         (Protocol.TCP, 10050), (Protocol.UDP, 53), (Protocol.TCP, 53), (Protocol.SCTP, 9100),
         (Protocol.TCP, 9092), (Protocol.ICMP, 8), (Protocol.TCP, 22), (Protocol.TCP, 443))
OUTSIDE = ("203.0.113.5", "10.1.2.3", "192.168.7.7")


@pytest.mark.parametrize("profile", list(Profile))
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_formulas_evaluate_to_the_simulators_answers(example: Path, profile: Profile) -> None:
    inputs = load_inputs([str(example)])
    files = emit_targets(build_ir(inputs, profile), ["iptables", "ebpf"])[0]
    cluster = inputs.cluster
    sims = {**simulators(files, cluster), "source": SourceSimulator(inputs, profile)}
    encodings = TargetEncodings(files, cluster.node_ip, SourceSpec(inputs, profile))
    node = int(cluster.node_address)
    pods = [int(a) for ep in cluster.endpoints for a in ep.addresses if a.version == 4]
    outside = [int(ipaddress.ip_address(a)) for a in OUTSIDE]
    checked = 0
    for local_src, local_dst, sources, destinations in ((False, False, pods + outside, pods + outside),
                                                        (True, False, [node], pods + outside),
                                                        (False, True, pods + outside, [node])):
        piece = Slice("free", 4, None, None, local_src, local_dst)
        packet, _ = packet_of(piece)
        terms = {name: encodings.sides[name].outcome(packet, piece) for name in ("iptables", "ebpf", "source")}
        assert isinstance(packet.src, z3.BitVecRef) and isinstance(packet.dst, z3.BitVecRef)
        for src in sources:
            for dst in destinations:
                if src == dst:
                    continue
                for proto, port in PORTS:
                    values = [(packet.src, z3.BitVecVal(src, 32)), (packet.dst, z3.BitVecVal(dst, 32)),
                              (packet.protocol, z3.BitVecVal(int(proto), 8)), (packet.dport, z3.BitVecVal(port, 16))]
                    flow = Flow(ipaddress.IPv4Address(src), ipaddress.IPv4Address(dst), proto, port)
                    for name, term in terms.items():
                        value = z3.simplify(z3.substitute(term, *values))
                        assert z3.is_bv_value(value), (name, flow)
                        got = decode_outcome(value.as_long())
                        assert got == sims[name].answer(flow).verdict, (name, flow)
                    checked += 1
    assert checked > 100


GENERATED = int(os.environ.get("NETPOLC_VERIFY_EXAMPLES", "40"))


@settings(max_examples=GENERATED, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_generated_policy_sets_formulas_match_simulators_and_the_targets_are_proved_equal(
        case: GeneratedCase) -> None:
    checked = 0
    for profile in Profile:
        try:
            files = emit_targets(build_ir(case.inputs, profile), ["iptables", "ebpf"])[0]
        except (InputError, TargetError):
            continue  # refused inputs: covered by the targets' own property tests
        cluster = case.inputs.cluster
        sims = {**simulators(files, cluster), "source": SourceSimulator(case.inputs, profile)}
        encodings = TargetEncodings(files, cluster.node_ip, SourceSpec(case.inputs, profile))
        node = cluster.node_address
        terms: dict[tuple[int, bool, bool], tuple[SymPacket, dict[str, z3.BitVecRef]]] = {}
        for flow in case.flows:
            if flow.src == flow.dst or flow.l7 is not None:
                continue
            family = flow.src.version
            key = (family, flow.src == node, flow.dst == node)
            if key not in terms:
                piece = Slice("free", family, None, None, key[1], key[2])
                packet, _ = packet_of(piece)
                terms[key] = (packet, {n: encodings.sides[n].outcome(packet, piece)
                                       for n in ("iptables", "ebpf", "source")})
            packet, outcomes = terms[key]
            width = 32 if family == 4 else 128
            values = [(packet.src, z3.BitVecVal(int(flow.src), width)),
                      (packet.dst, z3.BitVecVal(int(flow.dst), width)),
                      (packet.protocol, z3.BitVecVal(int(flow.protocol), 8)),
                      (packet.dport, z3.BitVecVal(flow.port, 16))]
            for name, term in outcomes.items():
                value = z3.simplify(z3.substitute(term, *values))
                assert decode_outcome(value.as_long()) == sims[name].answer(flow).verdict, \
                    f"{profile.value} {name} {flow}\n--- inputs ---\n{case.yaml}"
        ctx = ProofContext(files, cluster, jobs=1, source=SourceSpec(case.inputs, profile))
        for proof in (iptables_ebpf, ebpf_source):
            result = proof.prove(ctx)
            assert result.status is Status.PROVED, f"{profile.value}: {result.to_json()}\n--- inputs ---\n{case.yaml}"
        checked += 1
    assume(checked > 0)


# --- arbitrary eBPF maps: what a corrupted artifact may hold --------------------------------------

_ENTRY = st.tuples(
    st.sampled_from([0, 5, 7, 2]),  # identity: L4-only, the two endpoints, world
    st.sampled_from([0, 1]),  # direction
    st.sampled_from([0, 6, 17]),  # protocol (0 only with prefix 0)
    st.sampled_from([0, 80, 81, 443, 8080, 65535]),  # port (few values, so entries and flows meet)
    st.sampled_from([0, 8, 12, 16, 20, 23, 24]),  # port prefix
    st.booleans(),  # deny
    st.sampled_from([0, 10001, 10002]),  # proxy port
    st.integers(0, 3),  # priority
)


RawEntry = tuple[int, int, int, int, int, bool, int, int]


def _policy_entries(raw: list[RawEntry]) -> str:
    """The entries, after an allow-all egress entry (so that ingress decisions show through)."""
    docs = [json.dumps(policy_dump_entry(PolicyKey(0, 1, 0, 0, 0), PolicyEntry(False, 0, 0, 0)), sort_keys=True)]
    for identity, egress, proto, port, prefix, deny, proxy, priority in raw:
        proto = proto if prefix >= 8 else 0
        bits = max(0, prefix - 8)
        port = (port >> (16 - bits) << (16 - bits)) if bits else 0
        key = PolicyKey(identity, egress, proto, port, prefix)
        entry = PolicyEntry(deny, 0 if deny else proxy, 0 if deny else priority, prefix)
        docs.append(json.dumps(policy_dump_entry(key, entry), sort_keys=True))
    return "[\n" + ",\n".join(docs) + "\n]\n"


_FLOWS = [("a>b", 6, 80), ("w>b", 6, 80), ("a>b", 6, 81), ("w>b", 17, 80)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# the precedence rules of the two lookups (reference/cilium.md §1.7), each decided by one pair:
@example(a=[], b=[(5, 0, 6, 80, 24, False, 0, 0), (0, 0, 6, 80, 24, True, 0, 0)], flows=_FLOWS)  # L4 deny wins
@example(a=[], b=[(5, 0, 6, 80, 24, True, 0, 0), (0, 0, 6, 80, 24, False, 10002, 1)], flows=_FLOWS)  # L3 deny final
@example(a=[], b=[(5, 0, 6, 80, 24, False, 10001, 1), (0, 0, 6, 80, 24, False, 10002, 1)], flows=_FLOWS)  # tie: L3
@example(a=[], b=[(5, 0, 6, 80, 24, False, 10001, 1), (0, 0, 6, 80, 24, False, 10002, 2)], flows=_FLOWS)
@example(a=[], b=[(5, 0, 6, 80, 24, False, 10001, 2), (0, 0, 6, 80, 24, False, 10002, 1)], flows=_FLOWS)
@example(a=[], b=[(5, 0, 6, 80, 16, False, 10001, 1), (0, 0, 6, 80, 24, False, 10002, 1)], flows=_FLOWS)
@example(a=[], b=[(5, 0, 6, 80, 24, False, 10001, 1), (0, 0, 6, 80, 16, False, 10002, 1)], flows=_FLOWS)
@example(a=[], b=[(5, 0, 0, 0, 0, False, 0, 0), (2, 0, 6, 80, 20, False, 10001, 0)], flows=_FLOWS)
@given(a=st.lists(_ENTRY, max_size=8), b=st.lists(_ENTRY, max_size=8),
       flows=st.lists(st.tuples(st.sampled_from(["a>b", "w>b", "a>w", "b>a"]), st.sampled_from([6, 17, 1]),
                                st.sampled_from([0, 8, 80, 81, 443, 8080, 8081, 65535])), min_size=1, max_size=12))
def test_ebpf_formula_equals_the_simulator_on_arbitrary_maps(
        a: list[RawEntry], b: list[RawEntry], flows: list[tuple[str, int, int]]) -> None:
    addresses = {"a": "10.0.0.1", "b": "10.0.0.2", "w": "203.0.113.5"}
    endpoints = [{"id": 1, "namespace": "n", "name": "a", "ips": [addresses["a"]], "identity": 5,
                  "policy_map": "cilium_policy_v2_00001", "ingress_enforced": True, "egress_enforced": True},
                 {"id": 2, "namespace": "n", "name": "b", "ips": [addresses["b"]], "identity": 7,
                  "policy_map": "cilium_policy_v2_00002", "ingress_enforced": True, "egress_enforced": True}]
    ipcache = [IpcacheEntry(ipaddress.ip_network(addresses["a"] + "/32"), 5),
               IpcacheEntry(ipaddress.ip_network(addresses["b"] + "/32"), 7),
               IpcacheEntry(ipaddress.ip_network("0.0.0.0/0"), 2)]
    files = {"endpoints.json": json.dumps(endpoints),
             "ipcache.json": json.dumps([ipcache_dump_entry(e) for e in ipcache]),
             "cilium_policy_v2_00001.json": _policy_entries(a), "cilium_policy_v2_00002.json": _policy_entries(b)}
    encoding = EbpfEncoding(EbpfArtifacts(files))
    sim = EbpfSimulator(EbpfArtifacts(files))
    packet, _ = packet_of(Slice("free", 4, None, None, False, False))
    term = encoding.outcome(packet)
    for pair, proto, port in flows:
        src, dst = (ipaddress.IPv4Address(addresses[x]) for x in pair.split(">"))
        port = port & 0xFF if proto == 1 else port
        values = [(packet.src, z3.BitVecVal(int(src), 32)), (packet.dst, z3.BitVecVal(int(dst), 32)),
                  (packet.protocol, z3.BitVecVal(proto, 8)), (packet.dport, z3.BitVecVal(port, 16))]
        got = decode_outcome(z3.simplify(z3.substitute(term, *values)).as_long())
        result = sim.evaluate(Flow(src, dst, Protocol(proto), port))
        sides = [s for s in (result.egress, result.ingress) if s is not None]
        proxy = next((s.proxy_port for s in sides if s.proxy_port), None)
        want = ("dropped", None) if not result.allowed else ("redirected", proxy) if proxy else ("allowed", None)
        assert got == want, (pair, proto, port)
