"""``networking.k8s.io/v1`` NetworkPolicy, every field, with the API server's validation.

Absent and empty are kept apart (``None`` vs ``[]``) because they mean different things:
``from`` absent or empty both mean "all peers", but ``ingress`` absent vs ``[{}]`` is the
difference between deny-all and allow-all for an isolated pod.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import Field, field_validator, model_validator

from compiler.inputs.base import Model, ObjectMeta
from compiler.inputs.ports import check_port_name, check_port_number
from compiler.inputs.selector import LabelSelector

API_VERSION = "networking.k8s.io/v1"
KIND = "NetworkPolicy"


def parse_cidr(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR as Kubernetes accepts it (host bits may be set; they are masked off)."""
    if "/" not in value:
        raise ValueError(f"invalid CIDR {value!r}: missing '/prefix-length'")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"invalid CIDR {value!r}") from None


class IPBlock(Model):
    cidr: str
    except_: list[str] | None = Field(default=None, alias="except")

    @model_validator(mode="after")
    def _excepts_inside(self) -> IPBlock:
        net = parse_cidr(self.cidr)
        for item in self.except_ or []:
            sub = parse_cidr(item)
            if sub.version != net.version or not sub.subnet_of(net):  # type: ignore[arg-type]
                raise ValueError(f"except {item!r} is not inside cidr {self.cidr!r}")
            if sub.prefixlen <= net.prefixlen:
                raise ValueError(f"except {item!r} must be strictly smaller than cidr {self.cidr!r}")
        return self

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return parse_cidr(self.cidr)

    @property
    def excepts(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [parse_cidr(e) for e in self.except_ or []]


class NetworkPolicyPeer(Model):
    podSelector: LabelSelector | None = None
    namespaceSelector: LabelSelector | None = None
    ipBlock: IPBlock | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPolicyPeer:
        if self.ipBlock is not None and (self.podSelector is not None or self.namespaceSelector is not None):
            raise ValueError("ipBlock may not be combined with podSelector or namespaceSelector in one peer")
        if self.ipBlock is None and self.podSelector is None and self.namespaceSelector is None:
            raise ValueError("a peer needs podSelector, namespaceSelector or ipBlock")
        return self


Protocol = Literal["TCP", "UDP", "SCTP"]


class NetworkPolicyPort(Model):
    protocol: Protocol | None = None
    port: int | str | None = None
    endPort: int | None = None

    @field_validator("port")
    @classmethod
    def _port(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, bool):
            raise ValueError("port must be an integer or a port name")
        if isinstance(value, int):
            return check_port_number(value)
        if isinstance(value, str):
            return check_port_name(value)
        return value

    @field_validator("endPort")
    @classmethod
    def _end_port(cls, value: int | None) -> int | None:
        return check_port_number(value) if value is not None else None

    @model_validator(mode="after")
    def _range(self) -> NetworkPolicyPort:
        if self.endPort is not None:
            if self.port is None:
                raise ValueError("endPort needs port")
            if isinstance(self.port, str):
                raise ValueError("endPort may not be used with a named port")
            if self.endPort < self.port:
                raise ValueError(f"endPort {self.endPort} is smaller than port {self.port}")
        return self

    @property
    def effective_protocol(self) -> str:
        """Kubernetes defaults the protocol to TCP."""
        return self.protocol or "TCP"


class NetworkPolicyIngressRule(Model):
    ports: list[NetworkPolicyPort] | None = None
    from_: list[NetworkPolicyPeer] | None = Field(default=None, alias="from")


class NetworkPolicyEgressRule(Model):
    ports: list[NetworkPolicyPort] | None = None
    to: list[NetworkPolicyPeer] | None = None


class NetworkPolicySpec(Model):
    podSelector: LabelSelector
    ingress: list[NetworkPolicyIngressRule] | None = None
    egress: list[NetworkPolicyEgressRule] | None = None
    policyTypes: list[Literal["Ingress", "Egress"]] | None = None

    @field_validator("policyTypes")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("policyTypes lists a type twice")
        return value


class NetworkPolicy(Model):
    apiVersion: Literal["networking.k8s.io/v1"]
    kind: Literal["NetworkPolicy"]
    metadata: ObjectMeta
    spec: NetworkPolicySpec
    status: dict[str, object] | None = None

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def policy_types(self) -> tuple[str, ...]:
        """Effective policyTypes with the API server's defaulting.

        Absent or empty ``policyTypes`` becomes ``[Ingress]``, plus ``Egress`` when the spec has at
        least one egress rule (``egress: []`` does not count).
        """
        if self.spec.policyTypes:
            return tuple(t for t in ("Ingress", "Egress") if t in self.spec.policyTypes)
        return ("Ingress", "Egress") if self.spec.egress else ("Ingress",)

    @property
    def display(self) -> str:
        return f"NetworkPolicy {self.namespace}/{self.name}"
