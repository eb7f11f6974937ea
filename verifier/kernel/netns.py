"""Network-namespace plumbing for the kernel testbed: commands, names, availability, stale cleanup.

Everything that touches the host runs through here so the rest of :mod:`verifier.kernel` never
shells out directly. Namespaces this package creates are named ``npc-<run id>-<role>`` and each run
records its owner PID in :data:`STATE_DIR`, so :func:`cleanup_stale` can remove the leftovers of a
crashed run without touching a run that is still alive (for instance a parallel test worker).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: Every namespace the testbed creates starts with this.
PREFIX = "npc-"
#: One file per live run (``<run id>.pid``, holding the owner's PID).
STATE_DIR = Path("/run/netpolc-testbed")
#: Default time limit for one host command.
COMMAND_TIMEOUT = 60.0

#: Exactly the names this package makes (other tools' ``npc-…`` namespaces are never touched).
_NAME_RE = re.compile(r"^npc-([0-9a-f]{6})-(node|world|check|cal|e[0-9]+)$")


class KernelError(RuntimeError):
    """A host command failed; carries the command line and its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"`{' '.join(self.argv)}` failed with exit code {returncode}: {self.stderr}")


def run(
    argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = COMMAND_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run a host command, capturing text output; raise :class:`KernelError` on failure if ``check``."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise KernelError(argv, proc.returncode, proc.stderr or proc.stdout)
    return proc


def exec_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """The command line that runs ``argv`` inside ``netns``."""
    return ["ip", "netns", "exec", netns, *argv]


def ip_batch(lines: Sequence[str], *, netns: str | None = None, force: bool = False) -> None:
    """Run many ``ip`` commands in one process (``ip [-n NS] -batch -``): one fork instead of hundreds.

    Without ``force`` the batch stops at the first failing line and the error names it.
    """
    if not lines:
        return
    argv = ["ip"]
    if netns is not None:
        argv += ["-n", netns]
    if force:
        argv.append("-force")
    argv += ["-batch", "-"]
    run(argv, input="\n".join(lines) + "\n", check=not force)


def run_many(commands: Sequence[tuple[Sequence[str], str | None]]) -> None:
    """Run independent host commands (argv, stdin text) all at once; raise for the first that failed."""
    if not commands:
        return
    with ThreadPoolExecutor(max_workers=min(32, len(commands))) as pool:
        futures = [pool.submit(run, argv, input=text, check=False) for argv, text in commands]
        procs = [f.result() for f in futures]
    for (argv, _), proc in zip(commands, procs, strict=True):
        if proc.returncode != 0:
            raise KernelError(argv, proc.returncode, proc.stderr or proc.stdout)


def ip_batch_many(batches: Mapping[str, Sequence[str]]) -> None:
    """Run one ``ip -n NS -batch -`` per namespace, all at once."""
    run_many([(["ip", "-n", netns, "-batch", "-"], "\n".join(lines) + "\n") for netns, lines in batches.items()])


def sysctl_argv(netns: str, settings: Mapping[str, str]) -> list[str]:
    """The command setting sysctls inside a namespace (``/proc/sys/net`` is per namespace)."""
    return exec_argv(netns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())])


def sysctl(netns: str, settings: Mapping[str, str]) -> None:
    """Set sysctls inside a namespace."""
    if settings:
        run(sysctl_argv(netns, settings))


def list_namespaces() -> list[str]:
    """Names of all named network namespaces (``ip netns list``)."""
    out = run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def add_namespaces(names: Iterable[str]) -> None:
    """Create named namespaces in one ``ip -batch`` call."""
    ip_batch([f"netns add {name}" for name in names])


def namespace_pids(netns: str) -> list[int]:
    """PIDs of the processes living in a namespace."""
    out = run(["ip", "netns", "pids", netns], check=False).stdout
    return [int(tok) for tok in out.split() if tok.isdigit()]


def delete_namespaces(names: Iterable[str], *, kill: bool = False) -> None:
    """Delete named namespaces, ignoring ones already gone; with ``kill``, first SIGKILL what runs in them.

    The kernel frees a namespace when its last reference goes; deleting the name only drops the
    bind mount, so processes left inside would keep it (and their sockets) alive.
    """
    names = [n for n in names if n.startswith(PREFIX)]
    if kill:
        for name in names:
            for pid in namespace_pids(name):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    ip_batch([f"netns del {name}" for name in names], force=True)


def new_run_id() -> str:
    """A short random id for one testbed run (six hex digits: short names, negligible clashes)."""
    return secrets.token_hex(3)


def check_run_id(run_id: str) -> str:
    """Validate a caller-chosen run id: it must look like :func:`new_run_id`'s so cleanup finds it."""
    if not re.fullmatch(r"[0-9a-f]{6}", run_id):
        raise ValueError(f"run id {run_id!r} must be six lowercase hex digits")
    return run_id


def run_id_of(netns: str) -> str | None:
    """The run id inside a namespace name this package made, or None for any other name."""
    match = _NAME_RE.match(netns)
    return match.group(1) if match else None


def claim_run(run_id: str) -> None:
    """Record that this process owns ``run_id`` (so :func:`cleanup_stale` leaves it alone)."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    (STATE_DIR / f"{run_id}.pid").write_text(f"{os.getpid()}\n")


def release_run(run_id: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (STATE_DIR / f"{run_id}.pid").unlink()


def _owner_alive(run_id: str) -> bool:
    try:
        pid = int((STATE_DIR / f"{run_id}.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale(*, force: bool = False) -> list[str]:
    """Remove testbed namespaces left by crashed runs (their owner process is gone); return their names.

    Only names of this package's exact form (``npc-<6 hex>-node|world|check|cal|e<N>``) are
    considered. With ``force`` they all go, including those of live runs. Processes still inside
    (listeners orphaned by a SIGKILL) are killed first.
    """
    stale = []
    for name in list_namespaces():
        run_id = run_id_of(name)
        if run_id is not None and (force or not _owner_alive(run_id)):
            stale.append(name)
    delete_namespaces(stale, kill=True)
    for run_id in {run_id_of(name) for name in stale}:
        if run_id and (force or not _owner_alive(run_id)):
            release_run(run_id)
    return stale


#: Tools the testbed itself needs (tests add ``iptables`` and friends).
REQUIRED_TOOLS = ("ip", "sysctl")


@functools.cache
def _namespace_check() -> str | None:
    run_id = new_run_id()
    name = f"{PREFIX}{run_id}-check"
    try:
        claim_run(run_id)
        run(["ip", "netns", "add", name])
    except (KernelError, OSError, subprocess.SubprocessError) as err:
        return f"cannot create a network namespace: {err}"
    try:
        ip_batch(["link set lo up", "link add va type veth peer name vb", "link set va up"], netns=name)
        sysctl(name, {"net.ipv4.ip_forward": "1"})
    except (KernelError, OSError, subprocess.SubprocessError) as err:
        return f"network namespaces work but veth pairs or sysctls do not: {err}"
    finally:
        delete_namespaces([name])
        release_run(run_id)
    return None


def kernel_unavailable_reason(tools: Iterable[str] = ()) -> str | None:
    """Why the kernel testbed cannot run here (None when it can); ``tools`` are extra commands needed.

    Checks, in order: Linux, root, the commands on PATH, then actually creates a namespace with a
    veth pair (the only reliable test: containers often forbid it even to root).
    """
    if not sys.platform.startswith("linux"):
        return f"the kernel testbed needs Linux (this is {sys.platform})"
    if os.geteuid() != 0:
        return "the kernel testbed needs root (network namespaces, veth pairs, netfilter)"
    missing = [tool for tool in (*REQUIRED_TOOLS, *tools) if shutil.which(tool) is None]
    if missing:
        return f"missing commands: {', '.join(missing)} (install iproute2 / procps / iptables / ipset)"
    return _namespace_check()


@functools.cache
def sctp_supported() -> bool:
    """Whether this kernel gives out SCTP sockets (every namespace shares the kernel's protocols)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_STREAM, 132).close()
    except OSError as err:
        if err.errno in (errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT, errno.EAFNOSUPPORT):
            return False
        raise
    return True


#: The far end of :func:`scratch_namespace`'s veth: its default gateway (a static neighbour).
SCRATCH_GATEWAY = "10.200.0.2"


@contextlib.contextmanager
def scratch_namespace(source: str | None = None) -> Iterator[str]:
    """A throw-away namespace for timing packets: ``lo`` up and a veth pair whose one end
    (10.200.0.1/24) carries the default route to :data:`SCRATCH_GATEWAY` through a permanent
    neighbour entry (no ARP); the other end is up and drops what arrives (not local, no
    forwarding). With ``source`` (an IPv4 address), packets leave from it, e.g. a pod's address
    so that kube-proxy's masquerade rules see a pod. Removed on exit, processes inside included."""
    run_id = new_run_id()
    name = f"{PREFIX}{run_id}-cal"
    claim_run(run_id)
    try:
        run(["ip", "netns", "add", name])
        ip_batch(["link set lo up", "link add va type veth peer name vb", "addr add 10.200.0.1/24 dev va",
                  "link set va up", "link set vb up",
                  f"neigh add {SCRATCH_GATEWAY} lladdr 02:00:00:00:00:02 dev va nud permanent",
                  f"route add default via {SCRATCH_GATEWAY} dev va"], netns=name)
        if source is not None:
            ip_batch([f"addr add {source}/32 dev lo",
                      f"route replace default via {SCRATCH_GATEWAY} dev va src {source}"], netns=name)
        yield name
    finally:
        delete_namespaces([name], kill=True)
        release_run(run_id)
