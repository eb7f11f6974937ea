"""The CLI over compiled targets: `matrix --target iptables|ebpf`, `query --target`, `testbed`.

`matrix --target T` simulates T's artifacts read back from the files `compile` wrote; on every
example, under both profiles, it must print exactly the IR's matrix. `testbed` (kernel) must find
the kernel in agreement with simulate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compiler.cli import main

ROOT = Path(__file__).parent.parent
EXAMPLES = sorted(p for p in (ROOT / "examples").iterdir() if p.is_dir())


def _ports(example: Path) -> list[str]:
    text = (example / "ports").read_text().split("#")[0]
    return [f"--port={p}" for p in text.split()]


def _matrix(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["matrix", *argv, "-o", "json"]) == 0
    doc: dict[str, object] = json.loads(capsys.readouterr().out)
    return doc


@pytest.mark.parametrize("target", ["iptables", "ebpf"])
@pytest.mark.parametrize("profile", ["cilium", "k8s"])
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_matrix_of_a_compiled_target_equals_the_ir(
    example: Path, profile: str, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["-f", str(example), "--profile", profile, *_ports(example)]
    assert _matrix(capsys, *args, "--target", target) == _matrix(capsys, *args)


def test_matrix_reads_artifacts_from_a_compile_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    example = ROOT / "examples" / "shop"
    assert main(["compile", "-f", str(example), "-o", str(tmp_path)]) == 0
    capsys.readouterr()
    args = ["-f", str(example), *_ports(example)]
    for target in ("iptables", "ebpf"):
        assert _matrix(capsys, *args, "--target", target, "--artifacts", str(tmp_path)) == _matrix(capsys, *args)
    assert main(["matrix", *args, "--target", "ebpf", "--artifacts", str(tmp_path / "nothing")]) == 2


def test_query_shows_every_target_with_trace_and_cost(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["query", "-f", str(ROOT / "examples" / "shop"), "--from", "shop/frontend-0", "--to", "shop/api-0"]
    assert main([*argv, "--port", "9090/TCP", "--target", "all", "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    targets = {t["target"]: t for t in doc["targets"]}
    assert set(targets) == {"iptables", "ebpf"}
    assert all(t["agrees"] and t["kind"] == "allowed" for t in targets.values())
    assert targets["iptables"]["cost"]["rules_evaluated"] > 0 and targets["ebpf"]["cost"]["policy_lookups"] > 0
    assert main([*argv, "--port", "5432/TCP", "--target", "iptables"]) == 0
    out = capsys.readouterr().out
    assert "target iptables: dropped" in out and "rules evaluated" in out


@pytest.mark.kernel
@pytest.mark.parametrize("target", ["iptables", "ebpf"])
def test_testbed_command_finds_kernel_equal_to_simulate(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    from verifier.kernel import kernel_unavailable_reason

    reason = kernel_unavailable_reason(["iptables-restore", "ipset", "tc", "bpftool", "clang"])
    if reason is not None:
        pytest.skip(reason)
    example = ROOT / "examples" / "multi-tenant"
    code = main(["testbed", "-f", str(example), "--target", target, *_ports(example)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"kernel == simulate ({target})" in out
