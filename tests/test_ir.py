"""The IR and its evaluator, L3/L4: one specification per test, over small YAML snippets.

Cluster used throughout (explicit pod IPs so CIDR tests can name them):

    shop/web    app=web        10.244.1.10   http 8080/TCP, metrics 9100/TCP
    shop/api    app=api        10.244.1.11   http 9090/TCP, dns 53/UDP
    shop/db     app=db         10.244.1.12   sql 5432/TCP        (+ pod-template-hash=abc)
    other/client app=client    10.244.2.10   no ports
    host 10.244.0.1; world e.g. 203.0.113.7 or 10.9.9.9
"""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from compiler.flow import (
    Decision,
    Direction,
    DropReason,
    Flow,
    L7Request,
    PortSpec,
    Profile,
    Protocol,
    RuleRef,
    Verdict,
)
from compiler.inputs import load_inputs
from compiler.ir import IR, IREvaluator, build_ir, matrix

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {team: other}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  containers:
  - name: c
    ports: [{name: http, containerPort: 8080}, {name: metrics, containerPort: 9100}]
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec:
  containers:
  - name: c
    ports: [{name: http, containerPort: 9090}, {name: dns, containerPort: 53, protocol: UDP}]
status: {podIP: 10.244.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db, pod-template-hash: abc}}
spec:
  containers:
  - name: c
    ports: [{name: sql, containerPort: 5432}]
status: {podIP: 10.244.1.12}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: other, labels: {app: client}}
spec:
  containers: [{name: c}]
status: {podIP: 10.244.2.10}
"""

ADDRESSES = {"shop/web": "10.244.1.10", "shop/api": "10.244.1.11", "shop/db": "10.244.1.12",
             "other/client": "10.244.2.10", "host": "10.244.0.1"}


class Net:
    """A built IR plus shorthands: ``net.check("shop/web", "shop/db", "5432/TCP")``."""

    def __init__(self, ir: IR) -> None:
        self.ir = ir
        self.evaluator = IREvaluator(ir)

    def check(self, src: str, dst: str, port: str, l7: L7Request | None = None) -> Decision:
        spec = PortSpec.parse(port)
        flow = Flow(_address(src), _address(dst), spec.protocol, spec.port, l7)
        return self.evaluator.evaluate(flow)

    def allowed(self, src: str, dst: str, port: str) -> bool:
        return self.check(src, dst, port).allowed


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(ADDRESSES.get(name, name))


def build(tmp_path: Path, policies: str, profile: Profile = Profile.CILIUM) -> Net:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    (tmp_path / "policies.yaml").write_text(textwrap.dedent(policies))
    inputs = load_inputs([str(tmp_path / "cluster.yaml"), str(tmp_path / "policies.yaml")])
    return Net(build_ir(inputs, profile))


def keys(refs: frozenset[RuleRef]) -> set[tuple[str, str]]:
    return {r.key for r in refs}


NP_DB_FROM_WEB = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 5432}]
"""


# --- enforcement ------------------------------------------------------------------------------

def test_endpoint_without_policy_is_unenforced_and_allowed_by_allow_any(tmp_path: Path) -> None:
    net = build(tmp_path, "")
    d = net.check("shop/web", "shop/db", "5432/TCP")
    assert d.verdict is Verdict.FORWARDED
    assert d.egress is not None and d.ingress is not None
    assert not d.egress.enforced and not d.ingress.enforced
    assert keys(d.egress.allow_rules) == {("<allow-any-egress>", "-")}
    assert keys(d.ingress.allow_rules) == {("<allow-any-ingress>", "-")}


def test_selected_pod_drops_unlisted_peer_with_policy_denied(tmp_path: Path) -> None:
    net = build(tmp_path, NP_DB_FROM_WEB)
    assert net.allowed("shop/web", "shop/db", "5432/TCP")
    d = net.check("shop/api", "shop/db", "5432/TCP")
    assert d.verdict is Verdict.DROPPED and d.drop_reason is DropReason.POLICY_DENIED
    assert d.ingress is not None and d.ingress.enforced and not d.ingress.allow_rules


def test_np_rule_ref_is_policy_display_and_spec_path_with_file_line(tmp_path: Path) -> None:
    net = build(tmp_path, NP_DB_FROM_WEB)
    d = net.check("shop/web", "shop/db", "5432/TCP")
    assert d.ingress is not None
    (ref,) = d.ingress.allow_rules
    assert ref.key == ("NetworkPolicy shop/db", "spec.ingress[0]")
    assert ref.file.endswith("policies.yaml") and ref.line == 8


def test_flows_from_world_have_no_egress_side(tmp_path: Path) -> None:
    net = build(tmp_path, NP_DB_FROM_WEB)
    d = net.check("203.0.113.7", "shop/db", "5432/TCP")
    assert d.egress is None and d.drop_reason is DropReason.POLICY_DENIED
    assert net.check("shop/db", "203.0.113.7", "443/TCP").ingress is None


def test_np_policy_types_default_to_ingress_plus_egress_only_when_egress_rules_exist(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: a, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: web}}
          egress: []
        ---
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: b, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: api}}
          egress: [{ports: [{port: 53, protocol: UDP}]}]
        """)
    web = net.check("shop/web", "shop/db", "5432/TCP")
    assert web.egress is not None and not web.egress.enforced  # egress: [] does not add Egress
    assert not net.allowed("other/client", "shop/web", "80/TCP")  # Ingress defaulted in
    api = net.check("shop/api", "shop/db", "5432/TCP")
    assert api.egress is not None and api.egress.enforced and api.drop_reason is DropReason.POLICY_DENIED
    assert net.allowed("shop/api", "8.8.8.8", "53/UDP")


def test_np_policy_types_egress_only_leaves_ingress_unenforced(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: e, namespace: shop}
        spec:
          podSelector: {}
          policyTypes: [Egress]
          ingress: [{from: [{podSelector: {matchLabels: {app: nobody}}}]}]
        """)
    d = net.check("other/client", "shop/db", "5432/TCP")
    assert d.ingress is not None and not d.ingress.enforced and d.allowed
    assert not net.allowed("shop/web", "shop/db", "5432/TCP")  # egress enforced, nothing allowed


def test_np_ingress_empty_rule_allows_every_peer_port_and_protocol(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: all, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress: [{}]
        """)
    for src in ("other/client", "host", "203.0.113.7"):
        for port in ("5432/TCP", "53/UDP", "8/ICMP"):
            assert net.allowed(src, "shop/db", port), (src, port)


# --- Cilium L3 / L4 ---------------------------------------------------------------------------

CNP_HEAD = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: db}}
"""


def test_cnp_l3_only_rule_allows_its_peers_on_every_protocol_including_icmp(tmp_path: Path) -> None:
    net = build(tmp_path, CNP_HEAD + "  ingress: [{fromEndpoints: [{matchLabels: {app: web}}]}]\n")
    for port in ("5432/TCP", "53/UDP", "1/SCTP", "8/ICMP"):
        assert net.allowed("shop/web", "shop/db", port), port
    assert not net.allowed("shop/api", "shop/db", "5432/TCP")


def test_cnp_from_endpoints_is_namespaced_to_the_policy_namespace(tmp_path: Path) -> None:
    net = build(tmp_path, CNP_HEAD + "  ingress: [{fromEndpoints: [{}]}]\n")
    assert net.allowed("shop/api", "shop/db", "5432/TCP")
    for src in ("other/client", "host", "203.0.113.7"):
        d = net.check(src, "shop/db", "5432/TCP")
        assert d.ingress is not None
        # host is still let in by allow-localhost, but not by the rule
        assert keys(d.ingress.allow_rules) <= {("<allow-localhost>", "-")}, src


def test_ccnp_empty_from_endpoints_means_every_pod_but_not_host_or_world(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: cilium.io/v2
        kind: CiliumClusterwideNetworkPolicy
        metadata: {name: base}
        spec:
          endpointSelector: {matchLabels: {app: db}}
          ingress: [{fromEndpoints: [{}]}]
        """, Profile.K8S)
    assert net.allowed("other/client", "shop/db", "5432/TCP")
    assert not net.allowed("host", "shop/db", "5432/TCP")
    assert not net.allowed("203.0.113.7", "shop/db", "5432/TCP")
    d = net.check("other/client", "shop/db", "5432/TCP")
    assert d.ingress is not None
    assert keys(d.ingress.allow_rules) == {("CiliumClusterwideNetworkPolicy base", "spec.ingress[0]")}


def test_cnp_l4_only_rule_allows_every_peer_on_its_ports_only(tmp_path: Path) -> None:
    net = build(tmp_path, CNP_HEAD + "  ingress: [{toPorts: [{ports: [{port: '5432', protocol: TCP}]}]}]\n")
    for src in ("other/client", "203.0.113.7", "shop/web"):
        assert net.allowed(src, "shop/db", "5432/TCP"), src
    assert not net.allowed("shop/web", "shop/db", "5433/TCP")
    assert not net.allowed("shop/web", "shop/db", "5432/UDP")


def test_cnp_empty_rule_turns_enforcement_on_and_allows_nothing(tmp_path: Path) -> None:
    net = build(tmp_path, CNP_HEAD + "  ingress: [{}]\n")
    d = net.check("shop/web", "shop/db", "5432/TCP")
    assert d.ingress is not None and d.ingress.enforced and d.drop_reason is DropReason.POLICY_DENIED


def test_cnp_explicitly_empty_peer_list_selects_no_peer(tmp_path: Path) -> None:
    net = build(tmp_path, CNP_HEAD + "  ingress: [{fromEndpoints: [], toPorts: [{ports: [{port: '5432'}]}]}]\n")
    assert not net.allowed("shop/web", "shop/db", "5432/TCP")


def test_deny_wins_over_any_allow_whatever_the_port_specificity(tmp_path: Path) -> None:
    net = build(tmp_path, CNP_HEAD + """\
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts: [{ports: [{port: '5432', protocol: TCP}]}]
  ingressDeny:
  - fromEntities: [cluster]
""")
    d = net.check("shop/web", "shop/db", "5432/TCP")
    assert d.verdict is Verdict.DROPPED and d.drop_reason is DropReason.POLICY_DENY
    assert d.ingress is not None
    assert keys(d.ingress.deny_rules) == {("CiliumNetworkPolicy shop/c", "spec.ingressDeny[0]")}
    assert keys(d.ingress.allow_rules) == {("CiliumNetworkPolicy shop/c", "spec.ingress[0]")}


def test_deny_only_policy_enforces_default_deny(tmp_path: Path) -> None:
    net = build(tmp_path, CNP_HEAD + "  ingressDeny: [{fromEntities: [world]}]\n")
    d = net.check("shop/web", "shop/db", "5432/TCP")
    assert d.drop_reason is DropReason.POLICY_DENIED
    assert net.check("203.0.113.7", "shop/db", "5432/TCP").drop_reason is DropReason.POLICY_DENY


def test_specs_rule_paths_name_the_spec_index_and_the_deny_list(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: multi, namespace: shop}
        specs:
        - endpointSelector: {matchLabels: {app: web}}
          egress: [{toEntities: [all]}]
        - endpointSelector: {matchLabels: {app: web}}
          egressDeny: [{toCIDR: [203.0.113.7]}]
        """)
    d = net.check("shop/web", "203.0.113.7", "443/TCP")
    assert d.egress is not None and d.drop_reason is DropReason.POLICY_DENY
    (deny,) = d.egress.deny_rules
    assert deny.key == ("CiliumNetworkPolicy shop/multi", "specs[1].egressDeny[0]") and deny.line == 9
    assert net.allowed("shop/web", "203.0.113.8", "443/TCP")


# --- ports ------------------------------------------------------------------------------------

def test_port_ranges_cover_port_to_end_port_inclusive(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: r, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress: [{ports: [{port: 5000, endPort: 5432}]}]
        ---
        apiVersion: cilium.io/v2
        kind: CiliumNetworkPolicy
        metadata: {name: r, namespace: shop}
        spec:
          endpointSelector: {matchLabels: {app: web}}
          ingress: [{toPorts: [{ports: [{port: '8000', endPort: 8080, protocol: TCP}, {port: '0', endPort: 10}]}]}]
        """)
    assert net.allowed("shop/web", "shop/db", "5000/TCP") and net.allowed("shop/web", "shop/db", "5432/TCP")
    assert not net.allowed("shop/web", "shop/db", "5433/TCP") and not net.allowed("shop/web", "shop/db", "4999/TCP")
    assert net.allowed("shop/db", "shop/web", "8080/TCP") and not net.allowed("shop/db", "shop/web", "8081/TCP")
    assert net.allowed("shop/db", "shop/web", "10/UDP") and not net.allowed("shop/db", "shop/web", "11/UDP")


def test_cilium_any_protocol_means_tcp_udp_sctp_never_icmp(tmp_path: Path) -> None:
    net = build(tmp_path, CNP_HEAD + "  ingress: [{toPorts: [{ports: [{port: '0'}]}]}]\n")
    for port in ("1/TCP", "53/UDP", "9/SCTP"):
        assert net.allowed("shop/web", "shop/db", port), port
    assert not net.allowed("shop/web", "shop/db", "8/ICMP")


def test_icmps_match_the_type_and_family(tmp_path: Path) -> None:
    icmps = "[{fields: [{type: EchoRequest}, {family: IPv6, type: 128}]}]"
    net = build(tmp_path, CNP_HEAD + f"  ingress: [{{icmps: {icmps}}}]\n")
    assert net.allowed("shop/web", "shop/db", "8/ICMP")
    assert not net.allowed("shop/web", "shop/db", "0/ICMP")
    assert not net.allowed("shop/web", "shop/db", "8/TCP")


def test_np_port_without_number_is_every_port_of_its_protocol(tmp_path: Path) -> None:
    net = build(tmp_path, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: u, namespace: shop}
        spec:
          podSelector: {matchLabels: {app: db}}
          ingress: [{ports: [{protocol: UDP}]}]
        """)
    assert net.allowed("shop/web", "shop/db", "1234/UDP")
    assert not net.allowed("shop/web", "shop/db", "1234/TCP")


@pytest.mark.parametrize("profile", list(Profile))
def test_named_port_on_ingress_resolves_against_the_destination_pod(tmp_path: Path, profile: Profile) -> None:
    net = build(tmp_path, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: n, namespace: shop}
        spec:
          podSelector: {}
          ingress: [{ports: [{port: http}]}]
        """, profile)
    assert net.allowed("other/client", "shop/web", "8080/TCP")
    assert net.allowed("other/client", "shop/api", "9090/TCP")
    assert not net.allowed("other/client", "shop/api", "8080/TCP")
    assert not net.allowed("other/client", "shop/db", "8080/TCP")  # db declares no "http"


EGRESS_NAMED = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: n, namespace: other}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress: [{ports: [{port: http}, {port: sql}]}]
"""


def test_named_port_on_egress_under_cilium_uses_the_cluster_wide_unique_number(tmp_path: Path) -> None:
    net = build(tmp_path, EGRESS_NAMED, Profile.CILIUM)
    assert net.allowed("other/client", "shop/db", "5432/TCP")
    assert net.allowed("other/client", "203.0.113.7", "5432/TCP")  # applies to every peer
    assert net.allowed("other/client", "shop/web", "5432/TCP")
    # "http" is 8080 on web and 9090 on api: ambiguous, so it resolves to nothing
    assert not net.allowed("other/client", "shop/web", "8080/TCP")


def test_named_port_on_egress_under_k8s_uses_the_destination_pod(tmp_path: Path) -> None:
    net = build(tmp_path, EGRESS_NAMED, Profile.K8S)
    assert net.allowed("other/client", "shop/web", "8080/TCP")
    assert net.allowed("other/client", "shop/api", "9090/TCP")
    assert not net.allowed("other/client", "shop/web", "5432/TCP")
    assert not net.allowed("other/client", "203.0.113.7", "5432/TCP")  # not an endpoint


# --- whole-IR helpers -------------------------------------------------------------------------

def test_endpoints_sharing_an_identity_share_one_policy(tmp_path: Path) -> None:
    net = build(tmp_path, NP_DB_FROM_WEB)
    ir = net.ir
    policy = ir.policy("shop/db", Direction.INGRESS)
    assert policy.endpoints == ("shop/db",) and policy.enforced
    assert [r.origin.path for r in policy.allow] == ["spec.ingress[0]", "-"]


def test_evaluate_endpoints_uses_the_endpoint_addresses(tmp_path: Path) -> None:
    net = build(tmp_path, NP_DB_FROM_WEB)
    d = net.evaluator.evaluate_endpoints("shop/web", "shop/db", PortSpec(5432, Protocol.TCP))
    assert d.allowed and str(d.flow.src) == "10.244.1.10"


def test_matrix_lists_sorted_reachable_destinations_per_port_including_self(tmp_path: Path) -> None:
    net = build(tmp_path, NP_DB_FROM_WEB)
    table = matrix(net.ir, [PortSpec.parse("5432/TCP")])
    rows = table["5432/TCP"]
    assert set(rows) == {"other/client", "shop/api", "shop/db", "shop/web"}
    assert rows["shop/web"] == ["other/client", "shop/api", "shop/db", "shop/web"]
    assert rows["shop/api"] == ["other/client", "shop/api", "shop/web"]
    assert "shop/db" not in rows["shop/db"]

