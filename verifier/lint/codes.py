"""Every lint code, in one reviewable table: code → the module under ``verifier/lint/rules/``.

Codes are never reused: a retired rule stays here under :data:`RETIRED` with what replaced it.
Ranges: NP0xx inputs that cannot be read, NP1xx capacity, NP2xx correctness, NP3xx exposure,
NP4xx managed platforms, NP5xx proof-backed (need the verifier).
"""

from __future__ import annotations

CODES: dict[str, str] = {
    # inputs
    "NP001": "yaml_syntax_error",
    "NP002": "invalid_input",
    # capacity
    "NP101": "identity_limit_exceeded",
    "NP102": "high_cardinality_identity_label",
    "NP103": "policy_map_overflow",
    "NP104": "port_range_expansion",
    # correctness
    "NP201": "except_outside_cidr",
    "NP202": "kafka_role_with_api_key",
    "NP203": "policy_selects_nothing",
    "NP204": "peer_selects_nothing",
    "NP205": "named_port_not_exposed",
    "NP206": "cidr_covers_pod_network",
    "NP207": "l7_rules_on_non_tcp_port",
    "NP208": "conflicting_l7_parsers",
    "NP209": "fqdn_without_dns_rule",
    "NP210": "anchored_http_path_prefix",
    "NP211": "endpoint_selector_namespace_override",
    "NP212": "host_firewall_rule_ignored",
    "NP213": "rules_ignored_by_policy_types",
    "NP214": "cidr_matches_pods_only_under_k8s",
    # exposure
    "NP301": "ingress_from_world",
    "NP302": "egress_to_any_address",
    "NP303": "namespace_without_default_deny",
    "NP304": "allow_all_rule",
    "NP305": "any_namespace_peer",
    # managed platforms
    "NP401": "clusterwide_policy_on_managed_cilium",
    "NP402": "windows_pods_unenforced",
    # proof-backed (opt-in: --select NP5)
    "NP501": "redundant_rule",
    "NP502": "deny_overrides_allow",
}

#: Retired codes and what replaced them (never hand these out again).
RETIRED: dict[str, str] = {}
