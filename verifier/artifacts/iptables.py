"""Public entry points for the iptables target's artifacts: ``rules.v4``, ``ipsets.v4`` and ``services.v4``.

``read_iptables`` reads iptables-restore input (what netpolc emits) and iptables-save output (what a kernel prints
back after loading it) into one normalized :class:`~verifier.artifacts.models.Ruleset`; ``read_ipsets`` reads
``ipset restore``/``ipset save`` text into the sets it leaves behind. Both raise
:class:`~verifier.artifacts.models.ArtifactError` (a NetpolcError) naming file:line:column for anything they
cannot read or that lies outside the dialect contract (DESIGN.md §4).
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
    # The grammar package imports this package's models, so it is imported here, not at module level.
    from grammar.iptables_save import parse_iptables

    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    return _cached("rules", text, path, family, lambda: parse_iptables(text, family, path))  # type: ignore[no-any-return]


def read_services(text: str, path: str = "<text>", family: Family = 4) -> Ruleset:
    """Parse ``services.v4``/``.v6``: kube-proxy's nat table (and nothing else)."""
    from grammar.iptables_save import SERVICE_TABLES, parse_iptables

    if family not in (4, 6):
        raise ValueError(f"family must be 4 or 6, not {family!r}")
    return parse_iptables(text, family, path, SERVICE_TABLES)


def read_ipsets(text: str, path: str = "<text>") -> dict[str, IpSet]:
    """Replay an ``ipset restore`` stream or ``ipset save`` output; the sets it leaves, by name."""
    from grammar.ipset import parse_ipsets

    return dict(_cached("ipsets", text, path, 0, lambda: parse_ipsets(text, path)))


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
