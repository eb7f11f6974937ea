"""Lint configuration: ``[tool.netpolc]`` in pyproject.toml or a ``.netpolc.toml``, then the command line.

The file is looked up from the current directory upwards (the first ``.netpolc.toml``, or the
first ``pyproject.toml`` with a ``[tool.netpolc]`` table); ``--config`` names one explicitly.
Keys: ``select``, ``ignore`` (codes or code prefixes, as ruff), ``severity`` (code → error /
warning / info), ``profile``, ``platform``, ``policy-map-max``, ``identity-limit``.
Command-line ``--select``/``--ignore`` replace the file's lists.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.source import NetpolcError
from verifier.lint.finding import Severity

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

KEYS = frozenset({"select", "ignore", "severity", "profile", "platform", "policy-map-max", "identity-limit"})


class ConfigError(NetpolcError):
    """A bad configuration file or value (exit 2)."""


@dataclass(frozen=True)
class LintConfig:
    """Which rules run and how severe they are."""

    select: tuple[str, ...] = ("ALL",)
    ignore: tuple[str, ...] = ()
    severity: Mapping[str, Severity] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)  # profile, platform, ... from the file
    path: str | None = None

    def enabled(self, code: str) -> bool:
        """Selected by the most specific matching prefix of select/ignore (ruff's resolution)."""
        best_select = max((_specificity(p) for p in self.select if _covers(p, code)), default=-1)
        best_ignore = max((_specificity(p) for p in self.ignore if _covers(p, code)), default=-1)
        return best_select > best_ignore

    def explicitly_selected(self, code: str) -> bool:
        """Enabled through a select entry naming it or its prefix (not ``ALL``): opt-in rules."""
        return self.enabled(code) and any(p != "ALL" and _covers(p, code) for p in self.select)

    def with_selection(self, select: Iterable[str] | None, ignore: Iterable[str] | None) -> LintConfig:
        return LintConfig(
            tuple(select) if select else self.select,
            tuple(ignore) if ignore else self.ignore,
            self.severity,
            self.settings,
            self.path,
        )


def _covers(prefix: str, code: str) -> bool:
    return prefix == "ALL" or code.startswith(prefix)


def _specificity(prefix: str) -> int:
    return 0 if prefix == "ALL" else len(prefix)


def find_config(start: Path) -> Path | None:
    """The nearest ``.netpolc.toml`` or ``pyproject.toml`` with ``[tool.netpolc]``."""
    for directory in (start, *start.parents):
        candidate = directory / ".netpolc.toml"
        if candidate.is_file():
            return candidate
        pyproject = directory / "pyproject.toml"
        if pyproject.is_file() and "netpolc" in _read(pyproject).get("tool", {}):
            return pyproject
    return None


def _read(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
        return data
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None


def load_config(path: Path | None, known_codes: Iterable[str]) -> LintConfig:
    """Read a configuration file (None: defaults), checking keys and codes."""
    if path is None:
        return LintConfig()
    data = _read(path)
    table = data.get("tool", {}).get("netpolc", {}) if path.name == "pyproject.toml" else data
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.netpolc] must be a table")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(KEYS))})")
    codes = set(known_codes)
    select = _codes(table.get("select", ["ALL"]), codes, path, "select")
    ignore = _codes(table.get("ignore", []), codes, path, "ignore")
    severity: dict[str, Severity] = {}
    raw_severity = table.get("severity", {})
    if not isinstance(raw_severity, dict):
        raise ConfigError(f'{path}: severity must be a table of code = "error"|"warning"|"info"')
    for code, value in raw_severity.items():
        _codes([code], codes, path, "severity")
        try:
            severity[code] = Severity(value)
        except ValueError:
            raise ConfigError(f"{path}: severity.{code}: {value!r} is not error, warning or info") from None
    settings = {k: v for k, v in table.items() if k not in ("select", "ignore", "severity")}
    return LintConfig(select, ignore, severity, settings, str(path))


def _codes(value: Any, codes: set[str], path: Path, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{path}: {key} must be a list of rule codes")
    check_codes(value, codes, f"{path}: {key}")
    return tuple(value)


def check_codes(values: Iterable[str], codes: set[str], where: str) -> None:
    """Every value is ALL or a prefix of at least one known code."""
    for v in values:
        if v != "ALL" and not any(c.startswith(v) for c in codes):
            raise ConfigError(f"{where}: {v!r} is not a rule code or code prefix (see `netpolc lint --list-rules`)")
