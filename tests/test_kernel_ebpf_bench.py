"""The TC datapath's per-packet cost stays bounded as its maps grow (BPF_PROG_TEST_RUN timings).

LPM-trie lookups follow the trie depth, not the entry count: 1 -> 10,000 entries must not
multiply the cost. The bound is loose (timings share the machine with other tests) but a
lookup that scanned entries would be ~10,000x slower and fail it by far.
"""

from __future__ import annotations

import pytest

from verifier.kernel.bpf import ebpf_unavailable_reason
from verifier.kernel.bpf_bench import bench, format_table

pytestmark = pytest.mark.kernel


@pytest.fixture(autouse=True)
def _need_ebpf() -> None:
    reason = ebpf_unavailable_reason()
    if reason:
        pytest.skip(reason)


def test_cost_per_packet_stays_bounded_from_1_to_10000_entries() -> None:
    points = bench((1, 100, 10000), repeat=20000)
    print(format_table(points))
    first, last = points[0], points[-1]
    assert [p.entries for p in points] == [1, 100, 10000]
    assert last.allowed_ns < 5 * first.allowed_ns + 200, format_table(points)
    assert last.denied_ns < 5 * first.denied_ns + 200, format_table(points)
    # The conntrack hit skips the policy entirely: independent of the policy map's size.
    assert last.established_ns < 3 * first.established_ns + 100, format_table(points)
    # ... so where the policy lookup is dearest it is the cheaper path. (Not asserted at 1 entry,
    # where both are ~120 ns and shared-machine jitter of ±20 ns decides their order.)
    assert last.established_ns < last.allowed_ns, format_table(points)


def test_bench_refuses_sizes_the_map_cannot_hold() -> None:
    with pytest.raises(ValueError, match="sizes must ascend"):
        bench((10, 1))
    with pytest.raises(ValueError, match="sizes must ascend"):
        bench((1, 20000))
