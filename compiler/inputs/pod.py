"""``v1`` Pod and the pod template shared by workloads: labels, service account, IPs, ports.

Only the fields that matter to policy are read strictly (container ports, addresses); the
rest of a PodSpec (images, volumes, probes, ...) is accepted and ignored.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import field_validator, model_validator

from compiler.inputs.base import LooseModel, Model, ObjectMeta
from compiler.inputs.ports import check_port_name, check_port_number

API_VERSION = "v1"
KIND = "Pod"


class ContainerPortSpec(Model):
    containerPort: int
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None
    hostPort: int | None = None
    hostIP: str | None = None

    @field_validator("containerPort")
    @classmethod
    def _port(cls, value: int) -> int:
        return check_port_number(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return check_port_name(value) if value is not None else None


class Container(LooseModel):
    name: str
    ports: list[ContainerPortSpec] | None = None


class PodSpec(LooseModel):
    containers: list[Container]
    initContainers: list[Container] | None = None
    serviceAccountName: str | None = None
    serviceAccount: str | None = None  # deprecated alias Kubernetes still honours
    hostNetwork: bool | None = None
    nodeName: str | None = None
    nodeSelector: dict[str, str] | None = None

    @property
    def node_os(self) -> str | None:
        """The node OS the pod is pinned to (``kubernetes.io/os`` node selector), if any."""
        return (self.nodeSelector or {}).get("kubernetes.io/os")

    @model_validator(mode="after")
    def _unique_port_names(self) -> PodSpec:
        seen: set[str] = set()
        for container in self.containers:
            for port in container.ports or []:
                if port.name is not None:
                    if port.name in seen:
                        raise ValueError(f"container port name {port.name!r} is used twice in the pod")
                    seen.add(port.name)
        return self

    @property
    def service_account(self) -> str:
        return self.serviceAccountName or self.serviceAccount or "default"


class PodIP(Model):
    ip: str

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"invalid IP address {value!r}") from None


class PodStatus(LooseModel):
    podIP: str | None = None
    podIPs: list[PodIP] | None = None

    @field_validator("podIP")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"invalid IP address {value!r}") from None

    @property
    def ips(self) -> tuple[str, ...]:
        out = [p.ip for p in self.podIPs or []]
        if self.podIP and self.podIP not in out:
            out.insert(0, self.podIP)
        return tuple(out)


class PodTemplate(LooseModel):
    metadata: ObjectMeta | None = None
    spec: PodSpec


class PodObject(LooseModel):
    apiVersion: Literal["v1"]
    kind: Literal["Pod"]
    metadata: ObjectMeta
    spec: PodSpec
    status: PodStatus | None = None
