"""The kernel testbed (DESIGN.md §5): a cluster rebuilt from network namespaces, probed with real packets.

- :class:`Testbed` — one node namespace routing between one namespace per endpoint (and an
  optional "world"), listeners on the served ports, guaranteed cleanup.
- :func:`probe`, :func:`probe_many`, :func:`probe_flows`, :func:`kernel_matrix` — real TCP/UDP
  (and SCTP where the kernel has it) connections from inside the namespaces.
- :func:`kernel_unavailable_reason` — why this machine cannot run it (tests skip on it).
- :func:`cleanup_stale` — remove namespaces a crashed run left behind.

Rule loaders (iptables-restore/ipset, eBPF) plug in by running commands in
:attr:`Testbed.node_netns` via :meth:`Testbed.node_exec`.
"""

from verifier.kernel.netns import KernelError, cleanup_stale, kernel_unavailable_reason, sctp_supported
from verifier.kernel.probe import (
    ProbeRequest,
    ProbeResult,
    ProbeStatus,
    UnsupportedProbeError,
    kernel_matrix,
    probe,
    probe_flows,
    probe_many,
    site_requests,
    unsupported_reason,
)
from verifier.kernel.testbed import Testbed, served_ports
from verifier.kernel.topology import HOST, WORLD, Site, Topology, plan

__all__ = [
    "HOST",
    "WORLD",
    "KernelError",
    "ProbeRequest",
    "ProbeResult",
    "ProbeStatus",
    "Site",
    "Testbed",
    "Topology",
    "UnsupportedProbeError",
    "cleanup_stale",
    "kernel_matrix",
    "kernel_unavailable_reason",
    "plan",
    "probe",
    "probe_flows",
    "probe_many",
    "sctp_supported",
    "served_ports",
    "site_requests",
    "unsupported_reason",
]
