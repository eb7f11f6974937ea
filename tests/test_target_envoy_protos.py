"""Every Envoy API object the envoy target emits parses under Envoy's own v3 protos (xds-protos),
with unknown fields rejected; Cilium's types (NPDS ``cilium.NetworkPolicy`` and the Cilium
filter configs), which xds-protos does not ship, are checked against a schema built here from
the field names and numbers of reference/cilium.md §5.2 and §5.6 — and that schema embeds the
real Envoy messages (``config.route.v3.HeaderMatcher``, ``SocketAddress.Protocol``), so the
Envoy parts of an NPDS resource are parsed by Envoy's protos too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("envoy.config.listener.v3.listener_pb2", reason="xds-protos is a dev dependency")

# the imports register the message types the Any fields name
from envoy.config.cluster.v3 import cluster_pb2  # noqa: F401
from envoy.config.core.v3 import address_pb2  # noqa: F401
from envoy.config.listener.v3 import listener_pb2  # noqa: F401
from envoy.config.route.v3 import route_components_pb2  # noqa: F401
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401
from envoy.extensions.filters.listener.tls_inspector.v3 import tls_inspector_pb2  # noqa: F401
from envoy.extensions.filters.network.http_connection_manager.v3 import (  # noqa: F401
    http_connection_manager_pb2,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2  # noqa: F401
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from xds.type.v3 import typed_struct_pb2  # noqa: F401

from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.targets.envoy import EnvoyTarget
from compiler.targets.envoy.listeners import TYPED_STRUCT
from tests.test_target_envoy import EXAMPLES, SMALL, emit, load

F = descriptor_pb2.FieldDescriptorProto
Field = tuple[str, int, int, int, str]  # name, number, label, type, type_name
OPT, REP = F.LABEL_OPTIONAL, F.LABEL_REPEATED


def _message(name: str, fields: list[Field], oneof: dict[str, str] | None = None) -> descriptor_pb2.DescriptorProto:
    msg = descriptor_pb2.DescriptorProto(name=name)
    if oneof:
        msg.oneof_decl.add(name="l7")
    for fname, number, label, ftype, type_name in fields:
        field = msg.field.add(name=fname, number=number, label=label, type=ftype, json_name=fname)
        if type_name:
            field.type_name = type_name
        if oneof and fname in oneof:
            field.oneof_index = 0
    return msg


def _cilium_pool() -> descriptor_pool.DescriptorPool:
    """cilium.* messages per reference/cilium.md §5.2 (NPDS numbers) and §5.6 (filter configs:
    names and types from the reference; their field numbers do not matter to JSON)."""
    fdp = descriptor_pb2.FileDescriptorProto(name="netpolc_test/cilium_subset.proto", package="cilium", syntax="proto3")
    fdp.dependency.extend(["envoy/config/route/v3/route_components.proto", "envoy/config/core/v3/address.proto"])
    S, B, U32, U64, I32, M, E = F.TYPE_STRING, F.TYPE_BOOL, F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_INT32, \
        F.TYPE_MESSAGE, F.TYPE_ENUM
    fdp.message_type.extend([
        _message("NetworkPolicy", [
            ("endpoint_ips", 1, REP, S, ""), ("endpoint_id", 2, OPT, U64, ""),
            ("ingress_per_port_policies", 3, REP, M, ".cilium.PortNetworkPolicy"),
            ("egress_per_port_policies", 4, REP, M, ".cilium.PortNetworkPolicy"),
            ("conntrack_map_name", 5, OPT, S, "")]),
        _message("PortNetworkPolicy", [
            ("port", 1, OPT, U32, ""), ("protocol", 2, OPT, E, ".envoy.config.core.v3.SocketAddress.Protocol"),
            ("rules", 3, REP, M, ".cilium.PortNetworkPolicyRule"), ("end_port", 4, OPT, U32, "")]),
        _message("PortNetworkPolicyRule", [
            ("l7_proto", 2, OPT, S, ""), ("name", 5, OPT, S, ""), ("server_names", 6, REP, S, ""),
            ("remote_policies", 7, REP, U32, ""), ("deny", 8, OPT, B, ""), ("proxy_id", 9, OPT, U32, ""),
            ("http_rules", 100, OPT, M, ".cilium.HttpNetworkPolicyRules"),
            ("kafka_rules", 101, OPT, M, ".cilium.KafkaNetworkPolicyRules"),
            ("l7_rules", 102, OPT, M, ".cilium.L7NetworkPolicyRules")],
            oneof={"http_rules": "l7", "kafka_rules": "l7", "l7_rules": "l7"}),
        _message("HttpNetworkPolicyRules", [("http_rules", 1, REP, M, ".cilium.HttpNetworkPolicyRule")]),
        _message("HttpNetworkPolicyRule", [
            ("headers", 1, REP, M, ".envoy.config.route.v3.HeaderMatcher"),
            ("header_matches", 2, REP, M, ".cilium.HeaderMatch")]),
        _message("KafkaNetworkPolicyRules", [("kafka_rules", 1, REP, M, ".cilium.KafkaNetworkPolicyRule")]),
        _message("KafkaNetworkPolicyRule", [
            ("api_version", 1, OPT, I32, ""), ("api_keys", 2, REP, I32, ""), ("client_id", 3, OPT, S, ""),
            ("topic", 4, OPT, S, "")]),
        _message("L7NetworkPolicyRules", [
            ("l7_allow_rules", 1, REP, M, ".cilium.L7NetworkPolicyRule"),
            ("l7_deny_rules", 2, REP, M, ".cilium.L7NetworkPolicyRule")]),
        _message("BpfMetadata", [
            ("bpf_root", 1, OPT, S, ""), ("is_ingress", 2, OPT, B, ""), ("use_original_source_address", 3, OPT, B, ""),
            ("is_l7lb", 4, OPT, B, ""), ("proxy_id", 5, OPT, U32, ""), ("ipcache_name", 6, OPT, S, "")]),
        _message("NetworkFilter", [("proxylib", 1, OPT, S, "")]),
        _message("L7Policy", [("access_log_path", 1, OPT, S, ""), ("denied_403_body", 2, OPT, S, "")]),
    ])
    header_match = _message("HeaderMatch", [
        ("name", 1, OPT, S, ""), ("value", 2, OPT, S, ""),
        ("match_action", 3, OPT, E, ".cilium.HeaderMatch.MatchAction"),
        ("mismatch_action", 4, OPT, E, ".cilium.HeaderMatch.MismatchAction"), ("value_sds_secret", 5, OPT, S, "")])
    for enum_name, values in (("MatchAction", ["CONTINUE_ON_MATCH", "FAIL_ON_MATCH", "DELETE_ON_MATCH"]),
                              ("MismatchAction", ["FAIL_ON_MISMATCH", "CONTINUE_ON_MISMATCH", "ADD_ON_MISMATCH",
                                                  "DELETE_ON_MISMATCH", "REPLACE_ON_MISMATCH"])):
        enum = header_match.enum_type.add(name=enum_name)
        for number, value in enumerate(values):
            enum.value.add(name=value, number=number)
    fdp.message_type.append(header_match)
    l7_rule = _message("L7NetworkPolicyRule", [("rule", 1, REP, M, ".cilium.L7NetworkPolicyRule.RuleEntry"),
                                               ("name", 3, OPT, S, "")])
    entry = l7_rule.nested_type.add(name="RuleEntry")
    entry.field.add(name="key", number=1, label=OPT, type=S, json_name="key")
    entry.field.add(name="value", number=2, label=OPT, type=S, json_name="value")
    entry.options.map_entry = True
    fdp.message_type.append(l7_rule)
    pool = descriptor_pool.Default()  # beside Envoy's messages, which the schema refers to
    try:
        pool.FindFileByName(fdp.name)
    except KeyError:
        pool.Add(fdp)
    return pool


POOL = _cilium_pool()


def cilium(name: str) -> Message:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(f"cilium.{name}"))()


def parse(doc: dict[str, Any], message: Message) -> Message:
    return json_format.ParseDict(doc, message, ignore_unknown_fields=False)


def typed_structs(node: Any) -> list[dict[str, Any]]:
    """Every TypedStruct in a JSON tree."""
    if isinstance(node, list):
        return [t for item in node for t in typed_structs(item)]
    if not isinstance(node, dict):
        return []
    found = [node] if node.get("@type") == TYPED_STRUCT else []
    return found + [t for value in node.values() for t in typed_structs(value)]


def check_files(files: dict[str, str]) -> int:
    """Parse every document of one envoy output; returns how many objects were checked."""
    checked = 0
    for rel in ("listeners.json", "clusters.json"):
        doc = json.loads(files[rel])
        response = parse(doc, discovery_pb2.DiscoveryResponse())
        assert len(response.resources) == len(doc["resources"])  # type: ignore[attr-defined]
        for struct in typed_structs(doc):
            parse(struct["value"], cilium(struct["type_url"].rsplit(".", 1)[-1]))
            checked += 1
        checked += len(doc["resources"])
    for rel, text in sorted(files.items()):
        if rel.startswith("npds/"):
            policy = parse(json.loads(text), cilium("NetworkPolicy"))
            assert policy.endpoint_id > 0  # type: ignore[attr-defined]
            checked += 1
    return checked


def test_the_schema_rejects_what_envoy_would_reject() -> None:
    """The check can fail: a misspelt field, a bad regex matcher shape or an unknown enum name."""
    good = {"endpoint_ips": ["10.0.0.1"], "endpoint_id": 7, "ingress_per_port_policies": [
        {"port": 80, "protocol": "TCP", "rules": [{"http_rules": {"http_rules": [
            {"headers": [{"name": ":path", "string_match": {"safe_regex": {"regex": "/.*"}}}]}]}}]}]}
    parse(good, cilium("NetworkPolicy"))
    for bad in (
        {**good, "endpoint_ip": ["10.0.0.1"]},
        {"ingress_per_port_policies": [{"protocol": "TCPX"}]},
        {"ingress_per_port_policies": [{"rules": [{"http_rules": {"http_rules": [
            {"headers": [{"name": ":path", "safe_regex_match": {"regex": "/"}, "bogus": 1}]}]}}]}]},
    ):
        with pytest.raises(json_format.ParseError):
            parse(bad, cilium("NetworkPolicy"))
    with pytest.raises(json_format.ParseError):
        parse({"resources": [{"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "nme": "x"}]},
              discovery_pb2.DiscoveryResponse())


def test_small_policy_output_parses(tmp_path: Path) -> None:
    files = emit(load(tmp_path, SMALL))
    assert check_files(files) >= 2 + 4 + 1


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_output_parses_under_envoys_protos(example: Path) -> None:
    target = EnvoyTarget(build_ir(load_inputs([str(example)])))
    files = target.emit()
    assert not target.problems
    check_files(files)
