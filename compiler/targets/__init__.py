"""Compilation targets and the one function that writes their artifacts.

Adding a target means writing its module (a :class:`~compiler.targets.base.Target` subclass) and
adding it to :data:`TARGETS`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from compiler import __version__
from compiler.inputs import Inputs
from compiler.ir.model import IR
from compiler.targets.base import Target, TargetError, TargetOptions, Unsupported

#: name → target class, in the order ``--target all`` emits them. Filled by the target modules'
#: registration below; a target whose module is missing is simply not offered.
TARGETS: dict[str, type[Target]] = {}


def register(cls: type[Target]) -> type[Target]:
    TARGETS[cls.name] = cls
    return cls


def _load_targets() -> None:
    import importlib

    for module in ("iptables", "ebpf", "envoy"):
        try:
            importlib.import_module(f"compiler.targets.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"compiler.targets.{module}":
                raise


def available_targets() -> list[str]:
    _load_targets()
    return list(TARGETS)


def emit_targets(
    ir: IR,
    names: Sequence[str],
    options: TargetOptions | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, int]]]:
    """The named targets' files in memory (target → relative path → text) and their counts.

    Raises :class:`TargetError` with every construct any of them cannot express.
    """
    _load_targets()
    problems: list[Unsupported] = []
    artifacts: dict[str, dict[str, str]] = {}
    counts: dict[str, dict[str, int]] = {}
    for name in names:
        target = TARGETS[name](ir, options)
        progress(f"emitting {name}")
        files = target.emit()
        problems.extend(target.problems)
        artifacts[name] = files
        counts[name] = target.counts()
    if problems:
        raise TargetError(problems)
    return artifacts, counts


def compile_targets(
    inputs: Inputs,
    ir: IR,
    names: Sequence[str],
    out: Path,
    options: TargetOptions | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, dict[str, str]]:
    """Emit the named targets into ``out`` atomically: everything is written, or nothing.

    Files go to a staging directory beside ``out`` and are moved into place only when every
    target succeeded, so a failure never leaves a partial artifact behind.
    """
    artifacts, counts = emit_targets(ir, names, options, progress)
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".netpolc-", dir=out))
    try:
        for name, files in artifacts.items():
            for rel, text in sorted(files.items()):
                path = staging / name / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        (staging / "manifest.json").write_text(_manifest(inputs, ir, artifacts, counts))
        for name in artifacts:
            final = out / name
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging / name, final)
        os.replace(staging / "manifest.json", out / "manifest.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return artifacts


def _manifest(inputs: Inputs, ir: IR, artifacts: dict[str, dict[str, str]], counts: dict[str, dict[str, int]]) -> str:
    doc = {
        "tool": {"name": "netpolc", "version": __version__},
        "profile": ir.profile.value,
        "inputs": [{"path": f.path, "sha256": f.sha256} for f in inputs.files],
        "cluster": {
            "namespaces": len(inputs.cluster.namespaces),
            "endpoints": len(inputs.cluster.endpoints),
            "identities": len(ir.identities.identities()),
            "node_ip": inputs.cluster.node_ip,
            "pod_cidrs": list(inputs.cluster.pod_cidrs),
        },
        "policies": len(inputs.policies),
        "targets": {
            name: {
                "files": {rel: hashlib.sha256(text.encode()).hexdigest() for rel, text in sorted(files.items())},
                "counts": counts[name],
            }
            for name, files in artifacts.items()
        },
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


__all__ = [
    "TARGETS",
    "Target",
    "TargetError",
    "TargetOptions",
    "Unsupported",
    "available_targets",
    "compile_targets",
    "emit_targets",
    "register",
]
