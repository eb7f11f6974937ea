"""``netpolc verify`` at scale: the iptables ≡ eBPF proof on generated clusters.

Generated clusters (benchmarks/scale.py) from 1k pods / 100 policies upwards; compiles both
targets in memory, then proves them equivalent with ``--jobs`` worker processes. Reports the
slices, the proof's wall time and its verdict (a timeout is ``unknown``, never ``proved``).

    python benchmarks/bench_verify.py                          # 1k and 5k pods
    python benchmarks/bench_verify.py --sizes 20000:200:5000 --jobs 2
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
from compiler.targets import TargetOptions, emit_targets
from verifier.proofs import ProofContext, iptables_ebpf

DEFAULT_SIZES = ("1000:20:100", "5000:50:1000")


def run(pods: int, namespaces: int, policies: int, profile: Profile, jobs: int, workdir: Path) -> dict[str, object]:
    paths = write(generate(Scale(pods, namespaces, policies)), workdir / f"{pods}-{namespaces}-{policies}")
    inputs = load_inputs([str(p) for p in paths])
    t0 = time.perf_counter()
    files = emit_targets(build_ir(inputs, profile), ["iptables", "ebpf"], TargetOptions(allow_overflow=True))[0]
    t1 = time.perf_counter()

    def progress(_name: str, done: int, total: int) -> None:
        if done % 500 == 0 or done == total:
            print(f"  {done}/{total} slices, {time.perf_counter() - t1:.1f}s", file=sys.stderr, flush=True)

    result = iptables_ebpf.prove(ProofContext(files, inputs.cluster, jobs, progress))
    return {"pods": len(inputs.cluster.endpoints), "policies": len(inputs.policies), "slices": result.slices,
            "compile_s": t1 - t0, "verify_s": result.seconds, "status": result.status.value}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="PODS:NAMESPACES:POLICIES")
    parser.add_argument("--profile", choices=[p.value for p in Profile], default="cilium")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    print("| pods | policies | slices | compile s | verify s | result |")
    print("|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            pods, namespaces, policies = (int(x) for x in size.split(":"))
            r = run(pods, namespaces, policies, Profile(args.profile), args.jobs, Path(tmp))
            print(f"| {r['pods']} | {r['policies']} | {r['slices']} | {r['compile_s']:.2f} | {r['verify_s']:.2f} | "
                  f"{r['status']} |", flush=True)


if __name__ == "__main__":
    main()
