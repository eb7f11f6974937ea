"""Host-side plumbing for the TC datapath: build the object, a private bpffs per run, bpftool and test runs.

- :func:`build_object` compiles ``policy.bpf.c`` with ``clang -O2 -g -target bpf``, cached by a
  hash of the source, the compiler version and the flags (so edits rebuild, reruns do not).
- :class:`BpfFs` mounts a fresh bpffs instance at ``/run/netpolc-bpf/<run id>``: every pin of a
  run lives there, and unmounting it releases them all at once. It is not ``/sys/fs/bpf`` because
  ``ip netns exec`` remounts ``/sys`` (the pins would vanish inside the testbed's namespaces) and
  because one mount per run cannot collide with another run. :func:`cleanup_stale_bpffs`
  unmounts the directories of runs whose owner process is gone.
- :func:`bpftool`, :func:`bpftool_batch` (one process for thousands of map updates),
  :func:`prog_run` (``BPF_PROG_TEST_RUN`` through ``bpftool prog run``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.kernel import netns as ns

HERE = Path(__file__).resolve().parent
POLICY_SOURCE = HERE / "policy.bpf.c"
#: One bpffs mount per run below this directory.
BPFFS_ROOT = Path("/run/netpolc-bpf")
CFLAGS = ("-O2", "-g", "-target", "bpf", "-Wall", "-Werror")
#: Tools the eBPF testbed needs on top of the namespace testbed's.
TOOLS = ("clang", "bpftool", "tc")


class BpfToolError(RuntimeError):
    """A tool is missing or a BPF step (compile, load, map update, attach) failed; the message says which."""


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def require_tools() -> None:
    """Raise :class:`BpfToolError` naming the missing commands and the packages that provide them."""
    missing = missing_tools()
    if missing:
        raise BpfToolError(
            f"missing commands: {', '.join(missing)} "
            "(install clang, bpftool (Debian: bpftool / linux-tools) and iproute2; libbpf-dev for the headers)"
        )


def _include_dirs() -> list[str]:
    """``-I`` for the multiarch directory holding ``asm/types.h`` (``-target bpf`` does not add it)."""
    machine = platform.machine()
    candidates = [Path(f"/usr/include/{machine}-linux-gnu"), Path(f"/usr/include/{machine}-linux-musl")]
    return [f"-I{d}" for d in candidates if (d / "asm" / "types.h").exists()]


@functools.cache
def _clang_version() -> str:
    proc = subprocess.run(["clang", "--version"], capture_output=True, text=True, check=False)
    return proc.stdout.splitlines()[0] if proc.stdout else ""


def build_object(source: Path = POLICY_SOURCE, *, cache_dir: Path | None = None) -> Path:
    """Compile a ``*.bpf.c`` file; return the cached object (rebuilt only when an input changes)."""
    require_tools()
    text = source.read_bytes()
    flags = [*CFLAGS, *_include_dirs()]
    digest = hashlib.sha256(text + _clang_version().encode() + " ".join(flags).encode()).hexdigest()[:16]
    root = cache_dir or Path(tempfile.gettempdir()) / "netpolc-bpf-cache"
    obj = root / digest / (source.name.removesuffix(".c") + ".o")
    if obj.exists():
        return obj
    obj.parent.mkdir(parents=True, exist_ok=True)
    tmp = obj.with_name(f".{obj.name}.{os.getpid()}")
    proc = subprocess.run(
        ["clang", *flags, "-c", str(source), "-o", str(tmp)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise BpfToolError(f"clang could not compile {source}:\n{proc.stderr.strip()}")
    tmp.replace(obj)  # atomic: a parallel build never sees half an object
    return obj


# --- bpftool --------------------------------------------------------------------------------


def bpftool(args: Sequence[str], *, json_output: bool = False, timeout: float = ns.COMMAND_TIMEOUT) -> Any:
    """Run ``bpftool ARGS``; with ``json_output`` parse its ``-j`` output. Failures raise :class:`BpfToolError`."""
    argv = ["bpftool", *(["-j"] if json_output else []), *args]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
    if proc.returncode != 0:
        raise BpfToolError(f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()}")
    return json.loads(proc.stdout) if json_output else proc.stdout


def bpftool_batch(lines: Sequence[str], workdir: Path) -> None:
    """Run many bpftool commands in one process (``bpftool batch file``); the error names the failing line."""
    if not lines:
        return
    path = workdir / "batch.txt"
    path.write_text("\n".join(lines) + "\n")
    proc = subprocess.run(
        ["bpftool", "batch", "file", str(path)], capture_output=True, text=True, check=False, timeout=600
    )
    if proc.returncode != 0:
        raise BpfToolError(f"bpftool batch ({len(lines)} commands) failed: {(proc.stderr or proc.stdout).strip()}")


def hex_words(data: bytes) -> str:
    """``hex 0c 00 …`` as bpftool's command line wants key and value bytes."""
    return "hex " + " ".join(f"{b:02x}" for b in data)


def map_dump(pinned: Path) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a pinned map, as raw bytes."""
    out = []
    for entry in bpftool(["map", "dump", "pinned", str(pinned)], json_output=True):
        out.append((bytes(int(b, 16) for b in entry["key"]), bytes(int(b, 16) for b in entry["value"])))
    return out


@dataclass(frozen=True)
class TestRun:
    """The result of ``bpftool prog run``: the program's return value and the average run time."""

    __test__ = False  # not a pytest class

    retval: int
    ns_per_run: float


_RUN_RE = re.compile(r"Return value:\s*(-?\d+),\s*duration(?: \(average\))?:\s*(\d+)ns")


def prog_run(prog: Path, packet: bytes, workdir: Path, *, repeat: int = 1) -> TestRun:
    """Run a pinned program on one packet with ``BPF_PROG_TEST_RUN`` (no attachment needed)."""
    data = workdir / "packet.bin"
    data.write_bytes(packet)
    args = ["prog", "run", "pinned", str(prog), "data_in", str(data)]
    if repeat > 1:
        args += ["repeat", str(repeat)]
    text = bpftool(args)
    match = _RUN_RE.search(text)
    if match is None:
        raise BpfToolError(f"unexpected `bpftool prog run` output: {text.strip()!r}")
    return TestRun(int(match.group(1)), float(match.group(2)))


# --- a private bpffs per run -----------------------------------------------------------------


def _is_mountpoint(path: Path) -> bool:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[1] == str(path):
                return True
    return False


class BpfFs:
    """A bpffs instance mounted at ``/run/netpolc-bpf/<run id>`` for one run's pins; :meth:`close` unmounts it.

    A fresh mount is a fresh instance, so nothing of another run is visible in it and unmounting
    drops every pin of this run (objects still attached, e.g. tc filters, live on until detached).
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = ns.check_run_id(run_id)
        self.path = BPFFS_ROOT / run_id
        self._mounted = False

    def __enter__(self) -> BpfFs:
        self.mount()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def mount(self) -> None:
        if self._mounted:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        if not _is_mountpoint(self.path):
            ns.run(["mount", "-t", "bpf", "bpf", str(self.path)])
        self._mounted = True

    def close(self) -> None:
        """Unmount (lazily, so a busy pin cannot block cleanup) and remove the directory. Idempotent."""
        if _is_mountpoint(self.path):
            ns.run(["umount", "-l", str(self.path)], check=False)
        with contextlib.suppress(FileNotFoundError, OSError):
            self.path.rmdir()
        self._mounted = False


def cleanup_stale_bpffs(*, force: bool = False) -> list[str]:
    """Unmount the bpffs directories of runs whose owner is gone (all of them with ``force``); return their ids."""
    removed: list[str] = []
    if not BPFFS_ROOT.is_dir():
        return removed
    for entry in sorted(BPFFS_ROOT.iterdir()):
        if not re.fullmatch(r"[0-9a-f]{6}", entry.name):
            continue
        if force or not ns._owner_alive(entry.name):  # the testbed's run-ownership record
            BpfFs(entry.name).close()
            removed.append(entry.name)
    return removed


@contextlib.contextmanager
def private_bpffs() -> Iterator[BpfFs]:
    """A fresh bpffs for one measurement, claimed by this process for its lifetime (the mounts of
    runs whose owner died are removed first)."""
    cleanup_stale_bpffs()
    run_id = ns.new_run_id()
    ns.claim_run(run_id)  # so cleanup_stale_bpffs of another process leaves this mount alone
    try:
        with BpfFs(run_id) as fs:
            yield fs
    finally:
        ns.release_run(run_id)


@functools.cache
def ebpf_unavailable_reason() -> str | None:
    """Why the eBPF datapath cannot run here (None when it can): the namespace testbed's reasons,
    missing tools, or a kernel that refuses to mount bpffs or load the program."""
    reason = ns.kernel_unavailable_reason(TOOLS)
    if reason:
        return reason
    run_id = ns.new_run_id()
    try:
        ns.claim_run(run_id)
        obj = build_object()
        with BpfFs(run_id) as fs:
            bpftool(["prog", "loadall", str(obj), str(fs.path / "progs"), "pinmaps", str(fs.path / "maps")])
    except (BpfToolError, ns.KernelError, OSError) as err:
        return f"cannot load the TC datapath: {err}"
    finally:
        ns.release_run(run_id)
    return None
