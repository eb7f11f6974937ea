"""Reuse what an earlier load parsed: documents by their text, so a second version costs its edits.

``netpolc diff`` loads two versions that are mostly the same text: the cluster file identical,
the policy file different in a document or two (a ``git:`` revision of the same file). Parsing
and validating is most of a load (about 2 s per side at 20k pods / 5,000 policies), so the
second load goes through a :class:`DocumentCache` filled by the first.

A file is cut into *chunks* at every line that starts a YAML document (``---`` followed by a
blank or the line end, in column 0). Such a line always ends the document before it — YAML
forbids it inside any scalar, and libyaml ends a block or plain scalar there and refuses it in
a quoted one — so parsing chunk by chunk gives the documents a whole-file parse gives, and a
chunk whose text was seen before yields the objects validated then. Only runs of unseen chunks
are parsed, each with its lines placed where they are in the file. Files this reasoning does
not cover (directives ``%…``, document-end markers ``...``, line breaks other than ``\\n``, and
standard input) are parsed whole, as without a cache.

A reused object keeps the file and lines it was parsed at; the document wrapping it carries the
shift (:attr:`compiler.inputs.yamlload.Document.line_delta`), and each entry says where its
object thinks it is (``parsed_at``) so the loader can record it (``Inputs.moved``). Reused
objects are shared with the earlier load's :class:`~compiler.inputs.Inputs`, never mutated.

Errors are never produced from cached results: the loader redoes a plain load whenever the
cached path meets any input error, so messages are exactly those of an uncached load.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from compiler.inputs.yamlload import Document, check_nesting
from compiler.source import SourceRef

#: A line that starts a document: ``---`` in column 0, then a blank or the end of the line.
_DOCUMENT_START = re.compile(r"^---(?=[ \t\n]|$)", re.MULTILINE)
#: What chunking does not handle: directives, document-end markers.
_UNCHUNKABLE = re.compile(r"^(?:%|\.\.\.(?:[ \t\n]|$))", re.MULTILINE)
_OTHER_BREAKS = ("\r", "\x85", "\u2028", "\u2029")


@dataclass(frozen=True)
class Entry:
    """What one document became: a validated model in its bucket of ``_Collected``
    (``namespaces``, ``pods``, ``workloads``, ``services``, ``policies``), or a skipped kind
    (bucket ``skipped``, value the kind)."""

    bucket: str
    value: Any
    doc: Document
    parsed_at: SourceRef | None = None  # where the model's own positions point, when reused elsewhere


#: Parses a text (whose lines are already those of ``file``) into entries, in document order.
Parser = Callable[[str, str], list[Entry]]


@dataclass(frozen=True)
class _Chunk:
    file: str
    line: int  # the line the chunk starts at, 1-based
    entries: tuple[Entry, ...]


class DocumentCache:
    """Parsed documents by chunk text, filled by every load that uses it (see the module doc)."""

    def __init__(self) -> None:
        self._chunks: dict[str, _Chunk] = {}
        self._clusters: dict[tuple[object, ...], Any] = {}
        self.reused = 0  # documents taken from the cache (for tests and progress)
        self.parsed = 0  # documents parsed

    def entries(self, file: str, text: str, parse: Parser) -> list[Entry]:
        """The entries of one file's text, in document order, reusing every known chunk."""
        cuts = _chunks(text)
        if cuts is None:
            fresh = parse(file, text)
            self.parsed += len(fresh)
            return fresh
        if not all(text[start:end] in self._chunks for start, end, _ in cuts):
            check_nesting(text, file)  # a whole-file check, as an uncached parse makes it
        out: list[Entry] = []
        index = 0
        while index < len(cuts):
            start, end, line = cuts[index]
            known = self._chunks.get(text[start:end])
            if known is not None:
                out.extend(_moved(e, file, line - known.line) for e in known.entries)
                self.reused += len(known.entries)
                index += 1
                continue
            run_end = index
            while run_end < len(cuts) and text[cuts[run_end][0] : cuts[run_end][1]] not in self._chunks:
                run_end += 1
            run = cuts[index:run_end]
            fresh = parse(file, "\n" * (line - 1) + text[start : run[-1][1]])
            self.parsed += len(fresh)
            self._remember(file, text, run, fresh)
            out.extend(fresh)
            index = run_end
        return out

    def remember_cluster(self, key: tuple[object, ...], cluster: Any) -> None:
        """Keep a cluster built from these entries (by identity of its objects, and the options)."""
        self._clusters[key] = cluster

    def cluster(self, key: tuple[object, ...]) -> Any | None:
        return self._clusters.get(key)

    def _remember(self, file: str, text: str, run: Sequence[tuple[int, int, int]], entries: list[Entry]) -> None:
        """Record each chunk of a freshly parsed run with the entries whose document starts in it."""
        starts = [line for _, _, line in run]
        per_chunk: list[list[Entry]] = [[] for _ in run]
        for entry in entries:
            per_chunk[max(0, bisect.bisect_right(starts, entry.doc.data.line) - 1)].append(entry)
        for (start, end, line), chunk_entries in zip(run, per_chunk, strict=True):
            self._chunks[text[start:end]] = _Chunk(file, line, tuple(chunk_entries))


def _chunks(text: str) -> list[tuple[int, int, int]] | None:
    """``(start, end, first line)`` of each chunk, or None when the text must be parsed whole."""
    if any(b in text for b in _OTHER_BREAKS) or _UNCHUNKABLE.search(text):
        return None
    starts = [0, *(m.start() for m in _DOCUMENT_START.finditer(text) if m.start() > 0)]
    out = []
    line = 1
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(text)
        out.append((start, end, line))
        line += text.count("\n", start, end)
    return out


def _moved(entry: Entry, file: str, delta: int) -> Entry:
    """A cached entry as it stands in ``file``, ``delta`` lines from where it was parsed."""
    if delta == 0 and file == entry.doc.file:
        return entry
    doc = Document(entry.doc.data, file, entry.doc.line_delta + delta)
    return replace(entry, doc=doc, parsed_at=entry.parsed_at or entry.doc.source)
