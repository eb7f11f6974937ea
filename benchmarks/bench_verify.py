"""``netpolc verify`` at scale: every proof on generated clusters, timed one by one.

Generated clusters (benchmarks/scale.py) from 1k pods / 100 policies upwards; compiles the
targets in memory, then runs each proof with ``--jobs`` worker processes. Reports per proof the
slices, its wall time and its verdict (a timeout is ``unknown``, never ``proved``), and the
total. The first proof also pays for reading the artifact texts back (parsing once per run is
part of verifying); the compile is timed apart.

Compiling 20k pods takes minutes, so ``--cache DIR`` keeps each size's cluster and artifacts
(a pickle, local to this machine) and reuses them on the next run.

    python benchmarks/bench_verify.py                                   # 1k and 5k pods
    python benchmarks/bench_verify.py --sizes 20000:200:5000 --cache /tmp/bench-verify
    python benchmarks/bench_verify.py --proofs iptables-ebpf --sizes 20000:200:5000
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scale import Scale, generate, write
from compiler.flow import Profile
from compiler.inputs import Inputs, load_inputs
from compiler.ir.build import build_ir
from compiler.targets import TargetOptions, emit_targets
from verifier.proofs import PROOFS, ProofContext, ProofResult, SourceSpec, Status, run_proofs

DEFAULT_SIZES = ("1000:20:100", "5000:50:1000")
TARGETS = ("iptables", "ebpf", "envoy")

Files = dict[str, dict[str, str]]


def prepare(size: tuple[int, int, int], profile: Profile, root: Path) -> tuple[Inputs, Files, float | None]:
    """The cluster's inputs and artifacts (compiled now, timed, or read from ``root``'s cache)."""
    pods, namespaces, policies = size
    where = root / f"{pods}-{namespaces}-{policies}-{profile.value}"
    paths = sorted(where.glob("*.yaml")) or write(generate(Scale(pods, namespaces, policies)), where)
    inputs = load_inputs([str(p) for p in paths])
    cached = where / "artifacts.pickle"
    if cached.exists():
        with cached.open("rb") as handle:
            return inputs, pickle.load(handle), None
    started = time.perf_counter()
    files = emit_targets(build_ir(inputs, profile), TARGETS, TargetOptions(allow_overflow=True))[0]
    seconds = time.perf_counter() - started
    for target in files.values():
        target.pop("policy.txt", None)  # the human-readable listing: no proof reads it
    with cached.open("wb") as handle:
        pickle.dump(files, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return inputs, files, seconds


def run(inputs: Inputs, files: Files, profile: Profile, jobs: int, names: list[str]) -> list[ProofResult]:
    started = time.perf_counter()

    def progress(name: str, done: int, total: int) -> None:
        if done % 1000 == 0 or done == total:
            print(f"  {name}: {done}/{total} slices, {time.perf_counter() - started:.1f}s", file=sys.stderr,
                  flush=True)

    ctx = ProofContext(files, inputs.cluster, jobs, progress, source=SourceSpec(inputs, profile))
    return run_proofs(ctx, names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="PODS:NAMESPACES:POLICIES")
    parser.add_argument("--profile", choices=[p.value for p in Profile], default="cilium")
    parser.add_argument("--proofs", nargs="+", choices=[m.NAME for m in PROOFS], default=[m.NAME for m in PROOFS])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cache", type=Path, help="keep and reuse each size's cluster and artifacts here")
    args = parser.parse_args()
    print("| pods | policies | compile s | proof | slices | verify s | result |")
    print("|---:|---:|---:|---|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.cache or Path(tmp)
        for text in args.sizes:
            size = tuple(int(x) for x in text.split(":"))
            assert len(size) == 3, "sizes are PODS:NAMESPACES:POLICIES"
            inputs, files, compile_s = prepare((size[0], size[1], size[2]), Profile(args.profile), root)
            compiled = "cached" if compile_s is None else f"{compile_s:.1f}"
            rows = run(inputs, files, Profile(args.profile), args.jobs, args.proofs)
            pods, policies = len(inputs.cluster.endpoints), len(inputs.policies)
            for r in rows:
                note = f" ({r.unknown[0]})" if r.unknown else ""
                print(f"| {pods} | {policies} | {compiled} | {r.name} | {r.slices} | {r.seconds:.1f} | "
                      f"{r.status.value}{note} |", flush=True)
            verdict = "proved" if all(r.status is Status.PROVED for r in rows) else "not proved"
            print(f"| {pods} | {policies} | {compiled} | **all** | {sum(r.slices for r in rows)} | "
                  f"{sum(r.seconds for r in rows):.1f} | {verdict} |", flush=True)

if __name__ == "__main__":
    main()
