"""The L7 simulator over the emitted Envoy artifacts agrees with the IR evaluator.

For every flow that the IR evaluator sends to a proxy with a request, the simulator
(verifier/simulate/envoy.py, which reads only the emitted JSON) must find the same redirect
(parser) and give the same answer as the IR's ``l7_allowed``; when it allows, the rules it names
must be among the IR's matching allow rules. Run on every example with L7 rules (all endpoint
pairs, the host and a world address, each example's ports, a spread of HTTP/Kafka/DNS requests)
and on generated policy sets under both profiles.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings

from compiler.flow import DnsRequest, Flow, HttpRequest, KafkaRequest, PortSpec, Profile, Protocol
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.ir.evaluate import IREvaluator
from compiler.ir.model import IR
from compiler.source import InputError
from compiler.targets.envoy import EnvoyTarget
from compiler.targets.envoy.remotes import RemoteIdentities
from tests.strategies import GeneratedCase, cases
from tests.test_target_envoy import EXAMPLES, SMALL, emit, load
from verifier.simulate.envoy import EnvoySimulator, NotRedirected

HTTP_REQUESTS = [
    HttpRequest(method, path, host, headers)
    for method in ("GET", "POST", "PUT")
    for path in ("/", "/cloudcity.DoorManager/GetName", "/cloudcity.DoorManager/SetAccessCode", "/v1/events",
                 "/v1/events/42", "/v1/events?since=1", "/v1/status")
    for host in ("", "api.pipeline.svc")
    for headers in ((), (("Content-Type", "application/json"),))
]
KAFKA_REQUESTS = [
    KafkaRequest(key, version, client, topic)
    for key in (0, 1, 3, 18, 19, 20)
    for version in (0, 7)
    for client in ("", "admin-cli")
    for topic in ("events", "audit")
]
DNS_REQUESTS = [DnsRequest(n) for n in ("kafka.example.com", "KAFKA.example.com.", "api.pipeline.svc.cluster.local",
                                        "a.b.pipeline.svc.cluster.local", "evil.com")]
WORLD = ipaddress.ip_address("203.0.113.99")


def compare(ir: IR, files: dict[str, str], flows: Iterable[Flow]) -> int:
    """Assert the simulator agrees with the IR on every redirected side; returns how many were compared."""
    sim = EnvoySimulator(files)
    remotes = RemoteIdentities(ir)
    evaluator = IREvaluator(ir)
    compared = 0
    for flow in flows:
        decision = evaluator.evaluate(flow)
        for side, here, there in ((decision.egress, flow.src, flow.dst), (decision.ingress, flow.dst, flow.src)):
            if side is None or side.redirect is None:
                continue
            redirect = sim.redirect(here, side.direction.value, flow.protocol, flow.port)
            assert redirect["parser"] == side.redirect, (flow, side)
            if flow.l7 is None or side.l7_allowed is None:
                continue
            verdict = sim.decide(here, side.direction.value, remotes.of_address(there), flow.protocol, flow.port,
                                 flow.l7)
            assert verdict.allowed == side.l7_allowed, (flow, side, "\n".join(verdict.trace))
            if verdict.allowed:
                names = {f"{r.policy} {r.path}" for r in side.allow_rules}
                assert set(verdict.rules) <= names, (flow, verdict.rules, names)
            compared += 1
    return compared


def example_flows(ir: IR, ports: list[PortSpec]) -> list[Flow]:
    addresses = [ep.addresses[0] for ep in ir.cluster.endpoints if ep.ips]
    others = [ir.cluster.node_address, WORLD]
    flows = []
    for src in addresses + others:
        for dst in addresses:
            for port in ports:
                for request in [None, *HTTP_REQUESTS, *KAFKA_REQUESTS, *DNS_REQUESTS]:
                    flows.append(Flow(src, dst, port.protocol, port.port, request))
    for src in addresses:  # egress to the world (DNS to an external resolver, say)
        for port in ports:
            for dns_request in [None, *DNS_REQUESTS]:
                flows.append(Flow(src, WORLD, port.protocol, port.port, dns_request))
    return flows


def _has_l7(example: Path) -> bool:
    ir = build_ir(load_inputs([str(example)]))
    return any(rule.l7 is not None for policy in ir.endpoint_policies() for rule in policy.allow)


L7_EXAMPLES = [p for p in EXAMPLES if _has_l7(p)]


@pytest.mark.parametrize("example", L7_EXAMPLES, ids=lambda p: p.name)
def test_simulator_agrees_with_the_ir_on_every_example(example: Path) -> None:
    ir = build_ir(load_inputs([str(example)]))
    target = EnvoyTarget(ir)
    files = target.emit()
    assert not target.problems
    ports = [PortSpec.parse(p) for p in (example / "ports").read_text().split()]
    ports += [PortSpec(53, Protocol.UDP), PortSpec(53, Protocol.TCP)]
    assert compare(ir, files, example_flows(ir, ports)) > 100


def test_examples_with_l7_rules_are_found() -> None:
    assert {p.name for p in L7_EXAMPLES} >= {"grpc", "kafka-pipeline"}


#: generated input sets per run (each × 2 profiles × ~1000 L7 flows); raise it for a soak
GENERATED_EXAMPLES = int(os.environ.get("NETPOLC_ENVOY_EXAMPLES", "25"))
#: requests in the vocabulary of tests/strategies.py (its L7 rules use ports 80, 9092 and 53)
GENERATED_REQUESTS = [
    HttpRequest("GET", "/api/x", "", (("X-Token", "yes"),)), HttpRequest("POST", "/login"), HttpRequest("DELETE", "/"),
    KafkaRequest(0, 0, "", "orders"), KafkaRequest(1, 0, "", "logs"), KafkaRequest(3, 0, "", "orders"),
    DnsRequest("www.example.com"), DnsRequest("a.b"), DnsRequest("x.org"),
]
GENERATED_PORTS = [PortSpec(80, Protocol.TCP), PortSpec(9092, Protocol.TCP), PortSpec(53, Protocol.UDP),
                   PortSpec(53, Protocol.TCP)]


def l7_flows(ir: IR) -> list[Flow]:
    """Every source (pods, host, two world addresses) to every pod on the L7 ports, with each request."""
    pods = [ep.addresses[0] for ep in ir.cluster.endpoints if ep.ips]
    sources = [*pods, ir.cluster.node_address, WORLD, ipaddress.ip_address("8.8.8.8")]
    return [Flow(src, dst, port.protocol, port.port, request)
            for src in sources for dst in [*pods, WORLD] if src != dst or src in pods
            for port in GENERATED_PORTS for request in GENERATED_REQUESTS]


@settings(max_examples=GENERATED_EXAMPLES)
@given(cases(max_flows=30))
def test_simulator_agrees_with_the_ir_on_generated_policies(case: GeneratedCase) -> None:
    for profile in Profile:
        try:
            ir = build_ir(case.inputs, profile)
        except InputError:
            return  # e.g. conflicting parsers: refused before any target runs
        target = EnvoyTarget(ir)
        files = target.emit()
        if target.problems:
            # only the documented inexpressible peers may be refused (k8s CIDRs over part of an identity)
            assert profile is Profile.K8S and all("some but not all" in p.message for p in target.problems), \
                target.problems
            continue
        compare(ir, files, [*case.flows, *l7_flows(ir)])


# --- the proxy's replies ------------------------------------------------------------------------

def _small(tmp_path: Path) -> tuple[IR, EnvoySimulator]:
    inputs = load(tmp_path, SMALL)
    return build_ir(inputs), EnvoySimulator(emit(inputs))


def test_denied_http_gets_the_listeners_403_and_names_no_rule(tmp_path: Path) -> None:
    ir, sim = _small(tmp_path)
    web = RemoteIdentities(ir).of_address(ipaddress.ip_address("10.244.1.10"))
    ok = sim.decide("10.244.1.11", "ingress", web, Protocol.TCP, 8080,
                    HttpRequest("GET", "/v1/x", headers=(("X-Token", "yes"), ("x-trace", "1"))))
    assert ok.allowed and ok.rules == ("CiliumNetworkPolicy shop/api-l7 spec.ingress[0]",) and ok.reply == ""
    no_trace = sim.decide("10.244.1.11", "ingress", web, Protocol.TCP, 8080,
                          HttpRequest("GET", "/v1/x", headers=(("X-Token", "yes"),)))
    assert not no_trace.allowed and no_trace.reply == "HTTP 403 Access denied\r\n" and no_trace.rules == ()
    # headerMatches with a mismatch action only logs: POST to the right host passes without X-Debug
    assert sim.decide("10.244.1.11", "ingress", web, Protocol.TCP, 8080, HttpRequest("POST", "/", "api.shop")).allowed
    # another identity has no rule on the port at all
    assert not sim.decide("10.244.1.11", "ingress", 424242, Protocol.TCP, 8080, HttpRequest("GET", "/v1/x")).allowed


def test_kafka_and_dns_denials_use_their_protocols_errors(tmp_path: Path) -> None:
    ir, sim = _small(tmp_path)
    ids = RemoteIdentities(ir)
    broker = ids.of_address(ipaddress.ip_address("10.244.1.12"))
    dns = ids.of_address(ipaddress.ip_address("10.244.1.53"))
    produce = sim.decide("10.244.1.11", "egress", broker, Protocol.TCP, 9092, KafkaRequest(0, 3, "", "orders"))
    assert produce.allowed and produce.listener == "cilium-proxylib-egress"
    wrong = sim.decide("10.244.1.11", "egress", broker, Protocol.TCP, 9092, KafkaRequest(0, 3, "", "audit"))
    assert not wrong.allowed and wrong.reply == "Kafka error 29 TOPIC_AUTHORIZATION_FAILED"
    fetch_v4 = sim.decide("10.244.1.11", "egress", broker, Protocol.TCP, 9092, KafkaRequest(1, 4, "cli"))
    fetch_v5 = sim.decide("10.244.1.11", "egress", broker, Protocol.TCP, 9092, KafkaRequest(1, 5, "cli"))
    assert fetch_v4.allowed and not fetch_v5.allowed
    good = sim.decide("10.244.1.11", "egress", dns, Protocol.UDP, 53, DnsRequest("db.shop.svc.cluster.local"))
    assert good.allowed and good.proxy == "dns-proxy"
    assert sim.decide("10.244.1.11", "egress", dns, Protocol.UDP, 53, DnsRequest("EXAMPLE.com.")).allowed
    bad = sim.decide("10.244.1.11", "egress", dns, Protocol.UDP, 53, DnsRequest("a.b.shop.svc.cluster.local"))
    assert not bad.allowed and bad.reply == "DNS REFUSED"


def test_a_deny_rule_wins_in_the_proxy_too(tmp_path: Path) -> None:
    ir, sim = _small(tmp_path)
    broker = RemoteIdentities(ir).of_address(ipaddress.ip_address("10.244.1.12"))
    files = emit(load(tmp_path, SMALL))
    npds = json.loads(files["npds/shop/api.json"])
    # make the broker's identity also allowed by the L7 rule: the ingressDeny on every port still wins
    for pp in npds["ingress_per_port_policies"]:
        for rule in pp.get("rules", []):
            if "http_rules" in rule:
                rule["remote_policies"].append(broker)
    sim = EnvoySimulator({**files, "npds/shop/api.json": json.dumps(npds)})
    verdict = sim.decide("10.244.1.11", "ingress", broker, Protocol.TCP, 8080, HttpRequest("POST", "/", "api.shop"))
    assert not verdict.allowed and verdict.rules == ("CiliumNetworkPolicy shop/api-l7 spec.ingressDeny[0]",)


def test_a_port_that_is_not_redirected_is_refused(tmp_path: Path) -> None:
    _, sim = _small(tmp_path)
    with pytest.raises(NotRedirected):
        sim.decide("10.244.1.11", "ingress", 1, Protocol.TCP, 8000, HttpRequest("GET", "/"))
    with pytest.raises(NotRedirected):
        sim.redirect("10.244.1.10", "ingress", Protocol.TCP, 80)


def test_simulator_reads_an_output_directory(tmp_path: Path) -> None:
    from compiler.targets import compile_targets

    inputs = load(tmp_path, SMALL)
    compile_targets(inputs, build_ir(inputs), ["envoy"], tmp_path / "out")
    sim = EnvoySimulator.from_dir(tmp_path / "out")
    assert sim.redirect("10.244.1.11", "ingress", Protocol.TCP, 8080)["parser"] == "http"


WORLD_PEERS = SMALL.split("---\napiVersion: cilium.io/v2")[0] + """
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: world-l7, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEntities: [world]
    toPorts: [{ports: [{port: "8080", protocol: TCP}], rules: {http: [{method: GET}]}}]
  - fromCIDRSet: [{cidr: 0.0.0.0/0, except: [198.51.100.0/24]}]
    toPorts: [{ports: [{port: "8080", protocol: TCP}], rules: {http: [{method: POST}]}}]
  - fromCIDR: [192.0.2.0/24]
    toPorts: [{ports: [{port: "8080", protocol: TCP}], rules: {http: [{method: PUT}]}}]
  - fromEntities: [world-ipv4]
    toPorts: [{ports: [{port: "8081", protocol: TCP}], rules: {http: [{path: /v4}]}}]
"""


@pytest.mark.parametrize("profile", list(Profile))
def test_world_and_cidr_peers_become_the_identities_the_ipcache_gives(tmp_path: Path, profile: Profile) -> None:
    inputs = load(tmp_path, WORLD_PEERS)
    ir = build_ir(inputs, profile)
    files = emit(inputs, profile)
    sources = ["203.0.113.99", "198.51.100.7", "192.0.2.5", "10.244.1.10", "10.244.0.1"]
    flows = [Flow(ipaddress.ip_address(src), ipaddress.ip_address("10.244.1.11"), Protocol.TCP, port,
                  HttpRequest(method, path))
             for src in sources for port in (8080, 8081) for method in ("GET", "POST", "PUT") for path in ("/", "/v4")]
    assert compare(ir, files, flows) >= 30
    sim = EnvoySimulator(files)
    remotes = RemoteIdentities(ir)
    excepted = remotes.of_address(ipaddress.ip_address("198.51.100.7"))
    assert excepted != remotes.of_address(ipaddress.ip_address("203.0.113.99"))  # its own CIDR identity
    # the world entity covers the excepted range (only the CIDR rule excludes it)
    assert sim.decide("10.244.1.11", "ingress", excepted, Protocol.TCP, 8080, HttpRequest("GET", "/")).allowed
    assert not sim.decide("10.244.1.11", "ingress", excepted, Protocol.TCP, 8080, HttpRequest("POST", "/")).allowed
