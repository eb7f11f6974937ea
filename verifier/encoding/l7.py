"""L7 rules as Z3 constraints over a symbolic request, for the Envoy side and the source side.

A request of one parser's kind is a set of Z3 variables:

- HTTP: method, path and host (``:method``, ``:path``, ``:authority``) as strings, and for every
  other header name either side mentions a count of values (0 = absent) and that many string
  values. A matcher holds when *some* value fits, so ``k`` values per name suffice when ``k``
  matchers name it: any header list is matched like the list of one witness per matcher that
  holds (the count is at least 1 when the header is present at all).
- Kafka: API key and version (0..32767), client ID and topic.
- DNS: the query name as both sides compare it — lower case, no trailing dot — over ASCII
  (DNS names on the wire; Cilium accepts only ``[-a-zA-Z0-9_.*]`` in ``matchName``/``matchPattern``).

Envoy rules come from NPDS JSON (``OUT/envoy/``), as :mod:`verifier.simulate.envoy` reads them;
source rules are the parsed policy objects, as :mod:`compiler.l7match` reads them. Regexes go
through :mod:`verifier.encoding.regex` (RE2 subset); what is outside it raises
:class:`Unencodable`, and the proof says ``unknown`` instead of guessing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import z3

from compiler.flow import DnsRequest, HttpRequest, KafkaRequest, L7Request
from compiler.inputs.ciliumpolicy import FQDNSelector, PortRuleHTTP, PortRuleKafka
from compiler.kafka import allowed_api_keys
from compiler.l7match import DNS_WILDCARD, dns_pattern_parts, header_requirement
from grammar.regex import UnsupportedRegex
from verifier.encoding.regex import Z3_MAX_CHAR, literal_fits, regex

Json = dict[str, Any]
#: An Envoy rule that applies (NPDS JSON; None: a port policy without rules, any request) or a
#: source alternative (the L7 rules of which one must admit; None: any request).
EnvoyRule = Json | None
SourceAlternative = Sequence[Any] | None

_PRINTABLE = z3.Range("!", "~")
PSEUDO = {":method": "method", ":path": "path", ":authority": "host"}
KAFKA_MAX = 0x7FFF  # api_key and api_version are INT16 in the Kafka protocol


class Unencodable(Exception):
    """An L7 construct outside what is encoded; the proof reports it as ``unknown``."""


@dataclass(frozen=True)
class L7Answer:
    """``same``, ``differ`` with a request on which the two sides disagree, or ``unknown``."""

    status: str
    request: L7Request | None = None
    envoy: bool | None = None  # what each side's formula says of the request
    source: bool | None = None
    reason: str = ""


# --- the symbolic request --------------------------------------------------------------------------


class HttpSpace:
    """A symbolic HTTP request with values for the header names in ``counts``."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.method = z3.String("method")
        self.path = z3.String("path")
        self.host = z3.String("host")
        self.headers = {name: (z3.Int(f"n[{name}]"), [z3.String(f"h[{name}][{i}]") for i in range(k)])
                        for name, k in sorted(counts.items())}

    def domain(self) -> z3.BoolRef:
        return z3.And(*(z3.And(n >= 0, n <= len(values)) for n, values in self.headers.values()), True)

    def readable(self) -> z3.BoolRef:
        """Requests a person would write: an upper-case method, a path from ``/``, printable text."""
        values = [v for _, vs in self.headers.values() for v in vs]
        return z3.And(z3.InRe(self.method, z3.Plus(z3.Range("A", "Z"))),
                      z3.InRe(self.path, z3.Concat(z3.Re("/"), z3.Star(_PRINTABLE))),
                      *(z3.InRe(v, z3.Star(_PRINTABLE)) for v in [self.host, *values]))

    def present(self, name: str) -> z3.BoolRef:
        if name in PSEUDO:
            return z3.BoolVal(True)
        n, _ = self.headers[name]
        return n >= 1

    def some_value(self, name: str, test: Any) -> z3.BoolRef:
        """Some value of header ``name`` passes ``test`` (a function of a string term)."""
        if name in PSEUDO:
            return test(getattr(self, PSEUDO[name]))
        n, values = self.headers[name]
        return z3.Or(*(z3.And(i < n, test(v)) for i, v in enumerate(values)), False)

    def request(self, model: z3.ModelRef) -> HttpRequest:
        headers: list[tuple[str, str]] = []
        for name, (n, values) in self.headers.items():
            count = model.eval(n, model_completion=True).as_long()
            headers.extend((name, _string(model, v)) for v in values[:count])
        return HttpRequest(_string(model, self.method), _string(model, self.path), _string(model, self.host),
                           tuple(headers))


class KafkaSpace:
    def __init__(self) -> None:
        self.api_key = z3.Int("api_key")
        self.api_version = z3.Int("api_version")
        self.client_id = z3.String("client_id")
        self.topic = z3.String("topic")

    def domain(self) -> z3.BoolRef:
        return z3.And(self.api_key >= 0, self.api_key <= KAFKA_MAX, self.api_version >= 0,
                      self.api_version <= KAFKA_MAX)

    def readable(self) -> z3.BoolRef:
        return z3.And(z3.InRe(self.client_id, z3.Star(_PRINTABLE)), z3.InRe(self.topic, z3.Star(_PRINTABLE)))

    def request(self, model: z3.ModelRef) -> KafkaRequest:
        return KafkaRequest(model.eval(self.api_key, model_completion=True).as_long(),
                            model.eval(self.api_version, model_completion=True).as_long(),
                            _string(model, self.client_id), _string(model, self.topic))


class DnsSpace:
    def __init__(self) -> None:
        self.name = z3.String("qname")

    def domain(self) -> z3.BoolRef:
        allowed = z3.Union(z3.Range(" ", "@"), z3.Range("[", "~"))  # printable ASCII but A-Z
        return z3.And(z3.InRe(self.name, z3.Star(allowed)), z3.Not(z3.SuffixOf(z3.StringVal("."), self.name)))

    def readable(self) -> z3.BoolRef:
        return z3.InRe(self.name, z3.Star(z3.Union(z3.Range("a", "z"), z3.Range("0", "9"), z3.Re("-"), z3.Re("."))))

    def request(self, model: z3.ModelRef) -> DnsRequest:
        return DnsRequest(_string(model, self.name))


Space = HttpSpace | KafkaSpace | DnsSpace


def _string(model: z3.ModelRef, term: z3.SeqRef) -> str:
    """A string from the model, code point by code point (no escape decoding to get wrong)."""
    length = model.eval(z3.Length(term), model_completion=True).as_long()
    codes = [model.eval(z3.StrToCode(z3.SubString(term, i, 1)), model_completion=True).as_long()
             for i in range(length)]
    return "".join(chr(c) for c in codes)


def _literal(text: str) -> z3.SeqRef:
    if not literal_fits(text):
        raise Unencodable(f"{text!r} holds a code point at or above U+{Z3_MAX_CHAR:X}, beyond Z3 strings")
    return z3.StringVal(text)


def _full_match(term: z3.SeqRef, pattern: str) -> z3.BoolRef:
    try:
        return z3.InRe(term, regex(pattern))
    except UnsupportedRegex as err:
        raise Unencodable(f"regex {pattern!r} is outside the encoded RE2 subset: {err}") from None


# --- header names each side mentions -----------------------------------------------------------------


def _envoy_header_names(rules: Iterable[EnvoyRule]) -> list[str]:
    names: list[str] = []
    for rule in rules:
        for http in (rule or {}).get("http_rules", {}).get("http_rules", []):
            names.extend(m["name"].lower() for m in http.get("headers", []))
            names.extend(m["name"].lower() for m in http.get("header_matches", []))
    return names


def _source_header_names(alternatives: Iterable[SourceAlternative]) -> list[str]:
    names: list[str] = []
    for alternative in alternatives:
        for rule in alternative or ():
            if isinstance(rule, PortRuleHTTP):
                names.extend(header_requirement(h)[0] for h in rule.headers or [])
                names.extend(m.name.lower() for m in rule.headerMatches or [])
    return names


def space_for(parser: str, envoy: Sequence[EnvoyRule], source: Sequence[SourceAlternative]) -> Space:
    """The request space of ``parser`` (anything but Kafka and DNS speaks HTTP here: other
    parsers' rules admit no modelled request on either side)."""
    if parser == "kafka":
        return KafkaSpace()
    if parser == "dns":
        return DnsSpace()
    counts: dict[str, int] = {}
    for name in [*_envoy_header_names(envoy), *_source_header_names(source)]:
        if name not in PSEUDO:
            counts[name] = counts.get(name, 0) + 1
    return HttpSpace(counts)


# --- Envoy (NPDS) ------------------------------------------------------------------------------------


def envoy_admits(rules: Sequence[EnvoyRule], space: Space) -> z3.BoolRef:
    """Some applicable allow rule admits the request (the caller has handled deny rules)."""
    return z3.Or(*(_envoy_rule(rule, space) for rule in rules), False)


def _envoy_rule(rule: EnvoyRule, space: Space) -> z3.BoolRef:
    if rule is None:
        return z3.BoolVal(True)
    if "http_rules" in rule:
        if not isinstance(space, HttpSpace):
            return z3.BoolVal(False)
        return z3.Or(*(_envoy_http(r, space) for r in rule["http_rules"].get("http_rules", [])), False)
    if "kafka_rules" in rule:
        if not isinstance(space, KafkaSpace):
            return z3.BoolVal(False)
        return z3.Or(*(_envoy_kafka(r, space) for r in rule["kafka_rules"].get("kafka_rules", [])), False)
    if "dns_rules" in rule:
        if not isinstance(space, DnsSpace):
            return z3.BoolVal(False)
        return z3.Or(*(_dns(r.get("match_name"), r.get("match_pattern"), space) for r in rule["dns_rules"]), False)
    return z3.BoolVal("l7_rules" not in rule)  # proxylib rule maps admit no modelled request


def _envoy_http(rule: Json, space: HttpSpace) -> z3.BoolRef:
    conds: list[z3.BoolRef] = []
    for matcher in rule.get("headers", []):
        name = matcher["name"].lower()
        string_match = matcher.get("string_match")
        if string_match is None:
            conds.append(space.present(name))
        elif set(string_match) == {"exact"}:
            value = _literal(string_match["exact"])
            conds.append(space.some_value(name, lambda v, value=value: v == value))
        elif set(string_match) == {"safe_regex"}:
            pattern = string_match["safe_regex"]["regex"]
            conds.append(space.some_value(name, lambda v, pattern=pattern: _full_match(v, pattern)))
        else:
            raise Unencodable(f"header matcher {matcher!r}: only exact and safe_regex string matches are encoded")
    for match in rule.get("header_matches", []):
        if match.get("mismatch_action", "FAIL_ON_MISMATCH") != "FAIL_ON_MISMATCH":
            continue  # rewrite or log on mismatch, never deny
        name = match["name"].lower()
        if "value" in match:
            value = _literal(match["value"])
            conds.append(space.some_value(name, lambda v, value=value: v == value))
        else:
            conds.append(space.present(name))  # a value_sds_secret's value is unknown offline
    return z3.And(*conds, True)


def _envoy_kafka(rule: Json, space: KafkaSpace) -> z3.BoolRef:
    conds: list[z3.BoolRef] = []
    keys = rule.get("api_keys", [])
    if keys:
        conds.append(z3.Or(*(space.api_key == k for k in keys)))
    version = rule.get("api_version", -1)
    if version >= 0:
        conds.append(space.api_version == version)
    if rule.get("client_id"):
        conds.append(space.client_id == _literal(rule["client_id"]))
    if rule.get("topic"):
        conds.append(space.topic == _literal(rule["topic"]))
    return z3.And(*conds, True)


def _dns(match_name: str | None, match_pattern: str | None, space: DnsSpace) -> z3.BoolRef:
    if match_name is not None:
        return space.name == _literal(match_name.rstrip(".").lower())
    parts = dns_pattern_parts(match_pattern or "")
    if parts is None:
        return z3.BoolVal(True)
    wildcard = regex(DNS_WILDCARD)
    pieces: list[z3.ReRef] = []
    for i, part in enumerate(parts):
        if i:
            pieces.append(wildcard)
        pieces.append(z3.Re(_literal(part)))
    return z3.InRe(space.name, pieces[0] if len(pieces) == 1 else z3.Concat(*pieces))


# --- the source (parsed policy rules) ------------------------------------------------------------------


def source_admits(alternatives: Sequence[SourceAlternative], space: Space) -> z3.BoolRef:
    """Some matching allow rule admits the request (SEMANTICS §7)."""
    conds: list[z3.BoolRef] = []
    for alternative in alternatives:
        if alternative is None:
            return z3.BoolVal(True)
        conds.extend(_source_rule(rule, space) for rule in alternative)
    return z3.Or(*conds, False)


def _source_rule(rule: Any, space: Space) -> z3.BoolRef:
    if isinstance(rule, PortRuleHTTP):
        return _source_http(rule, space) if isinstance(space, HttpSpace) else z3.BoolVal(False)
    if isinstance(rule, PortRuleKafka):
        return _source_kafka(rule, space) if isinstance(space, KafkaSpace) else z3.BoolVal(False)
    if isinstance(rule, FQDNSelector):
        return _dns(rule.matchName, rule.matchPattern, space) if isinstance(space, DnsSpace) else z3.BoolVal(False)
    return z3.BoolVal(False)  # generic l7proto rules admit no modelled request


def _source_http(rule: PortRuleHTTP, space: HttpSpace) -> z3.BoolRef:
    conds: list[z3.BoolRef] = []
    for field, term in ((rule.method, space.method), (rule.path, space.path), (rule.host, space.host)):
        if field is not None:
            conds.append(_full_match(term, field))
    for header in rule.headers or []:
        name, value = header_requirement(header)
        if value:
            literal = _literal(value)
            conds.append(_source_header(space, name, lambda v, literal=literal: v == literal))
        else:
            conds.append(_source_header(space, name, None))
    for match in rule.headerMatches or []:
        if match.mismatch is not None:
            continue  # mismatch actions rewrite or log; they never deny
        if match.value is not None:
            literal = _literal(match.value)
            conds.append(_source_header(space, match.name.lower(), lambda v, literal=literal: v == literal))
        else:
            conds.append(_source_header(space, match.name.lower(), None))
    return z3.And(*conds, True)


def _source_header(space: HttpSpace, name: str, test: Any) -> z3.BoolRef:
    """The source reads only the request's own headers: a pseudo-header name is never there."""
    if name in PSEUDO:
        return z3.BoolVal(False)
    return space.present(name) if test is None else space.some_value(name, test)


def _source_kafka(rule: PortRuleKafka, space: KafkaSpace) -> z3.BoolRef:
    conds: list[z3.BoolRef] = []
    keys = allowed_api_keys(rule.role, rule.apiKey)
    if keys is not None:
        conds.append(z3.Or(*(space.api_key == k for k in keys)))
    if rule.apiVersion not in (None, ""):
        conds.append(space.api_version == int(rule.apiVersion))
    if rule.clientID:
        conds.append(space.client_id == _literal(rule.clientID))
    if rule.topic:
        conds.append(space.topic == _literal(rule.topic))
    return z3.And(*conds, True)


# --- the question -------------------------------------------------------------------------------------


def compare(parser: str, envoy: Sequence[EnvoyRule], envoy_denies: bool, source: Sequence[SourceAlternative],
            timeout_ms: int) -> L7Answer:
    """Is there a request of ``parser``'s kind that one side admits and the other does not?"""
    try:
        space = space_for(parser, envoy, source)
        left = z3.BoolVal(False) if envoy_denies else envoy_admits(envoy, space)
        right = source_admits(source, space)
    except Unencodable as err:
        return L7Answer("unknown", reason=str(err))
    solver = z3.Solver()
    solver.set("timeout", timeout_ms)
    solver.add(space.domain(), left != right)
    # a readable witness first, when there is one; the verdict always comes from the full space
    solver.push()
    solver.add(space.readable())
    if solver.check() == z3.sat:
        return _witness(space, solver.model(), left, right)
    solver.pop()
    result = solver.check()
    if result == z3.unsat:
        return L7Answer("same")
    if result == z3.unknown:
        return L7Answer("unknown", reason=f"solver: {solver.reason_unknown()}")
    return _witness(space, solver.model(), left, right)


def _witness(space: Space, model: z3.ModelRef, left: z3.BoolRef, right: z3.BoolRef) -> L7Answer:
    return L7Answer("differ", space.request(model), z3.is_true(model.eval(left, model_completion=True)),
                    z3.is_true(model.eval(right, model_completion=True)))
