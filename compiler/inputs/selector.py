"""Kubernetes ``LabelSelector`` (matchLabels / matchExpressions), as written in policies.

This is the input model only, plus the plain Kubernetes meaning of a selector over a label map.
Cilium's source-qualified selectors (``k8s:app``, ``reserved:host``) reuse the model; how they
match identity labels lives in :mod:`compiler.labels`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import field_validator, model_validator

from compiler.inputs.base import Model, check_label_key, check_label_value

Operator = Literal["In", "NotIn", "Exists", "DoesNotExist"]


class LabelSelectorRequirement(Model):
    key: str
    operator: Operator
    values: list[str] | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_label_key(value, allow_source=True)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"operator {self.operator} needs a non-empty 'values' list")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"operator {self.operator} takes no 'values'")
        return self


class LabelSelector(Model):
    """A Kubernetes label selector. ``{}`` selects everything; absent is not the same as empty."""

    matchLabels: dict[str, str] | None = None
    matchExpressions: list[LabelSelectorRequirement] | None = None

    #: Whether keys may carry a Cilium ``source:`` prefix (set by the Cilium subclass).
    _allow_source: ClassVar[bool] = False

    @field_validator("matchLabels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, label_value in (value or {}).items():
            check_label_key(key, allow_source=cls._allow_source)
            check_label_value(label_value)
        return value

    def is_empty(self) -> bool:
        """True for ``{}``: selects every object."""
        return not self.matchLabels and not self.matchExpressions

    def requirements(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """matchLabels and matchExpressions as one list of (key, operator, values)."""
        out: list[tuple[str, str, tuple[str, ...]]] = [
            (k, "In", (v,)) for k, v in sorted((self.matchLabels or {}).items())
        ]
        out.extend((r.key, r.operator, tuple(r.values or ())) for r in self.matchExpressions or [])
        return out

    def matches(self, labels: Mapping[str, str]) -> bool:
        """The Kubernetes meaning: every requirement holds on the label map."""
        return all(requirement_holds(op, labels.get(key), values) for key, op, values in self.requirements())


def requirement_holds(operator: str, value: str | None, values: tuple[str, ...]) -> bool:
    """One selector requirement against one label value (``None`` = label absent)."""
    if operator == "In":
        return value is not None and value in values
    if operator == "NotIn":
        return value is None or value not in values
    if operator == "Exists":
        return value is not None
    if operator == "DoesNotExist":
        return value is None
    raise ValueError(f"unknown selector operator {operator!r}")
