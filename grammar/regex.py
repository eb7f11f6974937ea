"""Parse the RE2 subset of Cilium HTTP rules into a typed AST (grammar: regex.lark).

Envoy matches ``safe_regex`` against the whole value (RE2 full match), so the AST describes a set
of whole strings. What is outside the subset — backreferences, lookaround, ``\\b``, flags such as
``(?i)``, Unicode classes — raises :class:`UnsupportedRegex`; callers report ``unknown`` rather than
guess (issue: "anything outside the subset yields unknown, never a wrong proved").
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, VisitError

MAX_CHAR = 0x10FFFF


class UnsupportedRegex(ValueError):
    """A pattern outside the supported RE2 subset (or not a valid regex at all)."""


# --- AST ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CharSet:
    """A set of characters as sorted, disjoint inclusive code-point ranges."""

    ranges: tuple[tuple[int, int], ...]

    @staticmethod
    def of(ranges: list[tuple[int, int]]) -> CharSet:
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        return CharSet(tuple(merged))

    def negated(self) -> CharSet:
        out: list[tuple[int, int]] = []
        start = 0
        for lo, hi in self.ranges:
            if lo > start:
                out.append((start, lo - 1))
            start = hi + 1
        if start <= MAX_CHAR:
            out.append((start, MAX_CHAR))
        return CharSet(tuple(out))

    def union(self, other: CharSet) -> CharSet:
        return CharSet.of([*self.ranges, *other.ranges])

    def contains(self, char: str) -> bool:
        code = ord(char)
        return any(lo <= code <= hi for lo, hi in self.ranges)


@dataclass(frozen=True)
class Chars:
    """One character from a set."""

    chars: CharSet


@dataclass(frozen=True)
class Concat:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    options: tuple[Node, ...]


@dataclass(frozen=True)
class Repeat:
    """``node`` repeated ``lo`` to ``hi`` times (``hi`` None: unbounded). Laziness does not change the language."""

    node: Node
    lo: int
    hi: int | None


@dataclass(frozen=True)
class Anchor:
    """``^`` (start) or ``$`` (end); only meaningful at the edges of a full-match pattern."""

    start: bool


Node = Chars | Concat | Alt | Repeat | Anchor

MAX_REPEAT = 1000  # RE2's limit on counted repetition


def _ranges(*pairs: tuple[str, str]) -> CharSet:
    return CharSet.of([(ord(a), ord(b)) for a, b in pairs])


DIGIT = _ranges(("0", "9"))
WORD = _ranges(("0", "9"), ("A", "Z"), ("a", "z"), ("_", "_"))
SPACE = CharSet.of([(9, 10), (12, 13), (32, 32)])  # RE2 \s: [\t\n\f\r ]
SHORTHANDS = {
    "d": DIGIT,
    "D": DIGIT.negated(),
    "w": WORD,
    "W": WORD.negated(),
    "s": SPACE,
    "S": SPACE.negated(),
}
ANY_BUT_NEWLINE = CharSet.of([(ord("\n"), ord("\n"))]).negated()  # RE2 `.` without the s flag
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v"}


def _char(c: str) -> Chars:
    return Chars(CharSet.of([(ord(c), ord(c))]))


def _escaped(token: str) -> str:
    c = token[1]
    if c.isalnum() and c not in ESCAPES:
        raise UnsupportedRegex(f"escape {token!r} is outside the supported RE2 subset")
    return ESCAPES.get(c, c)


@v_args(inline=True)
class _ToAst(Transformer[Token, Node]):
    def start(self, node: Node) -> Node:
        return node

    def alternation(self, *options: Node) -> Node:
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def concat(self, *items: Node) -> Node:
        return items[0] if len(items) == 1 else Concat(tuple(items))

    def repeat(self, atom: Node, quantifier: tuple[int, int | None] | None = None) -> Node:
        if quantifier is None:
            return atom
        if isinstance(atom, Anchor):
            raise UnsupportedRegex("a quantified anchor is outside the supported subset")
        lo, hi = quantifier
        if lo > MAX_REPEAT or (hi is not None and hi > MAX_REPEAT):
            raise UnsupportedRegex(f"repetition count over {MAX_REPEAT} (RE2 refuses it)")
        if hi is not None and hi < lo:
            raise UnsupportedRegex(f"bad repetition {{{lo},{hi}}}")
        return Repeat(atom, lo, hi)

    def star(self, *_: Token) -> tuple[int, int | None]:
        return (0, None)

    def plus(self, *_: Token) -> tuple[int, int | None]:
        return (1, None)

    def optional(self, *_: Token) -> tuple[int, int | None]:
        return (0, 1)

    def exact(self, n: Token, *_: Token) -> tuple[int, int | None]:
        return (int(n), int(n))

    def at_least(self, n: Token, *_: Token) -> tuple[int, int | None]:
        return (int(n), None)

    def between(self, lo: Token, hi: Token, *_: Token) -> tuple[int, int | None]:
        return (int(lo), int(hi))

    def any_char(self, _: Token) -> Node:
        return Chars(ANY_BUT_NEWLINE)

    def start_anchor(self, _: Token) -> Node:
        return Anchor(True)

    def end_anchor(self, _: Token) -> Node:
        return Anchor(False)

    def shorthand(self, token: Token) -> Node:
        return Chars(SHORTHANDS[token[1]])

    def escaped(self, token: Token) -> Node:
        return _char(_escaped(token))

    def literal(self, token: Token) -> Node:
        return _char(str(token))

    digits = literal
    word = literal

    def comma(self, *_: Token) -> Node:
        return _char(",")

    def charclass(self, *parts: object) -> Node:
        negate = bool(parts) and isinstance(parts[0], Token) and parts[0].type == "CARET"
        items = [p for p in parts if isinstance(p, CharSet)]
        chars = CharSet.of([r for item in items for r in item.ranges])
        return Chars(chars.negated() if negate else chars)

    def class_range(self, lo: str, hi: str) -> CharSet:
        if ord(hi) < ord(lo):
            raise UnsupportedRegex(f"bad character range {lo}-{hi}")
        return CharSet.of([(ord(lo), ord(hi))])

    def class_dash(self, *_: Token) -> CharSet:
        return CharSet.of([(ord("-"), ord("-"))])

    def class_single(self, c: str) -> CharSet:
        return CharSet.of([(ord(c), ord(c))])

    def class_shorthand(self, token: Token) -> CharSet:
        return SHORTHANDS[token[1]]

    def class_literal(self, token: Token) -> str:
        return str(token)

    def class_escaped(self, token: Token) -> str:
        return _escaped(token)

    def class_comma(self, *_: Token) -> str:
        return ","


@cache
def _parser() -> Lark:
    return Lark((Path(__file__).with_name("regex.lark")).read_text(), parser="lalr", maybe_placeholders=False)


@cache
def parse_regex(pattern: str) -> Node:
    """The AST of ``pattern``; raises :class:`UnsupportedRegex` outside the subset."""
    if pattern == "":
        return Concat(())
    try:
        tree = _parser().parse(pattern)
        node: Node = _ToAst().transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, UnsupportedRegex):
            raise err.orig_exc from None
        raise
    except LarkError as err:
        raise UnsupportedRegex(f"{pattern!r}: outside the supported RE2 subset ({type(err).__name__})") from None
    _check_anchors(node, True, True)
    return node


def _check_anchors(node: Node, at_start: bool, at_end: bool) -> None:
    """``^`` only where nothing can precede it, ``$`` only where nothing can follow (full match)."""
    if isinstance(node, Anchor):
        if (node.start and not at_start) or (not node.start and not at_end):
            raise UnsupportedRegex("an anchor inside the pattern is outside the supported subset")
    elif isinstance(node, Concat):
        for i, item in enumerate(node.items):
            before = all(isinstance(x, Anchor) and x.start for x in node.items[:i])
            after = all(isinstance(x, Anchor) and not x.start for x in node.items[i + 1 :])
            _check_anchors(item, at_start and before, at_end and after)
    elif isinstance(node, Alt):
        for option in node.options:
            _check_anchors(option, at_start, at_end)
    elif isinstance(node, Repeat):
        _check_anchors(node.node, False, False)
