"""Per-endpoint L7 policy documents: the ``cilium.NetworkPolicy`` NPDS resource Envoy enforces, and
the rules of the agent's DNS proxy.

NPDS shape and filling follow reference/cilium.md §5.2-§5.3:
- one ``PortNetworkPolicy`` per distinct TCP port range of the direction, ``port: 0`` (omitted)
  meaning every port; only TCP (and ANY) rules are sent, UDP/SCTP/ICMP never reach Envoy;
- one ``PortNetworkPolicyRule`` per IR rule, ``remote_policies`` = the identities its peer
  matches (empty = any remote), ``deny`` for deny rules, ``name`` = the rule's provenance;
- a direction that is not enforced is a single allow-all TCP port policy; an enforced direction
  without TCP rules is an empty list (everything denied).
Cilium's short-circuit optimisations (§5.3) are not applied: they change the shape, never the
verdict, and keeping every rule keeps the simulator's "rule that matched" exact.

DNS is enforced by the agent's DNS proxy, not Envoy (§5.5), so its rules go to a separate
per-endpoint document of the same shape (any protocol, ``dns_rules`` instead of ``http_rules``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compiler.cluster import Endpoint
from compiler.flow import PORT_PROTOCOLS, Direction, Profile, RuleRef
from compiler.inputs.ciliumpolicy import FQDNSelector, PortRuleHTTP, PortRuleKafka
from compiler.ir.model import IR, MAX_PORT, Action, PortMatch, Rule
from compiler.targets import proxyports
from compiler.targets.envoy.l7rules import dns_rule, http_rule, kafka_rule, sort_key
from compiler.targets.envoy.remotes import Inexpressible, RemoteIdentities, Remotes

Json = dict[str, Any]
Report = Callable[[str, RuleRef, str], None]

#: Cilium sends "global" for the removed conntrack_map_name field (reference/cilium.md §5.2).
CONNTRACK_MAP_NAME = "global"
#: The DNS proxy's answer to a refused query: tofqdns-dns-reject-response-code default (§5.5).
DNS_REJECT_RESPONSE_CODE = "REFUSED"


@dataclass(frozen=True)
class Span:
    """Where one IR rule applies: a protocol ("TCP", "UDP", "SCTP" or "ANY"), a port range, remotes."""

    protocol: str
    lo: int
    hi: int
    remotes: Remotes


def port_fields(lo: int, hi: int) -> Json | None:
    """NPDS ``port``/``end_port`` for ``[lo, hi]``: the full range is port 0 (omitted). Port 0 is no
    connectable TCP/UDP port, so ``[0, N]`` is sent as ``[1, N]``; ``[0, 0]`` as nothing (None)."""
    if lo == 0 and hi == MAX_PORT:
        return {}
    lo = max(lo, 1)
    if lo > hi:
        return None
    return {"port": lo} if lo == hi else {"port": lo, "end_port": hi}


def rule_name(ref: RuleRef) -> str:
    return f"{ref.policy} {ref.path}"


class PolicyBuilder:
    """Builds the documents of one compilation; inexpressible rules go to ``report``."""

    def __init__(self, ir: IR, remotes: RemoteIdentities, report: Report) -> None:
        self.ir = ir
        self.remotes = remotes
        self.report = report
        self._by_identity: dict[int, list[Endpoint]] = {}
        for ep in ir.cluster.endpoints:
            if ep.ips and not ep.host_network:
                self._by_identity.setdefault(ir.endpoint_identity(ep.key), []).append(ep)

    # --- where a rule applies -----------------------------------------------------------------

    def spans(self, rule: Rule, subject: Endpoint) -> list[Span]:
        """The (protocol, port range, remotes) a rule covers on ``subject`` (SEMANTICS §4-§6)."""
        families = frozenset(a.version for a in subject.addresses)
        try:
            remotes = self.remotes.select(rule.peer, families)
        except Inexpressible as err:
            self.report(str(err), rule.origin, subject.key)
            return []
        if remotes is not None and not remotes:
            return []  # selects nothing: Cilium drops selectors without identities (§5.3)
        if not rule.ports:
            return [Span("ANY", 0, MAX_PORT, remotes)]
        out: list[Span] = []
        for match in rule.ports:
            if match.protocol is None:
                out.append(Span("ANY", 0, MAX_PORT, remotes))
            elif match.protocol in PORT_PROTOCOLS:
                out.extend(self._port_spans(rule, match, subject, remotes))
        return out

    def _port_spans(self, rule: Rule, match: PortMatch, subject: Endpoint, remotes: Remotes) -> list[Span]:
        assert match.protocol is not None
        proto = match.protocol.name
        if match.name is None or rule.direction is Direction.INGRESS or self.ir.profile is Profile.CILIUM:
            span = self.ir.port_range(match, rule.direction, subject, None)
            return [] if span is None else [Span(proto, span[0], span[1], remotes)]
        # k8s egress: the named port resolves against each destination endpoint (SEMANTICS §6), so
        # the remotes are grouped by the number their endpoints give the name
        groups: dict[int, set[int]] = {}
        candidates = sorted(self._by_identity) if remotes is None else sorted(remotes & set(self._by_identity))
        for number in candidates:
            found = {ep.named_port(match.name, proto) for ep in self._by_identity[number]}
            if len(found) > 1:
                self.report(f"named port {match.name}/{proto} means different ports on the endpoints of "
                            f"identity {number}; the proxy matches identities", rule.origin, subject.key)
                continue
            port = found.pop()
            if port is not None:
                groups.setdefault(port, set()).add(number)
        return [Span(proto, port, port, frozenset(ids)) for port, ids in sorted(groups.items())]

    # --- rules --------------------------------------------------------------------------------

    def _rule_json(self, rule: Rule, remotes: Remotes, dns_doc: bool, subject: Endpoint) -> Json:
        out: Json = {"name": rule_name(rule.origin)}
        if remotes is not None:
            out["remote_policies"] = sorted(remotes)
        if rule.action is Action.DENY:
            out["deny"] = True
        l7 = rule.l7
        if l7 is None:
            return out
        if dns_doc:
            if l7.parser == "dns":
                out["l7_proto"] = "dns"
                items = [dns_rule(r) for r in l7.rules if isinstance(r, FQDNSelector)]
                if items:
                    out["dns_rules"] = sorted(items, key=sort_key)
            return out
        if l7.parser == "http":
            https = [http_rule(r) for r in l7.rules if isinstance(r, PortRuleHTTP)]
            if https:  # no rules: redirected, every request admitted (SEMANTICS §7, Clarified)
                out["http_rules"] = {"http_rules": sorted(https, key=sort_key)}
        elif l7.parser == "kafka":
            out["l7_proto"] = "kafka"
            kafkas = [kafka_rule(r) for r in l7.rules if isinstance(r, PortRuleKafka)]
            if kafkas:
                out["kafka_rules"] = {"kafka_rules": sorted(kafkas, key=sort_key)}
        elif l7.parser == "dns":
            pass  # the DNS proxy enforces it; Cilium skips the DNS case in NPDS (§5.5)
        elif l7.parser.startswith("envoy."):
            self.report(f"l7proto {l7.parser!r} (Envoy metadata matchers) is not supported by the envoy target",
                        rule.origin, subject.key)
        else:
            out["l7_proto"] = l7.parser  # proxylib rule maps (§5.5, generic)
            maps = [{"rule": dict(sorted(r.items()))} for r in l7.rules if isinstance(r, dict)]
            if maps:
                out["l7_rules"] = {"l7_allow_rules": sorted(maps, key=sort_key)}
        return out

    def _port_policies(self, rules: tuple[Rule, ...], subject: Endpoint, dns_doc: bool) -> list[Json]:
        groups: dict[tuple[str, int, int], list[Json]] = {}
        for rule in rules:
            for span in self.spans(rule, subject):
                if not dns_doc and span.protocol not in ("TCP", "ANY"):
                    continue  # Cilium sends only TCP/ANY filters to Envoy (§5.3)
                proto = span.protocol if dns_doc else "TCP"
                bucket = groups.setdefault((proto, span.lo, span.hi), [])
                item = self._rule_json(rule, span.remotes, dns_doc, subject)
                if item not in bucket:
                    bucket.append(item)
        out: list[Json] = []
        for (proto, lo, hi), items in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
            fields = port_fields(lo, hi)
            if fields is not None:
                out.append({**fields, "protocol": proto, "rules": sorted(items, key=sort_key)})
        return out

    # --- documents ----------------------------------------------------------------------------

    def direction_policies(self, subject: Endpoint, direction: Direction, dns_doc: bool = False) -> list[Json]:
        policy = self.ir.policy(subject.key, direction)
        if not policy.enforced:
            # a non-enforced direction is one allow-all TCP port policy (§5.2)
            return [{"protocol": "ANY" if dns_doc else "TCP"}]
        return self._port_policies(policy.deny + policy.allow, subject, dns_doc)

    def network_policy(self, subject: Endpoint, endpoint_id: int) -> Json:
        """The ``cilium.NetworkPolicy`` resource for one endpoint (proto3 JSON, field names of §5.2)."""
        return {
            "endpoint_ips": endpoint_ips(subject),
            "endpoint_id": endpoint_id,
            "ingress_per_port_policies": self.direction_policies(subject, Direction.INGRESS),
            "egress_per_port_policies": self.direction_policies(subject, Direction.EGRESS),
            "conntrack_map_name": CONNTRACK_MAP_NAME,
        }

    def dns_policy(self, subject: Endpoint, endpoint_id: int) -> Json:
        """The DNS proxy's rules for one endpoint (egress only, every protocol)."""
        return {
            "endpoint_ips": endpoint_ips(subject),
            "endpoint_id": endpoint_id,
            "egress_per_port_policies": self.direction_policies(subject, Direction.EGRESS, dns_doc=True),
            "proxy_port": proxyports.proxy_port("dns", Direction.EGRESS),
            "reject_response_code": DNS_REJECT_RESPONSE_CODE,
        }

    def redirects(self, subject: Endpoint) -> list[Json]:
        """Every (direction, protocol, port range) of ``subject`` sent to a proxy, with its listener."""
        found: list[Json] = []
        for direction in Direction:
            for rule in self.ir.policy(subject.key, direction).allow:
                if rule.l7 is None:
                    continue
                parser = rule.l7.parser
                try:
                    listener = proxyports.listener(parser, direction)
                except ValueError as err:
                    self.report(str(err), rule.origin, subject.key)
                    continue
                for span in self.spans(rule, subject):
                    fields = port_fields(span.lo, span.hi)
                    if fields is None or (parser != "dns" and span.protocol not in ("TCP", "ANY")):
                        continue
                    item = {"direction": direction.value, "protocol": span.protocol, **fields, "parser": parser,
                            "listener": listener, "proxy_port": proxyports.proxy_port(parser, direction)}
                    if item not in found:
                        found.append(item)
        return sorted(found, key=sort_key)


def endpoint_ips(subject: Endpoint) -> list[str]:
    """IPv4 first, then IPv6 (an NPDS resource is named by the endpoint's IP, §5.2)."""
    return [str(a) for a in sorted(subject.addresses, key=lambda a: (a.version, a))]
