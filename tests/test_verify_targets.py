"""The iptables ≡ eBPF proof: proved on every example and conformance case (both profiles), and
a counterexample, confirmed by both simulators, for each kind of corrupted artifact.

The mutations are the issue's list for the L3/L4 targets: drop a rule, flip a mark, widen an
ipset, change a port prefix length, drop a deny entry. Each is applied to one artifact file only,
so the other target still says what the policy means and the proof must tell them apart.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from compiler.flow import Profile
from compiler.inputs import Inputs, load_inputs
from compiler.ir.build import build_ir
from compiler.synth import Scale, generate, write
from compiler.targets import emit_targets
from compiler.targets.ebpf.layout import PolicyEntry, PolicyKey, parse_hex_bytes, policy_dump_entry
from tests.conformance_cases import CASES, load_case
from verifier.encoding.targets import composable
from verifier.proofs import ProofContext, ProofResult, SourceSpec, Status, iptables_ebpf
from verifier.proofs.address_classes import address_classes

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())
Files = dict[str, dict[str, str]]


def _files(inputs: Inputs, profile: Profile = Profile.CILIUM) -> Files:
    return emit_targets(build_ir(inputs, profile), ["iptables", "ebpf"])[0]


def _prove(files: Files, inputs: Inputs) -> ProofResult:
    return iptables_ebpf.prove(ProofContext(files, inputs.cluster, jobs=1))


@pytest.mark.parametrize("profile", list(Profile))
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_proved(example: Path, profile: Profile) -> None:
    inputs = load_inputs([str(example)])
    result = _prove(_files(inputs, profile), inputs)
    assert result.status is Status.PROVED, result.to_json()
    classes = address_classes(_files(inputs, profile), inputs.cluster, ("iptables", "ebpf"), None)
    assert result.slices == _half_slices(len(classes.members))


def _generated(tmp_path: Path) -> Inputs:
    """A generated cluster whose deployments have several replicas (classes of 3 and more)."""
    return load_inputs([str(p) for p in write(generate(Scale(60, 3, 12, seed=3)), tmp_path)])


def test_one_address_of_each_class_is_sliced_and_the_others_are_stood_for(tmp_path: Path) -> None:
    inputs = _generated(tmp_path)
    files = _files(inputs)
    classes = address_classes(files, inputs.cluster, ("iptables", "ebpf"), None)
    excluded = classes.excluded[4]
    assert excluded and len(classes.members) < len(inputs.cluster.endpoints)
    assert sum(len(m) for m in classes.members.values()) == len(inputs.cluster.endpoints)
    result = _prove(files, inputs)
    assert result.status is Status.PROVED, result.to_json()
    assert result.slices == _half_slices(len(classes.members))


def test_classes_computed_with_a_forked_process_are_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With jobs, the iptables signatures come from a forked process as numbers: the classes
    (members, exclusions, second members) are those computed in one process."""
    import verifier.proofs.address_classes as module

    inputs = _generated(tmp_path)
    files = _files(inputs)
    spec = SourceSpec(inputs, Profile.CILIUM)
    alone = address_classes(files, inputs.cluster, ("iptables", "ebpf", "source"), spec)
    monkeypatch.setattr(module, "FORK_FROM", 0)
    forked = address_classes(files, inputs.cluster, ("iptables", "ebpf", "source"), spec, jobs=2)
    assert forked == alone and len(alone.members) < len(inputs.cluster.endpoints)


def _half_slices(classes: int) -> int:
    """Per class two halves towards classes and the outside, and the node's two whole flows;
    then the outside's two halves and two node flows (no whole-flow retries)."""
    return 6 * classes + 4


def test_a_layout_that_is_not_two_halves_is_proved_by_whole_flows(tmp_path: Path) -> None:
    """An ACCEPT after the filter chain keeps the semantics but is outside the composition
    lemma: the proof says why in composable() and slices whole flows instead."""
    inputs = _generated(tmp_path)
    files = _edit(_files(inputs), "iptables", "rules.v4",
                  lambda t: t.replace("-A FORWARD -j NPC-POLICY\n", "-A FORWARD -j NPC-POLICY\n-A FORWARD -j ACCEPT\n"))
    assert "FORWARD" in (composable(files) or "")
    assert composable(_files(inputs)) is None
    classes = address_classes(files, inputs.cluster, ("iptables", "ebpf"), None)
    result = _prove(files, inputs)
    assert result.status is Status.PROVED, result.to_json()
    assert result.slices == 4 * len(classes.members) + 3


def test_an_egress_chain_that_accepts_is_re_proved_as_whole_flows_and_found(tmp_path: Path) -> None:
    """An egress chain that ACCEPTs instead of dropping skips the destination's ingress: its
    half is not composable (checked while building it), so the slice is re-proved as whole
    flows, which find the flows the ingress side should have dropped."""
    inputs = _generated(tmp_path)
    files = _files(inputs)
    result = _prove(_accepting_egress_chain(files), inputs)
    assert result.status is Status.COUNTEREXAMPLE, result.to_json()
    assert any("(whole flows)" in c.slice for c in result.counterexamples), result.to_json()


def test_a_change_to_an_excluded_member_splits_its_class_and_is_found(tmp_path: Path) -> None:
    """Dropping one replica's entry from its identity set gives that address a signature of its
    own, so the proof slices it and the counterexample names it."""
    inputs = _generated(tmp_path)
    files = _files(inputs)
    excluded = sorted(address_classes(files, inputs.cluster, ("iptables", "ebpf"), None).excluded[4])
    target = str(ipaddress.IPv4Address(excluded[-1]))

    def drop(text: str) -> str:
        return "".join(line for line in text.splitlines(keepends=True)
                       if not (line.startswith("add NPC4-id-") and line.rstrip().endswith(f" {target}")))

    result = _prove(_edit(files, "iptables", "ipsets.v4", drop), inputs)
    assert result.status is Status.COUNTEREXAMPLE, result.to_json()
    assert all(target in (c.src, c.dst) for c in result.counterexamples), result.to_json()


@pytest.mark.parametrize("profile", list(Profile))
def test_every_conformance_case_is_proved(profile: Profile, tmp_path: Path) -> None:
    failures = []
    for path in CASES:
        _, inputs = load_case(path, tmp_path)
        result = _prove(_files(inputs, profile), inputs)
        if result.status is not Status.PROVED:
            failures.append((path.stem, result.to_json()))
    assert not failures


# --- mutations --------------------------------------------------------------------------------

def _accepting_egress_chain(files: Files) -> Files:
    """``files`` with one egress chain's DROPs turned into ACCEPTs: a change that skips the
    destination's ingress, so the chain's half is not composable."""
    chain = next(line.split()[1] for line in files["iptables"]["rules.v4"].splitlines()
                 if line.startswith("-A NPC-E-") and line.endswith("-j DROP"))

    def accept(text: str) -> str:
        return "".join(line.replace("-j DROP", "-j ACCEPT") if line.startswith(f"-A {chain} ") else line
                       for line in text.splitlines(keepends=True))

    return _edit(files, "iptables", "rules.v4", accept)


def _edit(files: Files, target: str, name: str, edit: Callable[[str], str]) -> Files:
    out = {t: dict(f) for t, f in files.items()}
    before = out[target][name]
    out[target][name] = edit(before)
    assert out[target][name] != before, f"mutation did not apply to {target}/{name}"
    return out


def _drop_rule(text: str) -> str:
    """Drop the first policy rule that grants an allow (a MARK of the ALLOW bit with a policy comment)."""
    lines = text.splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines)
                 if "NetworkPolicy" in line and "--set-xmark 0x1000000/0x1000000" in line)
    return "".join(lines[:index] + lines[index + 1:])


def _flip_mark(text: str) -> str:
    """Turn one allow into a deny: the policy rule sets the DENY bit instead of ALLOW."""
    lines = text.splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines)
                 if "NetworkPolicy" in line and "--set-xmark 0x1000000/0x1000000" in line)
    lines[index] = lines[index].replace("0x1000000/0x1000000", "0x2000000/0x2000000")
    return "".join(lines)


def _widen_ipset(text: str) -> str:
    """Add an outside address to the first identity set that grants something."""
    match = re.search(r"^create (NPC4-id-\d+) hash:ip", text, re.M)
    assert match is not None
    return text + f"add {match.group(1)} 198.51.100.7\n"


def _rewrite_map(text: str, change: Callable[[PolicyKey, PolicyEntry], tuple[PolicyKey, PolicyEntry] | None]) -> str:
    """Apply ``change`` to the first entry it accepts (None: not this one; a key of None drops it)."""
    docs = json.loads(text)
    for i, doc in enumerate(docs):
        key = PolicyKey.decode(parse_hex_bytes(doc["key"], "key"))
        entry = PolicyEntry.decode(parse_hex_bytes(doc["value"], "value"))
        changed = change(key, entry)
        if changed is None:
            continue
        if changed[0].port_prefix < 0:
            del docs[i]
        else:
            docs[i] = policy_dump_entry(*changed)
        return "[\n" + ",\n".join(json.dumps(d, sort_keys=True, separators=(",", ":")) for d in docs) + "\n]\n"
    raise AssertionError("no entry to change")


def _shorter_port_prefix(key: PolicyKey, entry: PolicyEntry) -> tuple[PolicyKey, PolicyEntry] | None:
    """An exact-port L4-only ingress allow (prefix 8 + 16) becomes a /8 port prefix: 256 ports.
    (Ingress from any identity, so a source in the world, with no egress side, sees the change.)"""
    if key.port_prefix != 24 or entry.deny or key.identity != 0 or key.egress != 0:
        return None
    return replace(key, port=key.port & 0xFF00, port_prefix=16), replace(entry, port_prefix=16)


def _drop_deny(key: PolicyKey, entry: PolicyEntry) -> tuple[PolicyKey, PolicyEntry] | None:
    if not entry.deny:
        return None
    return replace(key, port_prefix=-1), entry


def _map_with(files: Files, wanted: Callable[[PolicyKey, PolicyEntry], object]) -> str:
    """The first policy-map file with an entry ``wanted`` accepts."""
    for name in sorted(files["ebpf"]):
        if name.startswith("cilium_policy_v2_"):
            for doc in json.loads(files["ebpf"][name]):
                key = PolicyKey.decode(parse_hex_bytes(doc["key"], "key"))
                entry = PolicyEntry.decode(parse_hex_bytes(doc["value"], "value"))
                if wanted(key, entry) is not None:
                    return name
    raise AssertionError("no map has such an entry")


MUTATIONS: dict[str, tuple[str, Callable[[Files], Files]]] = {
    "drop a rule": ("shop", lambda f: _edit(f, "iptables", "rules.v4", _drop_rule)),
    "flip a mark": ("shop", lambda f: _edit(f, "iptables", "rules.v4", _flip_mark)),
    "widen an ipset": ("shop", lambda f: _edit(f, "iptables", "ipsets.v4", _widen_ipset)),
    "change a port prefix length": ("shop", lambda f: _edit(
        f, "ebpf", _map_with(f, _shorter_port_prefix), lambda t: _rewrite_map(t, _shorter_port_prefix))),
    "drop a deny entry": ("multi-tenant", lambda f: _edit(
        f, "ebpf", _map_with(f, _drop_deny), lambda t: _rewrite_map(t, _drop_deny))),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_a_corrupted_artifact_gives_a_counterexample_both_simulators_confirm(mutation: str) -> None:
    example, mutate = MUTATIONS[mutation]
    inputs = load_inputs([str(ROOT / "examples" / example)])
    files = _files(inputs)
    assert _prove(files, inputs).status is Status.PROVED
    result = _prove(mutate(files), inputs)
    assert result.status is Status.COUNTEREXAMPLE, result.to_json()
    example_ = result.counterexamples[0]
    left, right = example_.sides
    assert (left.name, right.name) == ("iptables", "ebpf") and left.verdict != right.verdict
    assert left.trace and right.trace


def test_cli_verify_exit_codes_and_formats(tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "compiler.cli", *args], capture_output=True, text=True,
                              cwd=ROOT)

    shop = str(ROOT / "examples" / "shop")
    out = tmp_path / "out"
    assert cli("compile", "-f", shop, "-o", str(out)).returncode == 0
    proved = cli("verify", "-f", shop, "--artifacts", str(out), "-o", "json", "-j", "2")
    assert proved.returncode == 0, proved.stderr
    doc = json.loads(proved.stdout)
    assert doc["exit"] == 0 and {p["name"]: p["status"] for p in doc["proofs"]} == {
        "iptables-ebpf": "proved", "ebpf-source": "proved", "iptables-source": "proved", "envoy-source": "proved"}
    rules = out / "iptables" / "rules.v4"
    rules.write_text(_drop_rule(rules.read_text()))
    broken = cli("verify", "-f", shop, "--artifacts", str(out), "-o", "markdown")
    assert broken.returncode == 1 and "**counterexample**" in broken.stdout and "<details>" in broken.stdout
    text = cli("verify", "-f", shop, "--artifacts", str(out))
    assert text.returncode == 1 and text.stdout.startswith("COUNTEREXAMPLE iptables-ebpf")
    other = cli("verify", "-f", str(ROOT / "examples" / "grpc"), "--artifacts", str(out))
    assert other.returncode == 2 and "other inputs" in other.stderr
    profile = cli("verify", "-f", shop, "--artifacts", str(out), "--profile", "k8s")
    assert profile.returncode == 2 and "--profile cilium" in profile.stderr
    rules.write_text("*filter\n-A NOPE -j NOWHERE\n")
    bad = cli("verify", "-f", shop, "--artifacts", str(out))
    assert bad.returncode == 2 and "rules.v4" in bad.stderr and "Traceback" not in bad.stderr
    assert cli("verify", "-f", shop, "--proof", "nope").returncode == 2


def test_z3_is_imported_only_under_verifier_encoding() -> None:
    offenders = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", ".venv") or rel.parts[:2] == ("verifier", "encoding"):
            continue
        if re.search(r"^\s*(import z3|from z3\b)", path.read_text(), re.M):
            offenders.append(str(rel))
    assert not offenders
