"""Golden map state of the eBPF target, as literal tables (STYLE.md: Cilium's mapstate tests).

Each test compiles a tiny cluster plus one policy set and compares one endpoint's policy map
with an aligned table, one row per entry:

    DIRECTION  IDENTITY  PORT/PROTO  VERDICT  PROXY  PRIORITY

``IDENTITY`` is ``ANY`` (0), a reserved name (``host``, ``world-ipv4``, …), a pod name (its
identity), or ``cidr:<prefix>`` (that prefix's CIDR identity). ``PORT/PROTO`` is
``cilium-dbg``'s column (``ANY``, ``TCP``, ``80/TCP``, ``80-87/TCP``), so it also shows the
prefix length. Rows may be in any order.
"""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest

from compiler.flow import Direction, Profile, RuleRef
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.ir.model import IR
from compiler.source import InputError
from compiler.targets.ebpf import EbpfTarget
from compiler.targets.ebpf.layout import PolicyEntry, PolicyKey
from compiler.targets.ebpf.mapstate import ALLOW, DENY, MapState, Value
from compiler.targets.ebpf.ports import l4_keys, port_proto_string
from compiler.targets.proxyports import priority, proxy_port

CLUSTER = """
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {team: shop}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: app, labels: {app: web}}
spec:
  containers:
    - {name: c, ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]}
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: app, labels: {app: db}}
spec: {containers: [{name: c, ports: [{name: sql, containerPort: 5432}]}]}
status: {podIP: 10.244.1.20}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: app, labels: {app: client}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.1.30}
"""

RESERVED = {"ANY": 0, "host": 1, "world": 2, "remote-node": 6, "kube-apiserver": 7, "world-ipv4": 9,
            "world-ipv6": 10}

Row = tuple[str, str, str, str, str, str]


def compile_map(tmp_path: Path, policies: str, endpoint: str = "app/web",
                profile: Profile = Profile.CILIUM) -> tuple[IR, dict[PolicyKey, PolicyEntry]]:
    (tmp_path / "cluster.yaml").write_text(CLUSTER)
    (tmp_path / "policy.yaml").write_text(textwrap.dedent(policies))
    ir = build_ir(load_inputs([str(tmp_path)]), profile)
    target = EbpfTarget(ir)
    target.emit()
    assert not target.problems, [str(p) for p in target.problems]
    return ir, target.entries[endpoint]


def _names(ir: IR) -> dict[int, str]:
    names = {number: name for name, number in RESERVED.items()}
    for ep in ir.cluster.endpoints:
        names[ir.endpoint_identity(ep.key)] = ep.name
    for prefix, number in ir.identities.cidr_identities().items():
        names[number] = f"cidr:{prefix}"
    return names


def rows(ir: IR, entries: dict[PolicyKey, PolicyEntry]) -> set[Row]:
    names = _names(ir)
    return {
        ("egress" if key.egress else "ingress", names.get(key.identity, str(key.identity)),
         port_proto_string((key.protocol, key.port, key.port_prefix)), "deny" if entry.deny else "allow",
         str(entry.proxy_port) if entry.proxy_port else "-", str(entry.priority))
        for key, entry in entries.items()
    }


def table(text: str) -> set[Row]:
    out: set[Row] = set()
    for line in textwrap.dedent(text).strip().splitlines()[1:]:  # first line: the column header
        cells = line.split()
        assert len(cells) == 6, line
        out.add((cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]))
    return out


HTTP_IN = str(proxy_port("http", Direction.INGRESS))
HTTP_EG = str(proxy_port("http", Direction.EGRESS))

CNP = """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {{name: {name}, namespace: app}}
spec:
  endpointSelector: {{matchLabels: {{app: web}}}}
{body}
"""


def cnp(body: str, name: str = "p") -> str:
    return CNP.format(name=name, body=textwrap.indent(textwrap.dedent(body).strip(), "  "))


def test_unenforced_directions_are_one_allow_all_entry_each_plus_localhost(tmp_path: Path) -> None:
    ir, entries = compile_map(tmp_path, "")
    assert rows(ir, entries) == table("""
        DIR      IDENTITY  PORT/PROTO  VERDICT  PROXY  PRIO
        ingress  ANY       ANY         allow    -      0
        ingress  host      ANY         allow    -      0
        egress   ANY       ANY         allow    -      0
    """)


def test_l3_only_l4_only_and_l3_l4_entries(tmp_path: Path) -> None:
    ir, entries = compile_map(tmp_path, cnp("""
        ingress:
          - fromEndpoints: [{matchLabels: {app: client}}]
          - toPorts: [{ports: [{port: "443", protocol: TCP}]}]
          - fromEndpoints: [{matchLabels: {app: db}}]
            toPorts: [{ports: [{port: "8080", protocol: TCP}]}]
    """))
    assert rows(ir, entries) == table("""
        DIR      IDENTITY  PORT/PROTO  VERDICT  PROXY  PRIO
        ingress  client    ANY         allow    -      0
        ingress  ANY       443/TCP     allow    -      0
        ingress  db        8080/TCP    allow    -      0
        ingress  host      ANY         allow    -      0
        egress   ANY       ANY         allow    -      0
    """)


def test_port_range_is_split_into_masked_ports(tmp_path: Path) -> None:
    ir, entries = compile_map(tmp_path, cnp("""
        ingress:
          - fromEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: "80", endPort: 90, protocol: TCP}]}]
    """))
    assert rows(ir, entries) == table("""
        DIR      IDENTITY  PORT/PROTO  VERDICT  PROXY  PRIO
        ingress  client    80-87/TCP   allow    -      0
        ingress  client    88-89/TCP   allow    -      0
        ingress  client    90/TCP      allow    -      0
        ingress  host      ANY         allow    -      0
        egress   ANY       ANY         allow    -      0
    """)


def test_protocol_any_expands_to_tcp_udp_sctp_and_whole_protocols_keep_prefix_8(tmp_path: Path) -> None:
    ir, entries = compile_map(tmp_path, cnp("""
        egress:
          - toEndpoints: [{matchLabels: {app: db}}]
            toPorts: [{ports: [{port: "53"}]}]
          - toEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: "0", protocol: UDP}]}]
    """))
    assert rows(ir, entries) == table("""
        DIR      IDENTITY  PORT/PROTO  VERDICT  PROXY  PRIO
        ingress  ANY       ANY         allow    -      0
        ingress  host      ANY         allow    -      0
        egress   db        53/TCP      allow    -      0
        egress   db        53/UDP      allow    -      0
        egress   db        53/SCTP     allow    -      0
        egress   client    UDP         allow    -      0
    """)


def test_deny_wins_over_narrower_and_equal_allows_of_its_identity_and_zero(tmp_path: Path) -> None:
    ir, entries = compile_map(tmp_path, cnp("""
        ingress:
          - fromEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: "80", protocol: TCP}, {port: "8080", protocol: TCP}]}]
          - fromEndpoints: [{matchLabels: {app: db}}]
          - toPorts: [{ports: [{port: "81", protocol: TCP}]}]
        ingressDeny:
          - fromEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: "80", endPort: 87, protocol: TCP}]}]
          - toPorts: [{ports: [{port: "81", protocol: TCP}]}]
    """))
    # client 80/TCP is under the deny 80-87 (dropped); the L4-only 81 allow under the 81 deny;
    # db's L3-only allow stays (the datapath's lookup 2 finds the 81 deny)
    assert rows(ir, entries) == table("""
        DIR      IDENTITY  PORT/PROTO  VERDICT  PROXY  PRIO
        ingress  client    80-87/TCP   deny     -      0
        ingress  client    8080/TCP    allow    -      0
        ingress  ANY       81/TCP      deny     -      0
        ingress  db        ANY         allow    -      0
        ingress  host      ANY         allow    -      0
        egress   ANY       ANY         allow    -      0
    """)


def test_l7_redirect_gets_the_shared_proxy_port_and_priority_and_covers_narrower_allows(tmp_path: Path) -> None:
    ir, entries = compile_map(tmp_path, cnp("""
        ingress:
          - fromEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: "80", endPort: 81, protocol: TCP}], rules: {http: [{method: GET}]}}]
          - fromEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: "80", protocol: TCP}, {port: "82", protocol: TCP}]}]
    """))
    # the plain 80/TCP allow is covered by the 80-81 redirect (higher priority): dropped
    assert rows(ir, entries) == table(f"""
        DIR      IDENTITY  PORT/PROTO  VERDICT  PROXY    PRIO
        ingress  client    80-81/TCP   allow    {HTTP_IN}  {priority("http")}
        ingress  client    82/TCP      allow    -        0
        ingress  host      ANY         allow    -        0
        egress   ANY       ANY         allow    -        0
    """)


def test_l4_only_redirect_makes_identical_identity_entries_redundant(tmp_path: Path) -> None:
    ir, entries = compile_map(tmp_path, cnp("""
        egress:
          - toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{}]}}]
          - toEndpoints: [{matchLabels: {app: db}}]
            toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{path: /x}]}}]
    """))
    assert rows(ir, entries) == table(f"""
        DIR      IDENTITY  PORT/PROTO  VERDICT  PROXY    PRIO
        ingress  ANY       ANY         allow    -        0
        ingress  host      ANY         allow    -        0
        egress   ANY       80/TCP      allow    {HTTP_EG}  {priority("http")}
    """)


def test_named_ports_resolve_per_endpoint_on_ingress_and_cluster_wide_on_egress(tmp_path: Path) -> None:
    ir, entries = compile_map(tmp_path, cnp("""
        ingress:
          - fromEndpoints: [{matchLabels: {app: client}}]
            toPorts: [{ports: [{port: http, protocol: TCP}, {port: sql, protocol: TCP}]}]
        egress:
          - toEndpoints: [{matchLabels: {app: db}}]
            toPorts: [{ports: [{port: sql, protocol: TCP}, {port: dns}]}]
    """))
    # ingress "sql" is not declared by web: nothing; egress "dns" exists only as UDP
    assert rows(ir, entries) == table("""
        DIR      IDENTITY  PORT/PROTO  VERDICT  PROXY  PRIO
        ingress  client    8080/TCP    allow    -      0
        ingress  host      ANY         allow    -      0
        egress   db        5432/TCP    allow    -      0
        egress   db        53/UDP      allow    -      0
    """)


def test_entities_and_cidr_with_except(tmp_path: Path) -> None:
    ir, entries = compile_map(tmp_path, cnp("""
        egress:
          - toEntities: [world-ipv4]
            toPorts: [{ports: [{port: "443", protocol: TCP}]}]
          - toCIDRSet: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]
            toPorts: [{ports: [{port: "5000", protocol: TCP}]}]
        ingress:
          - fromEntities: [host, kube-apiserver]
    """))
    # world-ipv4: the IPv4 fallback and every IPv4 CIDR identity; the except keeps its own identity
    assert rows(ir, entries) == table("""
        DIR      IDENTITY         PORT/PROTO  VERDICT  PROXY  PRIO
        ingress  host             ANY         allow    -      0
        ingress  kube-apiserver   ANY         allow    -      0
        egress   world-ipv4       443/TCP     allow    -      0
        egress   cidr:10.0.0.0/8  443/TCP     allow    -      0
        egress   cidr:10.1.0.0/16 443/TCP     allow    -      0
        egress   cidr:10.0.0.0/8  5000/TCP    allow    -      0
    """)


def test_icmp_type_is_the_port_and_type_0_stays_exact(tmp_path: Path) -> None:
    ir, entries = compile_map(tmp_path, cnp("""
        ingress:
          - fromEndpoints: [{matchLabels: {app: client}}]
            icmps: [{fields: [{type: 8}, {type: 0}, {family: IPv6, type: EchoRequest}]}]
    """))
    assert rows(ir, entries) == table("""
        DIR      IDENTITY  PORT/PROTO    VERDICT  PROXY  PRIO
        ingress  client    8/ICMP        allow    -      0
        ingress  client    0/ICMP        allow    -      0
        ingress  client    128/ICMPv6    allow    -      0
        ingress  host      ANY           allow    -      0
        egress   ANY       ANY           allow    -      0
    """)


def test_k8s_profile_ipblock_over_pods_becomes_their_identities_and_no_localhost(tmp_path: Path) -> None:
    ir, entries = compile_map(tmp_path, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: np, namespace: app}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress:
            - from: [{ipBlock: {cidr: 10.244.1.0/24, except: [10.244.1.30/32]}}]
              ports: [{port: 80}]
    """, profile=Profile.K8S)
    assert rows(ir, entries) == table("""
        DIR      IDENTITY            PORT/PROTO  VERDICT  PROXY  PRIO
        ingress  web                 80/TCP      allow    -      0
        ingress  db                  80/TCP      allow    -      0
        ingress  cidr:10.244.1.0/24  80/TCP      allow    -      0
        egress   ANY                 ANY         allow    -      0
    """)


def test_cilium_profile_cidr_over_pods_selects_only_the_cidr_identity(tmp_path: Path) -> None:
    ir, entries = compile_map(tmp_path, """
        apiVersion: networking.k8s.io/v1
        kind: NetworkPolicy
        metadata: {name: np, namespace: app}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress:
            - from: [{ipBlock: {cidr: 10.244.1.0/24, except: [10.244.1.30/32]}}]
              ports: [{port: 80}]
    """)
    assert rows(ir, entries) == table("""
        DIR      IDENTITY            PORT/PROTO  VERDICT  PROXY  PRIO
        ingress  cidr:10.244.1.0/24  80/TCP      allow    -      0
        ingress  host                ANY         allow    -      0
        egress   ANY                 ANY         allow    -      0
    """)


def test_conflicting_l7_parsers_on_one_port_are_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="conflicting L7 parsers"):
        compile_map(tmp_path, cnp("""
            ingress:
              - toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{}]}}]
              - toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {kafka: [{topic: t}]}}]
        """))


# --- the merge itself: rule order never matters ------------------------------------------------

REF = RuleRef("p", "spec")
CANDIDATES: list[tuple[int, list[tuple[int, int, int]], Value]] = [
    (0, l4_keys(6, 80, 90), Value(False, 10002, 27)),
    (300, l4_keys(6, 80, 80), ALLOW),
    (300, l4_keys(6, 0, 65535), DENY),
    (301, l4_keys(0, 0, 65535), ALLOW),
    (0, l4_keys(6, 88, 88), DENY),
    (301, l4_keys(6, 85, 85), Value(False, 10002, 27)),
    (302, l4_keys(17, 53, 53), ALLOW),
]


def test_map_state_does_not_depend_on_rule_order() -> None:
    results = []
    for order in itertools.permutations(CANDIDATES):
        state = MapState()
        for identity, keys, value in order:
            state.add((identity,), 0, keys, value, REF)
        results.append(state.final())
    assert all(r == results[0] for r in results)
    # 300's 80/TCP allow is under its TCP deny; the narrower 88/TCP deny does not remove the 88-89 allow
    assert {(k.identity, k.port, k.port_prefix, e.deny) for k, e in results[0].items()} == {
        (0, 80, 21, False), (0, 88, 23, False), (0, 88, 24, True), (0, 90, 24, False), (300, 0, 8, True),
        (301, 0, 0, False), (301, 85, 24, False), (302, 53, 24, False),
    }
