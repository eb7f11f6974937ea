"""Decide one L7 request on the emitted Envoy artifacts (``OUT/envoy/``), as the proxy would.

Reads the files back — ``index.json`` for which (endpoint, direction, protocol, port) is
redirected to which listener, the ``cilium.NetworkPolicy`` NPDS resources, the DNS-proxy
documents and the listeners — never the compiler's objects. Given the endpoint (by address, as
NPDS resources are named), the direction, the remote's numeric identity (what ``bpf_metadata``
gets from the ipcache), the protocol, the port and a request, it answers allowed or denied with
the rules that decided and the proxy's reply: HTTP 403 with the listener's body, a Kafka
authorization error, or the DNS proxy's reject code.

The proxy's decision (reference/cilium.md §5.3, Cilium proxy ``PortPolicy``): the rules of every
port policy whose port range holds the port, those whose ``remote_policies`` is empty or holds
the remote; denied if any of them is a deny rule, else allowed iff one of them admits the request
— a rule without L7 rules (or a port policy without rules) admits everything, an HTTP rule when
all its header matchers hold (RE2 whole-string ``safe_regex``, SEMANTICS §7), a Kafka rule when
API key, version, client ID and topic fit. Generic proxylib rule maps admit no request of the
three modelled kinds, as in the IR evaluator.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from compiler.flow import DnsRequest, HttpRequest, KafkaRequest, L7Request, Protocol
from compiler.l7match import dns_name_matches

Json = dict[str, Any]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Kafka's TOPIC_AUTHORIZATION_FAILED error code (Kafka protocol error table), the error
#: response Cilium's Kafka parser sends for a denied request.
KAFKA_TOPIC_AUTHORIZATION_FAILED = 29
#: Envoy's default local-reply body when the L7Policy filter has none (reference/cilium.md §5.4).
DEFAULT_403_BODY = "Access denied\r\n"


class NotRedirected(ValueError):
    """The endpoint, direction, protocol and port are not sent to any proxy by these artifacts."""


@dataclass(frozen=True)
class L7Verdict:
    """The proxy's answer to one request."""

    allowed: bool
    proxy: str  # "envoy" or "dns-proxy"
    listener: str
    parser: str
    reply: str  # what the client sees when denied ("" when allowed)
    rules: tuple[str, ...]  # names of the rules that decided: the admitting allows, or the denies
    trace: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        verdict = "allowed" if self.allowed else f"denied ({self.reply.strip()})"
        return f"{self.listener}: {verdict} by {', '.join(self.rules) or 'no rule'}"


@dataclass(frozen=True)
class Applicable:
    """What the proxy holds for one connection: the allow rules that apply to the remote (``None``
    for a port policy without rules: any request) and the deny rules (any one denies all)."""

    proxy: str  # "envoy" or "dns-proxy"
    listener: str
    parser: str
    proxy_port: int
    doc: Json
    allows: tuple[tuple[str, Json | None], ...]
    denies: tuple[str, ...]
    trace: tuple[str, ...]


class EnvoySimulator:
    """The L7 side of the artifacts of one compilation."""

    def __init__(self, files: Mapping[str, str]) -> None:
        self.files = dict(files)
        self.index: Json = json.loads(self.files["index.json"])
        self._by_ip: dict[IPAddress, Json] = {}
        for entry in self.index["endpoints"]:
            for ip in entry["ips"]:
                self._by_ip[ipaddress.ip_address(ip)] = entry
        self._docs: dict[str, Json] = {}
        listeners = json.loads(self.files["listeners.json"])["resources"]
        self._403 = {item["name"]: _denied_body(item) for item in listeners}

    @classmethod
    def from_dir(cls, path: str | Path) -> EnvoySimulator:
        """Read ``OUT/envoy`` (or ``OUT``, which holds it)."""
        root = Path(path)
        if (root / "envoy" / "index.json").exists():
            root = root / "envoy"
        return cls({str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*.json"))})

    def document(self, rel: str) -> Json:
        """One NPDS or DNS-proxy document, by its path relative to ``OUT/envoy/``."""
        if rel not in self._docs:
            self._docs[rel] = json.loads(self.files[rel])
        return self._docs[rel]

    def entry(self, endpoint: IPAddress) -> Json | None:
        """The index entry of the endpoint at this address (None: no L7 policy there)."""
        return self._by_ip.get(endpoint)

    def redirect(self, endpoint: str | IPAddress, direction: str, protocol: Protocol, port: int) -> Json:
        """The index entry's redirect covering this (NotRedirected when there is none)."""
        address = ipaddress.ip_address(endpoint) if isinstance(endpoint, str) else endpoint
        entry = self._by_ip.get(address)
        if entry is None:
            raise NotRedirected(f"no L7 policy for endpoint {address}")
        for item in entry["redirects"]:
            proto_ok = item["protocol"] == protocol.name or (item["protocol"] == "ANY" and protocol in (
                Protocol.TCP, Protocol.UDP, Protocol.SCTP))
            if item["direction"] == direction and proto_ok and _covers(item, port):
                return {**item, "entry": entry}
        raise NotRedirected(f"{entry['endpoint']} {direction} {port}/{protocol.name} is not redirected")

    def applicable(self, endpoint: str | IPAddress, direction: str, remote: int, protocol: Protocol,
                   port: int) -> Applicable:
        """The proxy's rules for a connection, before any request is seen (NotRedirected when the
        port is not sent to a proxy)."""
        redirect = self.redirect(endpoint, direction, protocol, port)
        entry, parser, listener = redirect["entry"], redirect["parser"], redirect["listener"]
        if parser == "dns":
            doc, proxy, proto_filter = self.document(entry["dns"]), "dns-proxy", protocol.name
        else:
            doc, proxy, proto_filter = self.document(entry["npds"]), "envoy", "TCP"
        trace = [f"{proxy} {listener} (port {redirect['proxy_port']}): {entry['endpoint']} "
                 f"{direction} {port}/{protocol.name} from identity {remote}"]
        policies = doc.get(f"{direction}_per_port_policies", [])
        matching = [p for p in policies if p.get("protocol", "TCP") in (proto_filter, "ANY") and _covers(p, port)]
        allows: list[tuple[str, Json | None]] = []
        denies: list[str] = []
        if not matching:
            trace.append("no port policy holds the port: every request denied")
        for pp in matching:
            where = f"port policy {pp.get('port', 0)}-{pp.get('end_port', 0)}/{pp.get('protocol', 'TCP')}"
            if not pp.get("rules"):
                trace.append(f"{where}: no rules, any request allowed")
                allows.append((f"<{where}: any>", None))
                continue
            for rule in pp["rules"]:
                remotes = rule.get("remote_policies", [])
                if remotes and remote not in remotes:
                    continue
                name = rule.get("name", "")
                if rule.get("deny"):
                    trace.append(f"{where}: deny rule {name} applies")
                    denies.append(name)
                else:
                    allows.append((name, rule))
        return Applicable(proxy, listener, parser, int(redirect["proxy_port"]), doc, tuple(allows),
                          tuple(sorted(set(denies))), tuple(trace))

    def decide(self, endpoint: str | IPAddress, direction: str, remote: int, protocol: Protocol, port: int,
               request: L7Request) -> L7Verdict:
        """The proxy's verdict on ``request`` from identity ``remote`` (see the module docstring)."""
        rules = self.applicable(endpoint, direction, remote, protocol, port)
        trace = [f"{rules.trace[0]}: {request}", *rules.trace[1:]]
        if rules.denies:
            return self._verdict(False, rules, rules.denies, trace)
        allows: list[str] = []
        for name, rule in rules.allows:
            if rule is None:
                allows.append(name)
            elif _admits(rule, request):
                trace.append(f"rule {name} admits the request")
                allows.append(name)
            else:
                trace.append(f"rule {name} applies but its L7 rules do not admit the request")
        return self._verdict(bool(allows), rules, tuple(sorted(set(allows))), trace)

    def _verdict(self, allowed: bool, rules: Applicable, names: tuple[str, ...], trace: list[str]) -> L7Verdict:
        reply = ""
        if not allowed:
            if rules.parser == "http":
                reply = f"HTTP 403 {self._403.get(rules.listener, DEFAULT_403_BODY)}"
            elif rules.parser == "kafka":
                reply = f"Kafka error {KAFKA_TOPIC_AUTHORIZATION_FAILED} TOPIC_AUTHORIZATION_FAILED"
            elif rules.parser == "dns":
                reply = f"DNS {rules.doc.get('reject_response_code', 'REFUSED')}"
            else:
                reply = "connection closed by the proxy"
        return L7Verdict(allowed, rules.proxy, rules.listener, rules.parser, reply, names, tuple(trace))


# --- matching ---------------------------------------------------------------------------------

def _covers(item: Json, port: int) -> bool:
    """``port`` 0/absent = every port; ``end_port`` 0/absent = the single port."""
    lo = item.get("port", 0)
    if lo == 0:
        return True
    hi = item.get("end_port", 0) or lo
    return bool(lo <= port <= hi)


def _admits(rule: Json, request: L7Request) -> bool:
    if "http_rules" in rule:
        return isinstance(request, HttpRequest) and any(_http_ok(r, request) for r in rule["http_rules"]["http_rules"])
    if "kafka_rules" in rule:
        return isinstance(request, KafkaRequest) and any(_kafka_ok(r, request)
                                                         for r in rule["kafka_rules"]["kafka_rules"])
    if "dns_rules" in rule:
        return isinstance(request, DnsRequest) and any(_dns_ok(r, request) for r in rule["dns_rules"])
    # proxylib rule maps admit nothing (no request model for them, as the IR evaluator); no L7
    # rules at all (or an empty list) admit every request
    return "l7_rules" not in rule


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _headers(request: HttpRequest) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {":method": [request.method], ":path": [request.path], ":authority": [request.host]}
    for name, value in request.headers:
        out.setdefault(name.lower(), []).append(value)
    return out


def _http_ok(rule: Json, request: HttpRequest) -> bool:
    headers = _headers(request)
    for matcher in rule.get("headers", []):
        values = headers.get(matcher["name"].lower())
        if values is None:
            return False
        string_match = matcher.get("string_match")
        if string_match is None:
            continue  # present_match
        if "exact" in string_match and string_match["exact"] not in values:
            return False
        if "safe_regex" in string_match:
            pattern = _regex(string_match["safe_regex"]["regex"])
            if not any(pattern.fullmatch(v) for v in values):
                return False
    for match in rule.get("header_matches", []):
        if match.get("mismatch_action", "FAIL_ON_MISMATCH") != "FAIL_ON_MISMATCH":
            continue  # rewrite or log on mismatch, never deny
        values = headers.get(match["name"].lower())
        if values is None or ("value" in match and match["value"] not in values):
            return False  # a value_sds_secret's value is unknown offline: presence only
    return True


def _kafka_ok(rule: Json, request: KafkaRequest) -> bool:
    keys = rule.get("api_keys", [])
    if keys and request.api_key not in keys:
        return False
    version = rule.get("api_version", -1)
    if version >= 0 and version != request.api_version:
        return False
    if rule.get("client_id") and rule["client_id"] != request.client_id:
        return False
    return not (rule.get("topic") and rule["topic"] != request.topic)


def _dns_ok(rule: Json, request: DnsRequest) -> bool:
    return dns_name_matches(request.name, rule.get("match_name"), rule.get("match_pattern"))


def _denied_body(listener: Json) -> str:
    """The ``cilium.l7policy`` filter's 403 body in an HTTP listener (default when absent)."""
    for chain in listener.get("filter_chains", []):
        for flt in chain.get("filters", []):
            for http_filter in flt.get("typed_config", {}).get("http_filters", []):
                if http_filter.get("name") == "cilium.l7policy":
                    value = http_filter.get("typed_config", {}).get("value", {})
                    return str(value.get("denied_403_body") or DEFAULT_403_BODY)
    return DEFAULT_403_BODY
