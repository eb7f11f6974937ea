"""``v1`` Namespace: its labels are what namespaceSelectors match."""

from __future__ import annotations

from typing import Any, Literal

from compiler.inputs.base import LooseModel, ObjectMeta

API_VERSION = "v1"
KIND = "Namespace"


class NamespaceObject(LooseModel):
    apiVersion: Literal["v1"]
    kind: Literal["Namespace"]
    metadata: ObjectMeta
    spec: dict[str, Any] | None = None
