"""ns per packet of the testbed's TC datapath as its maps grow, measured with BPF_PROG_TEST_RUN (root only).

The program and the map layouts are verifier/kernel/policy.bpf.c and Cilium's (reference/
cilium.md); see verifier/kernel/bpf_bench.py for the packets timed. The cost should stay flat
(LPM depth, not entry count) from 1 to 16,384 entries.

    sudo python benchmarks/bench_bpf.py                            # 1 .. 16384 entries, both maps
    sudo python benchmarks/bench_bpf.py --grow policy --repeat 200000
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verifier.kernel.bpf import ebpf_unavailable_reason
from verifier.kernel.bpf_bench import MAX_ENTRIES, bench, format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[1, 10, 100, 1000, 10000, MAX_ENTRIES])
    parser.add_argument("--repeat", type=int, default=100_000, help="BPF_PROG_TEST_RUN repetitions per packet")
    parser.add_argument("--grow", choices=["both", "policy", "ipcache"], default="both")
    args = parser.parse_args()
    reason = ebpf_unavailable_reason()
    if reason:
        sys.exit(f"bench_bpf: {reason}")
    print(format_table(bench(args.sizes, repeat=args.repeat, grow=args.grow)))


if __name__ == "__main__":
    main()
