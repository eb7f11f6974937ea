"""The RE2 subset of HTTP rules: Lark parse (grammar/regex.py) and Z3 encoding (verifier/encoding/regex.py).

The Z3 language of a pattern must equal Python's ``re.fullmatch`` (which agrees with RE2 on this
subset) on every string; hypothesis generates patterns from the subset and probe strings from
the pattern's alphabet. Patterns outside the subset must be refused, never approximated.
"""

from __future__ import annotations

import re

import pytest
import z3
from hypothesis import given, settings
from hypothesis import strategies as st

from grammar.regex import UnsupportedRegex, parse_regex
from verifier.encoding.regex import full_match, regex

ALPHABET = "ab/.-_0"


def z3_matches(pattern: str, value: str) -> bool:
    solver = z3.Solver()
    solver.add(z3.InRe(z3.StringVal(value), regex(pattern)))
    return solver.check() == z3.sat


@st.composite
def patterns(draw: st.DrawFn, depth: int = 0) -> str:
    atoms = ["a", "b", "/", r"\.", ".", "[ab]", "[^a/]", "[a-b0]", r"\d", r"\w", "-", "_", "0", "[-a]", "[^-b]"]
    kind = draw(st.sampled_from(["atom", "atom", "concat", "alt", "group"])) if depth < 2 else "atom"
    if kind == "atom":
        text = draw(st.sampled_from(atoms))
    elif kind == "concat":
        text = "".join(draw(st.lists(patterns(depth + 1), min_size=2, max_size=3)))
        text = f"(?:{text})"
    elif kind == "alt":
        text = "|".join(draw(st.lists(patterns(depth + 1), min_size=2, max_size=3)))
        text = f"(?:{text})"
    else:
        text = f"({draw(patterns(depth + 1))})"
    if kind in ("concat", "alt") and not text.startswith("(?:"):
        return text  # a quantifier would bind to the last atom only
    quant = draw(st.sampled_from(["", "", "*", "+", "?", "{2}", "{1,2}", "{0,}", "*?"]))
    return text + quant


@settings(max_examples=150, deadline=None)
@given(pattern=patterns(), values=st.lists(st.text(alphabet=ALPHABET, max_size=5), min_size=1, max_size=6))
def test_z3_language_equals_python_fullmatch(pattern: str, values: list[str]) -> None:
    for value in values:
        assert z3_matches(pattern, value) == bool(re.fullmatch(pattern, value)), (pattern, value)


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("/api/.*", ["/api/", "/api/v1/users"], ["/api", "/apix"]),
        ("/api", ["/api"], ["/api/", "/api/v1"]),
        ("GET|POST", ["GET", "POST"], ["GETPOST", "PUT", "get"]),
        ("^/health$", ["/health"], ["/healthz"]),
        ("/v[0-9]{1,2}/items", ["/v1/items", "/v10/items"], ["/v100/items", "/v/items"]),
        (r"/files/[^/]+\.txt", ["/files/a.txt"], ["/files/a/b.txt", "/files/.txt"]),
        ("/cloudcity.DoorManager/OpenDoor", ["/cloudcity.DoorManager/OpenDoor", "/cloudcityXDoorManager/OpenDoor"], []),
        ("", [""], ["a"]),
        (".*", ["", "anything"], ["new\nline"]),
    ],
)
def test_examples_of_cilium_rules(pattern: str, yes: list[str], no: list[str]) -> None:
    for value in yes:
        assert z3_matches(pattern, value), value
    for value in no:
        assert not z3_matches(pattern, value), value


@pytest.mark.parametrize(
    "pattern",
    [r"(a)\1", "(?=a)", "(?!a)", r"\bword", "(?i)get", r"\p{L}", "a{2000}", "a^b", "a$b", "[b-a]", "(", "a{", r"\x41"],
)
def test_outside_the_subset_is_refused(pattern: str) -> None:
    with pytest.raises(UnsupportedRegex):
        parse_regex(pattern)


def test_solver_finds_a_path_one_rule_allows_and_the_other_does_not() -> None:
    path = z3.String("path")
    solver = z3.Solver()
    solver.add(full_match(path, "/api/.*"), z3.Not(full_match(path, "/api/v1/.*")))
    assert solver.check() == z3.sat
    witness = solver.model()[path].as_string()
    assert re.fullmatch("/api/.*", witness) and not re.fullmatch("/api/v1/.*", witness)
