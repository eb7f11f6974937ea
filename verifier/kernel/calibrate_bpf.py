"""Nanoseconds per BPF hash and LPM-trie lookup on this kernel (``netpolc cost --calibrate``).

Loads ``calibrate.bpf.c`` into a private bpffs, fills its maps, and times the program with
``BPF_PROG_TEST_RUN`` doing 0 and :data:`LOOKUPS` lookups per run on the same packet: the
difference over :data:`LOOKUPS` is one lookup, the program's entry and the test-run harness cancel
out. The hash map is measured at one size (a hash lookup does not depend on the entry count); the
LPM trie at several, because its lookups walk a path whose length grows with the entries.
"""

from __future__ import annotations

import struct
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from verifier.kernel import bpf_layout as layout
from verifier.kernel import bpf_packets as packets
from verifier.kernel.bpf import (
    HERE,
    BpfToolError,
    bpftool,
    bpftool_batch,
    build_object,
    hex_words,
    private_bpffs,
    prog_run,
)

SOURCE = HERE / "calibrate.bpf.c"
LOOKUPS = 256  # calibrate.bpf.c MAX_LOOKUPS
BASE = 0x0A000000  # calibrate.bpf.c BASE_ADDRESS (10.0.0.0)
HASH_ENTRIES = 5000  # the lb4 services map of a 5,000-Service cluster
LPM_SIZES = (1, 100, 1_000, 10_000, 100_000)
_VALUE = hex_words(bytes(8))


@dataclass(frozen=True)
class BpfCalibration:
    hash_lookup_ns: float
    lpm_points: tuple[tuple[int, float], ...]  # (entries, ns per lookup)
    repeat: int


def _hash_key(j: int) -> bytes:
    return struct.pack(">IH", BASE + j, 80) + struct.pack("<HBB2s", 0, 6, 0, b"\0\0")


def _lpm_key(j: int) -> bytes:
    return struct.pack("<IHBB", layout.IPCACHE_STATIC_PREFIX + 32, 0, 0, layout.FAMILY_IPV4) + \
        struct.pack(">I", BASE + j) + bytes(12)


def measure(lpm_sizes: Sequence[int] = LPM_SIZES, *, repeat: int = 2000,
            progress: Callable[[str], None] = lambda _: None) -> BpfCalibration:
    """Time both lookups (needs root, clang and bpftool); raises :class:`BpfToolError` when the
    kernel refuses, with the reason."""
    if list(lpm_sizes) != sorted(lpm_sizes) or not lpm_sizes or lpm_sizes[0] < 1:
        raise ValueError("LPM sizes must ascend from at least 1")
    obj = build_object(SOURCE)
    with private_bpffs() as fs, tempfile.TemporaryDirectory(prefix="netpolc-calibrate-") as tmp:
        work = Path(tmp)
        bpftool(["prog", "loadall", str(obj), str(fs.path / "progs"), "pinmaps", str(fs.path / "maps")])
        prog = fs.path / "progs" / "calibrate"
        maps = fs.path / "maps"
        frame = packets.frame("10.255.0.1", "10.255.0.2", 6, 80)

        def per_lookup(which: int, entries: int) -> float:
            times = []
            for lookups in (0, LOOKUPS):
                config = struct.pack("<IIII", lookups, which, entries, 0)
                bpftool(["map", "update", "pinned", str(maps / "calib_config"), "key", *hex_words(bytes(4)).split(),
                         "value", *hex_words(config).split()])
                result = prog_run(prog, frame, work, repeat=repeat)
                if result.retval != 0:
                    raise BpfToolError(f"calibration program missed a lookup (which={which}, entries={entries})")
                times.append(result.ns_per_run)
            return max(0.0, (times[1] - times[0]) / LOOKUPS)

        progress(f"BPF hash: {HASH_ENTRIES} entries")
        bpftool_batch([f"map update pinned {maps / 'calib_hash'} key {hex_words(_hash_key(j))} value {_VALUE}"
                       for j in range(HASH_ENTRIES)], work)
        hash_ns = per_lookup(0, HASH_ENTRIES)
        points: list[tuple[int, float]] = []
        filled = 0
        for size in lpm_sizes:
            progress(f"BPF LPM trie: {size} entries")
            bpftool_batch([f"map update pinned {maps / 'calib_lpm'} key {hex_words(_lpm_key(j))} value {_VALUE}"
                           for j in range(filled, size)], work)
            filled = size
            points.append((size, round(per_lookup(1, size), 2)))
    return BpfCalibration(round(hash_ns, 2), tuple(points), repeat)
