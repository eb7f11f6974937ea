"""eBPF target at scale: policy-map entries per endpoint (mean / max) and compile time.

Generated clusters (benchmarks/scale.py) from 1k pods / 100 policies to 20k pods / 5,000
policies; times the IR build and the eBPF emit separately. More than 4095 endpoints do not fit
one Cilium node's endpoint-ID range, so the run uses ``allow_overflow`` (IDs up to 65535) and
reports maps over ``--policy-map-max`` instead of failing.

    python benchmarks/bench_ebpf.py                       # the sweep, markdown table on stdout
    python benchmarks/bench_ebpf.py --sizes 5000:50:1000 --profile k8s
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scale import Scale, generate, write
from compiler.flow import Profile
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.targets.base import TargetOptions
from compiler.targets.ebpf import EbpfTarget

DEFAULT_SIZES = ("1000:20:100", "5000:50:1000", "20000:200:5000")


def run(pods: int, namespaces: int, policies: int, profile: Profile, workdir: Path) -> dict[str, float]:
    paths = write(generate(Scale(pods, namespaces, policies)), workdir / f"{pods}-{namespaces}-{policies}")
    inputs = load_inputs([str(p) for p in paths])
    t0 = time.perf_counter()
    ir = build_ir(inputs, profile)
    t1 = time.perf_counter()
    target = EbpfTarget(ir, TargetOptions(allow_overflow=True))
    files = target.emit()
    t2 = time.perf_counter()
    sizes = [len(entries) for entries in target.entries.values()] or [0]
    return {
        "pods": len(inputs.cluster.endpoints),
        "policies": len(inputs.policies),
        "identities": len(ir.identities.identities()),
        "mean": sum(sizes) / len(sizes),
        "max": max(sizes),
        "over": sum(1 for s in sizes if s > target.options.policy_map_max),
        "ir_s": t1 - t0,
        "emit_s": t2 - t1,
        "mb": sum(len(text) for text in files.values()) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="PODS:NAMESPACES:POLICIES")
    parser.add_argument("--profile", choices=[p.value for p in Profile], default="cilium")
    args = parser.parse_args()
    print("| pods | policies | identities | entries/endpoint mean | max | maps > 16384 | IR build s | "
          "eBPF emit s | output MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            pods, namespaces, policies = (int(x) for x in size.split(":"))
            r = run(pods, namespaces, policies, Profile(args.profile), Path(tmp))
            print(f"| {r['pods']:.0f} | {r['policies']:.0f} | {r['identities']:.0f} | {r['mean']:.1f} | "
                  f"{r['max']:.0f} | {r['over']:.0f} | {r['ir_s']:.2f} | {r['emit_s']:.2f} | {r['mb']:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
