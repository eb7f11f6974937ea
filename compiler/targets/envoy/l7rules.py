"""L7 rules in their NPDS / DNS-proxy JSON form (proto3 JSON, original field names).

HTTP follows Cilium's translator (reference/cilium.md §5.4): ``path``/``method``/``host`` become
Envoy ``HeaderMatcher``s on ``:path``/``:method``/``:authority`` with a ``safe_regex`` (RE2,
whole-string match); ``headers`` entries become exact or presence matchers; ``headerMatches``
without a mismatch action become exact matchers, with one they become Cilium ``HeaderMatch``es
with the mismatch action (they rewrite or log, never deny). Kafka rules carry the API keys with
roles expanded (§5.5, compiler/kafka.py). DNS rules are the agent DNS proxy's (§5.5), not NPDS.
"""

from __future__ import annotations

import json
from typing import Any

from compiler.inputs.ciliumpolicy import FQDNSelector, HeaderMatch, PortRuleHTTP, PortRuleKafka
from compiler.kafka import allowed_api_keys

Json = dict[str, Any]

#: headerMatches ``mismatch`` → Cilium ``HeaderMatch.MismatchAction`` (reference/cilium.md §5.2, §5.4).
MISMATCH_ACTIONS = {
    "LOG": "CONTINUE_ON_MISMATCH",
    "ADD": "ADD_ON_MISMATCH",
    "DELETE": "DELETE_ON_MISMATCH",
    "REPLACE": "REPLACE_ON_MISMATCH",
}


def regex_matcher(name: str, pattern: str) -> Json:
    """An Envoy ``config.route.v3.HeaderMatcher`` with an RE2 ``safe_regex`` (whole-string match)."""
    return {"name": name, "string_match": {"safe_regex": {"regex": pattern}}}


def header_matcher(header: str) -> Json:
    """``"Name: value"`` → exact match, ``"Name"`` → presence (split on the first space, a trailing
    ':' removed from the name, as Cilium does, §5.4)."""
    name, _, value = header.partition(" ")
    name = name.rstrip(":")
    value = value.strip()
    if value:
        return {"name": name, "string_match": {"exact": value}}
    return {"name": name, "present_match": True}


def _header_match(match: HeaderMatch) -> tuple[Json | None, Json | None]:
    """(Envoy HeaderMatcher, Cilium HeaderMatch): exactly one is set."""
    if match.mismatch is None and match.secret is None:
        if match.value is None:
            return {"name": match.name, "present_match": True}, None
        return {"name": match.name, "string_match": {"exact": match.value}}, None
    out: Json = {"name": match.name}
    if match.value is not None:
        out["value"] = match.value
    if match.secret is not None:
        # the value lives in a Kubernetes secret, delivered to Envoy over SDS (§5.2 value_sds_secret)
        out["value_sds_secret"] = f"{match.secret.namespace or ''}/{match.secret.name}".lstrip("/")
    if match.mismatch is not None:
        out["mismatch_action"] = MISMATCH_ACTIONS[match.mismatch]
    return None, out


def http_rule(rule: PortRuleHTTP) -> Json:
    """One ``HttpNetworkPolicyRule``: every matcher must hold."""
    headers: list[Json] = []
    if rule.path is not None:
        headers.append(regex_matcher(":path", rule.path))
    if rule.method is not None:
        headers.append(regex_matcher(":method", rule.method))
    if rule.host is not None:
        headers.append(regex_matcher(":authority", rule.host))
    headers.extend(header_matcher(h) for h in rule.headers or [])
    matches: list[Json] = []
    for match in rule.headerMatches or []:
        plain, cilium = _header_match(match)
        if plain is not None:
            headers.append(plain)
        if cilium is not None:
            matches.append(cilium)
    out: Json = {}
    if headers:
        out["headers"] = headers
    if matches:
        out["header_matches"] = matches
    return out


def kafka_rule(rule: PortRuleKafka) -> Json:
    """One ``KafkaNetworkPolicyRule``: api_version -1 = any, empty api_keys = any (§5.2, §5.5)."""
    keys = allowed_api_keys(rule.role, rule.apiKey)
    out: Json = {"api_version": int(rule.apiVersion) if rule.apiVersion else -1}
    if keys is not None:
        out["api_keys"] = sorted(keys)
    if rule.clientID:
        out["client_id"] = rule.clientID
    if rule.topic:
        out["topic"] = rule.topic
    return out


def dns_rule(rule: FQDNSelector) -> Json:
    """A DNS proxy rule: the name or pattern, lower-case with the trailing dot Cilium adds (§5.5)."""
    if rule.matchName is not None:
        return {"match_name": rule.matchName.rstrip(".").lower() + "."}
    pattern = (rule.matchPattern or "").rstrip(".").lower()
    return {"match_pattern": pattern if pattern == "*" else pattern + "."}


def sort_key(item: Json) -> str:
    """A total order on JSON objects (for deterministic lists)."""
    return json.dumps(item, sort_keys=True)
