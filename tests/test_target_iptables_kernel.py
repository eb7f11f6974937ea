"""The iptables target in a real kernel: the files load, and real packets get the IR's verdicts.

For every example (both profiles) and every upstream conformance case (``k8s``), the compiled
rules are loaded into a testbed node with ``ipset restore`` + ``iptables-restore`` and real TCP/UDP
connections are compared with :class:`~compiler.ir.evaluate.IREvaluator`: endpoint to endpoint
(the matrix), endpoint to world and host, world and host to endpoint. A REDIRECTED flow must
connect *through the stand-in proxy* (its log shows it arrived on the right proxy port), a
FORWARDED one must not touch the proxy, a DROPPED one must not connect.

Pod-to-itself pairs are left out of the comparison: that traffic stays on the pod's loopback and
never meets the node (tests/conformance/README.md, "Pod-to-self traffic").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compiler.flow import Direction, Flow, PortSpec, Profile, Protocol
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.ir.evaluate import IREvaluator, matrix
from compiler.ir.model import IR
from compiler.targets.iptables import IptablesTarget
from compiler.targets.proxyports import proxy_port
from tests.conformance_cases import CASES, load_case, load_model
from tests.strategies import GeneratedCase, cases
from verifier.kernel import HOST, WORLD, Testbed, kernel_matrix, kernel_unavailable_reason, probe_flows
from verifier.kernel.load_iptables import IptablesLoad, load_iptables
from verifier.simulate.targets import expected

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
CONFORMANCE_PORTS = [PortSpec.parse(p) for p in ("80/TCP", "81/TCP", "80/UDP", "81/UDP")]
#: Outside addresses for the world namespace: inside and outside the examples' CIDRs and excepts.
WORLD_ADDRESSES = ("203.0.113.5", "203.0.113.200", "198.51.100.7", "192.0.2.10", "8.8.8.8")


@pytest.fixture(autouse=True)
def _need_kernel() -> None:
    reason = kernel_unavailable_reason(["iptables", "iptables-restore", "ipset"])
    if reason:
        pytest.skip(reason)


def compile_files(ir: IR) -> dict[str, str]:
    target = IptablesTarget(ir)
    files = target.emit()
    assert not target.problems, [str(p) for p in target.problems]
    return files


def example_ports(example: Path) -> list[PortSpec]:
    return [PortSpec.parse(p) for p in (example / "ports").read_text().split()]


def diff_matrices(want: dict[str, dict[str, list[str]]], got: dict[str, dict[str, list[str]]]) -> list[str]:
    out = []
    for port, rows in want.items():
        for src, dsts in rows.items():
            w, g = set(dsts) - {src}, set(got[port][src]) - {src}
            out += [f"{port} {src} -> {d}: IR allows, kernel drops" for d in sorted(w - g)]
            out += [f"{port} {src} -> {d}: IR drops, kernel connects" for d in sorted(g - w)]
    return out


def expected_proxy(ir: IR, flow: Flow) -> int | None:
    """The proxy port the flow's connection must reach (the source's egress proxy first), else None.

    A flow that carries an L7 request the proxy admits is ALLOWED, not REDIRECTED, but its
    connection still went through the proxy: :func:`verifier.simulate.targets.expected` knows.
    """
    kind, port = expected(IREvaluator(ir).evaluate(flow))
    return port if kind == "redirected" else None


def compare_flows(testbed: Testbed, load: IptablesLoad, ir: IR, flows: Sequence[Flow]) -> list[str]:
    """Probe ``flows``; every verdict and every redirect must be the IR's. Returns the differences."""
    evaluator = IREvaluator(ir)
    load.clear_log()
    results = probe_flows(testbed, flows)
    redirected = {(r.src, r.dst, r.dport, r.protocol): r.proxy_port for r in load.redirected()}
    problems = []
    for flow, result in zip(flows, results, strict=True):
        decision = evaluator.evaluate(flow)
        if decision.allowed != result.ok:
            problems.append(f"{flow.src} -> {flow.dst} {flow.port}/{flow.protocol.name}: IR {decision.verdict.value}"
                            f" ({decision.drop_reason}), kernel {result}")
            continue
        key = (str(flow.src), str(flow.dst), flow.port, flow.protocol.name.lower())
        want = expected_proxy(ir, flow)
        if result.ok and redirected.get(key) != want:
            problems.append(f"{flow.src} -> {flow.dst} {flow.port}/{flow.protocol.name}: IR proxy {want}, "
                            f"kernel proxy {redirected.get(key)}")
    return problems


def edge_flows(testbed: Testbed, ir: IR, ports: Sequence[PortSpec]) -> list[Flow]:
    """Every endpoint to and from the world addresses and the host, and pod pairs, on the ports."""
    sites = [ir.cluster.node_address, *(ipaddress.ip_address(a) for a in testbed.site(WORLD).addresses)]
    pods = [ep.addresses[0] for ep in ir.cluster.endpoints if ep.ips]
    flows = []
    for port in ports:
        if port.protocol not in (Protocol.TCP, Protocol.UDP):
            continue
        for pod in pods:
            for other in sites:
                flows += [Flow(pod, other, port.protocol, port.port), Flow(other, pod, port.protocol, port.port)]
            flows += [Flow(pod, dst, port.protocol, port.port) for dst in pods if dst != pod]
    return flows


# --- the files load --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch() -> Iterator[Testbed]:
    inputs = load_inputs([str(EXAMPLES[0])])
    with Testbed(inputs.cluster, listen=False) as tb:
        yield tb


@pytest.mark.parametrize("profile", list(Profile), ids=[p.value for p in Profile])
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_ipset_restore_and_iptables_restore_accept_every_example(
    scratch: Testbed, example: Path, profile: Profile
) -> None:
    files = compile_files(build_ir(load_inputs([str(example)]), profile))
    scratch.node_exec(["iptables-restore"], input="*filter\nCOMMIT\n*mangle\nCOMMIT\n")
    scratch.node_exec(["ipset", "destroy"])
    scratch.node_exec(["ipset", "restore"], input=files["ipsets.v4"])
    scratch.node_exec(["iptables-restore", "--test"], input=files["rules.v4"])
    scratch.node_exec(["iptables-restore"], input=files["rules.v4"])
    saved = scratch.node_exec(["iptables-save"]).stdout
    declared = sum(1 for line in files["rules.v4"].splitlines() if line.startswith("-A "))
    assert sum(1 for line in saved.splitlines() if line.startswith("-A ")) == declared
    sets = scratch.node_exec(["ipset", "save"]).stdout
    assert sum(1 for line in sets.splitlines() if line.startswith("add ")) == files["ipsets.v4"].count("\nadd ")


# --- examples: matrix, world and host flows, redirects ----------------------------------------------


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_every_example_gets_the_ir_verdicts_from_real_packets_under_both_profiles(example: Path) -> None:
    inputs = load_inputs([str(example)])
    ports = example_ports(example)
    with Testbed(inputs.cluster, ports=ports, world=list(WORLD_ADDRESSES)) as tb:
        for profile in Profile:
            ir = build_ir(inputs, profile)
            load = load_iptables(tb, compile_files(ir))
            got = kernel_matrix(tb, ports)
            problems = diff_matrices(matrix(ir, ports), got)
            problems += compare_flows(tb, load, ir, edge_flows(tb, ir, ports))
            assert not problems, f"{example.name} under {profile.value}:\n" + "\n".join(problems)


def test_redirected_flows_reach_the_proxy_port_of_their_parser_and_direction() -> None:
    example = ROOT / "examples" / "kafka-pipeline"
    inputs = load_inputs([str(example)])
    ir = build_ir(inputs, Profile.CILIUM)
    ports = example_ports(example)
    flows = [f for f in edge_flows_static(ir, ports) if expected_proxy(ir, f) is not None]
    assert {expected_proxy(ir, f) for f in flows} >= {proxy_port("kafka", Direction.INGRESS)}
    with Testbed(inputs.cluster, ports=ports) as tb:
        load = load_iptables(tb, compile_files(ir))
        assert not compare_flows(tb, load, ir, flows)
        assert len(load.redirected()) >= len(flows)


HOST_L7 = """\
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: a, labels: {app: client}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.1.12}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l7, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{method: GET}]}}]
"""


@pytest.mark.parametrize("profile", list(Profile), ids=[p.value for p in Profile])
def test_connections_the_node_opens_are_redirected_too(tmp_path: Path, profile: Profile) -> None:
    """Host-originated connections never cross PREROUTING, where TPROXY lives: NPC-OUTPUT marks them
    and the policy route turns them around through lo (compiler/targets/iptables/chains.py)."""
    (tmp_path / "c.yaml").write_text(HOST_L7)
    inputs = load_inputs([str(tmp_path)])
    ir = build_ir(inputs, profile)
    web, client = (ep.addresses[0] for ep in sorted(inputs.cluster.endpoints, key=lambda e: e.name, reverse=True))
    flows = [Flow(ir.cluster.node_address, web, Protocol.TCP, 80), Flow(client, web, Protocol.TCP, 80)]
    assert [expected_proxy(ir, f) for f in flows] == [proxy_port("http", Direction.INGRESS)] * 2
    with Testbed(inputs.cluster, ports=[PortSpec(80, Protocol.TCP)]) as tb:
        load = load_iptables(tb, compile_files(ir))
        assert not compare_flows(tb, load, ir, flows)
        # later packets of the host's connection keep going to the proxy (the connection mark)
        assert {(r.src, r.dst) for r in load.redirected()} >= {(str(f.src), str(f.dst)) for f in flows}


def edge_flows_static(ir: IR, ports: Sequence[PortSpec]) -> list[Flow]:
    pods = [ep.addresses[0] for ep in ir.cluster.endpoints if ep.ips]
    return [Flow(a, b, p.protocol, p.port) for p in ports if p.protocol in (Protocol.TCP, Protocol.UDP)
            for a in pods for b in pods if a != b]


# --- upstream conformance model (both profiles) ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("profile", list(Profile), ids=[p.value for p in Profile])
def test_every_conformance_case_gets_the_ir_matrix_from_real_packets(tmp_path: Path, profile: Profile) -> None:
    assert len(CASES) >= 58
    model = load_model()
    failures = []
    with Testbed(model.cluster, ports=CONFORMANCE_PORTS) as tb:
        for path in CASES:
            _, inputs = load_case(path, tmp_path)
            assert inputs.cluster.endpoints == model.cluster.endpoints  # same pods, same addresses
            ir = build_ir(inputs, profile)
            load_iptables(tb, compile_files(ir))
            problems = diff_matrices(matrix(ir, CONFORMANCE_PORTS), kernel_matrix(tb, CONFORMANCE_PORTS))
            failures += [f"{path.stem}: {p}" for p in problems]
    assert not failures, "\n".join(failures)


# --- IPv6 ------------------------------------------------------------------------------------------

DUAL = """\
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: a, labels: {app: server}}
spec: {containers: [{name: c, ports: [{name: web, containerPort: 80}]}]}
status: {podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}, {ip: "fd00:10:244::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: friend, namespace: a, labels: {app: friend}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.1.11, podIPs: [{ip: 10.244.1.11}, {ip: "fd00:10:244::11"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: stranger, namespace: a, labels: {app: stranger}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.1.12, podIPs: [{ip: 10.244.1.12}, {ip: "fd00:10:244::12"}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: server-in, namespace: a}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: friend}}}]
    ports: [{port: web}]
  - from: [{ipBlock: {cidr: "fd00:10:244::12/128"}}]
    ports: [{port: 81, protocol: UDP}]
"""


def test_ipv6_flows_get_the_ir_verdicts_too(tmp_path: Path) -> None:
    (tmp_path / "dual.yaml").write_text(DUAL)
    inputs = load_inputs([str(tmp_path / "dual.yaml")])
    ports = [PortSpec(80, Protocol.TCP), PortSpec(81, Protocol.UDP)]
    with Testbed(inputs.cluster, ports=ports) as tb:
        for profile in Profile:
            ir = build_ir(inputs, profile)
            files = compile_files(ir)
            assert "rules.v6" in files
            load = load_iptables(tb, files)
            eps = inputs.cluster.endpoints
            flows = [Flow(a.addresses[i], b.addresses[i], p.protocol, p.port)
                     for i in (0, 1) for a in eps for b in eps if a != b for p in ports]
            allowed = {(str(f.src), str(f.dst), f.port) for f in flows if IREvaluator(ir).evaluate(f).allowed}
            assert ("fd00:10:244::11", "fd00:10:244::10", 80) in allowed
            assert ("fd00:10:244::12", "fd00:10:244::10", 80) not in allowed
            assert not compare_flows(tb, load, ir, flows), profile


# --- generated policy sets -------------------------------------------------------------------------

GENERATED = 12


def _probeable(ir: IR, flows: Sequence[Flow]) -> list[Flow]:
    out = []
    for flow in flows:
        src_ep, dst_ep = ir.cluster.endpoint_at(flow.src), ir.cluster.endpoint_at(flow.dst)
        if flow.protocol not in (Protocol.TCP, Protocol.UDP) or flow.src == flow.dst:
            continue
        if src_ep is None and dst_ep is None:
            continue  # no endpoint involved: no policy applies
        if flow.src.version != flow.dst.version:
            continue
        out.append(flow)
    return out


@pytest.mark.slow
@settings(max_examples=GENERATED, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=cases(max_flows=20), profile=st.sampled_from(list(Profile)))
def test_generated_policy_sets_get_the_ir_verdicts_from_real_packets(case: GeneratedCase, profile: Profile) -> None:
    ir = build_ir(case.inputs, profile)
    target = IptablesTarget(ir)
    files = target.emit()
    if target.problems:  # only TPROXY of SCTP (DNS on protocol ANY) is refused; that is tested elsewhere
        assert all("not SCTP" in str(p) for p in target.problems), target.problems
        return
    flows = _probeable(ir, case.flows)
    if not flows:
        return
    node = ir.cluster.node_address
    world = sorted({str(a) for f in flows for a in (f.src, f.dst)
                    if a != node and ir.cluster.endpoint_at(a) is None})
    ports = sorted({PortSpec(f.port, f.protocol) for f in flows})
    with Testbed(case.inputs.cluster, ports=ports, world=world or False) as tb:
        load = load_iptables(tb, files)
        problems = compare_flows(tb, load, ir, flows)
    assert not problems, case.yaml + "\n" + "\n".join(problems)


__all__ = ["HOST"]
