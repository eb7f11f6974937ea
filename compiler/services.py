"""ClusterIP Services as both datapaths load-balance them: frontends (VIP, port, protocol) and
their backends (pod address, target port).

kube-proxy and Cilium agree on what a Service means; they differ in how a packet finds its
backend (reference/iptables.md §4: a linear KUBE-SERVICES scan, then a random choice among
KUBE-SEP chains; Cilium: hash lookups in the lb4 service and backend maps). Both targets emit
from the frontends resolved here, so they balance over the same backends in the same order.

- Backends are the pods of the Service's namespace whose labels match its selector, sorted by
  ``namespace/name``; a selectorless Service has none here (its EndpointSlices are not read).
- ``targetPort``: a number is used as is; a name is looked up among each pod's container ports
  for the protocol (pods without it are not backends of that port); absent, it is ``port``.
- A Service without ``clusterIP`` gets a stable address hashed from ``namespace/name`` into the
  service CIDR (Kubernetes' default ``--service-cluster-ip-range`` is 10.96.0.0/12) as pods get
  theirs (:func:`compiler.inputs.hash_address`), so adding a Service does not move the others.
  Headless Services (``None``) have no frontend.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from compiler.cluster import Cluster, Endpoint, Service
from compiler.inputs import hash_address

#: kube-apiserver's default --service-cluster-ip-range (Kubernetes docs, "Service ClusterIP allocation").
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, order=True)
class Backend:
    address: IPAddress
    port: int
    endpoint: str  # namespace/name of the pod


@dataclass(frozen=True, order=True)
class Frontend:
    """One service port on one cluster IP: what a client connects to."""

    service: str  # namespace/name
    port_name: str  # the ServicePort's name ("" when unnamed)
    address: IPAddress
    port: int
    protocol: str  # TCP, UDP, SCTP
    backends: tuple[Backend, ...]

    @property
    def name(self) -> str:
        """kube-proxy's servicePortName: ``namespace/name:port-name`` (``namespace/name`` unnamed)."""
        return f"{self.service}:{self.port_name}" if self.port_name else self.service


def frontends(cluster: Cluster, service_cidr: str = DEFAULT_SERVICE_CIDR) -> tuple[Frontend, ...]:
    """Every ClusterIP frontend of the cluster, sorted by (service, port, address)."""
    network = ipaddress.ip_network(service_cidr, strict=False)
    taken = {ipaddress.ip_address(ip) for svc in cluster.services for ip in svc.cluster_ips}
    by_namespace: dict[str, list[Endpoint]] = {}
    for ep in cluster.endpoints:
        by_namespace.setdefault(ep.namespace, []).append(ep)
    out: list[Frontend] = []
    for svc in sorted(cluster.services, key=lambda s: s.key):
        addresses = _addresses(svc, network, taken)
        pods = _selected(svc, by_namespace.get(svc.namespace, []))
        for port in svc.ports:
            backends = sorted(b for ep in pods for b in _backends(ep, port.target_port, port.port, port.protocol))
            for address in addresses:
                family = [b for b in backends if b.address.version == address.version]
                out.append(Frontend(svc.key, port.name or "", address, port.port, port.protocol, tuple(family)))
    return tuple(sorted(out, key=lambda f: (f.service, f.port, f.protocol, f.address.version, f.address)))


def _addresses(svc: Service, network: ipaddress.IPv4Network | ipaddress.IPv6Network,
               taken: set[IPAddress]) -> list[IPAddress]:
    if svc.cluster_ips:
        return [ipaddress.ip_address(ip) for ip in svc.cluster_ips if ip != "None"]
    allocated = hash_address(svc.key, network, taken)
    if allocated is None:
        return []
    taken.add(allocated)
    return [allocated]


def _selected(svc: Service, pods: list[Endpoint]) -> list[Endpoint]:
    if not svc.selector:
        return []
    return [ep for ep in pods if all(ep.labels.get(k) == v for k, v in svc.selector.items())]


def _backends(ep: Endpoint, target: int | str | None, port: int, protocol: str) -> list[Backend]:
    """The pod as a backend of one service port, once per address family it has."""
    if isinstance(target, str) and not target.isdigit():
        number = ep.named_port(target, protocol)
        if number is None:
            return []
    else:
        number = int(target) if target is not None else port
    return [Backend(address, number, ep.key) for address in ep.addresses]
