"""The iptables target: the rendered files, their determinism, address sets, names, and what it refuses.

Kernel behaviour (loading, real packets) is in test_target_iptables_kernel.py; here everything is
checked on the text.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings

from compiler.flow import Profile
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.ir.model import IR, Peer
from compiler.targets import TARGETS, TargetError, available_targets, compile_targets
from compiler.targets.iptables import IptablesTarget
from compiler.targets.iptables.addresses import AddressBook, Entry
from compiler.targets.iptables.names import MAX_CHAIN, MAX_SET, Namer
from tests.strategies import EXTERNAL, GeneratedCase, cases

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())

SMALL = """\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]
status: {podIP: 10.244.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec:
  containers: [{name: c, ports: [{containerPort: 9090}]}]
status: {podIP: 10.244.1.11}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-in, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports: [{port: http}]
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: api-in, namespace: shop}
spec:
  endpointSelector: {matchLabels: {app: api}}
  ingress:
  - fromEndpoints: [{matchLabels: {app: web}}]
    toPorts:
    - ports: [{port: "9090", protocol: TCP}]
      rules:
        http: [{method: GET, path: "/v1/.*"}]
  ingressDeny:
  - fromCIDR: [192.0.2.0/24]
"""

# web (identity 23660) takes 8080 (named port http) from 10.0.0.0/8 except 10.1.0.0/16 — under
# cilium minus the cluster's own addresses (nomatch) — and the host (<allow-localhost>); api
# (43634) takes 9090 from web, redirected to the HTTP ingress proxy (10002), and denies
# 192.0.2.0/24 first. Unenforced egress: no chain, no dispatch.
GOLDEN_RULES = """\
# netpolc iptables target, profile cilium, node 10.244.0.1
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:NPC-POLICY - [0:0]
:NPC-I-23660 - [0:0]
:NPC-PI-allow-localh-WW2H4CXN - [0:0]
:NPC-PI-web-in-MOIZAW75 - [0:0]
:NPC-I-43634 - [0:0]
:NPC-PI-api-in-XGWILQDO - [0:0]
-A INPUT -j NPC-POLICY
-A FORWARD -j NPC-POLICY
-A OUTPUT -j NPC-POLICY
-A NPC-POLICY -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A NPC-POLICY -j MARK --set-xmark 0x0/0x3000000
-A NPC-POLICY -m set --match-set NPC4-id-23660 dst -j NPC-I-23660
-A NPC-POLICY -m set --match-set NPC4-id-43634 dst -j NPC-I-43634
-A NPC-POLICY -m set --match-set NPC4-endpoints src -m comment --comment "allowed by policy" -j ACCEPT
-A NPC-POLICY -m set --match-set NPC4-endpoints dst -m comment --comment "allowed by policy" -j ACCEPT
-A NPC-I-23660 -m mark --mark 0x0/0x1000000 -j NPC-PI-allow-localh-WW2H4CXN
-A NPC-I-23660 -m mark --mark 0x0/0x1000000 -j NPC-PI-web-in-MOIZAW75
-A NPC-I-23660 -m mark --mark 0x0/0x1000000 -m comment --comment "no allow rule matched: POLICY_DENIED 133" -j DROP
-A NPC-I-23660 -j MARK --set-xmark 0x0/0x3000000
-A NPC-PI-allow-localh-WW2H4CXN -m set --match-set NPC4-p-VVGYI45TRZBSU2VODSXE3GGC src -m comment --comment "<allow-localhost> -" -j MARK --set-xmark 0x1000000/0x1000000
-A NPC-PI-web-in-MOIZAW75 -p tcp -m set --match-set NPC4-p-4V53A5YHCJ4WHZY7O6YBK4IE src -m set --match-set NPC4-np-http-tcp dst,dst -m comment --comment "NetworkPolicy shop/web-in spec.ingress[0] (small.yaml:25)" -j MARK --set-xmark 0x1000000/0x1000000
-A NPC-I-43634 -j NPC-PI-api-in-XGWILQDO
-A NPC-I-43634 -m mark --mark 0x2000000/0x2000000 -m comment --comment "deny rule matched: POLICY_DENY 181" -j DROP
-A NPC-I-43634 -m mark --mark 0x0/0x1000000 -j NPC-PI-allow-localh-WW2H4CXN
-A NPC-I-43634 -m mark --mark 0x0/0x1000000 -m comment --comment "no allow rule matched: POLICY_DENIED 133" -j DROP
-A NPC-I-43634 -j MARK --set-xmark 0x0/0x3000000
-A NPC-PI-api-in-XGWILQDO -m set --match-set NPC4-p-XPGHEFTPAL2GC6ONPKUL7JWG src -m comment --comment "CiliumNetworkPolicy shop/api-in spec.ingressDeny[0] (small.yaml:41)" -j MARK --set-xmark 0x2000000/0x2000000
-A NPC-PI-api-in-XGWILQDO -m mark --mark 0x2000000/0x2000000 -j RETURN
-A NPC-PI-api-in-XGWILQDO -p tcp -m set --match-set NPC4-id-23660 src -m tcp --dport 9090 -m comment --comment "CiliumNetworkPolicy shop/api-in spec.ingress[0] (small.yaml:35)" -j MARK --set-xmark 0x1000000/0x1000000
COMMIT
*mangle
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:NPC-PREROUTING - [0:0]
:NPC-L7I-43634 - [0:0]
-A PREROUTING -j NPC-PREROUTING
-A NPC-PREROUTING -p tcp -m socket --transparent -m comment --comment "established proxied connection" -j MARK --set-xmark 0x4000000/0x4000000
-A NPC-PREROUTING -m mark --mark 0x4000000/0x4000000 -m conntrack ! --ctstate NEW -j RETURN
-A NPC-PREROUTING -p tcp -m conntrack ! --ctstate NEW -j RETURN
-A NPC-PREROUTING -m set --match-set NPC4-id-43634 dst -j NPC-L7I-43634
-A NPC-L7I-43634 -p tcp -m set --match-set NPC4-id-23660 src -m tcp --dport 9090 -m comment --comment "CiliumNetworkPolicy shop/api-in spec.ingress[0] (small.yaml:35)" -j TPROXY --on-port 10002 --on-ip 127.0.0.1 --tproxy-mark 0x4000000/0x4000000
COMMIT
"""  # noqa: E501

GOLDEN_SETS = """\
# netpolc iptables target, profile cilium, node 10.244.0.1
create NPC4-endpoints hash:ip family inet hashsize 1024 maxelem 65536
add NPC4-endpoints 10.244.1.10
add NPC4-endpoints 10.244.1.11
create NPC4-id-23660 hash:ip family inet hashsize 1024 maxelem 65536
add NPC4-id-23660 10.244.1.10
create NPC4-id-43634 hash:ip family inet hashsize 1024 maxelem 65536
add NPC4-id-43634 10.244.1.11
create NPC4-np-http-tcp hash:ip,port family inet hashsize 1024 maxelem 65536
add NPC4-np-http-tcp 10.244.1.10,tcp:8080
create NPC4-p-4V53A5YHCJ4WHZY7O6YBK4IE hash:net family inet hashsize 1024 maxelem 65536
add NPC4-p-4V53A5YHCJ4WHZY7O6YBK4IE 10.0.0.0/8
add NPC4-p-4V53A5YHCJ4WHZY7O6YBK4IE 10.1.0.0/16 nomatch
add NPC4-p-4V53A5YHCJ4WHZY7O6YBK4IE 10.244.0.1 nomatch
add NPC4-p-4V53A5YHCJ4WHZY7O6YBK4IE 10.244.1.10 nomatch
add NPC4-p-4V53A5YHCJ4WHZY7O6YBK4IE 10.244.1.11 nomatch
create NPC4-p-VVGYI45TRZBSU2VODSXE3GGC hash:net family inet hashsize 1024 maxelem 65536
add NPC4-p-VVGYI45TRZBSU2VODSXE3GGC 10.244.0.1
create NPC4-p-XPGHEFTPAL2GC6ONPKUL7JWG hash:net family inet hashsize 1024 maxelem 65536
add NPC4-p-XPGHEFTPAL2GC6ONPKUL7JWG 192.0.2.0/24
"""


def emit(paths: list[str], profile: Profile = Profile.CILIUM) -> tuple[IptablesTarget, dict[str, str]]:
    target = IptablesTarget(build_ir(load_inputs(paths), profile))
    return target, target.emit()


def write_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str = "") -> list[str]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.yaml").write_text(SMALL)
    if extra:
        (tmp_path / "extra.yaml").write_text(extra)
    return ["small.yaml", *(["extra.yaml"] if extra else [])]


def test_the_iptables_target_is_registered() -> None:
    assert "iptables" in available_targets()
    assert TARGETS["iptables"] is IptablesTarget


def test_golden_small_policy_renders_readable_rules_and_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target, files = emit(write_small(tmp_path, monkeypatch))
    assert not target.problems
    assert sorted(files) == ["ipsets.v4", "rules.v4"]  # no IPv6 endpoint, no .v6 files
    assert files["rules.v4"] == GOLDEN_RULES
    assert files["ipsets.v4"] == GOLDEN_SETS
    assert target.counts() == {"chains_v4": 8, "ipset_entries_v4": 12, "ipsets_v4": 7, "rules_v4": 29}


def test_under_k8s_an_ipblock_matches_cluster_addresses_and_the_host_gets_no_implicit_allow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, files = emit(write_small(tmp_path, monkeypatch), Profile.K8S)
    assert "nomatch" in files["ipsets.v4"]  # the except
    assert "10.244.1.10 nomatch" not in files["ipsets.v4"]  # pods stay inside the ipBlock
    assert "allow-localhost" not in files["rules.v4"]


def test_compiling_twice_gives_identical_bytes(tmp_path: Path) -> None:
    for example in EXAMPLES:
        for profile in Profile:
            inputs = load_inputs([str(example)])
            first = compile_targets(inputs, build_ir(inputs, profile), ["iptables"], tmp_path / "a")
            again = load_inputs([str(example)])
            second = compile_targets(again, build_ir(again, profile), ["iptables"], tmp_path / "b")
            assert first == second
            for name in ("rules.v4", "ipsets.v4"):
                left = (tmp_path / "a" / "iptables" / name).read_bytes()
                assert left == (tmp_path / "b" / "iptables" / name).read_bytes()


UNRELATED = """\
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: v1
kind: Pod
metadata: {name: batch, namespace: other, labels: {app: batch}}
spec:
  containers: [{name: c, ports: [{name: http, containerPort: 8000}]}]
status: {podIP: 10.244.2.20}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: batch-egress, namespace: other}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: 172.16.0.0/12}}]
"""


def _chains(rules: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in rules.splitlines():
        if line.startswith("-A "):
            chain = line.split()[1]
            out.setdefault(chain, []).append(line)
    return out


def test_unrelated_objects_do_not_rename_or_reshuffle_existing_chains_and_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, before = emit(write_small(tmp_path, monkeypatch))
    _, after = emit(write_small(tmp_path, monkeypatch, UNRELATED))
    old, new = _chains(before["rules.v4"]), _chains(after["rules.v4"])
    for chain, lines in old.items():
        if chain.startswith(("NPC-PI-", "NPC-PE-")):  # policy chains: same name, same rules, same order
            assert new[chain] == lines, chain
        else:
            assert chain in new
    old_sets = {line.split()[1] for line in before["ipsets.v4"].splitlines() if line.startswith("create")}
    new_sets = {line.split()[1] for line in after["ipsets.v4"].splitlines() if line.startswith("create")}
    assert old_sets <= new_sets
    assert len(new_sets) > len(old_sets)  # the new policy did add something


def test_ipv6_endpoints_add_v6_files_with_inet6_sets_and_neighbour_discovery_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dual = SMALL.replace("status: {podIP: 10.244.1.10}",
                         "status: {podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}, {ip: 'fd00::10'}]}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.yaml").write_text(dual)
    target, files = emit(["small.yaml"])
    assert not target.problems
    assert sorted(files) == ["ipsets.v4", "ipsets.v6", "rules.v4", "rules.v6"]
    assert "create NPC6-id-23660 hash:ip family inet6" in files["ipsets.v6"]
    assert "add NPC6-id-23660 fd00::10" in files["ipsets.v6"]
    assert "-p ipv6-icmp -m icmp6 --icmpv6-type 135 -j RETURN" in files["rules.v6"]
    assert "--on-ip ::1" not in files["rules.v6"]  # api has no IPv6 address: no v6 redirect
    assert "NPC4-" not in files["rules.v6"] and "NPC6-" not in files["rules.v4"]


def test_every_chain_and_set_name_fits_the_kernel_limits() -> None:
    for example in EXAMPLES:
        for profile in Profile:
            _, files = emit([str(example)], profile)
            for line in files["rules.v4"].splitlines():
                if line.startswith(":"):
                    assert len(line[1:].split()[0]) <= MAX_CHAIN, line
            for line in files["ipsets.v4"].splitlines():
                if line.startswith("create"):
                    assert len(line.split()[1]) <= MAX_SET, line


def test_a_name_collision_is_reported_never_merged() -> None:
    seen: list[str] = []
    namer = Namer(lambda name, key, message: seen.append(message))
    assert namer.fixed("NPC-I-1", "a") == "NPC-I-1"
    namer.fixed("NPC-I-1", "a")  # the same owner again is fine
    assert not seen
    namer.fixed("NPC-I-1", "b")
    assert seen and "collides" in seen[0]
    namer.fixed("X" * 29, "c")
    assert "longer than 28" in seen[-1]


DNS_ANY = """\
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default, labels: {app: client}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.1.5}
---
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: dns, namespace: default}
spec:
  endpointSelector: {matchLabels: {app: client}}
  egress:
  - toPorts:
    - ports: [{port: "53", protocol: ANY}]
      rules:
        dns: [{matchPattern: "*"}]
"""


def test_an_l7_redirect_of_sctp_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "dns.yaml"
    path.write_text(DNS_ANY)
    inputs = load_inputs([str(path)])
    with pytest.raises(TargetError) as err:
        compile_targets(inputs, build_ir(inputs, Profile.CILIUM), ["iptables"], tmp_path / "out")
    assert f"{path}:13: CiliumNetworkPolicy default/dns spec.egress[0]" in str(err.value)
    assert "TPROXY redirects only TCP and UDP, not SCTP" in str(err.value)
    assert len(err.value.problems) == 1  # once, not once per identity and family
    assert not (tmp_path / "out" / "iptables").exists()  # nothing written


# --- address sets: LPM with nomatch must mean exactly Peer.matches ---------------------------------


def lpm(entries: list[Entry], address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """ipset hash:net lookup: the most specific entry containing the address decides (nomatch = no)."""
    best: Entry | None = None
    for entry in entries:
        net = entry.network
        longer = best is None or net.prefixlen > best.network.prefixlen
        if net.version == address.version and address in net and longer:
            best = entry
    return best is not None and not best.nomatch


def _probe_addresses(ir: IR) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out = {ir.cluster.node_address, *(a for ep in ir.cluster.endpoints for a in ep.addresses)}
    out |= {ipaddress.ip_address(a) for a in EXTERNAL}
    for prefix in ir.identities.cidr_identities():
        net = ipaddress.ip_network(prefix)
        out |= {net.network_address, net.broadcast_address}
        if net.network_address.version == 4 and int(net.network_address) > 0:
            out.add(net.network_address - 1)
        if int(net.broadcast_address) < 2**32 - 1:
            out.add(net.broadcast_address + 1)
    return sorted(out, key=lambda a: (a.version, a))


def _peers(ir: IR) -> set[Peer]:
    return {r.peer for p in ir.endpoint_policies() for r in (*p.allow, *p.deny) if not r.peer.any}


@settings(max_examples=150)
@given(case=cases(max_flows=1))
def test_peer_sets_contain_exactly_the_addresses_the_ir_matches(case: GeneratedCase) -> None:
    for profile in Profile:
        ir = build_ir(case.inputs, profile)
        book = AddressBook(ir)
        addresses = _probe_addresses(ir)
        for peer in _peers(ir):
            entries = book.entries(book.components(peer, 4))
            for address in addresses:
                want = peer.matches(ir.remote(address), profile)
                assert lpm(entries, address) == want, (profile, str(peer), str(address), [str(e) for e in entries])
