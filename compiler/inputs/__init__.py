"""Load input files into a :class:`Cluster` and a policy set.

One module per input kind holds its model; :data:`KINDS` maps ``(apiVersion group, kind)`` to it.
Adding an input kind means writing its module and adding one line here. All errors from all
files are collected and reported together, each with file, line and field.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from compiler.cluster import (
    DEFAULT_CLUSTER_NAME,
    DEFAULT_NODE_IP,
    DEFAULT_POD_CIDR,
    NAMESPACE_NAME_LABEL,
    Cluster,
    ContainerPort,
    Endpoint,
    Namespace,
    Service,
    ServicePort,
)
from compiler.inputs.base import validate
from compiler.inputs.cache import DocumentCache, Entry
from compiler.inputs.ciliumpolicy import CiliumPolicy
from compiler.inputs.namespace import NamespaceObject
from compiler.inputs.networkpolicy import NetworkPolicy
from compiler.inputs.pod import PodObject, PodSpec
from compiler.inputs.service import ServiceObject
from compiler.inputs.workloads import WorkloadObject
from compiler.inputs.yamlload import Document, documents, expand_paths, read_source
from compiler.source import InputError, InputErrors, SourceRef

Policy = NetworkPolicy | CiliumPolicy

#: Kinds that say nothing about network policy; they are skipped (and counted) rather than refused.
IGNORED_KINDS = frozenset(
    {
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolumeClaim",
        "PersistentVolume",
        "StorageClass",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Ingress",
        "IngressClass",
        "EndpointSlice",
        "Endpoints",
        "LimitRange",
        "ResourceQuota",
        "PriorityClass",
        "CustomResourceDefinition",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "Event",
        "Lease",
        "Node",
    }
)


@dataclass(frozen=True)
class InputFile:
    path: str
    sha256: str


@dataclass(frozen=True)
class Move:
    """Where a policy reused from an earlier load really is (:mod:`compiler.inputs.cache`): its
    objects still name the file and lines they were parsed at."""

    file: str
    line_delta: int

    def locate(self, source: SourceRef) -> SourceRef:
        return SourceRef(self.file, source.line + self.line_delta, source.column)


@dataclass(frozen=True)
class Inputs:
    """Everything read from the inputs: the cluster and the policies, with provenance.

    ``moved`` is empty unless the load reused documents of an earlier one at another place
    (``load_inputs(..., cache=)``): then it maps the display of each such policy to where it
    is now, and whoever cites a position inside it must go through :meth:`locate` (the
    reference evaluator's rule references do). The cluster's own sources are always exact.
    """

    cluster: Cluster
    policies: tuple[Policy, ...]
    files: tuple[InputFile, ...]
    skipped_kinds: tuple[tuple[str, int], ...] = ()
    moved: Mapping[str, Move] = field(default_factory=dict)

    def locate(self, policy: str, source: SourceRef) -> SourceRef:
        """Where a position inside the policy with this display is in these inputs."""
        move = self.moved.get(policy)
        return move.locate(source) if move is not None else source


@dataclass
class _Collected:
    namespaces: list[tuple[NamespaceObject, Document]] = field(default_factory=list)
    pods: list[tuple[PodObject, Document]] = field(default_factory=list)
    workloads: list[tuple[WorkloadObject, Document]] = field(default_factory=list)
    services: list[tuple[ServiceObject, Document]] = field(default_factory=list)
    policies: list[tuple[Policy, Document]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _PodDraft:
    """A pod before it has an address: from a Pod object or one replica of a workload."""

    namespace: str
    name: str
    labels: dict[str, str]
    service_account: str
    ips: tuple[str, ...]
    ports: tuple[ContainerPort, ...]
    source: SourceRef
    owner: str | None
    host_network: bool
    node_os: str | None = None
    node: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


_Handler = Callable[[_Collected, Document], None]


def _add(model: type[Any], bucket: str) -> _Handler:
    def handle(collected: _Collected, doc: Document) -> None:
        getattr(collected, bucket).append((validate(model, doc), doc))

    return handle


#: (apiVersion group, kind) → handler. The group "" is the core API (``v1``).
KINDS: dict[tuple[str, str], _Handler] = {
    ("networking.k8s.io", "NetworkPolicy"): _add(NetworkPolicy, "policies"),
    ("cilium.io", "CiliumNetworkPolicy"): _add(CiliumPolicy, "policies"),
    ("cilium.io", "CiliumClusterwideNetworkPolicy"): _add(CiliumPolicy, "policies"),
    ("", "Namespace"): _add(NamespaceObject, "namespaces"),
    ("", "Pod"): _add(PodObject, "pods"),
    ("", "Service"): _add(ServiceObject, "services"),
    **{
        ("apps", k): _add(WorkloadObject, "workloads") for k in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
    },
    **{("batch", k): _add(WorkloadObject, "workloads") for k in ("Job", "CronJob")},
}


def _dispatch(collected: _Collected, doc: Document) -> None:
    kind = doc.data.get("kind")
    api_version = doc.data.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        raise InputError("object has no kind", source=doc.source, field="kind")
    if not isinstance(api_version, str) or not api_version:
        raise InputError(f"{kind} has no apiVersion", source=doc.source, field="apiVersion")
    handler = KINDS.get((_group(api_version), kind))
    if handler is not None:
        handler(collected, doc)
        return
    if kind in IGNORED_KINDS:
        collected.skipped[kind] = collected.skipped.get(kind, 0) + 1
        return
    known_groups = sorted(g or "v1" for g, k in KINDS if k == kind)
    if known_groups:
        raise InputError(
            f"{kind} with apiVersion {api_version!r} is not supported (use {' or '.join(known_groups)})",
            source=SourceRef(doc.file, doc.data.key_lines.get("apiVersion", doc.data.line)),
            field="apiVersion",
        )
    raise InputError(f"unknown kind {kind!r} (apiVersion {api_version})", source=doc.source, field="kind")


def load_inputs(
    paths: Iterable[str],
    *,
    pod_cidrs: Iterable[str] = (DEFAULT_POD_CIDR,),
    node_ip: str = DEFAULT_NODE_IP,
    cluster_name: str = DEFAULT_CLUSTER_NAME,
    cache: DocumentCache | None = None,
) -> Inputs:
    """Read ``-f`` paths (files, directories, ``-``) into a cluster and a policy set.

    With ``cache``, documents whose text an earlier load through the same cache parsed are
    reused rather than parsed again (see :mod:`compiler.inputs.cache`); the result is the same,
    except that reused policies are listed in ``Inputs.moved`` when they now sit elsewhere.
    """
    paths, pod_cidrs = list(paths), tuple(pod_cidrs)
    if cache is not None:
        try:
            expanded = expand_paths(paths)
            if "-" not in expanded:
                return _load_cached(expanded, pod_cidrs, node_ip, cluster_name, cache)
        except (InputError, InputErrors):
            pass  # the plain load below reports every error, exactly as without a cache
    collected = _Collected()
    errors: list[InputError] = []
    files: list[InputFile] = []
    for file in expand_paths(list(paths)):
        try:
            text = read_source(file)
        except InputError as err:
            errors.append(err)
            continue
        files.append(InputFile(file, hashlib.sha256(text.encode()).hexdigest()))
        try:
            for doc in documents(file, text):
                try:
                    _dispatch(collected, doc)
                except InputErrors as many:
                    errors.extend(many.errors)
                except InputError as err:
                    errors.append(err)
        except InputError as err:
            errors.append(err)
    if not errors:
        try:
            cluster = _build_cluster(collected, tuple(pod_cidrs), node_ip, cluster_name)
        except InputErrors as many:
            errors.extend(many.errors)
    if errors:
        raise InputErrors(sorted(errors, key=lambda e: e.source or SourceRef("", 0)))
    policies = _check_unique_policies(collected.policies)
    return Inputs(cluster, policies, tuple(files), tuple(sorted(collected.skipped.items())))


def _load_cached(
    files: list[str], pod_cidrs: tuple[str, ...], node_ip: str, cluster_name: str, cache: DocumentCache
) -> Inputs:
    """:func:`load_inputs` through a cache; raises on the first error (the caller then redoes a
    plain load for the full report)."""
    collected = _Collected()
    input_files: list[InputFile] = []
    moved: dict[str, Move] = {}
    for file in files:
        text = read_source(file)
        input_files.append(InputFile(file, hashlib.sha256(text.encode()).hexdigest()))
        for entry in cache.entries(file, text, _parse_entries):
            if entry.bucket == "skipped":
                collected.skipped[entry.value] = collected.skipped.get(entry.value, 0) + 1
                continue
            getattr(collected, entry.bucket).append((entry.value, entry.doc))
            if entry.parsed_at is not None and entry.bucket == "policies":
                moved[entry.value.display] = Move(entry.doc.file, entry.doc.source.line - entry.parsed_at.line)
    parts = [*collected.namespaces, *collected.pods, *collected.workloads, *collected.services]
    key = (tuple(id(model) for model, _ in parts), pod_cidrs, node_ip, cluster_name)
    known = cache.cluster(key)
    if known is None:
        cluster = _build_cluster(collected, pod_cidrs, node_ip, cluster_name)
        cache.remember_cluster(key, (cluster, {id(model): doc.source for model, doc in parts}, parts))
    else:  # the same objects under the same options: the same cluster, with this load's sources
        built, sources, _ = known
        where = {sources[id(model)]: doc.source for model, doc in parts if sources[id(model)] != doc.source}
        cluster = _relocated(built, where)
    policies = _check_unique_policies(collected.policies)
    return Inputs(cluster, policies, tuple(input_files), tuple(sorted(collected.skipped.items())), moved)


def _parse_entries(file: str, text: str) -> list[Entry]:
    """One text's documents, validated, in document order (the cache's parser)."""
    out: list[Entry] = []
    for doc in documents(file, text):
        one = _Collected()
        _dispatch(one, doc)
        for bucket in ("namespaces", "pods", "workloads", "services", "policies"):
            out.extend(Entry(bucket, model, d) for model, d in getattr(one, bucket))
        out.extend(Entry("skipped", kind, doc) for kind in one.skipped)
    return out


def _relocated(cluster: Cluster, where: dict[SourceRef, SourceRef]) -> Cluster:
    """``cluster`` with its namespaces', endpoints' and services' sources moved per ``where``."""
    if not where:
        return cluster

    def move(obj: Any) -> Any:
        if obj.source not in where:
            return obj
        moved = copy.copy(obj)  # a shallow copy keeps what the object cached (parsed addresses)
        object.__setattr__(moved, "source", where[obj.source])
        return moved

    return replace(
        cluster,
        namespaces={name: move(ns) for name, ns in cluster.namespaces.items()},
        endpoints=tuple(move(ep) for ep in cluster.endpoints),
        services=tuple(move(svc) for svc in cluster.services),
    )


def _check_unique_policies(items: list[tuple[Policy, Document]]) -> tuple[Policy, ...]:
    seen: dict[tuple[str, str | None, str], SourceRef] = {}
    errors: list[InputError] = []
    for policy, doc in items:
        if not policy.metadata.name:
            errors.append(InputError(f"{policy.kind} needs metadata.name", source=doc.source, field="metadata.name"))
            continue
        key = (policy.kind, policy.namespace, policy.name)
        if key in seen:
            errors.append(InputError(f"{policy.display} is defined twice (first at {seen[key]})", source=doc.source))
        seen[key] = doc.source
    if errors:
        raise InputErrors(errors)
    return tuple(sorted((p for p, _ in items), key=lambda p: (p.kind, p.namespace or "", p.name)))


def _pod_ports(spec: PodSpec) -> tuple[ContainerPort, ...]:
    ports = {
        ContainerPort(p.containerPort, p.protocol or "TCP", p.name)
        for c in [*spec.containers, *(spec.initContainers or [])]
        for p in c.ports or []
    }
    return tuple(sorted(ports, key=lambda p: (p.port, p.protocol, p.name or "")))


def _build_cluster(collected: _Collected, pod_cidrs: tuple[str, ...], node_ip: str, cluster_name: str) -> Cluster:
    errors: list[InputError] = []
    namespaces: dict[str, Namespace] = {}
    for ns_obj, doc in collected.namespaces:
        name = ns_obj.metadata.name
        if not name:
            errors.append(InputError("Namespace needs metadata.name", source=doc.source, field="metadata.name"))
            continue
        if name in namespaces:
            errors.append(
                InputError(f"Namespace {name} is defined twice (first at {namespaces[name].source})", source=doc.source)
            )
            continue
        labels = dict(ns_obj.metadata.labels or {})
        labels[NAMESPACE_NAME_LABEL] = name  # set by the API server, whatever the manifest says
        namespaces[name] = Namespace(name, labels, doc.source)

    drafts: list[_PodDraft] = []
    for pod, doc in collected.pods:
        if not pod.metadata.name:
            errors.append(InputError("Pod needs metadata.name", source=doc.source, field="metadata.name"))
            continue
        ips = pod.status.ips if pod.status else ()
        drafts.append(
            _PodDraft(
                pod.metadata.namespace or "default",
                pod.metadata.name,
                dict(pod.metadata.labels or {}),
                pod.spec.service_account,
                ips,
                _pod_ports(pod.spec),
                doc.source,
                None,
                bool(pod.spec.hostNetwork),
                pod.spec.node_os,
                pod.spec.nodeName,
            )
        )
    for workload, doc in collected.workloads:
        name = workload.metadata.name
        template = workload.pod_template()
        if not name or template is None:
            field_name = "metadata.name" if not name else "spec.template"
            errors.append(InputError(f"{workload.kind} needs {field_name}", source=doc.source, field=field_name))
            continue
        namespace = workload.metadata.namespace or "default"
        template_labels = dict((template.metadata.labels if template.metadata else None) or {})
        ports = _pod_ports(template.spec)
        for index in range(workload.pod_count()):
            pod_name = f"{name}-{index}"
            labels = {**template_labels, **workload.controller_labels(index, pod_name)}
            drafts.append(
                _PodDraft(
                    namespace,
                    pod_name,
                    labels,
                    template.spec.service_account,
                    (),
                    ports,
                    doc.source,
                    f"{workload.kind} {namespace}/{name}",
                    bool(template.spec.hostNetwork),
                    template.spec.node_os,
                    template.spec.nodeName,
                )
            )

    for namespace in sorted({d.namespace for d in drafts}):
        if namespace not in namespaces:
            namespaces[namespace] = Namespace(
                namespace, {NAMESPACE_NAME_LABEL: namespace}, SourceRef("<implicit>", 0), True
            )

    endpoints = _allocate(drafts, pod_cidrs, node_ip, errors)
    services = tuple(sorted((_service(s, d) for s, d in collected.services), key=lambda s: s.key))
    if errors:
        raise InputErrors(errors)
    return Cluster(
        namespaces=dict(sorted(namespaces.items())),
        endpoints=endpoints,
        services=services,
        cluster_name=cluster_name,
        pod_cidrs=pod_cidrs,
        node_ip=node_ip,
    )


def _service(obj: ServiceObject, doc: Document) -> Service:
    ports = tuple(ServicePort(p.port, p.protocol or "TCP", p.name, p.targetPort) for p in obj.spec.ports or [])
    ips = tuple(
        obj.spec.clusterIPs or ([obj.spec.clusterIP] if obj.spec.clusterIP and obj.spec.clusterIP != "None" else [])
    )
    return Service(
        obj.metadata.namespace or "default", obj.metadata.name or "", obj.spec.selector, ports, ips, doc.source
    )


def _allocate(
    drafts: list[_PodDraft],
    pod_cidrs: tuple[str, ...],
    node_ip: str,
    errors: list[InputError],
) -> tuple[Endpoint, ...]:
    """Give every pod without a status IP a stable address from the pod CIDRs.

    The address is a hash of ``namespace/name`` into the CIDR (probing past taken addresses), so
    a pod keeps its address when unrelated pods are added or removed.
    """
    networks = []
    for cidr in pod_cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            errors.append(
                InputError(f"invalid --pod-cidr {cidr!r}", source=SourceRef("<command line>", 0), field="--pod-cidr")
            )
    taken: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {ipaddress.ip_address(node_ip): "the node"}
    seen_keys: dict[str, SourceRef] = {}
    for draft in drafts:
        key, source = draft.key, draft.source
        if key in seen_keys:
            errors.append(InputError(f"pod {key} is defined twice (first at {seen_keys[key]})", source=source))
        seen_keys[key] = source
        for ip in draft.ips if not draft.host_network else ():
            addr = ipaddress.ip_address(ip)
            if addr in taken:
                errors.append(
                    InputError(
                        f"pod {key} has IP {ip}, already used by {taken[addr]}", source=source, field="status.podIP"
                    )
                )
            taken[addr] = f"pod {key}"
    endpoints: list[Endpoint] = []
    for draft in sorted(drafts, key=lambda d: (d.namespace, d.name)):
        if draft.host_network:
            continue  # host-network pods share the node's address and identity (reserved:host)
        ips = draft.ips
        if not ips:
            allocated = []
            for net in networks:
                new_addr = hash_address(draft.key, net, taken)
                if new_addr is None:
                    errors.append(InputError(f"pod CIDR {net} is full", source=draft.source))
                    continue
                taken[new_addr] = f"pod {draft.key}"
                allocated.append(str(new_addr))
            ips = tuple(allocated)
        endpoints.append(
            Endpoint(
                draft.namespace,
                draft.name,
                draft.labels,
                draft.service_account,
                ips,
                draft.ports,
                draft.source,
                draft.owner,
                node_os=draft.node_os,
                node=draft.node,
            )
        )
    return tuple(endpoints)


def hash_address(
    key: str,
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
    taken: Collection[ipaddress.IPv4Address | ipaddress.IPv6Address],
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A stable address for ``key`` in ``net``: a hash of the key, probing past ``taken`` ones, so the
    address survives unrelated additions (pods without a status IP, Services without a cluster IP)."""
    first = int(net.network_address) + 2  # skip the network address and the gateway (.1)
    size = min(net.num_addresses - 3, 1 << 32)  # also skip the broadcast address
    if size <= 0:
        return None
    start = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % size
    for step in range(min(size, len(taken) + 1)):
        addr = ipaddress.ip_address(first + (start + step) % size)
        if addr not in taken:
            return addr
    return None
