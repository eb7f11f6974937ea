"""The IR and its evaluator: entities, CIDRs, services, FQDNs, default-allow, fromRequires,
allow-localhost and the label filter (SEMANTICS §2-§5).

Uses the cluster and helpers of ``test_ir.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_ir import CNP_HEAD, NP_DB_FROM_WEB, build, keys

from compiler.flow import DropReason, Profile

# --- entities, CIDRs, services, FQDNs ------------------------------------------------------------

@pytest.mark.parametrize(("entity", "allowed"), [
    ("host", {"host"}),
    ("world", {"203.0.113.7", "10.9.9.9"}),
    ("cluster", {"host", "shop/web", "other/client"}),
    ("all", {"host", "shop/web", "other/client", "203.0.113.7", "10.9.9.9"}),
    ("remote-node", set()),
])
def test_entities_select_their_peers(tmp_path: Path, entity: str, allowed: set[str]) -> None:
    net = build(tmp_path, CNP_HEAD + f"  ingress: [{{fromEntities: [{entity}]}}]\n", Profile.K8S)
    for src in ("host", "shop/web", "other/client", "203.0.113.7", "10.9.9.9"):
        assert net.allowed(src, "shop/db", "5432/TCP") == (src in allowed), src


CIDR_EGRESS = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: cidr, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: web}}
  egress: [{toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.244.2.0/24]}]}]
"""


def test_cidr_under_cilium_never_matches_cluster_addresses(tmp_path: Path) -> None:
    net = build(tmp_path, CIDR_EGRESS, Profile.CILIUM)
    assert net.allowed("shop/web", "10.9.9.9", "443/TCP")
    assert not net.allowed("shop/web", "shop/db", "5432/TCP")  # a pod: its own identity
    assert not net.allowed("shop/web", "host", "443/TCP")
    assert not net.allowed("shop/web", "10.244.2.77", "443/TCP")  # excepted
    assert not net.allowed("shop/web", "203.0.113.7", "443/TCP")  # outside


def test_cidr_under_k8s_matches_pods_and_host_in_range_but_not_excepted(tmp_path: Path) -> None:
    net = build(tmp_path, CIDR_EGRESS, Profile.K8S)
    assert net.allowed("shop/web", "shop/db", "5432/TCP")
    assert net.allowed("shop/web", "host", "443/TCP")
    assert not net.allowed("shop/web", "other/client", "80/TCP")  # 10.244.2.10 is excepted
    assert not net.allowed("shop/web", "203.0.113.7", "443/TCP")


def test_np_ip_block_is_a_cidr_peer_with_profile_rules(tmp_path: Path) -> None:
    policy = """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: ip, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress: [{from: [{ipBlock: {cidr: 10.244.0.0/16, except: [10.244.2.0/24]}}]}]
        """
    assert not build(tmp_path, policy, Profile.CILIUM).allowed("shop/web", "shop/db", "5432/TCP")
    assert build(tmp_path, policy, Profile.K8S).allowed("shop/web", "shop/db", "5432/TCP")
    assert not build(tmp_path, policy, Profile.K8S).allowed("other/client", "shop/db", "5432/TCP")


def test_to_services_selects_the_service_backends_and_selectorless_selects_nothing(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: v1
        kind: Service
        metadata: {name: db, namespace: shop}
        spec: {selector: {app: db}, ports: [{port: 5432}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: ext, namespace: shop}
        spec: {ports: [{port: 443}]}
        ---
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: svc, namespace: other}
        spec:
          endpointSelector: {}
          egress: [{toServices: [{k8sService: {serviceName: db, namespace: shop}}, {k8sService: {serviceName: ext}}]}]
        """)
    assert net.allowed("other/client", "shop/db", "5432/TCP")
    assert not net.allowed("other/client", "shop/web", "8080/TCP")
    assert not net.allowed("other/client", "203.0.113.7", "443/TCP")


def test_to_fqdns_matches_nothing_at_l3(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: fqdn, namespace: shop}
        spec:
          endpointSelector: {matchLabels: {app: web}}
          egress: [{toFQDNs: [{matchName: example.com}], toPorts: [{ports: [{port: '443'}]}]}]
        """)
    d = net.check("shop/web", "93.184.216.34", "443/TCP")
    assert d.egress is not None and d.egress.enforced and d.drop_reason is DropReason.POLICY_DENIED


# --- default allow, requirements, localhost, label filter -----------------------------------------

def test_enable_default_deny_false_adds_default_allow_and_deny_still_wins(tmp_path: Path) -> None:
    net = build(tmp_path, CNP_HEAD + """\
  enableDefaultDeny: {ingress: false}
  ingress: [{fromEndpoints: [{matchLabels: {app: web}}]}]
  ingressDeny: [{fromEntities: [world]}]
""")
    d = net.check("other/client", "shop/db", "5432/TCP")
    assert d.allowed and d.ingress is not None and d.ingress.enforced
    assert keys(d.ingress.allow_rules) == {("<default-allow-ingress>", "-")}
    assert net.check("203.0.113.7", "shop/db", "5432/TCP").drop_reason is DropReason.POLICY_DENY


def test_default_allow_needs_every_selecting_rule_to_opt_out(tmp_path: Path) -> None:
    net = build(tmp_path, CNP_HEAD + """\
  enableDefaultDeny: {ingress: false}
  ingress: [{fromEndpoints: [{matchLabels: {app: web}}]}]
""" + "---\n" + NP_DB_FROM_WEB)
    assert not net.allowed("other/client", "shop/db", "5432/TCP")  # the NetworkPolicy is default-deny


def test_from_requires_is_anded_into_every_endpoint_selector_of_the_endpoint(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: cilium.io/v2
        kind: CiliumClusterwideNetworkPolicy
        metadata: {name: req}
        spec:
          endpointSelector: {matchLabels: {app: db}}
          ingress: [{fromRequires: [{matchLabels: {io.cilium.k8s.namespace.labels.team: shop}}]}]
        ---
        apiVersion: cilium.io/v2
        kind: CiliumClusterwideNetworkPolicy
        metadata: {name: open}
        spec:
          endpointSelector: {matchLabels: {app: db}}
          ingress:
          - fromEndpoints: [{}]
            toPorts: [{ports: [{port: '5432'}]}]
          - fromEntities: [world]
            toPorts: [{ports: [{port: '8443'}]}]
          - toPorts: [{ports: [{port: '9999'}]}]
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: every, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress: [{ports: [{port: 7000}]}]
        """, Profile.K8S)
    assert net.allowed("shop/web", "shop/db", "5432/TCP")
    assert not net.allowed("other/client", "shop/db", "5432/TCP")  # requirement not met
    assert net.allowed("203.0.113.7", "shop/db", "8443/TCP")  # entities are not narrowed
    assert net.allowed("other/client", "shop/db", "9999/TCP")  # nor L4-only rules
    assert net.allowed("shop/web", "shop/db", "7000/TCP")
    assert not net.allowed("other/client", "shop/db", "7000/TCP")  # NP "every peer" is narrowed
    assert not net.allowed("203.0.113.7", "shop/db", "7000/TCP")


def test_allow_localhost_only_in_cilium_profile_and_deny_still_wins(tmp_path: Path) -> None:
    policy = CNP_HEAD + "  ingress: [{}]\n"
    cilium = build(tmp_path, policy, Profile.CILIUM).check("host", "shop/db", "5432/TCP")
    assert cilium.allowed and cilium.ingress is not None
    assert keys(cilium.ingress.allow_rules) == {("<allow-localhost>", "-")}
    assert not build(tmp_path, policy, Profile.K8S).allowed("host", "shop/db", "5432/TCP")
    denied = build(tmp_path, CNP_HEAD + "  ingressDeny: [{fromEntities: [host]}]\n").check("host", "shop/db", "1/TCP")
    assert denied.drop_reason is DropReason.POLICY_DENY


def test_allow_localhost_is_listed_beside_allow_any_when_ingress_is_unenforced(tmp_path: Path) -> None:
    d = build(tmp_path, "").check("host", "shop/db", "5432/TCP")
    assert d.ingress is not None and not d.ingress.enforced
    assert keys(d.ingress.allow_rules) == {("<allow-any-ingress>", "-"), ("<allow-localhost>", "-")}


def test_selector_on_a_filtered_label_matches_nothing_under_cilium_only(tmp_path: Path) -> None:
    policy = """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: hash, namespace: shop}
        spec:
          podSelector: {matchLabels: {pod-template-hash: abc}}
          ingress: []
        """
    assert build(tmp_path, policy, Profile.CILIUM).allowed("shop/web", "shop/db", "5432/TCP")
    assert not build(tmp_path, policy, Profile.K8S).allowed("shop/web", "shop/db", "5432/TCP")


def test_from_requires_of_deny_rules_narrow_deny_rules_only(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: cilium.io/v2
        kind: CiliumClusterwideNetworkPolicy
        metadata: {name: req}
        spec:
          endpointSelector: {matchLabels: {app: db}}
          ingress: [{fromEndpoints: [{}]}]
          ingressDeny:
          - fromEndpoints: [{}]
            fromRequires: [{matchLabels: {io.cilium.k8s.namespace.labels.team: other}}]
            toPorts: [{ports: [{port: '5432'}]}]
        """)
    assert net.allowed("shop/web", "shop/db", "5432/TCP")  # the deny's requirement is not met
    assert net.allowed("other/client", "shop/db", "80/TCP")  # allows are not narrowed by it
    assert net.check("other/client", "shop/db", "5432/TCP").drop_reason is DropReason.POLICY_DENY


def test_np_negative_only_namespace_selector_reaches_host_and_world_under_cilium_only(tmp_path: Path) -> None:
    policy = """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: neg, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress: [{from: [{namespaceSelector: {matchExpressions: [{key: team, operator: NotIn, values: [shop]}]}}]}]
        """
    cilium = build(tmp_path, policy, Profile.CILIUM)
    k8s = build(tmp_path, policy, Profile.K8S)
    for net in (cilium, k8s):
        assert net.allowed("other/client", "shop/db", "5432/TCP")
        assert not net.allowed("shop/web", "shop/db", "5432/TCP")
    assert cilium.allowed("203.0.113.7", "shop/db", "5432/TCP")  # world carries no namespace labels
    assert not k8s.allowed("203.0.113.7", "shop/db", "5432/TCP")  # k8s: pods only
    assert not k8s.allowed("host", "shop/db", "5432/TCP")


def test_world_ipv4_entity_matches_ipv4_world_addresses_only(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: w4, namespace: shop}
        spec:
          endpointSelector: {matchLabels: {app: web}}
          egress: [{toEntities: [world-ipv4]}]
        """)
    assert net.allowed("shop/web", "203.0.113.7", "443/TCP")
    assert not net.allowed("shop/web", "2001:db8::1", "443/TCP")
    assert not net.allowed("shop/web", "host", "443/TCP")
