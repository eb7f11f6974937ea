"""The Envoy target: the L7 side of redirected ports (DESIGN §4, reference/cilium.md §5).

``OUT/envoy/`` holds:
- ``listeners.json`` / ``clusters.json``: xDS DiscoveryResponses (LDS/CDS) with one listener per
  proxy port in use (ports from compiler/targets/proxyports.py, the ones iptables TPROXY and the
  eBPF policy map redirect to) and the original-destination clusters they forward to;
- ``npds/<namespace>/<pod>.json``: the ``cilium.NetworkPolicy`` NPDS resource of every endpoint
  with an L7 redirect, ``endpoint_id`` as the eBPF target numbers its policy maps
  (compiler/targets/ebpf/endpoint_ids.py, over every endpoint of the cluster);
- ``dns/<namespace>/<pod>.json``: the agent DNS proxy's rules of every endpoint with a DNS
  redirect (DNS is not enforced by Envoy, §5.5);
- ``index.json``: the endpoints (key, ID, identity, addresses, documents) and their redirects.
"""

from __future__ import annotations

import json
from typing import Any

from compiler.flow import Direction, RuleRef
from compiler.targets import proxyports, register
from compiler.targets.base import Target
from compiler.targets.ebpf.endpoint_ids import node_endpoint_ids
from compiler.targets.envoy import listeners
from compiler.targets.envoy.npds import PolicyBuilder, endpoint_ips
from compiler.targets.envoy.remotes import RemoteIdentities

Json = dict[str, Any]


def dump(doc: Json) -> str:
    """Deterministic JSON text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@register
class EnvoyTarget(Target):
    """Listeners, clusters and per-endpoint NPDS / DNS-proxy policy for L7 redirects."""

    name = "envoy"
    per_node = True

    def emit(self) -> dict[str, str]:
        self._counts: dict[str, int] = {}
        reported: set[tuple[str, RuleRef, str]] = set()

        def report(message: str, rule: RuleRef, endpoint: str) -> None:
            if (message, rule, endpoint) not in reported:  # one rule is seen by several documents
                reported.add((message, rule, endpoint))
                self.unsupported(message, rule, endpoint)

        ids = self.endpoint_ids()
        builder = PolicyBuilder(self.ir, RemoteIdentities(self.ir), report)
        files: dict[str, str] = {}
        index: list[Json] = []
        used: set[tuple[str, Direction]] = set()
        for ep in self.local_endpoints():
            if not ep.ips or ep.host_network:
                continue  # no address of its own: no NPDS resource (named by the endpoint IP)
            redirects = builder.redirects(ep)
            if not redirects:
                continue
            entry: Json = {"endpoint": ep.key, "endpoint_id": ids[ep.key],
                           "identity": self.ir.endpoint_identity(ep.key), "ips": endpoint_ips(ep),
                           "redirects": redirects}
            if any(r["parser"] != "dns" for r in redirects):
                entry["npds"] = f"npds/{ep.namespace}/{ep.name}.json"
                files[entry["npds"]] = dump(builder.network_policy(ep, ids[ep.key]))
            if any(r["parser"] == "dns" for r in redirects):
                entry["dns"] = f"dns/{ep.namespace}/{ep.name}.json"
                files[entry["dns"]] = dump(builder.dns_policy(ep, ids[ep.key]))
            used.update(("http" if r["parser"] == "http" else "proxylib", Direction(r["direction"]))
                        for r in redirects if r["parser"] != "dns")
            index.append(entry)
        ipv6 = any(a.version == 6 for ep in self.ir.cluster.endpoints for a in ep.addresses)
        order = sorted(used, key=lambda u: proxyports.proxy_port(*u))
        files["listeners.json"] = dump(listeners.discovery_response(
            listeners.LISTENER_TYPE, [listeners.listener(parser, d, ipv6) for parser, d in order]))
        directions = sorted({d for _, d in used}, key=lambda d: d.value)
        files["clusters.json"] = dump(listeners.discovery_response(
            listeners.CLUSTER_TYPE, [listeners.cluster(d) for d in directions]))
        scope = {} if self.options.node is None else {"node": self.options.node}
        files["index.json"] = dump({**scope, "profile": self.ir.profile.value, "endpoints": index,
                                    "listeners": [{"name": proxyports.listener(p, d),
                                                   "proxy_port": proxyports.proxy_port(p, d)}
                                                  for p, d in order]})
        self._counts = {
            "endpoints": len(index),
            "listeners": len(order),
            "npds_resources": sum(1 for e in index if "npds" in e),
            "dns_policies": sum(1 for e in index if "dns" in e),
            "redirects": sum(len(e["redirects"]) for e in index),
        }
        return files

    def endpoint_ids(self) -> dict[str, int]:
        """The eBPF target's endpoint IDs (same keys, same allocation, same overflow rule)."""
        keys = [ep.key for ep in self.local_endpoints()]
        return node_endpoint_ids(keys, self.options.allow_overflow, self.unsupported)

    def counts(self) -> dict[str, int]:
        return dict(getattr(self, "_counts", {}))
