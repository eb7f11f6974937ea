"""The IR and its evaluator, L7: redirects, proxy decisions, parser conflicts (SEMANTICS §7).

Uses the cluster and helpers of ``test_ir.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_ir import CNP_HEAD, build, keys

from compiler.flow import DnsRequest, DropReason, HttpRequest, KafkaRequest, Verdict
from compiler.source import InputError

HTTP_DB = CNP_HEAD + """\
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts:
    - ports: [{port: '5432', protocol: TCP}]
      rules:
        http: [{method: GET, path: /api/.*}]
"""


def test_l7_allow_redirects_and_a_flow_without_request_is_redirected(tmp_path: Path) -> None:
    d = build(tmp_path, HTTP_DB).check("shop/web", "shop/db", "5432/TCP")
    assert d.verdict is Verdict.REDIRECTED
    assert d.ingress is not None and d.ingress.redirect == "http" and d.ingress.l7_allowed is None


def test_http_request_is_admitted_only_by_a_matching_rule(tmp_path: Path) -> None:
    net = build(tmp_path, HTTP_DB)
    ok = net.check("shop/web", "shop/db", "5432/TCP", HttpRequest("GET", "/api/v1"))
    assert ok.verdict is Verdict.FORWARDED and ok.ingress is not None and ok.ingress.l7_allowed is True
    for request in (HttpRequest("POST", "/api/v1"), HttpRequest("GET", "/apix"), HttpRequest("GET", "/x/api/v1")):
        denied = net.check("shop/web", "shop/db", "5432/TCP", request)
        assert denied.verdict is Verdict.DROPPED and denied.l7_denied and denied.drop_reason is None, request
        assert denied.ingress is not None and denied.ingress.l7_allowed is False


def test_a_matching_allow_without_l7_rules_admits_every_request(tmp_path: Path) -> None:
    net = build(tmp_path, HTTP_DB + "  - fromEndpoints: [{matchLabels: {app: web}}]\n")
    d = net.check("shop/web", "shop/db", "5432/TCP", HttpRequest("DELETE", "/anything"))
    assert d.verdict is Verdict.FORWARDED and d.ingress is not None
    assert d.ingress.redirect == "http" and d.ingress.l7_allowed is True
    assert keys(d.ingress.allow_rules) == {("CiliumNetworkPolicy shop/c", "spec.ingress[0]"),
                                           ("CiliumNetworkPolicy shop/c", "spec.ingress[1]")}


def test_l7_rules_of_a_default_allow_policy_redirect_but_never_deny(tmp_path: Path) -> None:
    net = build(tmp_path, HTTP_DB.replace("  ingress:\n", "  enableDefaultDeny: {ingress: false}\n  ingress:\n"))
    d = net.check("shop/web", "shop/db", "5432/TCP", HttpRequest("POST", "/nope"))
    assert d.verdict is Verdict.FORWARDED and d.ingress is not None
    assert d.ingress.redirect == "http" and d.ingress.l7_allowed is True


def test_http_rule_on_any_protocol_redirects_tcp_only(tmp_path: Path) -> None:
    net = build(tmp_path, HTTP_DB.replace("protocol: TCP", "protocol: ANY"))
    assert net.check("shop/web", "shop/db", "5432/TCP").verdict is Verdict.REDIRECTED
    udp = net.check("shop/web", "shop/db", "5432/UDP")
    assert udp.verdict is Verdict.FORWARDED and udp.ingress is not None and udp.ingress.redirect is None


def test_empty_http_rule_list_redirects_and_admits_every_request(tmp_path: Path) -> None:
    net = build(tmp_path, HTTP_DB.replace("http: [{method: GET, path: /api/.*}]", "http: []"))
    d = net.check("shop/web", "shop/db", "5432/TCP", HttpRequest("PUT", "/x"))
    assert d.verdict is Verdict.FORWARDED and d.ingress is not None and d.ingress.redirect == "http"


def test_a_dropped_direction_has_no_redirect(tmp_path: Path) -> None:
    net = build(tmp_path, HTTP_DB + "  ingressDeny: [{fromEndpoints: [{matchLabels: {app: web}}]}]\n")
    d = net.check("shop/web", "shop/db", "5432/TCP", HttpRequest("GET", "/api/v1"))
    assert d.drop_reason is DropReason.POLICY_DENY and d.ingress is not None
    assert d.ingress.redirect is None and d.ingress.l7_allowed is None and not d.l7_denied


def test_kafka_request_is_judged_by_role_and_topic(tmp_path: Path) -> None:
    net = build(tmp_path, CNP_HEAD + """\
  ingress:
  - toPorts:
    - ports: [{port: '5432', protocol: TCP}]
      rules:
        kafka: [{role: produce, topic: events}]
""")
    assert net.check("shop/web", "shop/db", "5432/TCP", KafkaRequest(0, 0, "", "events")).verdict is Verdict.FORWARDED
    assert net.check("shop/web", "shop/db", "5432/TCP", KafkaRequest(0, 0, "", "audit")).l7_denied
    assert net.check("shop/web", "shop/db", "5432/TCP", KafkaRequest(1, 0, "", "events")).l7_denied
    d = net.check("shop/web", "shop/db", "5432/TCP")
    assert d.ingress is not None and d.ingress.redirect == "kafka"


def test_dns_rules_on_egress_redirect_udp_and_match_patterns(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: dns, namespace: shop}
        spec:
          endpointSelector: {matchLabels: {app: web}}
          egress:
          - toEndpoints: [{matchLabels: {app: api}}]
            toPorts:
            - ports: [{port: '53', protocol: ANY}]
              rules:
                dns: [{matchPattern: '*.example.com'}]
        """)
    ok = net.check("shop/web", "shop/api", "53/UDP", DnsRequest("www.example.com"))
    assert ok.verdict is Verdict.FORWARDED and ok.egress is not None and ok.egress.redirect == "dns"
    assert net.check("shop/web", "shop/api", "53/UDP", DnsRequest("example.org")).l7_denied
    assert net.check("shop/web", "shop/api", "53/TCP").verdict is Verdict.REDIRECTED


def test_conflicting_l7_parsers_on_one_port_of_one_endpoint_are_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        build(tmp_path, HTTP_DB + """\
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts:
    - ports: [{port: '5432', protocol: TCP}]
      rules:
        kafka: [{topic: events}]
""")
    message = str(caught.value)
    assert "conflicting L7 parsers" in message and "shop/db" in message
    assert "spec.ingress[0] at " in message and "spec.ingress[1] at " in message
    assert "policies.yaml:8" in message and "policies.yaml:13" in message


def test_different_parsers_on_different_ports_do_not_conflict(tmp_path: Path) -> None:
    net = build(tmp_path, HTTP_DB + """\
  - fromEndpoints: [{matchLabels: {app: api}}]
    toPorts:
    - ports: [{port: '9092', protocol: TCP}]
      rules:
        kafka: [{topic: events}]
""")
    assert net.check("shop/api", "shop/db", "9092/TCP").verdict is Verdict.REDIRECTED


def test_named_l7_port_conflicts_after_resolution_on_the_destination(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        build(tmp_path, HTTP_DB + """\
  - toPorts:
    - ports: [{port: sql, protocol: TCP}]
      rules:
        kafka: [{topic: events}]
""")
