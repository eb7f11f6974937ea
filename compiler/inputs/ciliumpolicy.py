"""``cilium.io/v2`` CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy (Cilium 1.18).

Field shapes follow ``pkg/policy/api`` and the validation follows ``Rule.Sanitize`` /
``rule_validation.go`` (reference/cilium.md §7.1). Automatic namespacing is not done here: the
models keep what the user wrote, and the lowering (and the reference evaluator) apply Cilium's
namespacing rules (§7.3) where selectors are interpreted.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from compiler.inputs.base import Model, ObjectMeta
from compiler.inputs.networkpolicy import parse_cidr
from compiler.inputs.ports import check_port_name, check_port_number
from compiler.inputs.selector import LabelSelector

API_VERSION = "cilium.io/v2"
CNP_KIND = "CiliumNetworkPolicy"
CCNP_KIND = "CiliumClusterwideNetworkPolicy"

#: Maximum ``ports`` per ``toPorts`` entry (CRD ``maxItems``).
MAX_PORTS_PER_RULE = 40
#: Maximum ICMP fields per rule (CRD ``maxItems``).
MAX_ICMP_FIELDS = 40

Entity = Literal[
    "all",
    "world",
    "world-ipv4",
    "world-ipv6",
    "cluster",
    "host",
    "init",
    "ingress",
    "unmanaged",
    "remote-node",
    "health",
    "none",
    "kube-apiserver",
]


class EndpointSelector(LabelSelector):
    """A label selector whose keys may carry a Cilium source (``k8s:app``, ``reserved:host``)."""

    _allow_source: ClassVar[bool] = True


class CIDRRule(Model):
    cidr: str | None = None
    cidrGroupRef: str | None = None
    cidrGroupSelector: EndpointSelector | None = None
    except_: list[str] | None = Field(default=None, alias="except")

    @model_validator(mode="after")
    def _shape(self) -> CIDRRule:
        given = [f for f in ("cidr", "cidrGroupRef", "cidrGroupSelector") if getattr(self, f) is not None]
        if len(given) != 1:
            raise ValueError("a CIDR rule needs exactly one of cidr, cidrGroupRef, cidrGroupSelector")
        if self.cidr is None:
            raise ValueError("cidrGroupRef/cidrGroupSelector need CiliumCIDRGroup objects, which netpolc does not load")
        net = parse_cidr(self.cidr)
        for item in self.except_ or []:
            sub = parse_cidr(item)
            if sub.version != net.version or not sub.subnet_of(net):  # type: ignore[arg-type]
                raise ValueError(f"except {item!r} is not contained in cidr {self.cidr!r}")
        return self


class PortProtocol(Model):
    port: str | None = None
    endPort: int | None = None
    protocol: Literal["TCP", "UDP", "SCTP", "ANY"] | None = None

    @field_validator("port", mode="before")
    @classmethod
    def _port_is_string(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(f'port must be a string in CiliumNetworkPolicy (write "{value}")')
        return value

    @field_validator("port")
    @classmethod
    def _port(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if value.isdigit():
            check_port_number(int(value), allow_zero=True)
            return str(int(value))
        return check_port_name(value)

    @field_validator("endPort")
    @classmethod
    def _end_port(cls, value: int | None) -> int | None:
        return check_port_number(value, allow_zero=True) if value is not None else None

    @model_validator(mode="after")
    def _range(self) -> PortProtocol:
        if self.endPort is not None and self.endPort != 0:
            if self.port is None or not self.port.isdigit():
                raise ValueError("endPort needs a numeric port")
            if self.endPort < int(self.port):
                raise ValueError(f"endPort {self.endPort} is smaller than port {self.port}")
        return self

    @property
    def effective_protocol(self) -> str:
        """Omitted protocol means ANY."""
        return self.protocol or "ANY"

    @property
    def is_named(self) -> bool:
        return self.port is not None and not self.port.isdigit()


class Secret(Model):
    namespace: str | None = None
    name: str


class HeaderMatch(Model):
    mismatch: Literal["LOG", "ADD", "DELETE", "REPLACE"] | None = None
    name: str
    secret: Secret | None = None
    value: str | None = None


def _check_re2(pattern: str, field: str) -> str:
    """Reject patterns that are not valid RE2 (Envoy's safe_regex)."""
    for construct, label in (
        ("(?=", "lookahead"),
        ("(?!", "lookahead"),
        ("(?<=", "lookbehind"),
        ("(?<!", "lookbehind"),
    ):
        if construct in pattern:
            raise ValueError(f"{field} {pattern!r} uses {label}, which RE2 does not support")
    if re.search(r"\\[1-9]", pattern):
        raise ValueError(f"{field} {pattern!r} uses a backreference, which RE2 does not support")
    try:
        re.compile(pattern)
    except re.error as err:
        raise ValueError(f"{field} {pattern!r} is not a valid regex: {err}") from None
    return pattern


class PortRuleHTTP(Model):
    path: str | None = None
    method: str | None = None
    host: str | None = None
    headers: list[str] | None = None
    headerMatches: list[HeaderMatch] | None = None

    @field_validator("path", "method", "host")
    @classmethod
    def _regex(cls, value: str | None, info: Any) -> str | None:
        return _check_re2(value, info.field_name) if value is not None else None


KAFKA_ROLES = ("produce", "consume")
_KAFKA_TOPIC = re.compile(r"^[a-zA-Z0-9._-]*$")


class PortRuleKafka(Model):
    role: str | None = None
    apiKey: str | None = None
    apiVersion: str | None = None
    clientID: str | None = None
    topic: str | None = None

    @model_validator(mode="after")
    def _kafka(self) -> PortRuleKafka:
        from compiler.kafka import api_key_number

        if self.role is not None and self.apiKey is not None:
            raise ValueError("kafka: role and apiKey may not be combined")
        if self.role is not None and self.role.lower() not in KAFKA_ROLES:
            raise ValueError(f"kafka: unknown role {self.role!r} (produce or consume)")
        if self.apiKey is not None:
            api_key_number(self.apiKey)
        if self.apiVersion and (not self.apiVersion.isdigit() or int(self.apiVersion) > 32767):
            raise ValueError(f"kafka: apiVersion {self.apiVersion!r} must be a number 0-32767")
        if self.topic is not None and (len(self.topic) > 255 or not _KAFKA_TOPIC.match(self.topic)):
            raise ValueError(f"kafka: invalid topic {self.topic!r} (at most 255 of [a-zA-Z0-9._-])")
        if self.clientID is not None and not _KAFKA_TOPIC.match(self.clientID):
            raise ValueError(f"kafka: invalid clientID {self.clientID!r} ([a-zA-Z0-9._-])")
        return self


_DNS_PATTERN = re.compile(r"^[-a-zA-Z0-9_.*]+$")


class FQDNSelector(Model):
    matchName: str | None = None
    matchPattern: str | None = None

    @model_validator(mode="after")
    def _one(self) -> FQDNSelector:
        if (self.matchName is None) == (self.matchPattern is None):
            raise ValueError("exactly one of matchName and matchPattern is required")
        value = self.matchName if self.matchName is not None else self.matchPattern
        assert value is not None
        if len(value) > 255 or not _DNS_PATTERN.match(value):
            raise ValueError(f"invalid DNS name or pattern {value!r}")
        if self.matchName is not None and "*" in self.matchName:
            raise ValueError(f"matchName {value!r} may not contain '*' (use matchPattern)")
        return self


class L7Rules(Model):
    http: list[PortRuleHTTP] | None = None
    kafka: list[PortRuleKafka] | None = None
    dns: list[FQDNSelector] | None = None
    l7proto: str | None = None
    l7: list[dict[str, str]] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> L7Rules:
        kinds = [k for k in ("http", "kafka", "dns") if getattr(self, k) is not None]
        if self.l7proto is not None or self.l7 is not None:
            kinds.append("l7proto")
        if len(kinds) > 1:
            raise ValueError(f"L7 rules may hold only one of http, kafka, dns, l7proto (got {', '.join(kinds)})")
        if self.l7 is not None and self.l7proto is None:
            raise ValueError("l7 rules need l7proto")
        return self

    @property
    def parser(self) -> str | None:
        """Cilium's parser type for these rules (``http``, ``kafka``, ``dns`` or the l7proto)."""
        if self.http is not None:
            return "http"
        if self.kafka is not None:
            return "kafka"
        if self.dns is not None:
            return "dns"
        return self.l7proto


class TLSContext(Model):
    secret: Secret
    trustedCA: str | None = None
    certificate: str | None = None
    privateKey: str | None = None


class ListenerRef(Model):
    envoyConfig: dict[str, str]
    name: str
    priority: int | None = None

    @field_validator("priority")
    @classmethod
    def _priority(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value <= 100:
            raise ValueError("listener priority must be 1-100")
        return value


class PortRule(Model):
    ports: list[PortProtocol] | None = None
    rules: L7Rules | None = None
    terminatingTLS: TLSContext | None = None
    originatingTLS: TLSContext | None = None
    serverNames: list[str] | None = None
    listener: ListenerRef | None = None

    @model_validator(mode="after")
    def _unmodelled(self) -> PortRule:
        # TLS interception and custom Envoy listeners change what the proxy sees and enforces;
        # netpolc does not model them, so it refuses them rather than verifying a different policy
        # (docs/SEMANTICS.md §7, "never silently dropped").
        for name in ("terminatingTLS", "originatingTLS", "serverNames", "listener"):
            if getattr(self, name) is not None:
                raise ValueError(
                    f"{name} is not supported by netpolc (TLS interception and custom Envoy listeners are "
                    "not modelled); remove it to verify the rest of the rule"
                )
        return self

    @field_validator("ports")
    @classmethod
    def _max_ports(cls, value: list[PortProtocol] | None) -> list[PortProtocol] | None:
        if value is not None and len(value) > MAX_PORTS_PER_RULE:
            raise ValueError(f"at most {MAX_PORTS_PER_RULE} ports per toPorts entry (got {len(value)})")
        return value


class ICMPField(Model):
    family: Literal["IPv4", "IPv6"] | None = None
    type: int | str

    @field_validator("type")
    @classmethod
    def _type(cls, value: int | str) -> int | str:
        from compiler.icmp import icmp_type_number

        if isinstance(value, int) and not 0 <= value <= 255:
            raise ValueError(f"ICMP type {value} is out of range 0-255")
        if isinstance(value, str):
            icmp_type_number(value, "IPv4")  # raises on unknown names
        return value


class ICMPRule(Model):
    fields: list[ICMPField]

    @field_validator("fields")
    @classmethod
    def _max(cls, value: list[ICMPField]) -> list[ICMPField]:
        if len(value) > MAX_ICMP_FIELDS:
            raise ValueError(f"at most {MAX_ICMP_FIELDS} ICMP fields per rule")
        return value


class K8sServiceNamespace(Model):
    serviceName: str | None = None
    namespace: str | None = None


class ServiceSelector(Model):
    selector: EndpointSelector
    namespace: str | None = None


class ServiceRef(Model):
    k8sService: K8sServiceNamespace | None = None
    k8sServiceSelector: ServiceSelector | None = None

    @model_validator(mode="after")
    def _one(self) -> ServiceRef:
        if (self.k8sService is None) == (self.k8sServiceSelector is None):
            raise ValueError("toServices entries need exactly one of k8sService, k8sServiceSelector")
        return self


class Authentication(Model):
    mode: Literal["disabled", "required", "test-always-fail"]


#: The L3 peer fields of each rule kind; Cilium allows at most one of them per rule.
INGRESS_L3 = ("fromEndpoints", "fromCIDR", "fromCIDRSet", "fromEntities", "fromNodes", "fromGroups")
EGRESS_L3 = ("toEndpoints", "toCIDR", "toCIDRSet", "toEntities", "toNodes", "toGroups", "toServices", "toFQDNs")


def _check_cidrs(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        parse_cidr(value if "/" in value else value + ("/128" if ":" in value else "/32"))
    return values


class _RuleBase(Model):
    toPorts: list[PortRule] | None = None
    icmps: list[ICMPRule] | None = None

    _l3_fields: ClassVar[tuple[str, ...]] = ()
    _direction: ClassVar[str] = "ingress"
    _deny: ClassVar[bool] = False

    @model_validator(mode="after")
    def _sanitize(self) -> _RuleBase:
        given = [f for f in self._l3_fields if getattr(self, f, None) is not None]
        if len(given) > 1:
            raise ValueError(
                f"combining {given[0]} and {given[1]} is not supported yet (Cilium allows one L3 peer kind per rule)"
            )
        if self.toPorts is not None and self.icmps is not None:
            raise ValueError("icmps may not be combined with toPorts in one rule")
        for index, port_rule in enumerate(self.toPorts or []):
            try:
                self._check_port_rule(port_rule)
            except ValueError as err:
                raise ValueError(f"toPorts[{index}]: {err}") from None
        return self

    def _check_port_rule(self, port_rule: PortRule) -> None:
        rules = port_rule.rules
        if rules is None:
            return
        if self._deny:
            raise ValueError("deny rules may not carry L7 rules")
        if port_rule.listener is not None:
            raise ValueError("L7 rules may not be combined with a listener")
        parser = rules.parser
        if parser == "dns" and self._direction == "ingress":
            raise ValueError("DNS rules are only allowed on egress")
        for port in port_rule.ports or []:
            if parser != "dns" and port.effective_protocol not in ("TCP", "ANY"):
                raise ValueError(f"L7 {parser} rules are only allowed on TCP (port {port.port}/{port.protocol})")
            if port.port in (None, "0"):
                raise ValueError("L7 rules may not be used on port 0 (all ports)")
            if parser == "dns" and port.endPort not in (None, 0):
                raise ValueError("DNS rules may not use port ranges")


class IngressRule(_RuleBase):
    fromEndpoints: list[EndpointSelector] | None = None
    fromRequires: list[EndpointSelector] | None = None
    fromCIDR: list[str] | None = None
    fromCIDRSet: list[CIDRRule] | None = None
    fromEntities: list[Entity] | None = None
    fromGroups: list[dict[str, Any]] | None = None
    fromNodes: list[EndpointSelector] | None = None
    authentication: Authentication | None = None

    _l3_fields: ClassVar[tuple[str, ...]] = INGRESS_L3
    _direction: ClassVar[str] = "ingress"

    @field_validator("fromCIDR")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        return _check_cidrs(value)


class IngressDenyRule(IngressRule):
    _deny: ClassVar[bool] = True


class EgressRule(_RuleBase):
    toEndpoints: list[EndpointSelector] | None = None
    toRequires: list[EndpointSelector] | None = None
    toCIDR: list[str] | None = None
    toCIDRSet: list[CIDRRule] | None = None
    toEntities: list[Entity] | None = None
    toServices: list[ServiceRef] | None = None
    toFQDNs: list[FQDNSelector] | None = None
    toGroups: list[dict[str, Any]] | None = None
    toNodes: list[EndpointSelector] | None = None
    authentication: Authentication | None = None

    _l3_fields: ClassVar[tuple[str, ...]] = EGRESS_L3
    _direction: ClassVar[str] = "egress"

    @field_validator("toCIDR")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        return _check_cidrs(value)


class EgressDenyRule(EgressRule):
    _deny: ClassVar[bool] = True


class DefaultDenyConfig(Model):
    ingress: bool | None = None
    egress: bool | None = None


class RuleLabel(Model):
    key: str
    value: str | None = None
    source: str | None = None


class LogConfig(Model):
    value: str | None = Field(default=None, max_length=32)


class Rule(Model):
    endpointSelector: EndpointSelector | None = None
    nodeSelector: EndpointSelector | None = None
    ingress: list[IngressRule] | None = None
    ingressDeny: list[IngressDenyRule] | None = None
    egress: list[EgressRule] | None = None
    egressDeny: list[EgressDenyRule] | None = None
    labels: list[RuleLabel] | None = None
    description: str | None = None
    enableDefaultDeny: DefaultDenyConfig | None = None
    log: LogConfig | None = None

    @model_validator(mode="after")
    def _sanitize(self) -> Rule:
        if (self.endpointSelector is None) == (self.nodeSelector is None):
            raise ValueError("a rule needs exactly one of endpointSelector and nodeSelector")
        if not (self.ingress or self.ingressDeny or self.egress or self.egressDeny):
            raise ValueError("a rule needs at least one of ingress, ingressDeny, egress, egressDeny")
        if self.nodeSelector is not None:
            for rule in [*(self.ingress or []), *(self.egress or [])]:
                for port_rule in rule.toPorts or []:
                    if port_rule.rules is not None and not (rule._direction == "egress" and port_rule.rules.dns):
                        raise ValueError("L7 rules are not allowed in host policies (nodeSelector)")
        return self

    def direction_rules(self, direction: str) -> tuple[list[IngressRule] | list[EgressRule], list[Any]]:
        """(allow rules, deny rules) of one direction, ``[]`` for absent."""
        if direction == "ingress":
            return self.ingress or [], self.ingressDeny or []
        return self.egress or [], self.egressDeny or []


class CiliumPolicy(Model):
    """A CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy (they differ only in scope)."""

    apiVersion: Literal["cilium.io/v2"]
    kind: Literal["CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"]
    metadata: ObjectMeta
    spec: Rule | None = None
    specs: list[Rule] | None = None
    status: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _has_rules(self) -> CiliumPolicy:
        if self.spec is None and not self.specs:
            raise ValueError("a Cilium policy needs spec or specs")
        if self.kind == CCNP_KIND and self.metadata.namespace:
            raise ValueError("CiliumClusterwideNetworkPolicy is cluster-scoped; remove metadata.namespace")
        return self

    @property
    def clusterwide(self) -> bool:
        return self.kind == CCNP_KIND

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str | None:
        """The policy's namespace (``default`` when omitted); ``None`` for a CCNP."""
        return None if self.clusterwide else (self.metadata.namespace or "default")

    @property
    def rules(self) -> list[tuple[str, Rule]]:
        """Every rule with its path (``spec`` or ``specs[i]``), in document order."""
        out: list[tuple[str, Rule]] = []
        if self.spec is not None:
            out.append(("spec", self.spec))
        out.extend((f"specs[{i}]", r) for i, r in enumerate(self.specs or []))
        return out

    @property
    def display(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"
