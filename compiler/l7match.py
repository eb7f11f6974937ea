"""Whether one L7 rule admits one request (docs/SEMANTICS.md §7).

A leaf shared by every concrete evaluator: it reads the parsed rule objects, not the IR.
HTTP fields are RE2 regexes matched against the whole string (Envoy ``safe_regex``); Python's
``re.fullmatch`` agrees with RE2 on the subset the input validation accepts.
"""

from __future__ import annotations

import re
from functools import lru_cache

from compiler.flow import DnsRequest, HttpRequest, KafkaRequest, L7Request
from compiler.inputs.ciliumpolicy import FQDNSelector, PortRuleHTTP, PortRuleKafka
from compiler.kafka import allowed_api_keys

#: What one ``*`` of a DNS ``matchPattern`` stands for (Cilium pkg/fqdn/matchpattern).
DNS_WILDCARD = "[-a-z0-9_]*"


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def http_rule_matches(rule: PortRuleHTTP, request: HttpRequest) -> bool:
    if rule.method is not None and not _regex(rule.method).fullmatch(request.method):
        return False
    if rule.path is not None and not _regex(rule.path).fullmatch(request.path):
        return False
    if rule.host is not None and not _regex(rule.host).fullmatch(request.host):
        return False
    headers: dict[str, list[str]] = {}
    for name, value in request.headers:
        headers.setdefault(name.lower(), []).append(value)
    for header in rule.headers or []:
        name, value = header_requirement(header)
        present = headers.get(name)
        if present is None or (value and value not in present):
            return False
    for match in rule.headerMatches or []:
        if match.mismatch is not None:
            continue  # mismatch actions rewrite or log; they never deny
        present = headers.get(match.name.lower())
        if present is None or (match.value is not None and match.value not in present):
            return False
    return True


def header_requirement(header: str) -> tuple[str, str]:
    """A ``headers`` entry (``Name`` or ``Name: value``) as its lower-case name and the value it
    requires ("" when only presence is required)."""
    name, _, value = header.partition(" ")
    return name.rstrip(":").lower(), value.strip()


def dns_pattern_parts(pattern: str) -> list[str] | None:
    """A ``matchPattern`` as the literal parts between its ``*`` wildcards (each ``*`` matches
    ``[-a-z0-9_]*``), lower-case and without the trailing dot; None for ``*``, which matches
    every name."""
    text = pattern.rstrip(".").lower()
    return None if text == "*" else text.split("*")


def kafka_rule_matches(rule: PortRuleKafka, request: KafkaRequest) -> bool:
    keys = allowed_api_keys(rule.role, rule.apiKey)
    if keys is not None and request.api_key not in keys:
        return False
    if rule.apiVersion not in (None, "") and int(rule.apiVersion) != request.api_version:
        return False
    if rule.clientID and rule.clientID != request.client_id:
        return False
    return not (rule.topic and rule.topic != request.topic)


def dns_name_matches(query: str, match_name: str | None, match_pattern: str | None) -> bool:
    """Whether a DNS query name fits a ``matchName`` (exact, case-insensitive, trailing dot
    ignored) or else a ``matchPattern``; the rules' NPDS form holds the same two fields."""
    name = query.rstrip(".").lower()
    if match_name is not None:
        return name == match_name.rstrip(".").lower()
    parts = dns_pattern_parts(match_pattern or "")
    if parts is None:
        return True
    return re.fullmatch(DNS_WILDCARD.join(re.escape(p) for p in parts), name) is not None


def dns_rule_matches(rule: FQDNSelector, request: DnsRequest) -> bool:
    return dns_name_matches(request.name, rule.matchName, rule.matchPattern)


def l7_rule_matches(rule: PortRuleHTTP | PortRuleKafka | FQDNSelector | dict[str, str], request: L7Request) -> bool:
    """One rule of any parser against a request; a request of another protocol never matches."""
    if isinstance(rule, PortRuleHTTP):
        return isinstance(request, HttpRequest) and http_rule_matches(rule, request)
    if isinstance(rule, PortRuleKafka):
        return isinstance(request, KafkaRequest) and kafka_rule_matches(rule, request)
    if isinstance(rule, FQDNSelector):
        return isinstance(request, DnsRequest) and dns_rule_matches(rule, request)
    return False  # generic l7proto rules: no request model yet, so they admit nothing
