"""Text rendering: ``iptables-restore`` and ``ipset restore`` input, byte-for-byte deterministic.

Tables follow the file structure iptables-save prints (reference/iptables.md §5.1): ``*table``,
every chain declaration (built-ins with their policy and ``[0:0]`` counters, then ours with ``-``),
then the rules chain by chain, then ``COMMIT``. Comment arguments are double-quoted (the restore
tokenizer's only quote character, §5.1) and sanitised the way Felix does (§1.1): characters outside
``[\\w @%+=:,./<>()\\[\\]-]`` become ``_`` and the text is cut to 255 characters.

ipset files hold ``create NAME TYPE family inet|inet6 hashsize N maxelem N`` then its ``add`` lines,
set by set in name order (reference/iptables.md §1.5, ipset(8)).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_COMMENT_UNSAFE = re.compile(r"[^\w @%+=:,./<>()\[\]*-]")
COMMENT_MAX = 255


def comment(text: str) -> list[str]:
    """``-m comment --comment "…"`` with the text made safe for every iptables tokenizer."""
    safe = _COMMENT_UNSAFE.sub("_", text)[:COMMENT_MAX]
    return ["-m", "comment", "--comment", f'"{safe}"']


@dataclass
class Table:
    """One ``*table`` block: built-in chains (policy ACCEPT), then our chains in insertion order."""

    name: str
    builtins: tuple[str, ...]
    chains: dict[str, list[list[str]]] = field(default_factory=dict)
    hooks: dict[str, list[list[str]]] = field(default_factory=dict)

    def chain(self, name: str) -> list[list[str]]:
        """The rule list of one of our chains (created, empty, on first use)."""
        return self.chains.setdefault(name, [])

    def hook(self, builtin: str, rule: list[str]) -> None:
        self.hooks.setdefault(builtin, []).append(rule)

    def rule_count(self) -> int:
        return sum(len(r) for r in self.chains.values()) + sum(len(r) for r in self.hooks.values())

    def render(self) -> str:
        lines = [f"*{self.name}"]
        lines += [f":{b} ACCEPT [0:0]" for b in self.builtins]
        lines += [f":{c} - [0:0]" for c in self.chains]
        for builtin in self.builtins:
            lines += [" ".join(["-A", builtin, *rule]) for rule in self.hooks.get(builtin, [])]
        for chain, rules in self.chains.items():
            lines += [" ".join(["-A", chain, *rule]) for rule in rules]
        lines.append("COMMIT")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class IPSet:
    """One set: its type, family (4/6) and member lines.

    Members look like ``10.0.0.0/8``, ``10.1.0.0/16 nomatch`` or ``10.0.0.5,tcp:80``.
    """

    name: str
    kind: str
    version: int
    members: tuple[str, ...]

    def render(self) -> str:
        family = "inet" if self.version == 4 else "inet6"
        maxelem = max(65536, len(self.members))
        lines = [f"create {self.name} {self.kind} family {family} hashsize 1024 maxelem {maxelem}"]
        lines += [f"add {self.name} {m}" for m in self.members]
        return "\n".join(lines) + "\n"


def render_rules(header: str, tables: list[Table]) -> str:
    return "".join([f"# {header}\n", *(t.render() for t in tables)])


def render_sets(header: str, sets: list[IPSet]) -> str:
    return "".join([f"# {header}\n", *(s.render() for s in sorted(sets, key=lambda s: s.name))])
