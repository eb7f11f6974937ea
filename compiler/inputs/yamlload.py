"""Safe YAML loading that remembers line numbers and refuses hostile documents.

Only YAML's core schema is constructed (no tags are ever evaluated). Mappings and sequences come
back as :class:`LocatedDict` / :class:`LocatedList`, which remember the line of every key and item,
so a validation error deep inside an object can still name its line. Alias bombs ("billion
laughs") are refused before construction by measuring how far aliases would expand the document,
and oversized inputs are refused before they are read.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from compiler.source import InputError, SourceRef

try:  # libyaml's parser is ~10x faster; the pure-Python one behaves identically.
    _BaseLoader: type[yaml.SafeLoader] = yaml.CSafeLoader  # type: ignore[assignment]
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _BaseLoader = yaml.SafeLoader

#: Largest single input accepted (bytes). Big enough for a 200k-pod cluster dump.
MAX_INPUT_BYTES = int(os.environ.get("NETPOLC_MAX_INPUT_BYTES", str(1 << 30)))
#: A document may grow through aliases to at most this many times its own node count (plus slack).
ALIAS_EXPANSION_FACTOR = 4
ALIAS_EXPANSION_SLACK = 10_000
#: Deepest nesting accepted. libyaml's composer recurses in C and crashes the process on
#: pathological depth, so depth is bounded before the text reaches it.
MAX_NESTING = 200
_BRACKETS = re.compile(r"[\[\]{}]")
_INDENT = re.compile(r"^( *)\S", re.MULTILINE)
YAML_SUFFIXES = (".yaml", ".yml", ".json")


class LocatedDict(dict[Any, Any]):
    """A mapping that knows its own line and the line of each key."""

    line: int
    key_lines: dict[Any, int]


class LocatedList(list[Any]):
    """A sequence that knows its own line and the line of each item."""

    line: int
    item_lines: list[int]


@dataclass(frozen=True)
class Document:
    """One YAML document (or one item of a ``List``) from one file.

    ``line_delta`` is non-zero only for a document reused from an earlier load whose text now
    starts elsewhere (:mod:`compiler.inputs.cache`): its data keeps the lines it was parsed at.
    """

    data: LocatedDict
    file: str
    line_delta: int = 0

    @property
    def source(self) -> SourceRef:
        return SourceRef(self.file, self.data.line + self.line_delta)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """SafeLoader whose containers carry line numbers."""


_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"

#: Builds one node: the loader's ``construct_object`` (aliases allowed) or :func:`_build`.
_Builder = Callable[[yaml.SafeLoader, yaml.Node], Any]


def _deep(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    return loader.construct_object(node, deep=True)


def _located_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, build: _Builder) -> LocatedDict:
    loader.flatten_mapping(node)
    result = LocatedDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = build(loader, key_node)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise InputError("mapping key is not a scalar", source=SourceRef("", line)) from None
        if key in result:
            raise InputError(f"duplicate key {key!r}", source=SourceRef("", line), field=str(key))
        result[key] = build(loader, value_node)
        result.key_lines[key] = line
    return result


def _located_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode, build: _Builder) -> LocatedList:
    result = LocatedList(build(loader, child) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LocatedDict:
    return _located_mapping(loader, node, _deep)


def _construct_sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LocatedList:
    return _located_sequence(loader, node, _deep)


def _build(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """One node of a document without aliases, built directly: strings, mappings and sequences
    here (what ``construct_object`` would make of them through the constructors above), every
    other tag through the loader's own constructors. ``construct_object``'s bookkeeping exists
    for aliases (shared and recursive nodes), which such a document cannot have, and it was a
    third of the time of loading 20k pods."""
    tag = node.tag
    if tag == _STR_TAG and isinstance(node, yaml.ScalarNode):
        return node.value
    if tag == _MAP_TAG and isinstance(node, yaml.MappingNode):
        return _located_mapping(loader, node, _build)
    if tag == _SEQ_TAG and isinstance(node, yaml.SequenceNode):
        return _located_sequence(loader, node, _build)
    return loader.construct_object(node, deep=True)


def _construct_document(loader: yaml.SafeLoader, node: yaml.Node, may_alias: bool) -> Any:
    """``construct_document``, through :func:`_build` when the stream has no anchor."""
    if may_alias:
        return loader.construct_document(node)
    try:
        return _build(loader, node)
    finally:
        loader.constructed_objects = {}
        loader.recursive_objects = {}


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)
# Timestamps stay strings: Kubernetes objects carry them as text and nothing here computes with them.
_Loader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def _check_expansion(node: yaml.Node, file: str) -> None:
    """Refuse documents whose aliases would expand far beyond their written size."""
    distinct: set[int] = set()
    expanded: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        current, children_done = stack.pop()
        key = id(current)
        if children_done:
            total = 1
            for child in _children(current):
                total += expanded[id(child)]
            expanded[key] = total
            continue
        if key in expanded:
            continue
        distinct.add(key)
        stack.append((current, True))
        for child in _children(current):
            if id(child) not in expanded:
                stack.append((child, False))
    size = expanded[id(node)]
    limit = ALIAS_EXPANSION_FACTOR * len(distinct) + ALIAS_EXPANSION_SLACK
    if size > limit:
        raise InputError(
            f"YAML aliases expand this document to {size} nodes from {len(distinct)} written "
            f"(limit {limit}); refusing a possible alias bomb",
            source=SourceRef(file, node.start_mark.line + 1),
        )


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_nesting(text: str, file: str) -> None:
    """Refuse text nested deeper than :data:`MAX_NESTING` (flow brackets or indentation).

    Brackets inside quoted strings are counted too; that can only over-estimate, and real
    Kubernetes objects stay far below the limit.
    """
    depth = 0
    for match in _BRACKETS.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_NESTING:
            line = text.count("\n", 0, match.start()) + 1
            raise InputError(f"YAML is nested deeper than {MAX_NESTING} levels", source=SourceRef(file, line))
    for match in _INDENT.finditer(text):
        if len(match.group(1)) > 2 * MAX_NESTING:
            line = text.count("\n", 0, match.start()) + 1
            raise InputError(f"YAML is indented deeper than {2 * MAX_NESTING} columns", source=SourceRef(file, line))


def load_text(text: str, file: str) -> Iterator[Any]:
    """Yield the constructed documents of one YAML stream (None for empty documents)."""
    check_nesting(text, file)
    may_alias = "&" in text  # without an anchor there can be no alias, so no bomb
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            if may_alias:
                _check_expansion(node, file)
            try:
                yield _construct_document(loader, node, may_alias)
            except InputError as err:
                line = err.source.line if err.source else node.start_mark.line + 1
                raise InputError(err.message, source=SourceRef(file, line), field=err.field) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else 1
        column = mark.column + 1 if mark else 1
        problem = err.problem or err.context or "malformed YAML"
        raise InputError(f"YAML syntax error: {problem}", source=SourceRef(file, line, column)) from None
    except yaml.YAMLError as err:
        raise InputError(f"YAML error: {err}", source=SourceRef(file, 1)) from None
    except RecursionError:
        raise InputError("YAML nesting is too deep", source=SourceRef(file, 1)) from None
    finally:
        loader.dispose()


def _read(path: Path) -> str:
    size = path.stat().st_size
    if size > MAX_INPUT_BYTES:
        raise InputError(
            f"input is {size} bytes, over the limit of {MAX_INPUT_BYTES} (set NETPOLC_MAX_INPUT_BYTES)",
            source=SourceRef(str(path), 1),
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text: {err.reason}", source=SourceRef(str(path), 1)) from None
    except OSError as err:
        raise InputError(f"cannot read: {err.strerror}", source=SourceRef(str(path), 1)) from None


def _read_stdin() -> str:
    data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    if len(data) > MAX_INPUT_BYTES:
        raise InputError(f"standard input is over the limit of {MAX_INPUT_BYTES} bytes", source=SourceRef("-", 1))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"not UTF-8 text: {err.reason}", source=SourceRef("-", 1)) from None


def expand_paths(paths: list[str]) -> list[str]:
    """Resolve ``-f`` arguments as kubectl does: files, directories (recursive, YAML/JSON files, sorted), ``-``."""
    out: list[str] = []
    for raw in paths:
        if raw == "-":
            out.append("-")
            continue
        path = Path(raw)
        if path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in YAML_SUFFIXES)
            if not found:
                raise InputError("directory holds no .yaml, .yml or .json files", source=SourceRef(raw, 1))
            out.extend(found)
        elif path.is_file():
            out.append(str(path))
        else:
            raise InputError("no such file or directory", source=SourceRef(raw, 1))
    return out


def read_source(file: str) -> str:
    """The text of one input file (``-`` is standard input)."""
    return _read_stdin() if file == "-" else _read(Path(file))


def documents(file: str, text: str) -> Iterator[Document]:
    """Yield the Kubernetes objects in a YAML stream, flattening ``List`` kinds."""
    for index, data in enumerate(load_text(text, file)):
        if data is None:
            continue
        if not isinstance(data, LocatedDict):
            raise InputError(
                f"document {index + 1} is a {type(data).__name__}, expected a Kubernetes object (a mapping)",
                source=SourceRef(file, getattr(data, "line", 1)),
            )
        yield from _flatten(data, file)


def _flatten(data: LocatedDict, file: str) -> Iterator[Document]:
    kind = data.get("kind")
    if isinstance(kind, str) and kind.endswith("List") and "items" in data:
        items = data["items"]
        if items is None:
            return
        if not isinstance(items, LocatedList):
            raise InputError("items must be a list", source=SourceRef(file, data.key_lines["items"]), field="items")
        for item, line in zip(items, items.item_lines, strict=True):
            if not isinstance(item, LocatedDict):
                raise InputError("List item is not an object", source=SourceRef(file, line), field="items")
            yield from _flatten(item, file)
        return
    yield Document(data, file)
