"""The reference evaluator (verifier/simulate/source.py), section by section of docs/SEMANTICS.md.

Each test loads a tiny cluster plus one or two policies written inline and checks the verdict,
the drop reason and the rules a direction reports. The cluster:

    namespace a (team=a):  a/web    10.244.1.10  app=web     port http=80/TCP, dns=53/UDP
                           a/client 10.244.1.11  app=client  serviceaccount robot
    namespace b (team=b):  b/db     10.244.2.10  app=db      port http=8080/TCP (same name, other number)
                           b/job    10.244.2.11  app=job, pod-template-hash=abc
    node (host) 10.244.0.1; world 8.8.8.8 and 192.0.2.10
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from textwrap import dedent

import pytest

from compiler.flow import (
    Decision,
    DnsRequest,
    DropReason,
    Flow,
    HttpRequest,
    KafkaRequest,
    L7Request,
    Profile,
    Protocol,
    Verdict,
)
from compiler.inputs import Inputs, load_inputs
from compiler.source import InputError
from verifier.simulate.source import ReferenceEvaluator

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: a, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: b, labels: {team: b}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec:
  containers:
  - name: c
    ports: [{name: http, containerPort: 80}, {name: dns, containerPort: 53, protocol: UDP}]
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: a, labels: {app: client}}
spec: {serviceAccountName: robot, containers: [{name: c}]}
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: b, labels: {app: db}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.244.2.10}
---
apiVersion: v1
kind: Pod
metadata: {name: job, namespace: b, labels: {app: job, pod-template-hash: abc}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.2.11}
"""

ADDRESSES = {
    "a/web": "10.244.1.10",
    "a/client": "10.244.1.11",
    "b/db": "10.244.2.10",
    "b/job": "10.244.2.11",
    "host": "10.244.0.1",
    "world": "8.8.8.8",
    "world2": "192.0.2.10",
}


def load(tmp_path: Path, policies: str = "") -> Inputs:
    path = tmp_path / "inputs.yaml"
    path.write_text(CLUSTER + ("---\n" + dedent(policies) if policies.strip() else ""))
    return load_inputs([str(path)])


def check(
    inputs: Inputs,
    src: str,
    dst: str,
    port: int = 80,
    protocol: Protocol = Protocol.TCP,
    l7: L7Request | None = None,
    profile: Profile = Profile.CILIUM,
) -> Decision:
    flow = Flow(
        ipaddress.ip_address(ADDRESSES.get(src, src)), ipaddress.ip_address(ADDRESSES.get(dst, dst)), protocol, port, l7
    )
    return ReferenceEvaluator(inputs, profile).evaluate(flow)


def allowed(inputs: Inputs, src: str, dst: str, port: int = 80, **kw: object) -> bool:
    return check(inputs, src, dst, port, **kw).verdict is not Verdict.DROPPED  # type: ignore[arg-type]


def keys(refs: frozenset[object]) -> set[tuple[str, str]]:
    return {r.key for r in refs}  # type: ignore[attr-defined]


def _policy(api: str, kind: str, meta: str, spec: str) -> str:
    return f"apiVersion: {api}\nkind: {kind}\nmetadata: {{{meta}}}\nspec:\n{indent(spec)}---\n"


def np(name: str, namespace: str, spec: str) -> str:
    return _policy("networking.k8s.io/v1", "NetworkPolicy", f"name: {name}, namespace: {namespace}", spec)


def cnp(name: str, namespace: str, spec: str) -> str:
    return _policy("cilium.io/v2", "CiliumNetworkPolicy", f"name: {name}, namespace: {namespace}", spec)


def ccnp(name: str, spec: str) -> str:
    return _policy("cilium.io/v2", "CiliumClusterwideNetworkPolicy", f"name: {name}", spec)


def indent(text: str) -> str:
    return "".join("  " + line + "\n" for line in dedent(text).strip("\n").splitlines())


BOTH = pytest.mark.parametrize("profile", [Profile.CILIUM, Profile.K8S])


# --- §2 per endpoint and direction --------------------------------------------------------------------


@BOTH
def test_without_policies_every_direction_is_unenforced_and_allowed(tmp_path: Path, profile: Profile) -> None:
    d = check(load(tmp_path), "a/client", "b/db", profile=profile)
    assert d.verdict is Verdict.FORWARDED
    assert d.egress is not None and d.ingress is not None
    assert not d.egress.enforced and keys(d.egress.allow_rules) == {("<allow-any-egress>", "-")}
    assert not d.ingress.enforced and keys(d.ingress.allow_rules) == {("<allow-any-ingress>", "-")}
    assert d.egress.endpoint == "a/client" and d.ingress.endpoint == "b/db"


def test_world_to_world_has_no_endpoint_side(tmp_path: Path) -> None:
    d = check(load(tmp_path), "world", "world2")
    assert d.verdict is Verdict.FORWARDED and d.egress is None and d.ingress is None


@BOTH
def test_a_selected_pod_without_matching_allow_is_dropped_with_policy_denied_133(
    tmp_path: Path, profile: Profile
) -> None:
    inputs = load(tmp_path, np("deny-all", "a", "podSelector: {matchLabels: {app: web}}\ningress: []"))
    d = check(inputs, "b/db", "a/web", profile=profile)
    assert d.verdict is Verdict.DROPPED and d.drop_reason is DropReason.POLICY_DENIED
    assert d.ingress is not None and d.ingress.enforced and not d.ingress.allow_rules
    assert allowed(inputs, "b/db", "a/client", profile=profile)  # not selected


def test_a_matching_deny_wins_with_policy_deny_181_and_allows_are_still_listed(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "mixed",
            "a",
            """
        endpointSelector: {matchLabels: {app: web}}
        ingress:
        - fromEndpoints: [{matchLabels: {app: client}}]
          toPorts: [{ports: [{port: "80", protocol: TCP}]}]
        ingressDeny:
        - fromEndpoints: [{matchLabels: {app: client}}]
    """,
        ),
    )
    d = check(inputs, "a/client", "a/web")
    assert d.verdict is Verdict.DROPPED and d.drop_reason is DropReason.POLICY_DENY
    assert d.ingress is not None
    assert keys(d.ingress.allow_rules) == {("CiliumNetworkPolicy a/mixed", "spec.ingress[0]")}
    assert keys(d.ingress.deny_rules) == {("CiliumNetworkPolicy a/mixed", "spec.ingressDeny[0]")}
    assert d.ingress.redirect is None and d.ingress.l7_allowed is None


def test_a_broad_deny_beats_a_narrower_port_allow(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "mixed",
            "a",
            """
        endpointSelector: {}
        ingress: [{toPorts: [{ports: [{port: "80", protocol: TCP}]}]}]
        ingressDeny: [{fromEntities: [world]}]
    """,
        ),
    )
    assert check(inputs, "world", "a/web").drop_reason is DropReason.POLICY_DENY
    assert allowed(inputs, "b/db", "a/web")


def test_egress_is_checked_before_ingress(tmp_path: Path) -> None:
    inputs = load(tmp_path, np("e", "a", "podSelector: {}\npolicyTypes: [Egress]") + np("i", "b", "podSelector: {}"))
    d = check(inputs, "a/client", "b/db")
    assert d.drop_reason is DropReason.POLICY_DENIED and d.egress is not None and not d.egress.allowed
    assert d.ingress is not None and not d.ingress.allowed


def test_rule_refs_name_policy_path_and_the_rule_line(tmp_path: Path) -> None:
    inputs = load(tmp_path, np("p", "a", "podSelector: {}\ningress:\n- from: [{podSelector: {}}]\n- {}"))
    d = check(inputs, "a/client", "a/web")
    assert d.ingress is not None
    refs = sorted(d.ingress.allow_rules)
    assert [r.key for r in refs] == [("NetworkPolicy a/p", "spec.ingress[0]"), ("NetworkPolicy a/p", "spec.ingress[1]")]
    assert all(r.file.endswith("inputs.yaml") and r.line > 0 for r in refs)
    assert refs[0].line < refs[1].line


# --- NetworkPolicy policyTypes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ingress_enforced", "egress_enforced"),
    [
        ("podSelector: {}", True, False),
        ("podSelector: {}\negress: []", True, False),
        ("podSelector: {}\negress: [{}]", True, True),
        ("podSelector: {}\npolicyTypes: [Egress]", False, True),
        ("podSelector: {}\npolicyTypes: [Ingress, Egress]", True, True),
    ],
)
def test_policy_types_default_to_ingress_plus_egress_when_egress_rules_exist(
    tmp_path: Path, spec: str, ingress_enforced: bool, egress_enforced: bool
) -> None:
    inputs = load(tmp_path, np("p", "a", spec))
    d = check(inputs, "a/client", "a/web")
    assert d.egress is not None and d.ingress is not None
    assert (d.ingress.enforced, d.egress.enforced) == (ingress_enforced, egress_enforced)


def test_rules_of_a_direction_missing_from_policy_types_allow_nothing(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        np("egress-only", "a", "podSelector: {}\npolicyTypes: [Egress]\ningress: [{}]\negress: [{}]")
        + np("deny-in", "a", "podSelector: {}\npolicyTypes: [Ingress]"),
    )
    d = check(inputs, "a/client", "a/web")
    assert d.ingress is not None and d.ingress.reason is DropReason.POLICY_DENIED and not d.ingress.allow_rules


# --- §4.1 NetworkPolicy peers ----------------------------------------------------------------------------


@BOTH
def test_network_policy_rule_without_from_allows_every_peer_including_world_and_host(
    tmp_path: Path, profile: Profile
) -> None:
    inputs = load(tmp_path, np("p", "a", "podSelector: {matchLabels: {app: web}}\ningress: [{ports: [{port: 80}]}]"))
    for src in ("b/db", "world", "host"):
        d = check(inputs, src, "a/web", profile=profile)
        assert d.verdict is Verdict.FORWARDED
        assert d.ingress is not None and ("NetworkPolicy a/p", "spec.ingress[0]") in keys(d.ingress.allow_rules)
    assert not allowed(inputs, "world", "a/web", 81, profile=profile)


@BOTH
def test_network_policy_without_ports_allows_icmp_but_a_port_list_does_not(tmp_path: Path, profile: Profile) -> None:
    all_ports = load(tmp_path, np("p", "a", "podSelector: {}\ningress: [{from: [{podSelector: {}}]}]"))
    assert allowed(all_ports, "a/client", "a/web", 8, protocol=Protocol.ICMP, profile=profile)
    listed = load(tmp_path, np("p", "a", "podSelector: {}\ningress: [{ports: [{protocol: UDP}]}]"))
    assert not allowed(listed, "a/client", "a/web", 8, protocol=Protocol.ICMP, profile=profile)
    assert allowed(listed, "a/client", "a/web", 5353, protocol=Protocol.UDP, profile=profile)
    assert not allowed(listed, "a/client", "a/web", 5353, protocol=Protocol.TCP, profile=profile)


def test_network_policy_port_ranges_are_inclusive_and_protocol_defaults_to_tcp(tmp_path: Path) -> None:
    inputs = load(tmp_path, np("p", "a", "podSelector: {}\ningress: [{ports: [{port: 1000, endPort: 1005}]}]"))
    assert [allowed(inputs, "b/db", "a/web", p) for p in (999, 1000, 1005, 1006)] == [False, True, True, False]
    assert not allowed(inputs, "b/db", "a/web", 1000, protocol=Protocol.UDP)


@BOTH
def test_pod_selector_peers_stay_in_the_policy_namespace(tmp_path: Path, profile: Profile) -> None:
    inputs = load(tmp_path, np("p", "a", "podSelector: {}\ningress: [{from: [{podSelector: {}}]}]"))
    assert allowed(inputs, "a/client", "a/web", profile=profile)
    assert not allowed(inputs, "b/db", "a/web", profile=profile)


@BOTH
def test_namespace_selectors_match_namespace_labels(tmp_path: Path, profile: Profile) -> None:
    inputs = load(
        tmp_path,
        np(
            "p",
            "a",
            """
        podSelector: {}
        ingress: [{from: [{namespaceSelector: {matchLabels: {team: b}}, podSelector: {matchLabels: {app: db}}}]}]
    """,
        ),
    )
    assert allowed(inputs, "b/db", "a/web", profile=profile)
    assert not allowed(inputs, "b/job", "a/web", profile=profile)
    assert not allowed(inputs, "a/client", "a/web", profile=profile)


def test_an_empty_namespace_selector_means_every_pod_but_not_host_or_world(tmp_path: Path) -> None:
    inputs = load(tmp_path, np("p", "a", "podSelector: {}\ningress: [{from: [{namespaceSelector: {}}]}]"))
    assert allowed(inputs, "b/job", "a/web", profile=Profile.K8S)
    assert not allowed(inputs, "world", "a/web", profile=Profile.K8S)
    assert not allowed(inputs, "host", "a/web", profile=Profile.K8S)


def test_a_negative_only_namespace_selector_also_matches_world_under_cilium_but_not_k8s(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        np(
            "p",
            "a",
            """
        podSelector: {}
        ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: team, operator: NotIn, values: [a]}]}}]}]
    """,
        ),
    )
    assert allowed(inputs, "b/db", "a/web", profile=Profile.CILIUM)
    assert allowed(inputs, "world", "a/web", profile=Profile.CILIUM)
    assert allowed(inputs, "b/db", "a/web", profile=Profile.K8S)
    assert not allowed(inputs, "world", "a/web", profile=Profile.K8S)
    assert not allowed(inputs, "a/client", "a/web", profile=Profile.K8S)


# --- §4.2 Cilium peers -------------------------------------------------------------------------------------


def test_cilium_empty_ingress_rule_turns_enforcement_on_and_allows_nothing(tmp_path: Path) -> None:
    inputs = load(tmp_path, cnp("deny", "a", "endpointSelector: {}\ningress: [{}]"))
    d = check(inputs, "a/client", "a/web")
    assert d.drop_reason is DropReason.POLICY_DENIED and d.ingress is not None and d.ingress.enforced


def test_network_policy_empty_ingress_rule_allows_everything(tmp_path: Path) -> None:
    inputs = load(tmp_path, np("allow", "a", "podSelector: {}\ningress: [{}]"))
    assert allowed(inputs, "world", "a/web", 4242, protocol=Protocol.UDP)


def test_explicitly_empty_peer_lists_select_nothing(tmp_path: Path) -> None:
    for field in ("fromEndpoints", "fromCIDR", "fromEntities"):
        inputs = load(tmp_path, cnp("p", "a", f"endpointSelector: {{}}\ningress: [{{{field}: []}}]"))
        assert not allowed(inputs, "a/client", "a/web"), field
        assert not allowed(inputs, "world", "a/web"), field


def test_l4_only_cilium_rule_allows_every_peer_on_its_ports(tmp_path: Path) -> None:
    inputs = load(tmp_path, cnp("p", "a", 'endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: "80"}]}]}]'))
    assert allowed(inputs, "world", "a/web") and allowed(inputs, "b/db", "a/web")
    assert not allowed(inputs, "world", "a/web", 81)


def test_cnp_empty_peer_selector_means_its_own_namespace_and_ccnp_means_every_pod(tmp_path: Path) -> None:
    namespaced = load(tmp_path, cnp("p", "a", "endpointSelector: {}\ningress: [{fromEndpoints: [{}]}]"))
    assert allowed(namespaced, "a/client", "a/web") and not allowed(namespaced, "b/db", "a/web")
    clusterwide = load(tmp_path, ccnp("p", "endpointSelector: {}\ningress: [{fromEndpoints: [{}]}]"))
    assert allowed(clusterwide, "b/db", "a/web") and allowed(clusterwide, "a/client", "b/db")
    assert not allowed(clusterwide, "world", "a/web") and not allowed(clusterwide, "host", "a/web", profile=Profile.K8S)


def test_cnp_subject_is_confined_to_the_policy_namespace_and_ccnp_subject_is_not(tmp_path: Path) -> None:
    namespaced = load(tmp_path, cnp("p", "a", "endpointSelector: {}\ningress: [{}]"))
    assert not allowed(namespaced, "a/client", "a/web") and allowed(namespaced, "a/client", "b/db")
    clusterwide = load(tmp_path, ccnp("p", "endpointSelector: {}\ningress: [{}]"))
    assert not allowed(clusterwide, "a/client", "b/db")


def test_namespace_label_and_namespace_name_selectors_reach_other_namespaces(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "p",
            "a",
            """
        endpointSelector: {}
        ingress:
        - fromEndpoints: [{matchLabels: {io.cilium.k8s.namespace.labels.team: b, app: db}}]
        - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: b, app: job}}]
    """,
        ),
    )
    assert allowed(inputs, "b/db", "a/web") and allowed(inputs, "b/job", "a/web")
    assert not allowed(inputs, "a/client", "a/web")


def test_reserved_keys_select_host_and_world_and_are_not_namespaced(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "p",
            "a",
            """
        endpointSelector: {}
        ingress:
        - fromEndpoints: [{matchLabels: {"reserved:world": ""}}]
          toPorts: [{ports: [{port: "80"}]}]
        - fromEndpoints: [{matchExpressions: [{key: "reserved:host", operator: Exists}]}]
          toPorts: [{ports: [{port: "81"}]}]
    """,
        ),
    )
    assert allowed(inputs, "world", "a/web", 80) and not allowed(inputs, "world", "a/web", 81)
    assert allowed(inputs, "host", "a/web", 81, profile=Profile.K8S)
    assert not allowed(inputs, "host", "a/web", 80, profile=Profile.K8S)
    assert not allowed(inputs, "a/client", "a/web", 80)


ENTITY_RULE = 'endpointSelector: {}\ningress: [{fromEntities: [world], toPorts: [{ports: [{port: "82"}]}]}]'


def test_from_requires_tightens_every_selector_peer_of_allow_rules(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp("req", "a", "endpointSelector: {}\ningress: [{fromRequires: [{matchLabels: {app: client}}]}]")
        + np("all", "a", "podSelector: {}\ningress: [{ports: [{port: 80}]}]")
        + cnp("l4", "a", 'endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: "81"}]}]}]')
        + cnp("ent", "a", ENTITY_RULE),
    )
    assert allowed(inputs, "a/client", "a/web", 80)
    assert not allowed(inputs, "b/db", "a/web", 80)  # the NetworkPolicy's "every peer" now requires app=client
    assert not allowed(inputs, "world", "a/web", 80)  # ... in namespace a (requirements are namespaced)
    assert allowed(inputs, "b/db", "a/web", 81)  # port-only rules are untouched
    assert allowed(inputs, "world", "a/web", 82)  # entity rules are untouched


def test_deny_requirements_tighten_deny_rules_only(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "p",
            "a",
            """
        endpointSelector: {}
        ingress: [{fromEndpoints: [{}]}]
        ingressDeny: [{fromEndpoints: [{}], fromRequires: [{matchLabels: {app: client}}]}]
    """,
        ),
    )
    assert check(inputs, "a/client", "a/web").drop_reason is DropReason.POLICY_DENY
    assert allowed(inputs, "a/web", "a/web")


@pytest.mark.parametrize(
    ("entity", "selected"),
    [
        ("all", {"a/client", "b/db", "host", "world"}),
        ("world", {"world"}),
        ("world-ipv4", {"world"}),
        ("world-ipv6", set()),
        ("host", {"host"}),
        ("cluster", {"a/client", "b/db", "host"}),
        ("remote-node", set()),
        ("kube-apiserver", set()),
    ],
)
def test_entities(tmp_path: Path, entity: str, selected: set[str]) -> None:
    inputs = load(tmp_path, cnp("p", "a", f"endpointSelector: {{}}\ningress: [{{fromEntities: [{entity}]}}]"))
    got = {src for src in ("a/client", "b/db", "host", "world") if allowed(inputs, src, "a/web", profile=Profile.K8S)}
    assert got == selected


def test_to_services_selects_the_backends_of_a_service_with_a_selector(tmp_path: Path) -> None:
    service = """
apiVersion: v1
kind: Service
metadata: {name: db, namespace: b}
spec: {selector: {app: db}, ports: [{port: 8080}]}
---
"""
    inputs = load(
        tmp_path,
        service
        + cnp(
            "p",
            "a",
            """
        endpointSelector: {matchLabels: {app: client}}
        egress: [{toServices: [{k8sService: {serviceName: db}}]}]
    """,
        ),
    )
    assert allowed(inputs, "a/client", "b/db", 8080)
    assert not allowed(inputs, "a/client", "b/job", 8080)


# --- §5 CIDR peers ------------------------------------------------------------------------------------------


def test_cidr_peers_skip_cluster_addresses_under_cilium_but_not_under_k8s(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        np(
            "p",
            "a",
            """
        podSelector: {matchLabels: {app: web}}
        ingress: [{from: [{ipBlock: {cidr: 0.0.0.0/0, except: [10.244.2.11/32, 192.0.2.0/24]}}]}]
    """,
        ),
    )
    assert allowed(inputs, "world", "a/web", profile=Profile.CILIUM)
    assert not allowed(inputs, "b/db", "a/web", profile=Profile.CILIUM)
    host = check(inputs, "host", "a/web", profile=Profile.CILIUM).ingress
    assert host is not None and keys(host.allow_rules) == {("<allow-localhost>", "-")}
    assert allowed(inputs, "b/db", "a/web", profile=Profile.K8S)
    assert allowed(inputs, "host", "a/web", profile=Profile.K8S)
    for profile in Profile:
        assert not allowed(inputs, "b/job", "a/web", profile=profile)  # excepted
        assert not allowed(inputs, "world2", "a/web", profile=profile)  # excepted


def test_cilium_cidr_set_except_and_bare_addresses(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "p",
            "a",
            """
        endpointSelector: {matchLabels: {app: client}}
        egress:
        - toCIDRSet: [{cidr: 8.0.0.0/8, except: [8.8.4.0/24]}]
        - toCIDR: [192.0.2.10]
    """,
        ),
    )
    assert allowed(inputs, "a/client", "8.8.8.8") and not allowed(inputs, "a/client", "8.8.4.4")
    assert allowed(inputs, "a/client", "192.0.2.10") and not allowed(inputs, "a/client", "192.0.2.11")


# --- §6 ports and protocols -------------------------------------------------------------------------------


def test_any_protocol_means_tcp_udp_sctp_never_icmp(tmp_path: Path) -> None:
    inputs = load(tmp_path, cnp("p", "a", 'endpointSelector: {}\ningress: [{toPorts: [{ports: [{port: "0"}]}]}]'))
    for protocol in (Protocol.TCP, Protocol.UDP, Protocol.SCTP):
        assert allowed(inputs, "world", "a/web", 7, protocol=protocol)
    assert not allowed(inputs, "world", "a/web", 8, protocol=Protocol.ICMP)


def test_a_cilium_l3_rule_without_ports_allows_icmp(tmp_path: Path) -> None:
    inputs = load(tmp_path, cnp("p", "a", "endpointSelector: {}\ningress: [{fromEntities: [world]}]"))
    assert allowed(inputs, "world", "a/web", 8, protocol=Protocol.ICMP)


def test_icmps_match_the_type_by_number_or_name(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "p",
            "a",
            """
        endpointSelector: {}
        ingress: [{icmps: [{fields: [{type: EchoRequest}, {type: 0}]}]}]
    """,
        ),
    )
    assert allowed(inputs, "world", "a/web", 8, protocol=Protocol.ICMP)
    assert allowed(inputs, "world", "a/web", 0, protocol=Protocol.ICMP)
    assert not allowed(inputs, "world", "a/web", 3, protocol=Protocol.ICMP)
    assert not allowed(inputs, "world", "a/web", 8, protocol=Protocol.TCP)


@BOTH
def test_ingress_named_ports_resolve_on_the_destination(tmp_path: Path, profile: Profile) -> None:
    inputs = load(tmp_path, np("p", "b", "podSelector: {}\ningress: [{ports: [{port: http}]}]"))
    assert allowed(inputs, "a/web", "b/db", 8080, profile=profile)
    assert not allowed(inputs, "a/web", "b/db", 80, profile=profile)
    assert not allowed(inputs, "a/web", "b/job", 80, profile=profile)  # b/job has no port named http


def test_egress_named_ports_per_profile_and_cilium_duplicate_names(tmp_path: Path) -> None:
    spec = "podSelector: {matchLabels: {app: client}}\npolicyTypes: [Egress]\n"
    spec += "egress: [{ports: [{port: %s, protocol: %s}]}]"
    duplicate = load(tmp_path, np("p", "a", spec % ("http", "TCP")))
    assert allowed(duplicate, "a/client", "a/web", 80, profile=Profile.K8S)
    assert allowed(duplicate, "a/client", "b/db", 8080, profile=Profile.K8S)
    assert not allowed(duplicate, "a/client", "world", 80, profile=Profile.K8S)
    # http is 80 on a/web and 8080 on b/db: Cilium refuses to resolve it (ErrDuplicateNamedPorts).
    assert not allowed(duplicate, "a/client", "a/web", 80, profile=Profile.CILIUM)
    assert not allowed(duplicate, "a/client", "b/db", 8080, profile=Profile.CILIUM)
    unique = load(tmp_path, np("p", "a", spec % ("dns", "UDP")))
    assert allowed(unique, "a/client", "world", 53, protocol=Protocol.UDP, profile=Profile.CILIUM)
    assert not allowed(unique, "a/client", "world", 53, protocol=Protocol.UDP, profile=Profile.K8S)


# --- §7 L7 -------------------------------------------------------------------------------------------------------

HTTP_POLICY = cnp(
    "http",
    "a",
    """
    endpointSelector: {matchLabels: {app: web}}
    ingress:
    - fromEndpoints: [{matchLabels: {app: client}}]
      toPorts:
      - ports: [{port: "80", protocol: TCP}]
        rules: {http: [{method: GET, path: "/api/.*"}, {method: POST, path: /login, headers: ["X-Token: yes"]}]}
""",
)


def test_http_rules_redirect_and_judge_requests(tmp_path: Path) -> None:
    inputs = load(tmp_path, HTTP_POLICY)
    d = check(inputs, "a/client", "a/web")
    assert d.verdict is Verdict.REDIRECTED and d.ingress is not None and d.ingress.redirect == "http"
    assert d.ingress.l7_allowed is None
    ok = check(inputs, "a/client", "a/web", l7=HttpRequest("GET", "/api/v1"))
    assert ok.verdict is Verdict.FORWARDED and ok.ingress is not None and ok.ingress.l7_allowed is True
    whole = check(inputs, "a/client", "a/web", l7=HttpRequest("GET", "/x/api/v1"))
    assert whole.verdict is Verdict.DROPPED and whole.l7_denied and whole.drop_reason is None
    header = HttpRequest("POST", "/login", headers=(("X-Token", "yes"),))
    assert check(inputs, "a/client", "a/web", l7=header).verdict is Verdict.FORWARDED
    assert check(inputs, "a/client", "a/web", l7=HttpRequest("POST", "/login")).l7_denied


def test_an_l3_only_allow_admits_every_request_on_a_redirected_port(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        HTTP_POLICY
        + cnp(
            "l3",
            "a",
            """
        endpointSelector: {matchLabels: {app: web}}
        ingress: [{fromEndpoints: [{matchLabels: {app: client}}]}]
    """,
        ),
    )
    d = check(inputs, "a/client", "a/web", l7=HttpRequest("DELETE", "/"))
    assert d.verdict is Verdict.FORWARDED and d.ingress is not None and d.ingress.redirect == "http"


def test_http_rules_on_an_any_port_redirect_tcp_only(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "p",
            "a",
            """
        endpointSelector: {}
        ingress: [{toPorts: [{ports: [{port: "80"}], rules: {http: [{method: GET}]}}]}]
    """,
        ),
    )
    assert check(inputs, "world", "a/web").verdict is Verdict.REDIRECTED
    assert check(inputs, "world", "a/web", protocol=Protocol.UDP).verdict is Verdict.FORWARDED


def test_an_empty_http_rule_list_redirects_and_admits_every_request(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "p",
            "a",
            """
        endpointSelector: {}
        ingress: [{toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: []}}]}]
    """,
        ),
    )
    assert check(inputs, "world", "a/web").verdict is Verdict.REDIRECTED
    assert check(inputs, "world", "a/web", l7=HttpRequest("PUT", "/x")).verdict is Verdict.FORWARDED


def test_kafka_roles_expand_to_api_keys(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "p",
            "a",
            """
        endpointSelector: {}
        ingress:
        - toPorts: [{ports: [{port: "9092", protocol: TCP}], rules: {kafka: [{role: produce, topic: orders}]}}]
    """,
        ),
    )
    assert check(inputs, "world", "a/web", 9092, l7=KafkaRequest(0, topic="orders")).verdict is Verdict.FORWARDED
    assert check(inputs, "world", "a/web", 9092, l7=KafkaRequest(0, topic="other")).l7_denied
    assert check(inputs, "world", "a/web", 9092, l7=KafkaRequest(1, topic="orders")).l7_denied
    assert check(inputs, "world", "a/web", 9092).ingress.redirect == "kafka"  # type: ignore[union-attr]


def test_dns_rules_on_egress_judge_names(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "p",
            "a",
            """
        endpointSelector: {matchLabels: {app: client}}
        egress:
        - toEntities: [world]
          toPorts: [{ports: [{port: "53", protocol: ANY}], rules: {dns: [{matchPattern: "*.example.com"}]}}]
    """,
        ),
    )
    udp = {"protocol": Protocol.UDP}
    assert check(inputs, "a/client", "world", 53, **udp).verdict is Verdict.REDIRECTED  # type: ignore[arg-type]
    assert allowed(inputs, "a/client", "world", 53, l7=DnsRequest("www.example.com."), **udp)
    assert check(inputs, "a/client", "world", 53, l7=DnsRequest("example.org"), **udp).l7_denied  # type: ignore[arg-type]


def test_conflicting_parsers_on_one_port_are_an_input_error(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        HTTP_POLICY
        + cnp(
            "kafka",
            "a",
            """
        endpointSelector: {}
        ingress: [{toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {kafka: [{role: produce}]}}]}]
    """,
        ),
    )
    with pytest.raises(InputError, match="conflicting L7 parsers"):
        check(inputs, "world", "a/web", 443)


# --- §2 default-allow policies and allow-localhost ------------------------------------------------------------


def test_enable_default_deny_false_allows_everything_not_denied(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "p",
            "a",
            """
        endpointSelector: {}
        enableDefaultDeny: {ingress: false}
        ingress:
        - toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{method: GET}]}}]
        ingressDeny: [{fromEntities: [world]}]
    """,
        ),
    )
    d = check(inputs, "b/db", "a/web", 443)
    assert d.verdict is Verdict.FORWARDED and d.ingress is not None and d.ingress.enforced
    assert keys(d.ingress.allow_rules) == {("<default-allow-ingress>", "-")}
    redirected = check(inputs, "b/db", "a/web", 80, l7=HttpRequest("DELETE", "/"))
    assert redirected.verdict is Verdict.FORWARDED and redirected.ingress is not None
    assert redirected.ingress.redirect == "http" and redirected.ingress.l7_allowed is True
    assert check(inputs, "world", "a/web").drop_reason is DropReason.POLICY_DENY


def test_a_network_policy_keeps_default_deny_even_beside_a_default_allow_cilium_rule(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp("p", "a", "endpointSelector: {}\nenableDefaultDeny: {ingress: false}\ningress: [{fromEntities: [host]}]")
        + np("n", "a", "podSelector: {}\ningress: [{ports: [{port: 80}]}]"),
    )
    assert not allowed(inputs, "b/db", "a/web", 443)


def test_allow_localhost_exists_only_under_the_cilium_profile(tmp_path: Path) -> None:
    inputs = load(tmp_path, np("deny", "a", "podSelector: {}"))
    d = check(inputs, "host", "a/web", profile=Profile.CILIUM)
    assert d.verdict is Verdict.FORWARDED and d.ingress is not None
    assert keys(d.ingress.allow_rules) == {("<allow-localhost>", "-")}
    assert not allowed(inputs, "host", "a/web", profile=Profile.K8S)
    unenforced = check(load(tmp_path), "host", "a/web")
    assert unenforced.ingress is not None
    assert keys(unenforced.ingress.allow_rules) == {("<allow-any-ingress>", "-"), ("<allow-localhost>", "-")}


def test_deny_rules_win_over_allow_localhost(tmp_path: Path) -> None:
    inputs = load(tmp_path, cnp("p", "a", "endpointSelector: {}\ningressDeny: [{fromEntities: [host]}]"))
    d = check(inputs, "host", "a/web")
    assert d.drop_reason is DropReason.POLICY_DENY and d.ingress is not None
    assert ("<allow-localhost>", "-") in keys(d.ingress.allow_rules)


# --- §3 labels ---------------------------------------------------------------------------------------------


def test_labels_outside_the_cilium_label_filter_are_invisible_under_cilium(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        cnp(
            "p",
            "a",
            """
        endpointSelector: {}
        ingress: [{fromEndpoints: [{matchLabels: {pod-template-hash: abc, io.kubernetes.pod.namespace: b}}]}]
    """,
        ),
    )
    assert allowed(inputs, "b/job", "a/web", profile=Profile.K8S)
    assert not allowed(inputs, "b/job", "a/web", profile=Profile.CILIUM)


def test_service_account_and_namespace_name_labels_are_selectable(tmp_path: Path) -> None:
    inputs = load(
        tmp_path,
        ccnp(
            "p",
            """
        endpointSelector: {matchLabels: {io.cilium.k8s.policy.serviceaccount: robot}}
        egress: [{toEndpoints: [{matchLabels: {io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name: b}}]}]
    """,
        ),
    )
    assert allowed(inputs, "a/client", "b/db", profile=Profile.K8S)
    assert not allowed(inputs, "a/client", "a/web", profile=Profile.K8S)
    assert allowed(inputs, "a/web", "a/client", profile=Profile.K8S)  # a/web is not selected
