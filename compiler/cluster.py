"""The cluster a policy set applies to: namespaces, endpoints (pods), services, the node.

Built from the cluster objects of the inputs (Namespaces, Pods, workloads, Services) by
:mod:`compiler.inputs`. Frozen and sorted, so everything derived from it is deterministic.

Node model: one node, the one the artifacts are loaded on. Its address (``node_ip``) is the
``host`` entity (Cilium's reserved identity 1); every endpoint runs on it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from compiler.source import SourceRef

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_POD_CIDR = "10.244.0.0/16"
DEFAULT_NODE_IP = "10.244.0.1"
DEFAULT_CLUSTER_NAME = "default"
#: Namespaces get this label automatically (Kubernetes ≥ 1.21).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True, order=True)
class ContainerPort:
    """A port a pod's container declares (``name`` makes it usable as a named port)."""

    port: int
    protocol: str = "TCP"
    name: str | None = None


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: Mapping[str, str]
    source: SourceRef
    implicit: bool = False  # created because an object used it, not declared in the inputs


@dataclass(frozen=True)
class Endpoint:
    """One pod: its Kubernetes labels, addresses and declared ports."""

    namespace: str
    name: str
    labels: Mapping[str, str]
    service_account: str
    ips: tuple[str, ...]
    ports: tuple[ContainerPort, ...]
    source: SourceRef
    owner: str | None = None  # "Deployment shop/frontend" for pods made from a workload
    host_network: bool = False
    node_os: str | None = None  # kubernetes.io/os the pod is pinned to by its nodeSelector
    node: str | None = None  # spec.nodeName: the node the pod runs on, when the manifest says

    @property
    def key(self) -> str:
        """``namespace/name``: how endpoints are named everywhere in the CLI."""
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: str) -> int | None:
        """The number behind a named container port for a protocol, if the pod declares it."""
        for port in self.ports:
            if port.name == name and port.protocol == protocol:
                return port.port
        return None

    @cached_property
    def addresses(self) -> tuple[IPAddress, ...]:
        """``ips`` parsed (once: every evaluator and cell builder asks, at 20k pods)."""
        return tuple(ipaddress.ip_address(ip) for ip in self.ips)


@dataclass(frozen=True)
class ServicePort:
    port: int
    protocol: str = "TCP"
    name: str | None = None
    target_port: int | str | None = None


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    selector: Mapping[str, str] | None  # None: selectorless (backends from EndpointSlices / manual)
    ports: tuple[ServicePort, ...]
    cluster_ips: tuple[str, ...]
    source: SourceRef

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Cluster:
    """Everything policies are evaluated against."""

    namespaces: Mapping[str, Namespace]
    endpoints: tuple[Endpoint, ...]  # sorted by key
    services: tuple[Service, ...] = ()
    cluster_name: str = DEFAULT_CLUSTER_NAME
    pod_cidrs: tuple[str, ...] = (DEFAULT_POD_CIDR,)
    node_ip: str = DEFAULT_NODE_IP
    extra: Mapping[str, object] = field(default_factory=dict)

    def namespace_labels(self, namespace: str) -> Mapping[str, str]:
        """A namespace's labels (an undeclared namespace has only its name label)."""
        ns = self.namespaces.get(namespace)
        return ns.labels if ns else {NAMESPACE_NAME_LABEL: namespace}

    @cached_property
    def _by_key(self) -> dict[str, Endpoint]:
        return {ep.key: ep for ep in self.endpoints}

    @cached_property
    def _by_ip(self) -> dict[IPAddress, Endpoint]:
        return {addr: ep for ep in self.endpoints for addr in ep.addresses}

    def endpoint(self, key: str) -> Endpoint | None:
        return self._by_key.get(key)

    def endpoint_at(self, address: IPAddress) -> Endpoint | None:
        """The endpoint that owns an address, if any."""
        return self._by_ip.get(address)

    @cached_property
    def pod_networks(self) -> tuple[IPNetwork, ...]:
        """``pod_cidrs`` parsed (host bits allowed, as users write them)."""
        return tuple(ipaddress.ip_network(c, strict=False) for c in self.pod_cidrs)

    @property
    def node_address(self) -> IPAddress:
        return ipaddress.ip_address(self.node_ip)

    def is_cluster_address(self, address: IPAddress) -> bool:
        """True for addresses Cilium's ipcache gives a cluster identity (endpoints and the node)."""
        return address == self.node_address or address in self._by_ip
