"""``v1`` Service: selectors (for ``toServices``) and ports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from compiler.inputs.base import LooseModel, Model, ObjectMeta
from compiler.inputs.ports import check_port_number

API_VERSION = "v1"
KIND = "Service"


class ServicePortSpec(Model):
    port: int
    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None
    targetPort: int | str | None = None
    nodePort: int | None = None
    appProtocol: str | None = None

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        return check_port_number(value)


class ServiceSpec(LooseModel):
    selector: dict[str, str] | None = None
    ports: list[ServicePortSpec] | None = None
    clusterIP: str | None = None
    clusterIPs: list[str] | None = None
    type: str | None = None
    externalName: str | None = None


class ServiceObject(LooseModel):
    apiVersion: Literal["v1"]
    kind: Literal["Service"]
    metadata: ObjectMeta
    spec: ServiceSpec
    status: dict[str, Any] | None = None
