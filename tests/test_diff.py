"""netpolc diff: exactly the changed flows, as compact regions, on hand-made pairs of policy versions.

Each pair is checked against brute force: every (source, destination, protocol, port) over a
small cluster — endpoints, the node, and world addresses at and around every prefix boundary —
for ports 0..MAX_TEST_PORT (the pairs only use ports below it), evaluated under both versions with
the reference semantics. The set of flows whose outcome changed must equal the set the diff's
regions cover.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import random
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compiler.cli import main
from compiler.flow import Flow, Profile, Protocol
from compiler.inputs import Inputs, load_inputs
from compiler.source import InputErrors
from compiler.synth import Scale, generate, write
from verifier.diff.compute import DiffResult, Region, semantic_diff
from verifier.diff.outcome import side_of
from verifier.regions import AddressCell, address_cells, flows, source_port_cells
from verifier.simulate.source import ReferenceEvaluator

MAX_TEST_PORT = 320

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
spec: {containers: [{name: c, image: i, ports: [{name: http, containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: a, labels: {app: db}}
spec: {containers: [{name: c, image: i, ports: [{name: sql, containerPort: 300}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: b, labels: {app: client}}
spec: {containers: [{name: c, image: i}]}
"""

NP_DB_FROM_WEB = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: a}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: sql}]
"""

PAIRS: dict[str, tuple[str, str]] = {
    "identical": (NP_DB_FROM_WEB, NP_DB_FROM_WEB),
    "port range widened": (
        NP_DB_FROM_WEB,
        NP_DB_FROM_WEB.replace("ports: [{port: sql}]", "ports: [{port: 290, endPort: 310}]"),
    ),
    "peer namespace added": (
        NP_DB_FROM_WEB,
        NP_DB_FROM_WEB.replace(
            "- from: [{podSelector: {matchLabels: {app: web}}}]",
            "- from: [{podSelector: {matchLabels: {app: web}}}, {namespaceSelector: {matchLabels: {team: b}}}]",
        ),
    ),
    "ipBlock except": (
        NP_DB_FROM_WEB.replace(
            "- from: [{podSelector: {matchLabels: {app: web}}}]", "- from: [{ipBlock: {cidr: 198.51.100.0/24}}]"
        ),
        NP_DB_FROM_WEB.replace(
            "- from: [{podSelector: {matchLabels: {app: web}}}]",
            "- from: [{ipBlock: {cidr: 198.51.100.0/24, except: [198.51.100.128/26]}}]",
        ),
    ),
    "cilium deny added": (
        """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
    - fromEntities: [cluster]
""",
        """
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: web, namespace: a}
spec:
  endpointSelector: {matchLabels: {app: web}}
  ingress:
    - fromEntities: [cluster]
  ingressDeny:
    - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: b}}]
      toPorts: [{ports: [{port: "80", protocol: TCP}]}]
""",
    ),
    "egress default deny": (
        NP_DB_FROM_WEB,
        NP_DB_FROM_WEB
        + """---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress, namespace: b}
spec:
  podSelector: {}
  policyTypes: [Egress]
  egress:
    - ports: [{port: 53, protocol: UDP}]
""",
    ),
}


def _load(tmp_path: Path, name: str, policy: str) -> Inputs:
    path = tmp_path / name
    path.write_text(CLUSTER + "---\n" + policy)
    return load_inputs([str(path)])


def _world_samples(old: Inputs, new: Inputs) -> list[ipaddress.IPv4Address]:
    samples = {ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv4Address("0.0.0.0")}
    networks = {n for inputs in (old, new) for profile in Profile
                for n in ReferenceEvaluator(inputs, profile).policy_networks()}
    for net in networks:
        for edge in (int(net.network_address), int(net.broadcast_address)):
            for delta in (-1, 0, 1):
                if 0 <= edge + delta < 2**32:
                    samples.add(ipaddress.IPv4Address(edge + delta))
    return sorted(samples)


def _covered(
    region: Region,
    src: str,
    src_addr: ipaddress.IPv4Address,
    dst: str,
    dst_addr: ipaddress.IPv4Address,
    proto: str,
    port: int,
) -> bool:
    if dst not in region.destinations and not (
        dst == "world" and any(_world_contains(n, dst_addr) for n in region.destinations)
    ):
        return False
    spans = dict(region.ports).get(proto, ())
    if not any(lo <= port <= hi for lo, hi in spans):
        return False
    for name in region.sources:
        if name == src:
            return True
        if src == "world" and _world_contains(name, src_addr):
            return True
    return False


def _world_contains(name: str, address: ipaddress.IPv4Address) -> bool:
    """A world source of a region: a CIDR or a ``first-last`` range (anything else is an endpoint or host)."""
    try:
        return address in ipaddress.ip_network(name)
    except ValueError:
        pass
    first, sep, last = name.partition("-")
    try:
        return bool(sep) and ipaddress.IPv4Address(first) <= address <= ipaddress.IPv4Address(last)
    except ValueError:
        return False


def _brute_force(old: Inputs, new: Inputs, result: DiffResult) -> None:
    cluster = new.cluster
    names = {ep.addresses[0]: ep.key for ep in cluster.endpoints}
    sites = [(a, n) for a, n in names.items()] + [(cluster.node_address, "host")]
    sites += [(a, "world") for a in _world_samples(old, new) if a not in names and a != cluster.node_address]
    ref_old = ReferenceEvaluator(old, result.profile_old)
    ref_new = ReferenceEvaluator(new, result.profile_new)
    missing, extra = [], []
    for src_addr, src in sites:
        for dst_addr, dst in sites:
            if dst_addr == src_addr or (src in ("host", "world") and dst in ("host", "world")):
                continue
            for proto in (Protocol.TCP, Protocol.UDP):
                for port in range(MAX_TEST_PORT + 1):
                    flow = Flow(src_addr, dst_addr, proto, port)  # type: ignore[arg-type]
                    a, b = side_of(ref_old, flow), side_of(ref_new, flow)
                    changed = a.differs(b)
                    covered = any(
                        _covered(r, src, src_addr, dst, dst_addr, proto.name, port)  # type: ignore[arg-type]
                        for r in result.regions
                    )
                    if changed and not covered:
                        missing.append(f"{src}({src_addr})->{dst} {port}/{proto.name}: {a.outcome} -> {b.outcome}")
                    if covered and not changed:
                        extra.append(f"{src}({src_addr})->{dst} {port}/{proto.name}")
    assert not missing, f"changed flows the diff missed: {missing[:10]}"
    assert not extra, f"flows the diff reports but that did not change: {extra[:10]}"


@pytest.mark.parametrize("name", sorted(PAIRS))
@pytest.mark.parametrize("profile", [Profile.CILIUM, Profile.K8S])
def test_diff_is_exactly_the_changed_flows(name: str, profile: Profile, tmp_path: Path) -> None:
    old_text, new_text = PAIRS[name]
    old, new = _load(tmp_path, "old.yaml", old_text), _load(tmp_path, "new.yaml", new_text)
    result = semantic_diff(old, new, profile, profile)
    assert result.equivalent == (name == "identical")
    _brute_force(old, new, result)


def test_profile_migration_diff_is_exact(tmp_path: Path) -> None:
    old_text, _ = PAIRS["ipBlock except"]
    inputs = _load(tmp_path, "p.yaml", old_text)
    result = semantic_diff(inputs, inputs, Profile.K8S, Profile.CILIUM)
    assert not result.equivalent  # allow-localhost at least
    _brute_force(inputs, inputs, result)


def test_regions_name_the_rules_on_both_sides(tmp_path: Path) -> None:
    old, new = (
        _load(tmp_path, f"{n}.yaml", t) for n, t in zip(("old", "new"), PAIRS["cilium deny added"], strict=True)
    )
    result = semantic_diff(old, new, Profile.CILIUM, Profile.CILIUM)
    (region,) = result.regions
    assert region.sources == ("b/client",) and region.destinations == ("a/web",)
    assert region.ports == (("TCP", ((80, 80),)),)
    assert (region.old.verdict, region.new.verdict, region.new.detail) == ("allowed", "dropped", "POLICY_DENY")
    assert [r.path for r in region.old_rules] == ["spec.ingress[0]"]
    assert [r.path for r in region.new_rules] == ["spec.ingressDeny[0]"]


def test_cli_markdown_json_and_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(CLUSTER + "---\n" + PAIRS["port range widened"][0])
    new.write_text(CLUSTER + "---\n" + PAIRS["port range widened"][1])
    assert main(["diff", str(old), str(old)]) == 0
    assert "equivalent" in capsys.readouterr().out
    assert main(["diff", str(old), str(new), "-o", "markdown"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("### netpolc: semantic policy diff") and "| a/web | a/db | TCP 290-299,301-310 |" in out
    assert main(["diff", str(old), str(new), "-o", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["equivalent"] is False and doc["regions"][0]["ports"] == [
        {"protocol": "TCP", "ranges": [[290, 299], [301, 310]]}
    ]


def test_different_clusters_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = tmp_path / "old.yaml", tmp_path / "new.yaml"
    old.write_text(CLUSTER)
    new.write_text(CLUSTER.replace("name: client", "name: client2"))
    assert main(["diff", str(old), str(new)]) == 2
    assert "different clusters" in capsys.readouterr().err


def test_git_revisions_as_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "repo"
    (repo / "policies").mkdir(parents=True)
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "policies" / "all.yaml").write_text(CLUSTER + "---\n" + PAIRS["peer namespace added"][0])
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "old"], check=True)
    (repo / "policies" / "all.yaml").write_text(CLUSTER + "---\n" + PAIRS["peer namespace added"][1])
    subprocess.run([*git, "commit", "-qam", "new"], check=True)
    monkeypatch.chdir(repo)
    assert main(["diff", "git:HEAD~1:policies", "git:HEAD:policies"]) == 1
    assert "b/client -> a/db TCP 300: dropped (POLICY_DENIED) → allowed" in capsys.readouterr().out
    assert main(["diff", "git:nosuchrev:policies", "git:HEAD:policies"]) == 2
    assert "git:nosuchrev:policies" in capsys.readouterr().err


# --- the restricted comparison against the exhaustive enumeration, on generated clusters -----------

Objects = list[dict[str, Any]]


def _synthetic(seed: int = 3) -> Objects:
    """A small generated cluster (3 namespaces, 6 apps, 2 replicas each) with its policies, less
    the ones that would hide the changes below: the NetworkPolicy that admits every request of
    app-01 → app-00 in ns-0000 (so the HTTP rules decide), and every ingress policy of app-00 in
    ns-0002 but the namespace's default deny (so removing that one un-isolates it)."""
    objects = generate(Scale(60, 3, 24, seed=seed))
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet"):
            obj["spec"]["replicas"] = 2
    hidden = {("ns-0000", "p004-app-00"), *(("ns-0002", f"p00{i}-app-00") for i in (2, 4, 6))}
    return [o for o in objects if (o["metadata"].get("namespace"), o["metadata"]["name"]) not in hidden]


def _policy(objects: Objects, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    return next(
        o for o in objects
        if o["kind"] == kind and o["metadata"]["name"] == name and o["metadata"].get("namespace") == namespace
    )


def _change_cnp_port(objects: Objects) -> None:
    rule = _policy(objects, "CiliumNetworkPolicy", "p002-app-00", "ns-0001")["spec"]["ingress"][0]
    rule["toPorts"][0]["ports"][0]["port"] = "8050"  # inside app-01's egress range 8000-8100


def _change_np_peer(objects: Objects) -> None:
    peer = _policy(objects, "NetworkPolicy", "p004-app-00", "ns-0001")["spec"]["ingress"][0]["from"][0]
    peer["podSelector"]["matchLabels"] = {"app": "app-00"}


def _remove_default_deny(objects: Objects) -> None:
    objects.remove(_policy(objects, "NetworkPolicy", "default-deny", "ns-0002"))


def _remove_only_egress(objects: Objects) -> None:
    objects.remove(_policy(objects, "CiliumNetworkPolicy", "p003-app-01", "ns-0001"))
    objects.remove(_policy(objects, "CiliumNetworkPolicy", "p007-app-01", "ns-0001"))


def _add_deny(objects: Objects) -> None:
    objects.append({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "deny-workers", "namespace": "ns-0001"},
        "spec": {
            "endpointSelector": {"matchLabels": {"app": "app-00"}},
            "ingressDeny": [
                {"fromEntities": ["cluster"], "toPorts": [{"ports": [{"port": "9090", "protocol": "TCP"}]}]},
            ],
        },
    })


def _change_l7_rule(objects: Objects) -> None:
    http = _policy(objects, "CiliumNetworkPolicy", "p002-app-00", "ns-0000")["spec"]["ingress"][0]["toPorts"][0]
    http["rules"]["http"][1]["path"] = "/api/v2/orders"


def _change_ccnp(objects: Objects) -> None:
    spec = _policy(objects, "CiliumClusterwideNetworkPolicy", "baseline-0")["spec"]
    spec["egress"][1]["toPorts"][0]["ports"][0]["port"] = "8443"
    spec["ingressDeny"][0]["fromEntities"] = ["cluster"]


def _change_ccnp_egress_only(objects: Objects) -> None:
    """Only the egress part changes: the selected pods' ingress must still be compared right."""
    spec = _policy(objects, "CiliumClusterwideNetworkPolicy", "baseline-0")["spec"]
    spec["egress"][0]["toPorts"][0]["ports"][0]["port"] = "5353"
    spec["egress"].append({"toEntities": ["cluster"], "toPorts": [{"ports": [{"port": "9090", "protocol": "TCP"}]}]})


def _move_policies(objects: Objects) -> None:
    """Reorder the documents: every rule moves to another line, no flow changes."""
    objects.reverse()


CHANGES: dict[str, Callable[[Objects], None]] = {
    "CNP port changed": _change_cnp_port,
    "NP peer changed": _change_np_peer,
    "default-deny removed (pods no longer isolated)": _remove_default_deny,
    "only egress policies removed": _remove_only_egress,
    "deny policy added": _add_deny,
    "L7 rule changed": _change_l7_rule,
    "CCNP changed": _change_ccnp,
    "CCNP egress changed": _change_ccnp_egress_only,
    "policies moved": _move_policies,
}


def _write(objects: Objects, path: Path) -> Inputs:
    return load_inputs([str(p) for p in write(objects, path)])


def _exhaustive(old: Inputs, new: Inputs, profile_old: Profile, profile_new: Profile) -> set[tuple[object, ...]]:
    """Every flow cell whose outcome changes, by evaluating every one of them (no restriction, no
    classes): the cell-level enumeration the diff must agree with."""
    ref_old, ref_new = ReferenceEvaluator(old, profile_old), ReferenceEvaluator(new, profile_new)
    networks = sorted({str(n) for ref in (ref_old, ref_new) for n in ref.policy_networks()})
    cells = address_cells(new.cluster, networks)
    ports = source_port_cells((*ref_old.units, *ref_new.units), (old.cluster, new.cluster))
    return {
        (src.name, dst.name, port)
        for src, dst, port, flow in flows(cells, ports)
        if side_of(ref_old, flow).differs(side_of(ref_new, flow))
    }


def _cells_of(result: DiffResult, old: Inputs, new: Inputs) -> set[tuple[object, ...]]:
    """The flow cells the regions of ``result`` cover (a region ``A → A`` holds no self-flow)."""
    ref_old, ref_new = ReferenceEvaluator(old, result.profile_old), ReferenceEvaluator(new, result.profile_new)
    networks = sorted({str(n) for ref in (ref_old, ref_new) for n in ref.policy_networks()})
    cells = address_cells(new.cluster, networks)
    ports = source_port_cells((*ref_old.units, *ref_new.units), (old.cluster, new.cluster))
    out: set[tuple[object, ...]] = set()
    for region in result.regions:
        sources = [c for c in cells if _named(region.sources, c)]
        targets = [c for c in cells if _named(region.destinations, c)]
        spans = dict(region.ports)
        covered = [p for p in ports if any(lo <= p.lo <= hi for lo, hi in spans.get(p.protocol.name, ()))]
        out.update((s.name, d.name, p) for s in sources for d in targets for p in covered if s != d)
    return out


def _named(names: tuple[str, ...], cell: AddressCell) -> bool:
    if cell.kind != "world":
        return cell.name in names
    return any(_world_contains(n, cell.representative) for n in names)  # type: ignore[arg-type]


def _check_against_exhaustive(old: Inputs, new: Inputs, profile_old: Profile, profile_new: Profile) -> DiffResult:
    restricted = semantic_diff(old, new, profile_old, profile_new)
    full = semantic_diff(old, new, profile_old, profile_new, restrict=False)
    assert restricted.regions == full.regions
    assert _cells_of(restricted, old, new) == _exhaustive(old, new, profile_old, profile_new)
    return restricted


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_restricted_diff_equals_the_exhaustive_enumeration(name: str, tmp_path: Path) -> None:
    objects = _synthetic()
    old = _write(objects, tmp_path / "old")
    changed = copy.deepcopy(objects)
    CHANGES[name](changed)
    new = _write(changed, tmp_path / "new")
    result = _check_against_exhaustive(old, new, Profile.CILIUM, Profile.CILIUM)
    assert result.equivalent == (name == "policies moved")
    if name != "policies moved":
        assert "changed polic" in result.scope


def test_l7_rule_change_in_place_is_reported(tmp_path: Path) -> None:
    """Only the HTTP path changes, at the same file and line: the redirect stays, its rules differ."""
    objects = _synthetic()
    old = _write(objects, tmp_path / "old")
    changed = copy.deepcopy(objects)
    _change_l7_rule(changed)
    new = _write(changed, tmp_path / "new")
    result = semantic_diff(old, new, Profile.CILIUM, Profile.CILIUM)
    assert result.regions and all(r.l7_changed for r in result.regions)
    assert {r.destinations for r in result.regions} == {("ns-0000/app-00-0", "ns-0000/app-00-1")}


def test_profiles_differing_compares_every_flow(tmp_path: Path) -> None:
    inputs = _write(_synthetic(), tmp_path / "p")
    result = _check_against_exhaustive(inputs, inputs, Profile.K8S, Profile.CILIUM)
    assert not result.equivalent and "profiles differ" in result.scope


def test_cluster_change_compares_every_flow(tmp_path: Path) -> None:
    objects = _synthetic()
    old = _write(objects, tmp_path / "old")
    changed = copy.deepcopy(objects)
    next(o for o in changed if o["kind"] == "Namespace")["metadata"]["labels"]["team"] = "team-2"
    new = _write(changed, tmp_path / "new")
    result = _check_against_exhaustive(old, new, Profile.CILIUM, Profile.CILIUM)
    assert not result.equivalent and "clusters differ" in result.scope


@pytest.mark.slow
@settings(max_examples=30)
@given(seed=st.integers(0, 1000), change=st.sampled_from(sorted(CHANGES)), profile=st.sampled_from(list(Profile)))
def test_restricted_diff_equals_the_exhaustive_enumeration_on_random_clusters(
    seed: int, change: str, profile: Profile
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        objects = _synthetic(seed)
        old = _write(objects, Path(tmp) / "old")
        changed = copy.deepcopy(objects)
        try:
            CHANGES[change](changed)
        except StopIteration:  # this seed has no such policy
            return
        new = _write(changed, Path(tmp) / "new")
        _check_against_exhaustive(old, new, profile, profile)


def _edit_randomly(objects: Objects, rng: random.Random) -> None:
    """Change one port or selector value of a random policy, or drop one item of one of its lists."""
    policy = rng.choice([o for o in objects if o["kind"] in POLICY_KINDS])
    spots: list[tuple[str, Any, Any]] = []

    def walk(value: Any, parent: Any, key: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, value, k)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, value, i)
            if len(value) > 1:
                spots.append(("drop", value, None))
        elif key in ("port", "endPort"):
            spots.append(("port", parent, key))
        elif key in LABEL_VALUES:
            spots.append(("label", parent, key))

    walk(policy["spec"], None, None)
    if not spots:
        return
    kind, parent, key = rng.choice(spots)
    if kind == "drop":
        parent.pop(rng.randrange(len(parent)))
    elif kind == "port":
        number = rng.choice([53, 443, 5432, 7070, 8050, 8080, 9090, 9100])
        parent[key] = number if isinstance(parent[key], int) else str(number)
    else:
        parent[key] = rng.choice(LABEL_VALUES[key])


POLICY_KINDS = ("NetworkPolicy", "CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy")
LABEL_VALUES = {
    "app": ["app-00", "app-01"],
    "tier": ["web", "api", "worker", "db"],
    "team": ["team-0", "team-1", "team-2"],
    "cidr": ["10.0.0.0/8", "0.0.0.0/0", "10.244.0.0/17"],
}


@pytest.mark.slow
@settings(max_examples=40)
@given(seed=st.integers(0, 1000), rng=st.randoms(use_true_random=False), profile=st.sampled_from(list(Profile)))
def test_random_policy_edits_match_the_exhaustive_enumeration(seed: int, rng: random.Random, profile: Profile) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        objects = _synthetic(seed)
        old = _write(objects, Path(tmp) / "old")
        changed = copy.deepcopy(objects)
        for _ in range(rng.randint(1, 2)):
            _edit_randomly(changed, rng)
        try:
            new = _write(changed, Path(tmp) / "new")
        except InputErrors:  # an edit the input models refuse (say an L7 rule on a UDP port)
            return
        _check_against_exhaustive(old, new, profile, profile)
