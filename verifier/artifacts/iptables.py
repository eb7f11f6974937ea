"""Public entry points for the iptables target's artifacts: ``rules.v4``, ``ipsets.v4`` and ``services.v4``.

``read_iptables`` reads iptables-restore input (what netpolc emits) and iptables-save output (what a kernel prints
back after loading it) into one normalized :class:`~verifier.artifacts.models.Ruleset`; ``read_ipsets`` reads
``ipset restore``/``ipset save`` text into the sets it leaves behind. Both raise
:class:`~verifier.artifacts.models.ArtifactError` (a NetpolcError) naming file:line:column for anything they
cannot read or that lies outside the dialect contract (DESIGN.md §4). Text in the compiler's own canonical form
is read by a line-by-line fast path (:mod:`verifier.artifacts.fast_read`) into the very same models; everything
else, and every error, goes through the lark grammars.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from verifier.artifacts.ipsets import IpSet
from verifier.artifacts.models import ArtifactError, Family, Ruleset

# Parsed texts, newest last: a verify run reads the same (multi-megabyte) artifact for the
# simulators, the address classes and every proof, and forked proof workers inherit the parse.
# Keys hold the text itself (its hash is cached by str), so a hit costs one comparison.
_PARSED: OrderedDict[tuple[str, str, str, int], Any] = OrderedDict()
_PARSED_KEPT = 8


def _cached(kind: str, text: str, path: str, family: int, parse: Any) -> Any:
    key = (kind, text, path, family)
    found = _PARSED.get(key)
    if found is None:
        found = _PARSED[key] = parse()
        while len(_PARSED) > _PARSED_KEPT:
            _PARSED.popitem(last=False)
    else:
        _PARSED.move_to_end(key)
    return found


def read_iptables(text: str, path: str = "<text>", family: Family = 4) -> Ruleset:
    """Parse an iptables (``family=4``) or ip6tables (``family=6``) restore file or save output; ``path`` names
    the text in error messages."""
    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    return _cached("rules", text, path, family, lambda: _parse_rules(text, path, family))  # type: ignore[no-any-return]


def read_services(text: str, path: str = "<text>", family: Family = 4) -> Ruleset:
    """Parse ``services.v4``/``.v6``: kube-proxy's nat table (and nothing else)."""
    from grammar.iptables_save import SERVICE_TABLES

    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    return _parse_rules(text, path, family, SERVICE_TABLES)


def read_ipsets(text: str, path: str = "<text>") -> dict[str, IpSet]:
    """Replay an ``ipset restore`` stream or ``ipset save`` output; the sets it leaves, by name."""
    return dict(_cached("ipsets", text, path, 0, lambda: _parse_sets(text, path)))


# The compiler's own output is read by verifier/artifacts/fast_read.py, which gives the lark reader's result (==,
# with the same lines and columns) for the canonical text the compiler writes and declines everything else; the
# lark reader then reads the text and reports its errors. The lark readers stay reachable under private names
# so that tests can hold the two paths against each other. The grammar package (and fast_read, built on it)
# imports this package's models, so both are imported inside the functions, not at module level.


def _parse_rules(text: str, path: str, family: Family, tables: frozenset[str] | None = None) -> Ruleset:
    """The fast reader's Ruleset when it recognises the text, else the lark reader's."""
    from grammar.iptables_save import SUPPORTED_TABLES
    from verifier.artifacts.fast_read import read_iptables_fast

    chosen = SUPPORTED_TABLES if tables is None else tables
    fast = read_iptables_fast(text, path, family, chosen)
    return fast if fast is not None else _read_iptables_lark(text, path, family, chosen)


def _parse_sets(text: str, path: str) -> dict[str, IpSet]:
    """The fast reader's sets when it recognises the text, else the lark reader's."""
    from verifier.artifacts.fast_read import read_ipsets_fast

    fast = read_ipsets_fast(text, path)
    return fast if fast is not None else _read_ipsets_lark(text, path)


def _read_iptables_lark(text: str, path: str, family: Family, tables: frozenset[str] | None = None) -> Ruleset:
    """The lark reader (grammar/iptables_save.py) alone: ``*filter``/``*mangle``/``*raw`` unless ``tables``."""
    from grammar.iptables_save import SUPPORTED_TABLES, parse_iptables

    return parse_iptables(text, family, path, SUPPORTED_TABLES if tables is None else tables)


def _read_ipsets_lark(text: str, path: str) -> dict[str, IpSet]:
    """The lark reader (grammar/ipset.py) alone."""
    from grammar.ipset import parse_ipsets

    return parse_ipsets(text, path)


def _read_text(path: str | os.PathLike[str]) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(str(path), 0, f"cannot read: {e}") from None


def load_iptables(path: str | os.PathLike[str], family: Family = 4) -> Ruleset:
    """:func:`read_iptables` on a file."""
    return read_iptables(_read_text(path), str(path), family)


def load_ipsets(path: str | os.PathLike[str]) -> dict[str, IpSet]:
    """:func:`read_ipsets` on a file."""
    return read_ipsets(_read_text(path), str(path))
