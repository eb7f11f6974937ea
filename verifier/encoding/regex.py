"""The RE2 subset of HTTP rules (grammar/regex.py) as Z3 regular expressions over strings.

Z3 represents characters up to ``z3_max_char`` (0x2FFFF with its default unicode encoding), so
ranges are clipped there; HTTP methods, paths and header values the proofs reason about are far
below it. Anchors at the edges of a full-match pattern match the empty string.
"""

from __future__ import annotations

from functools import reduce

import z3

from grammar.regex import MAX_CHAR, Alt, Anchor, Chars, CharSet, Concat, Node, Repeat, UnsupportedRegex, parse_regex

Z3_MAX_CHAR = 0x2FFFF
_RE_SORT = z3.ReSort(z3.StringSort())


def _empty() -> z3.ReRef:
    return z3.Re(z3.StringVal(""))


def _chars(chars: CharSet) -> z3.ReRef:
    parts = []
    for lo, hi in chars.ranges:
        if lo > Z3_MAX_CHAR:
            continue
        hi = min(hi, Z3_MAX_CHAR)
        if lo == hi:
            parts.append(z3.Re(z3.StringVal(chr(lo))))
        else:
            parts.append(z3.Range(z3.StringVal(chr(lo)), z3.StringVal(chr(hi))))
    if not parts:
        return z3.Empty(_RE_SORT)
    return parts[0] if len(parts) == 1 else z3.Union(*parts)


def to_z3(node: Node) -> z3.ReRef:
    """The Z3 regular expression of an AST node."""
    if isinstance(node, Chars):
        return _chars(node.chars)
    if isinstance(node, Anchor):
        return _empty()
    if isinstance(node, Concat):
        if not node.items:
            return _empty()
        items = [to_z3(item) for item in node.items]
        return items[0] if len(items) == 1 else reduce(lambda a, b: z3.Concat(a, b), items)
    if isinstance(node, Alt):
        return z3.Union(*[to_z3(o) for o in node.options])
    if isinstance(node, Repeat):
        inner = to_z3(node.node)
        if node.hi is None:
            body = z3.Star(inner)
            if node.lo == 0:
                return body
            return z3.Concat(z3.Loop(inner, node.lo, node.lo), body)
        if node.hi == 0:
            return _empty()
        return z3.Loop(inner, node.lo, node.hi)
    raise TypeError(f"unknown regex node {node!r}")


def regex(pattern: str) -> z3.ReRef:
    """``pattern`` (RE2 subset, full match) as a Z3 regex; raises UnsupportedRegex outside it, and
    when a character class splits the code points above Z3's alphabet (:func:`fits_alphabet`)."""
    node = parse_regex(pattern)
    if not fits_alphabet(node):
        raise UnsupportedRegex(f"{pattern!r}: a character class tells apart code points above "
                               f"U+{Z3_MAX_CHAR:X}, which Z3 strings cannot hold")
    return to_z3(node)


def fits_alphabet(node: Node) -> bool:
    """Whether every character class treats all code points from ``Z3_MAX_CHAR`` up alike (holds
    all or none of them). Then any string is matched as the one with those characters replaced
    by ``Z3_MAX_CHAR``, so deciding over Z3's alphabet decides over all of Unicode (as long as no
    literal compared against holds such a character: :func:`literal_fits`)."""
    if isinstance(node, Chars):
        above = [(lo, hi) for lo, hi in node.chars.ranges if hi >= Z3_MAX_CHAR]
        return not above or (len(above) == 1 and above[0][0] <= Z3_MAX_CHAR and above[0][1] >= MAX_CHAR)
    if isinstance(node, Concat):
        return all(fits_alphabet(item) for item in node.items)
    if isinstance(node, Alt):
        return all(fits_alphabet(option) for option in node.options)
    if isinstance(node, Repeat):
        return fits_alphabet(node.node)
    return True


def literal_fits(text: str) -> bool:
    """Whether an exact value stays below ``Z3_MAX_CHAR`` (see :func:`fits_alphabet`)."""
    return all(ord(c) < Z3_MAX_CHAR for c in text)


def full_match(value: z3.SeqRef, pattern: str) -> z3.BoolRef:
    """The constraint "``value`` matches ``pattern`` as Envoy's safe_regex does (whole value)"."""
    return z3.InRe(value, regex(pattern))
