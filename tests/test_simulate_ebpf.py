"""The eBPF simulator: Cilium's lookup order on hand-made maps, artifact decoding, and agreement
with the IR evaluator on every example (both profiles), the conformance model (k8s) and
generated policy sets (both profiles)."""

from __future__ import annotations

import ipaddress
import itertools
import json
from pathlib import Path

import pytest

from compiler.flow import DropReason, Flow, PortSpec, Profile, Protocol, Verdict
from compiler.inputs import Inputs, load_inputs
from compiler.ir.build import build_ir
from compiler.ir.evaluate import IREvaluator
from compiler.targets.ebpf import EbpfTarget
from compiler.targets.ebpf.layout import IpcacheEntry, PolicyEntry, PolicyKey, ipcache_dump_entry, policy_dump_entry
from tests.conformance_cases import CASES, case_ports, load_case
from verifier.simulate.ebpf import (
    MATCH_L3_L4,
    MATCH_L3_ONLY,
    MATCH_L4_ONLY,
    MATCH_NONE,
    ArtifactError,
    DirectionLookup,
    EbpfArtifacts,
    EbpfResult,
    EbpfSimulator,
    compare_with_ir,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if (p / "ports").exists())

POD, PEER, WORLD = "10.244.1.10", "10.244.1.20", "8.8.8.8"
POD_ID, PEER_ID = 300, 301


def _artifacts(entries: list[tuple[PolicyKey, PolicyEntry]]) -> EbpfArtifacts:
    """One enforced endpoint (POD) with the given map; PEER has an unenforced, allow-all map."""
    endpoints = [
        {"id": 1, "namespace": "ns", "name": "pod", "ips": [POD], "identity": POD_ID,
         "policy_map": "cilium_policy_v2_00001", "ingress_enforced": True, "egress_enforced": True},
        {"id": 2, "namespace": "ns", "name": "peer", "ips": [PEER], "identity": PEER_ID,
         "policy_map": "cilium_policy_v2_00002", "ingress_enforced": False, "egress_enforced": False},
    ]
    ipcache = [IpcacheEntry(ipaddress.ip_network(f"{ip}/32"), n) for ip, n in ((POD, POD_ID), (PEER, PEER_ID))]
    ipcache.append(IpcacheEntry(ipaddress.ip_network("8.8.0.0/16"), (1 << 24) | 1))
    allow_all = [(PolicyKey(0, d, 0, 0, 0), PolicyEntry(False, 0, 0, 0)) for d in (0, 1)]
    return EbpfArtifacts({
        "endpoints.json": json.dumps(endpoints),
        "ipcache.json": json.dumps([ipcache_dump_entry(e) for e in ipcache]),
        "cilium_policy_v2_00001.json": json.dumps([policy_dump_entry(k, v) for k, v in entries]),
        "cilium_policy_v2_00002.json": json.dumps([policy_dump_entry(k, v) for k, v in allow_all]),
    })


def allow(identity: int, proto: int = 0, port: int = 0, prefix: int = 0, proxy: int = 0,
          prio: int = 0) -> tuple[PolicyKey, PolicyEntry]:
    return PolicyKey(identity, 0, proto, port, prefix), PolicyEntry(False, proxy, prio, prefix)


def deny(identity: int, proto: int = 0, port: int = 0, prefix: int = 0) -> tuple[PolicyKey, PolicyEntry]:
    return PolicyKey(identity, 0, proto, port, prefix), PolicyEntry(True, 0, 0, prefix)


def ingress(entries: list[tuple[PolicyKey, PolicyEntry]], port: int = 80,
            src: str = PEER) -> tuple[EbpfResult, DirectionLookup]:
    sim = EbpfSimulator(_artifacts(entries))
    result = sim.evaluate(Flow(ipaddress.ip_address(src), ipaddress.ip_address(POD), Protocol.TCP, port))
    assert result.ingress is not None
    return result, result.ingress


# --- lookup order (reference/cilium.md §1.7) -----------------------------------------------------

def test_l4_only_entry_wins_on_a_strictly_longer_prefix_at_equal_priority() -> None:
    _, side = ingress([allow(PEER_ID), allow(0, 6, 80, 24)])
    assert side.allowed and side.match == MATCH_L4_ONLY and side.policy_lookups == 2
    _, side = ingress([allow(PEER_ID), allow(0, 6, 80, 24)], port=81)
    assert side.allowed and side.match == MATCH_L3_ONLY


def test_on_a_full_tie_the_specific_identity_wins() -> None:
    _, side = ingress([allow(PEER_ID, 6, 80, 24, proxy=10002, prio=27), allow(0, 6, 80, 24)])
    assert side.match == MATCH_L3_L4 and side.proxy_port == 10002


def test_higher_proxy_priority_on_identity_0_beats_a_longer_l3_prefix() -> None:
    _, side = ingress([allow(PEER_ID, 6, 80, 24), allow(0, 6, 80, 21, proxy=10002, prio=27)])
    assert side.match == MATCH_L4_ONLY and side.proxy_port == 10002


def test_deny_on_the_real_identity_is_final_after_one_lookup() -> None:
    result, side = ingress([deny(PEER_ID, 6, 0, 8), allow(0, 6, 80, 24)])
    assert not side.allowed and side.reason is DropReason.POLICY_DENY and side.policy_lookups == 1
    assert result.verdict is Verdict.DROPPED and result.drop_reason is DropReason.POLICY_DENY


def test_deny_in_the_l4_only_lookup_beats_an_l3_allow() -> None:
    _, side = ingress([allow(PEER_ID, 6, 80, 24), deny(0)])
    assert side.reason is DropReason.POLICY_DENY


def test_no_entry_is_policy_denied_133_from_world_via_the_ipcache() -> None:
    result, side = ingress([allow(PEER_ID)], src=WORLD)
    assert side.remote_identity == (1 << 24) | 1 and side.match == MATCH_NONE
    assert result.drop_reason is DropReason.POLICY_DENIED
    result, side = ingress([allow(9)], src="1.1.1.1")  # outside every prefix: world-ipv4
    assert side.allowed and side.remote_identity == 9


def test_cost_counts_ipcache_and_policy_lookups_for_both_directions() -> None:
    sim = EbpfSimulator(_artifacts([allow(0)]))
    result = sim.evaluate(Flow(ipaddress.ip_address(PEER), ipaddress.ip_address(POD), Protocol.TCP, 80))
    assert result.egress is not None and result.ingress is not None
    assert result.ipcache_lookups == 2 and result.policy_lookups == 4 and result.verdict is Verdict.FORWARDED
    assert len(result.trace) == 2


# --- decoding ---------------------------------------------------------------------------------

def test_formatted_objects_are_not_trusted_only_the_bytes(tmp_path: Path) -> None:
    art = _artifacts([allow(PEER_ID)])
    files = {"endpoints.json": json.dumps([
        {"id": e.id, "namespace": e.key.split("/")[0], "name": e.key.split("/")[1], "ips": [str(i) for i in e.ips],
         "identity": e.identity, "policy_map": e.policy_map, "ingress_enforced": e.ingress_enforced,
         "egress_enforced": e.egress_enforced} for e in art.endpoints])}
    lying = policy_dump_entry(*allow(PEER_ID))
    lying["formatted"]["key"]["sec_label"] = 999
    lying["formatted"]["value"]["deny"] = 1
    files["cilium_policy_v2_00001.json"] = json.dumps([lying])
    files["cilium_policy_v2_00002.json"] = json.dumps(
        [policy_dump_entry(PolicyKey(0, d, 0, 0, 0), PolicyEntry(False, 0, 0, 0)) for d in (0, 1)])
    files["ipcache.json"] = json.dumps([ipcache_dump_entry(e) for e in art.ipcache.entries])
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    sim = EbpfSimulator(EbpfArtifacts.from_dir(tmp_path))
    result = sim.evaluate(Flow(ipaddress.ip_address(PEER), ipaddress.ip_address(POD), Protocol.TCP, 80))
    assert result.allowed


def test_undecodable_artifacts_name_the_file_and_entry() -> None:
    bad = policy_dump_entry(*allow(PEER_ID))
    bad["key"] = bad["key"][:11]
    files = {"endpoints.json": json.dumps([{"id": 1, "namespace": "ns", "name": "pod", "ips": [POD], "identity": 1,
                                            "policy_map": "cilium_policy_v2_00001", "ingress_enforced": True,
                                            "egress_enforced": True}]),
             "ipcache.json": "[]", "cilium_policy_v2_00001.json": json.dumps([bad])}
    with pytest.raises(ArtifactError, match=r"cilium_policy_v2_00001.json: entry 0: .*12 bytes"):
        EbpfArtifacts(files)
    with pytest.raises(ArtifactError, match=r"ipcache\.json: missing"):
        EbpfArtifacts({"endpoints.json": "[]"})


def test_canonical_dumps_read_fast_give_the_json_readers_entries_and_its_errors() -> None:
    from verifier.simulate import ebpf as module

    inputs = load_inputs([str(EXAMPLES[0])])
    files = EbpfTarget(build_ir(inputs, Profile.CILIUM)).emit()
    texts = {name: text for name, text in files.items() if name.endswith(".json")}
    policy = next(name for name in sorted(texts) if name.startswith("cilium_policy"))
    assert module._canonical_entries(texts[policy], lambda k, v: (k, v), {}) is not None
    text = texts[policy].rstrip("\n")
    assert text.count("\n") >= 3
    first_break = text.index(",\n")
    for other_layout in (text.replace(",\n", "\n", 1), text.replace(",\n", ",\n\n", 1), text[:-2] + ",\n]",
                         text.replace("[\n", "[ \n", 1), text[:first_break] + " " + text[first_break:]):
        assert module._canonical_entries(other_layout, lambda k, v: (k, v), {}) is None, other_layout[:80]
    fast = EbpfArtifacts(texts)
    slow = EbpfArtifacts({name: json.dumps(json.loads(text), indent=1) for name, text in texts.items()})
    assert fast.ipcache.entries == slow.ipcache.entries
    assert {n: m.entries for n, m in fast.maps.items()} == {n: m.entries for n, m in slow.maps.items()}
    lines = texts[policy].splitlines()
    broken = dict(texts)
    broken[policy] = "\n".join([lines[0], lines[1].replace('"key":["0x', '"key":["0xg', 1), *lines[2:]])
    with pytest.raises(ArtifactError, match=rf"{policy}: (entry 0|not JSON)"):
        EbpfArtifacts(broken)
    short = lines[1].replace('","0x00"],"value"', '"],"value"', 1)  # an 11-byte key
    broken[policy] = "\n".join([lines[0], short, *lines[2:]])
    with pytest.raises(ArtifactError, match=rf"{policy}: entry 0: .*12 bytes"):
        EbpfArtifacts(broken)


# --- agreement with the IR evaluator --------------------------------------------------------------

def _check(inputs: Inputs, profile: Profile, flows: list[Flow]) -> None:
    ir = build_ir(inputs, profile)
    target = EbpfTarget(ir)
    files = target.emit()
    assert not target.problems, [str(p) for p in target.problems]
    sim, evaluator = EbpfSimulator(EbpfArtifacts(files)), IREvaluator(ir)
    failures = []
    for flow in flows:
        diff = compare_with_ir(evaluator.evaluate(flow), sim.evaluate(flow))
        if diff:
            failures.append(f"{flow.src} -> {flow.dst} {flow.protocol.name}/{flow.port}: {diff}")
    assert not failures, f"{len(failures)} of {len(flows)} flows differ:\n" + "\n".join(failures[:20])


def _pairs(inputs: Inputs, ports: list[PortSpec], extra: tuple[str, ...] = ()) -> list[Flow]:
    addresses = [ep.addresses[0] for ep in inputs.cluster.endpoints if ep.ips]
    addresses += [inputs.cluster.node_address, *(ipaddress.ip_address(a) for a in extra)]
    return [Flow(s, d, p.protocol, p.port) for s, d in itertools.product(addresses, addresses) for p in ports]


@pytest.mark.parametrize("profile", list(Profile))
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_simulation_equals_ir_on_every_example(example: Path, profile: Profile) -> None:
    ports = [PortSpec.parse(p) for p in (example / "ports").read_text().split()]
    ports.append(PortSpec(8, Protocol.ICMP))
    inputs = load_inputs([str(example)])
    _check(inputs, profile, _pairs(inputs, ports, ("8.8.8.8", "10.1.2.3", "169.254.169.254", "192.168.1.1")))


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_simulation_equals_ir_on_the_conformance_model(path: Path, tmp_path: Path) -> None:
    case, inputs = load_case(path, tmp_path)
    ports = case_ports(case)
    _check(inputs, Profile.K8S, _pairs(inputs, ports))
