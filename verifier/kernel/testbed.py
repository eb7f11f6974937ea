"""Build a cluster's network out of namespaces and veth pairs, serve ports in it, and always tear it down.

:class:`Testbed` is a context manager: entering builds the layout of :mod:`verifier.kernel.topology`
(namespaces in one ``ip -batch``, the node's links in another, every leaf configured in parallel)
and starts one :mod:`verifier.kernel.listener` per namespace; leaving kills the listeners and
deletes every namespace — also on an exception in the ``with`` block, on SIGINT/SIGTERM (the
handlers clean up, then hand the signal to the previous handler) and at interpreter exit.
Filtering rules (iptables, eBPF) are loaded later into :attr:`Testbed.node_netns` by the loaders;
with none loaded, everything reaches everything.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import FrameType, TracebackType

from compiler.cluster import Cluster
from compiler.flow import PortSpec, Protocol
from verifier.kernel import netns as ns
from verifier.kernel.topology import Site, Topology, plan

HERE = Path(__file__).resolve().parent
LISTENER = HERE / "listener.py"
#: How long a listener may take to bind its ports and say ``ready``.
LISTENER_START_TIMEOUT = 15.0

_SignalHandler = Callable[[int, FrameType | None], object] | int | None


def helper_argv(netns: str, script: Path, args: Sequence[str] = ()) -> list[str]:
    """Run one of our stdlib-only helper scripts inside a namespace with this interpreter.

    ``-I`` (isolated) and ``-S`` (no site) keep start-up to a few milliseconds and independent
    of the caller's environment.
    """
    return ns.exec_argv(netns, [sys.executable, "-I", "-S", str(script), *args])


def served_ports(cluster: Cluster) -> list[PortSpec]:
    """Every TCP/UDP/SCTP port some endpoint declares (the default set a testbed serves)."""
    out: set[PortSpec] = set()
    for ep in cluster.endpoints:
        for port in ep.ports:
            with contextlib.suppress(ValueError):
                out.add(PortSpec(port.port, Protocol.parse(port.protocol)))
    return sorted(out)


class Testbed:
    """A cluster's endpoints as namespaces routed through one node namespace (see module doc)."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self,
        cluster: Cluster,
        *,
        ports: Iterable[PortSpec | str] | None = None,
        world: bool | Sequence[str] = False,
        run_id: str | None = None,
        listen: bool = True,
    ) -> None:
        """Plan a testbed (nothing is built until ``with`` / :meth:`build`).

        ``ports`` are served by a listener in every namespace (default: the ports the endpoints
        declare); ``world`` adds an outside namespace (True for the default documentation
        addresses, or a list of addresses); ``listen=False`` starts no listeners.
        """
        self.cluster = cluster
        self.topology: Topology = plan(cluster, ns.check_run_id(run_id or ns.new_run_id()), world=world)
        chosen = (
            served_ports(cluster) if ports is None else [PortSpec.parse(p) if isinstance(p, str) else p for p in ports]
        )
        self.ports: tuple[PortSpec, ...] = tuple(sorted(set(chosen)))
        self.listen = listen
        self.timings: dict[str, float] = {}
        self.listeners: dict[str, subprocess.Popen[str]] = {}
        self.sctp_served = False
        self._built = False
        self._created: list[str] = []
        self._old_handlers: dict[int, _SignalHandler] = {}
        self._cleanups: list[Callable[[], None]] = []

    # --- names --------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self.topology.run_id

    @property
    def node_netns(self) -> str:
        """The namespace whose FORWARD/INPUT/OUTPUT paths policy rules are loaded into."""
        return self.topology.node.netns

    @property
    def namespaces(self) -> tuple[str, ...]:
        return self.topology.namespaces

    @property
    def build_seconds(self) -> float:
        return self.timings.get("total", 0.0)

    def site(self, label: str) -> Site:
        """The site of an endpoint key, ``host`` or ``world``."""
        return self.topology.site(label)

    def site_of(self, address: object) -> Site | None:
        """The site owning an address (str or ipaddress object), None if nothing here owns it."""
        return self.topology.site_of(str(address))

    def serves(self, port: PortSpec) -> bool:
        """Whether a listener answers on ``port`` in every namespace (SCTP only where the kernel has it)."""
        if port.protocol is Protocol.SCTP and not self.sctp_served:
            return False
        return self.listen and port in self.ports

    # --- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Testbed:
        self.build()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    def build(self) -> None:
        """Create namespaces, links, addresses, routes and listeners; on any failure clean up and re-raise."""
        if self._built:
            raise RuntimeError("testbed already built")
        self._built = True
        self._install_handlers()
        atexit.register(self.cleanup)
        start = time.monotonic()
        try:
            self._build(start)
        except BaseException:
            self.cleanup()
            raise
        self.timings["total"] = time.monotonic() - start

    def _build(self, start: float) -> None:
        topo = self.topology
        ns.claim_run(topo.run_id)
        names = list(topo.namespaces)
        clash = set(names) & set(ns.list_namespaces())
        if clash:
            raise ns.KernelError(["ip", "netns", "add"], 1, f"namespaces already exist: {sorted(clash)}")
        self._created = names  # before creation: a half-made batch is still cleaned up
        ns.add_namespaces(names)
        self.timings["namespaces"] = time.monotonic() - start
        mark = time.monotonic()
        sysctls = [(ns.sysctl_argv(topo.node.netns, topo.node_sysctls()), None)]
        if topo.world is not None:
            sysctls.append((ns.sysctl_argv(topo.world.netns, topo.leaf_sysctls()), None))
        ns.run_many(sysctls)
        self.timings["sysctl"] = time.monotonic() - mark
        mark = time.monotonic()
        ns.ip_batch(topo.node_script(), netns=topo.node.netns)
        self.timings["node_links"] = time.monotonic() - mark
        mark = time.monotonic()
        ns.ip_batch_many({site.netns: topo.leaf_script(site) for site in topo.leaves})
        self.timings["leaf_config"] = time.monotonic() - mark
        if self.listen and self.ports:
            mark = time.monotonic()
            self._start_listeners()
            self.timings["listeners"] = time.monotonic() - mark

    def _start_listeners(self) -> None:
        by_proto: dict[Protocol, list[int]] = {}
        for port in self.ports:
            by_proto.setdefault(port.protocol, []).append(port.port)
        self.sctp_served = bool(by_proto.get(Protocol.SCTP)) and ns.sctp_supported()
        args: list[str] = []
        for proto in (Protocol.TCP, Protocol.UDP) + ((Protocol.SCTP,) if self.sctp_served else ()):
            if by_proto.get(proto):
                args += [f"--{proto.name.lower()}", ",".join(map(str, by_proto[proto]))]
        if not args:
            return
        for site in self.topology.sites:
            argv = helper_argv(site.netns, LISTENER, [*(f"--addr={a}" for a in site.addresses), *args])
            self.listeners[site.netns] = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # a terminal ^C reaches us, not them; we stop them ourselves
            )
        deadline = time.monotonic() + LISTENER_START_TIMEOUT
        for netns, proc in self.listeners.items():
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = proc.stdout.readline().strip() if ready else ""
            if line != "ready":
                stderr = ""
                if proc.poll() is not None and proc.stderr is not None:
                    stderr = proc.stderr.read()
                raise ns.KernelError(
                    proc.args if isinstance(proc.args, list) else [str(proc.args)],
                    proc.returncode or -1,
                    f"listener in {netns} did not start: {line or 'no answer'} {stderr}",
                )

    def add_cleanup(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` first when the testbed is cleaned up (a loader's unpinning, unmounting, ...).

        Callbacks run last-added first, also on a signal; one that fails does not stop the rest.
        """
        self._cleanups.append(callback)

    def cleanup(self) -> None:
        """Run the added cleanups, stop the listeners and delete every namespace this testbed created. Idempotent."""
        while self._cleanups:
            callback = self._cleanups.pop()
            with contextlib.suppress(Exception):
                callback()
        for proc in self.listeners.values():
            with contextlib.suppress(OSError):
                if proc.stdin is not None:
                    proc.stdin.close()  # the listener exits on EOF
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.listeners.values():
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        self.listeners.clear()
        if self._created:
            ns.delete_namespaces(self._created)
            self._created = []
        if self._built:
            ns.release_run(self.run_id)
        self._restore_handlers()
        atexit.unregister(self.cleanup)

    # --- signals ------------------------------------------------------------------------

    def _install_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old_handlers[signum] = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread: rely on the with-block and atexit
                return

    def _restore_handlers(self) -> None:
        for signum, old in self._old_handlers.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, old)
        self._old_handlers = {}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Clean up, then let the signal do what it would have done without us."""
        old = self._old_handlers.get(signum, signal.SIG_DFL)
        self.cleanup()  # also restores the old handler
        if callable(old):
            old(signum, frame)  # e.g. Python's SIGINT handler raises KeyboardInterrupt
        elif old == signal.SIG_DFL:
            os.kill(os.getpid(), signum)

    # --- running things inside ---------------------------------------------------------

    def exec(
        self, netns: str, argv: Sequence[str], *, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside one of this testbed's namespaces (e.g. ``iptables-restore``)."""
        if netns not in self.namespaces:
            raise ValueError(f"{netns!r} is not a namespace of testbed {self.run_id}")
        return ns.run(ns.exec_argv(netns, argv), input=input, check=check)

    def node_exec(
        self, argv: Sequence[str], *, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in the node namespace, where policy rules live."""
        return self.exec(self.node_netns, argv, input=input, check=check)

    def __repr__(self) -> str:
        eps = len(self.topology.leaves)
        return f"<Testbed {self.run_id}: {eps} leaf namespaces, ports {', '.join(map(str, self.ports))}>"
