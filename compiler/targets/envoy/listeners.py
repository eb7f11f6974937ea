"""Envoy listeners and clusters for the proxy ports, as xDS ``DiscoveryResponse`` documents.

Layout after Cilium's ``getListenerConf`` (reference/cilium.md §5.6): listener filters
``tls_inspector`` then ``cilium.bpf_metadata``; HTTP listeners run ``cilium.network`` then the
HTTP connection manager with ``cilium.l7policy`` and the router, routing to the original-destination
cluster (a gRPC-aware route first); other parsers (Kafka, proxylib) run ``cilium.network`` with
``libcilium.so`` then ``tcp_proxy``. Only the plain (``raw_buffer``) filter chain is emitted: TLS
termination/origination is not part of the IR.

Cilium's own filter configs (``cilium.BpfMetadata``, ``cilium.NetworkFilter``, ``cilium.L7Policy``)
are not Envoy API types, so they are emitted as ``xds.type.v3.TypedStruct`` (Envoy converts a
TypedStruct into the named message when the Cilium filters are compiled in): everything else is
Envoy's own v3 API and parses under the ``xds-protos`` messages.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from compiler.flow import Direction
from compiler.targets import proxyports

Json = dict[str, Any]

TYPE_PREFIX = "type.googleapis.com/"
LISTENER_TYPE = TYPE_PREFIX + "envoy.config.listener.v3.Listener"
CLUSTER_TYPE = TYPE_PREFIX + "envoy.config.cluster.v3.Cluster"
TYPED_STRUCT = TYPE_PREFIX + "xds.type.v3.TypedStruct"
#: Cilium's BPF filesystem root and IP cache map name as bpf_metadata gets them (§5.6).
BPF_ROOT = "/sys/fs/bpf"
IPCACHE_NAME = "cilium_ipcache_v2"
#: Body of the local reply to a denied HTTP request (§5.4, agent flag http-403-msg unset).
DENIED_403_BODY = "Access denied\r\n"
#: Cilium's default proxy-connect-timeout (seconds) for the original-destination clusters.
CONNECT_TIMEOUT = "2s"


def typed_struct(type_name: str, value: Json) -> Json:
    """A Cilium filter config, honest about not being an Envoy API type (see module docstring)."""
    return {"@type": TYPED_STRUCT, "type_url": TYPE_PREFIX + type_name, "value": value}


def cluster_name(direction: Direction) -> str:
    return f"{direction.value}-cluster"


def listener(parser: str, direction: Direction, ipv6: bool) -> Json:
    """The listener serving ``parser`` in ``direction`` on its fixed proxy port (proxyports.py)."""
    name = proxyports.listener(parser, direction)
    port = proxyports.proxy_port(parser, direction)
    bpf_metadata = typed_struct("cilium.BpfMetadata", {
        "bpf_root": BPF_ROOT,
        "is_ingress": direction is Direction.INGRESS,
        "use_original_source_address": True,
        "is_l7lb": False,
        "proxy_id": port,
        "ipcache_name": IPCACHE_NAME,
    })
    if parser == "http":
        filters = [
            {"name": "cilium.network", "typed_config": typed_struct("cilium.NetworkFilter", {})},
            {"name": "envoy.filters.network.http_connection_manager",
             "typed_config": _http_connection_manager(name, cluster_name(direction))},
        ]
    else:
        filters = [
            {"name": "cilium.network",
             "typed_config": typed_struct("cilium.NetworkFilter", {"proxylib": "libcilium.so"})},
            {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
                "@type": TYPE_PREFIX + "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
                "stat_prefix": name,
                "cluster": cluster_name(direction),
            }},
        ]
    out: Json = {
        "@type": LISTENER_TYPE,
        "name": name,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "transparent": True,
        "listener_filters": [
            {"name": "envoy.filters.listener.tls_inspector", "typed_config": {
                "@type": TYPE_PREFIX + "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}},
            {"name": "cilium.bpf_metadata", "typed_config": bpf_metadata},
        ],
        "filter_chains": [{"filter_chain_match": {"transport_protocol": "raw_buffer"}, "filters": filters}],
    }
    if ipv6:
        out["additional_addresses"] = [{"address": {"socket_address": {"address": "::", "port_value": port}}}]
    return out


def _http_connection_manager(stat_prefix: str, cluster: str) -> Json:
    return {
        "@type": TYPE_PREFIX + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": stat_prefix,
        "use_remote_address": True,
        "skip_xff_append": True,
        "route_config": {
            "name": "default",
            "virtual_hosts": [{
                "name": "default",
                "domains": ["*"],
                "routes": [
                    # gRPC first, with no timeout cap from grpc-timeout (§5.4, gRPC-aware first route)
                    {"match": {"prefix": "/", "grpc": {}},
                     "route": {"cluster": cluster, "max_stream_duration": {"grpc_timeout_header_max": "0s"}}},
                    {"match": {"prefix": "/"}, "route": {"cluster": cluster}},
                ],
            }],
        },
        "http_filters": [
            {"name": "cilium.l7policy",
             "typed_config": typed_struct("cilium.L7Policy", {"denied_403_body": DENIED_403_BODY})},
            {"name": "envoy.filters.http.router",
             "typed_config": {"@type": TYPE_PREFIX + "envoy.extensions.filters.http.router.v3.Router"}},
        ],
    }


def cluster(direction: Direction) -> Json:
    """The original-destination cluster a listener forwards allowed traffic to."""
    return {
        "@type": CLUSTER_TYPE,
        "name": cluster_name(direction),
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": CONNECT_TIMEOUT,
    }


def discovery_response(type_url: str, resources: list[Json]) -> Json:
    """An xDS ``DiscoveryResponse`` whose version is a hash of its resources (deterministic)."""
    body = json.dumps(resources, sort_keys=True).encode()
    return {"version_info": hashlib.sha256(body).hexdigest()[:16], "type_url": type_url, "resources": resources}
