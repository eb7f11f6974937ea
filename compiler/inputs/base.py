"""The pydantic boundary: strict models that remember where each object was written.

Input models forbid unknown fields (a misspelled field is an error, never silently ignored) and
use the Kubernetes field names as aliases. :func:`validate` turns pydantic's errors into
:class:`InputError` values that name the file, line and field path, and attaches a
:class:`SourceRef` to every model object so later stages can cite ``file:line``.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from compiler.inputs.yamlload import Document, LocatedDict, LocatedList
from compiler.source import InputError, InputErrors, SourceRef

M = TypeVar("M", bound="Model")
_UNKNOWN = SourceRef("<unknown>", 0)


class Model(BaseModel):
    """Base of every input model: strict fields, Kubernetes names, a source position.

    The position (``_src``, and ``_lines`` per field) is kept in ``__pydantic_private__``, the
    slot where pydantic keeps private attributes — compared by ``==``, copied and pickled with
    the model — but is not declared as a ``PrivateAttr``: a declared private attribute makes
    pydantic initialise defaults on every instance it validates, a sixth of the load time at
    20k pods. :func:`attach_sources` fills it; objects made in code have none (``<unknown>``).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=False, strict=False)

    @property
    def src(self) -> SourceRef:
        """Where this object starts."""
        private = self.__pydantic_private__
        return private["_src"] if private else _UNKNOWN

    def line_of(self, field: str) -> SourceRef:
        """Where one of this object's fields (by its Kubernetes name) was written."""
        src = self.src
        private = self.__pydantic_private__
        lines = (private or {}).get("_lines") or {}
        return SourceRef(src.file, lines.get(field, src.line))


class LooseModel(Model):
    """For cluster objects whose other fields we do not read (Pod specs have hundreds)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


def validate(model: type[M], doc: Document) -> M:
    """Validate one document into ``model``, or raise errors naming file, line and field."""
    try:
        obj = model.model_validate(doc.data)
    except ValidationError as err:
        raise InputErrors([_to_input_error(e, doc) for e in err.errors()]) from None
    attach_sources(obj, doc.data, doc.file)
    return obj


def _to_input_error(error: Any, doc: Document) -> InputError:
    loc = tuple(error["loc"])
    line = _line_for(doc.data, loc)
    field = _dotted(loc)
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if error["type"] == "extra_forbidden":
        message = "unknown field" + _suggestion(loc, doc.data)
    elif error["type"] == "missing":
        message = "required field is missing"
    elif "input" in error and error["type"] not in ("value_error", "assertion_error"):
        message = f"{message} (got {_describe(error['input'])})"
    return InputError(message, source=SourceRef(doc.file, line), field=field, subject=describe_document(doc))


def describe_document(doc: Document) -> str:
    """``NetworkPolicy shop/allow-api`` for error messages."""
    kind = doc.data.get("kind", "object")
    meta = doc.data.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        return str(kind)
    namespace = meta.get("namespace")
    return f"{kind} {namespace}/{meta['name']}" if namespace else f"{kind} {meta['name']}"


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and part.startswith(("function-", "union[", "tagged-union[")):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_for(data: Any, loc: tuple[Any, ...]) -> int:
    line = getattr(data, "line", 1)
    node = data
    for part in loc:
        if isinstance(node, LocatedDict) and part in node:
            line = node.key_lines.get(part, line)
            node = node[part]
        elif isinstance(node, LocatedDict) and part in node.key_lines:
            line = node.key_lines[part]
            break
        elif isinstance(node, LocatedList) and isinstance(part, int) and 0 <= part < len(node):
            line = node.item_lines[part]
            node = node[part]
        elif isinstance(node, LocatedDict) and isinstance(part, str) and not part.startswith(("function", "union")):
            # Unknown field: point at the object that should (not) hold it.
            break
    return line


_KNOWN_TYPOS_CUTOFF = 0.75


def _suggestion(loc: tuple[Any, ...], data: Any) -> str:
    """``(did you mean 'ingress'?)`` when a field name is close to a known one."""
    import difflib

    name = loc[-1] if loc else None
    if not isinstance(name, str):
        return ""
    match = difflib.get_close_matches(name, sorted(_field_names()), n=1, cutoff=_KNOWN_TYPOS_CUTOFF)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _field_names() -> set[str]:
    """Every field name of every input model (the vocabulary the typo suggester knows)."""
    names: set[str] = set()
    stack: list[type[BaseModel]] = [Model]
    while stack:
        model = stack.pop()
        stack.extend(model.__subclasses__())
        names.update(info.alias or name for name, info in model.model_fields.items())
    return names


def attach_sources(obj: Model, data: Any, file: str) -> None:
    """Walk a validated model beside its located raw data and record positions."""
    line = getattr(data, "line", 1)
    lines = {str(k): v for k, v in data.key_lines.items()} if isinstance(data, LocatedDict) else None
    object.__setattr__(obj, "__pydantic_private__", {"_src": SourceRef(file, line), "_lines": lines})
    for name, key in _nested_fields(type(obj)):
        value = getattr(obj, name)
        raw = data.get(key) if isinstance(data, LocatedDict) else None
        _attach_value(value, raw, file)


_NESTED: dict[type[Model], tuple[tuple[str, str], ...]] = {}


def _nested_fields(model: type[Model]) -> tuple[tuple[str, str], ...]:
    """(field name, Kubernetes key) of the fields whose type mentions a model: the only ones
    :func:`_attach_value` can act on (a string, number or plain dict field holds no model)."""
    found = _NESTED.get(model)
    if found is None:
        found = _NESTED[model] = tuple(
            (name, info.alias or name) for name, info in model.model_fields.items() if _mentions_model(info.annotation)
        )
    return found


def _mentions_model(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, Model):
        return True
    return any(_mentions_model(arg) for arg in get_args(annotation))


def _attach_value(value: Any, raw: Any, file: str) -> None:
    if isinstance(value, Model):
        attach_sources(value, raw if raw is not None else LocatedDict(), file)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            raw_item = raw[index] if isinstance(raw, LocatedList) and index < len(raw) else None
            if isinstance(item, Model):
                attach_sources(item, raw_item if raw_item is not None else _fallback(raw, index), file)


def _fallback(raw: Any, index: int) -> LocatedDict:
    fallback = LocatedDict()
    fallback.key_lines = {}
    if isinstance(raw, LocatedList) and index < len(raw.item_lines):
        fallback.line = raw.item_lines[index]
    else:
        fallback.line = getattr(raw, "line", 1)
    return fallback


# --- shared Kubernetes pieces ---------------------------------------------------------------

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def check_label_key(key: str, *, allow_source: bool = False) -> str:
    """Validate a label key (``[prefix/]name``); Cilium keys may carry ``source:``."""
    bare = key
    if allow_source and ":" in key:
        bare = key.split(":", 1)[1]
    prefix, _, name = bare.rpartition("/")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise ValueError(f"invalid label key {key!r}: name part must be 1-63 alphanumerics, '-', '_' or '.'")
    if prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        raise ValueError(f"invalid label key {key!r}: prefix must be a DNS subdomain")
    return key


def check_label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(f"invalid label value {value!r}: at most 63 alphanumerics, '-', '_' or '.'")
    return value


class ObjectMeta(Model):
    """The parts of ``metadata`` we read; the rest of ObjectMeta is accepted and ignored."""

    name: str | None = None
    generateName: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    resourceVersion: str | None = None
    generation: int | None = None
    creationTimestamp: str | None = None
    deletionTimestamp: str | None = None
    deletionGracePeriodSeconds: int | None = None
    ownerReferences: list[dict[str, Any]] | None = None
    finalizers: list[str] | None = None
    managedFields: list[dict[str, Any]] | None = None
    selfLink: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not _DNS1123_SUBDOMAIN.match(value)):
            raise ValueError(f"invalid name {value!r}: must be a lowercase DNS subdomain")
        return value

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 63 or not _DNS1123_LABEL.match(value)):
            raise ValueError(f"invalid namespace {value!r}: must be a lowercase DNS label")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, label_value in (value or {}).items():
            check_label_key(key)
            check_label_value(label_value)
        return value


def require_name(meta: ObjectMeta, doc: Document) -> str:
    if not meta.name:
        raise InputError("metadata.name is required", source=doc.source, field="metadata.name")
    return meta.name
