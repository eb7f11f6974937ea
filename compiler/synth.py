"""Synthetic clusters at scale, deterministic from a seed (``netpolc cost`` sweeps them; the
benchmarks write them with ``python benchmarks/scale.py``).

Shapes follow what platform teams run: namespaces owned by teams, each with a handful of apps
(Deployments and a few StatefulSets) whose replicas make the pods, labels with realistic
cardinality (app, tier, team, version; a few per-pod labels such as StatefulSet pod names), and
policies mixing a namespace default-deny, app-to-app NetworkPolicies with named ports,
namespace-selector rules, CiliumNetworkPolicies with L4 and some HTTP rules, and a few
cluster-wide baselines.

    python benchmarks/scale.py --pods 20000 --namespaces 200 --policies 5000 --services 5000 -o /tmp/scale

Services (``--services N``) are ClusterIPs over the apps' pods, one port each, round-robin over apps.

With ``--pods-per-node N`` the replicas are written as scheduled Pods instead (each with
``spec.nodeName`` ``node-0000``..., round-robin, N per node; AKS allows at most 250), carrying the
labels their controllers would add, so the cluster and its identities are the same and
``netpolc compile --node node-0000`` can compile one node.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TIERS = ("web", "api", "worker", "db", "cache")
TEAMS = tuple(f"team-{i}" for i in range(20))
PORTS = {
    "web": (8080, "http"),
    "api": (9090, "grpc"),
    "worker": (7070, "jobs"),
    "db": (5432, "sql"),
    "cache": (6379, "redis"),
}


@dataclass(frozen=True)
class Scale:
    pods: int
    namespaces: int
    policies: int
    services: int = 0
    seed: int = 1
    pods_per_node: int = 0  # 0: replicas stay workloads (unscheduled); N: scheduled Pods, N per node


def generate(scale: Scale) -> list[dict[str, Any]]:
    """Every object of the synthetic cluster, namespaces first, as Kubernetes dicts."""
    rng = random.Random(scale.seed)
    objects: list[dict[str, Any]] = []
    apps_per_ns = max(1, min(40, scale.pods // max(1, scale.namespaces) // 8))
    replicas_total = scale.pods
    apps: list[tuple[str, str, str]] = []  # (namespace, app, tier)
    for n in range(scale.namespaces):
        ns = f"ns-{n:04d}"
        team = TEAMS[n % len(TEAMS)]
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"team": team, "env": rng.choice(["prod", "staging", "dev"])}},
            }
        )
        for a in range(apps_per_ns):
            apps.append((ns, f"app-{a:02d}", TIERS[(n + a) % len(TIERS)]))
    # Spread the replicas over the apps as evenly as possible, deterministically.
    base, extra = divmod(replicas_total, len(apps))
    for index, (ns, app, tier) in enumerate(apps):
        replicas = base + (1 if index < extra else 0)
        if replicas == 0:
            continue
        port, port_name = PORTS[tier]
        kind = "StatefulSet" if tier == "db" else "Deployment"
        template = {
            "metadata": {"labels": {"app": app, "tier": tier, "version": f"v{rng.randint(1, 3)}"}},
            "spec": {
                "serviceAccountName": app,
                "containers": [
                    {
                        "name": app,
                        "image": f"registry.example/{app}:1",
                        "ports": [
                            {"containerPort": port, "name": port_name},
                            {"containerPort": 9100, "name": "metrics"},
                        ],
                    }
                ],
            },
        }
        objects.append(
            {
                "apiVersion": "apps/v1",
                "kind": kind,
                "metadata": {"name": app, "namespace": ns},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}}, "template": template},
            }
        )
    for s in range(scale.services):
        ns, app, tier = apps[s % len(apps)]
        port, port_name = PORTS[tier]
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"{app}-svc{s // len(apps)}", "namespace": ns},
                "spec": {
                    "selector": {"app": app},
                    "ports": [{"port": port, "targetPort": port_name}],
                    "clusterIP": f"10.96.{(s >> 8) & 255}.{s & 255}",
                },
            }
        )
    objects.extend(_policies(scale, apps, rng))
    return _scheduled(objects, scale.pods_per_node) if scale.pods_per_node > 0 else objects


def node_name(index: int) -> str:
    return f"node-{index:04d}"


def _scheduled(objects: list[dict[str, Any]], per_node: int) -> list[dict[str, Any]]:
    """Workloads replaced by their pods, spread round-robin over ``ceil(pods / per_node)`` nodes."""
    from compiler.inputs.workloads import WorkloadObject

    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    total = sum(w["spec"]["replicas"] for w in workloads)
    nodes = max(1, -(-total // per_node))
    out = [o for o in objects if o not in workloads]
    placed = 0
    for doc in workloads:
        model = WorkloadObject.model_validate(doc)
        template = doc["spec"]["template"]
        for index in range(doc["spec"]["replicas"]):
            name = f"{doc['metadata']['name']}-{index}"
            labels = {**template["metadata"]["labels"], **model.controller_labels(index, name)}
            out.append({
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": doc["metadata"]["namespace"], "labels": labels},
                "spec": {**template["spec"], "nodeName": node_name(placed % nodes)},
            })
            placed += 1
    return out


def _policies(scale: Scale, apps: list[tuple[str, str, str]], rng: random.Random) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    namespaces = sorted({ns for ns, _, _ in apps})
    clusterwide = max(1, scale.policies // 500)
    for c in range(clusterwide):
        out.append(
            {
                "apiVersion": "cilium.io/v2",
                "kind": "CiliumClusterwideNetworkPolicy",
                "metadata": {"name": f"baseline-{c}"},
                "spec": {
                    "endpointSelector": {"matchLabels": {"io.cilium.k8s.namespace.labels.team": TEAMS[c % len(TEAMS)]}},
                    "egress": [
                        {
                            "toEndpoints": [
                                {"matchLabels": {"io.kubernetes.pod.namespace": "kube-system", "k8s-app": "kube-dns"}}
                            ],
                            "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}]}],
                        },
                        {
                            "toCIDRSet": [{"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}],
                            "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}],
                        },
                    ],
                    "ingressDeny": [{"fromEntities": ["world"], "toPorts": [{"ports": [{"port": "22"}]}]}],
                },
            }
        )
    remaining = scale.policies - clusterwide
    ns_index = 0
    while remaining > 0:
        ns = namespaces[ns_index % len(namespaces)]
        ns_apps = [a for a in apps if a[0] == ns]
        round_ = ns_index // len(namespaces)
        ns_index += 1
        if round_ == 0:
            out.append(
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": "default-deny", "namespace": ns},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
                }
            )
            remaining -= 1
            continue
        _, app, tier = ns_apps[round_ % len(ns_apps)]
        _, peer, _ = ns_apps[(round_ * 7 + 3) % len(ns_apps)]
        port, port_name = PORTS[tier]
        name = f"p{round_:03d}-{app}"
        flavour = round_ % 4
        if flavour == 0:
            out.append(
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {
                        "podSelector": {"matchLabels": {"app": app}},
                        "ingress": [
                            {"from": [{"podSelector": {"matchLabels": {"app": peer}}}], "ports": [{"port": port_name}]}
                        ],
                    },
                }
            )
        elif flavour == 1:
            out.append(
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {
                        "podSelector": {"matchLabels": {"tier": tier}},
                        "ingress": [
                            {
                                "from": [
                                    {
                                        "namespaceSelector": {"matchLabels": {"team": rng.choice(TEAMS)}},
                                        "podSelector": {
                                            "matchExpressions": [
                                                {"key": "tier", "operator": "In", "values": ["web", "api"]}
                                            ]
                                        },
                                    }
                                ],
                                "ports": [{"port": port, "protocol": "TCP"}, {"port": 9100}],
                            }
                        ],
                    },
                }
            )
        elif flavour == 2:
            rule: dict[str, Any] = {
                "fromEndpoints": [{"matchLabels": {"app": peer}}],
                "toPorts": [{"ports": [{"port": str(port), "protocol": "TCP"}]}],
            }
            if tier == "web":
                rule["toPorts"][0]["rules"] = {
                    "http": [{"method": "GET", "path": "/api/v1/.*"}, {"method": "POST", "path": "/api/v1/orders"}]
                }
            out.append(
                {
                    "apiVersion": "cilium.io/v2",
                    "kind": "CiliumNetworkPolicy",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {"endpointSelector": {"matchLabels": {"app": app}}, "ingress": [rule]},
                }
            )
        else:
            out.append(
                {
                    "apiVersion": "cilium.io/v2",
                    "kind": "CiliumNetworkPolicy",
                    "metadata": {"name": name, "namespace": ns},
                    "spec": {
                        "endpointSelector": {"matchLabels": {"app": app}},
                        "egress": [
                            {
                                "toEndpoints": [{"matchLabels": {"tier": "db"}}],
                                "toPorts": [{"ports": [{"port": "5432", "protocol": "TCP"}]}],
                            },
                            {
                                "toEntities": ["cluster"],
                                "toPorts": [{"ports": [{"port": "8000", "endPort": 8100, "protocol": "TCP"}]}],
                            },
                        ],
                    },
                }
            )
        remaining -= 1
    return out


def write(objects: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write cluster objects and policies into two multi-document files."""
    out.mkdir(parents=True, exist_ok=True)
    policy_kinds = {"NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"}
    cluster = [o for o in objects if o["kind"] not in policy_kinds]
    policies = [o for o in objects if o["kind"] in policy_kinds]
    paths = []
    for name, docs in (("cluster.yaml", cluster), ("policies.yaml", policies)):
        path = out / name
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        path.write_text(yaml.dump_all(docs, Dumper=dumper, sort_keys=False))
        paths.append(path)
    return paths
