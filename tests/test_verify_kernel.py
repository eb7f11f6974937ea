"""Counterexamples are real: the kernel, running the corrupted artifact, does what the proof says.

L7 counterexamples: the kernel delivers the connection to the proxy port of the corrupted listener.

For each mutation of tests/test_verify_targets.py the proof's counterexample flow is replayed in
the testbed with the corrupted target loaded (iptables rules and ipsets, or the eBPF maps under
the TC program): the real packet must meet the corrupted target's verdict, which differs from the
untouched target's. A witness address no testbed namespace owns is moved to the world namespace,
so the testbed is built with the witness's outside addresses in its world namespace.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from compiler.cluster import Cluster
from compiler.flow import Flow, IPAddress, PortSpec, Profile, Protocol
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.targets import emit_targets
from tests.test_verify_l7 import L7_MUTATIONS
from tests.test_verify_targets import MUTATIONS, ROOT, _files, _prove
from verifier.kernel import Testbed, kernel_unavailable_reason, probe_flows
from verifier.kernel.bpf import ebpf_unavailable_reason
from verifier.kernel.load_ebpf import load_ebpf
from verifier.kernel.load_iptables import load_iptables
from verifier.proofs import ProofContext, SourceSpec, Status, envoy_source
from verifier.simulate.envoy import EnvoySimulator, NotRedirected
from verifier.simulate.targets import simulators

pytestmark = pytest.mark.kernel

WORLD = ("203.0.113.5", "198.51.100.7")


def _corrupted_target(files: dict[str, dict[str, str]], mutated: dict[str, dict[str, str]]) -> str:
    changed = [t for t in files if files[t] != mutated[t]]
    assert len(changed) == 1
    return changed[0]


def _world(cluster: Cluster, flow: Flow) -> list[str]:
    """The world namespace's addresses: the usual ones and the flow's addresses no pod or node owns."""
    owned = {str(a) for ep in cluster.endpoints for a in ep.addresses} | {cluster.node_ip}
    return sorted({*WORLD, *(str(a) for a in (flow.src, flow.dst) if str(a) not in owned)})


def _stand_ins(address: IPAddress, owned: set[IPAddress]) -> list[IPAddress]:
    """The address, when a namespace can hold it; else the usual world addresses."""
    unusable = address.is_unspecified or address.is_multicast or address.is_reserved or \
        (address.version == 4 and int(address) >> 24 == 0)
    return [address] if address in owned or not unusable else [ipaddress.ip_address(w) for w in WORLD]


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_kernel_confirms_the_counterexample(mutation: str, tmp_path: Path) -> None:
    tools = ["iptables-restore", "ipset", "clang", "bpftool", "tc"]
    reason = kernel_unavailable_reason(tools) or ebpf_unavailable_reason()
    if reason:
        pytest.skip(reason)
    example, mutate = MUTATIONS[mutation]
    inputs = load_inputs([str(ROOT / "examples" / example)])
    files = _files(inputs)
    mutated = mutate(files)
    target = _corrupted_target(files, mutated)
    result = _prove(mutated, inputs)
    assert result.status is Status.COUNTEREXAMPLE
    sims = simulators(mutated, inputs.cluster)
    probeable: list[Flow] = []
    for found in result.counterexamples:  # the first one the kernel can probe
        flow = Flow(ipaddress.ip_address(found.src), ipaddress.ip_address(found.dst), Protocol[found.protocol],
                    found.port)
        # this kernel has no SCTP sockets: probe the same addresses and port over TCP or UDP,
        # when the simulators say the corruption shows there too
        protocols = [flow.protocol] if flow.protocol in (Protocol.TCP, Protocol.UDP) else [Protocol.TCP, Protocol.UDP]
        # the testbed puts every world address in one namespace, so a flow between two of them
        # never crosses the node: there, probe from (or to) a pod instead, when that shows too
        owned = {ep.addresses[0] for ep in inputs.cluster.endpoints if ep.addresses}
        # a namespace cannot own 0.0.0.0/8, multicast or reserved addresses: the usual world ones stand in
        srcs, dsts = (_stand_ins(a, owned) for a in (flow.src, flow.dst))
        ends = [(a, b) for a in srcs for b in dsts]
        if not any(a in owned or b in owned for a, b in ends):
            ends = [(a, b) for a in sorted(owned) for b in dsts] + [(a, b) for a in srcs for b in sorted(owned)]
        # nothing listens on (or connects to) port 0: there, probe ports where the simulators say it shows too
        ports = [flow.port] if flow.port else [1, 80, 443, 8080]
        variants = [Flow(a, b, p, port) for a, b in ends for p in protocols for port in ports if a != b]
        probeable += [v for v in variants if sims["iptables"].answer(v).verdict != sims["ebpf"].answer(v).verdict]
    if not probeable:
        pytest.skip(f"the counterexamples {[c.flow for c in result.counterexamples]} differ only over SCTP; kernel "
                    "probes cover TCP and UDP (no SCTP sockets)")
    flow = probeable[0]
    world = _world(inputs.cluster, flow)
    corrupted, other = sims[target].answer(flow), sims["ebpf" if target == "iptables" else "iptables"].answer(flow)
    assert corrupted.verdict != other.verdict
    assert corrupted.allowed != other.allowed, "these mutations change whether the flow connects"
    out = tmp_path / target
    out.mkdir()
    for name, text in mutated[target].items():
        (out / name).write_text(text)
    with Testbed(inputs.cluster, ports=[PortSpec(flow.port, flow.protocol)], world=world) as tb:
        if target == "iptables":
            load_iptables(tb, mutated[target])
            got = probe_flows(tb, [flow])[0]
        else:
            with load_ebpf(tb, tmp_path):
                got = probe_flows(tb, [flow])[0]
    assert got.ok == corrupted.allowed, f"{flow}: kernel {got}, corrupted {target} simulates {corrupted}"


@pytest.mark.parametrize("mutation", sorted(L7_MUTATIONS))
def test_the_kernel_sends_the_l7_counterexample_to_the_corrupted_proxy(mutation: str) -> None:
    """An L7 counterexample is a request on a connection the datapath hands to a proxy: loaded into
    the kernel, the (untouched) iptables rules deliver that connection to the proxy port whose
    listener the corrupted Envoy resource configures. (No Envoy with Cilium's filters runs here:
    the request's fate inside the proxy is the Envoy simulator's, which the proof replayed.)"""
    reason = kernel_unavailable_reason(["iptables-restore", "ipset"])
    if reason:
        pytest.skip(reason)
    example, mutate = L7_MUTATIONS[mutation]
    inputs = load_inputs([str(ROOT / "examples" / example)])
    files = emit_targets(build_ir(inputs, Profile.CILIUM), ["iptables", "ebpf", "envoy"])[0]
    mutated = mutate(files)
    result = envoy_source.prove(ProofContext(mutated, inputs.cluster, jobs=1,
                                             source=SourceSpec(inputs, Profile.CILIUM)))
    assert result.status is Status.COUNTEREXAMPLE
    found = result.counterexamples[0]
    flow = Flow(ipaddress.ip_address(found.src), ipaddress.ip_address(found.dst), Protocol[found.protocol], found.port)
    envoy = EnvoySimulator(mutated["envoy"])
    proxy_ports = set()
    for endpoint, direction in ((flow.dst, "ingress"), (flow.src, "egress")):
        try:
            proxy_ports.add(int(envoy.redirect(endpoint, direction, flow.protocol, flow.port)["proxy_port"]))
        except NotRedirected:
            continue
    assert proxy_ports
    world = _world(inputs.cluster, flow)
    with Testbed(inputs.cluster, ports=[PortSpec(flow.port, flow.protocol)], world=world) as tb:
        load = load_iptables(tb, mutated["iptables"])
        got = probe_flows(tb, [flow])[0]
        delivered = {(r.src, r.dst, r.dport, r.protocol): r.proxy_port for r in load.redirected()}
    assert got.ok, f"{flow}: {got}"
    key = (str(flow.src), str(flow.dst), flow.port, flow.protocol.name.lower())
    assert delivered.get(key) in proxy_ports, f"{found.flow}: kernel deliveries {delivered}"
