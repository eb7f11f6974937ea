"""Time loading + identity allocation + IR build over generated clusters (issue #2 target: 20k pods /
200 namespaces / 5,000 policies under 30 s on 2 cores).

    python benchmarks/bench_load_ir.py                     # the sweep, table on stdout
    python benchmarks/bench_load_ir.py --sizes 20000:200:5000 --profile k8s
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

DEFAULT_SIZES = ("1000:20:100", "5000:50:1000", "20000:200:5000")


def run(pods: int, namespaces: int, policies: int, profile: Profile, workdir: Path) -> dict[str, float]:
    out = workdir / f"{pods}-{namespaces}-{policies}"
    paths = write(generate(Scale(pods, namespaces, policies)), out)
    t0 = time.perf_counter()
    inputs = load_inputs([str(p) for p in paths])
    t1 = time.perf_counter()
    ir = build_ir(inputs, profile)
    t2 = time.perf_counter()
    identities = len(ir.identities.identities()) if hasattr(ir, "identities") else -1
    return {
        "pods": len(inputs.cluster.endpoints),
        "policies": len(inputs.policies),
        "identities": identities,
        "load_s": t1 - t0,
        "ir_s": t2 - t1,
        "total_s": t2 - t0,
        "bytes": sum(p.stat().st_size for p in paths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="PODS:NAMESPACES:POLICIES")
    parser.add_argument("--profile", choices=[p.value for p in Profile], default="cilium")
    args = parser.parse_args()
    print("| pods | namespaces | policies | identities | input MB | load s | IR build s | total s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            pods, namespaces, policies = (int(x) for x in size.split(":"))
            r = run(pods, namespaces, policies, Profile(args.profile), Path(tmp))
            print(
                f"| {r['pods']:.0f} | {namespaces} | {r['policies']:.0f} | {r['identities']:.0f} | "
                f"{r['bytes'] / 1e6:.1f} | {r['load_s']:.2f} | {r['ir_s']:.2f} | {r['total_s']:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
