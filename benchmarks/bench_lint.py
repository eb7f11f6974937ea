"""``netpolc lint`` at scale: every rule on generated clusters (budget: 20k pods / 5,000 policies in 30 s).

Writes each synthetic cluster (compiler/synth.py) to YAML and lints it in-process the way the CLI
does (loading included), timing the load and each rule. Prints a markdown table per size and the
slowest rules of the largest one.

    python benchmarks/bench_lint.py                                   # 1k, 5k and 20k pods
    python benchmarks/bench_lint.py --sizes 20000:200:5000 --policy-map-max 9000
    python benchmarks/bench_lint.py --sizes 1000:20:100 5000:50:1000 --select NP5   # the opt-in proof rules
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler.synth import Scale, generate, write
from verifier.lint.config import LintConfig
from verifier.lint.context import LintOptions
from verifier.lint.engine import lint

DEFAULT_SIZES = ("1000:20:100", "5000:50:1000", "20000:200:5000")


def run(size: str, options: LintOptions, config: LintConfig,
        workdir: Path) -> tuple[dict[str, object], list[tuple[float, str]]]:
    pods, namespaces, policies = (int(x) for x in size.split(":"))
    paths = write(generate(Scale(pods, namespaces, policies)), workdir / size.replace(":", "-"))
    marks: list[tuple[float, str]] = []
    start = time.perf_counter()
    result = lint([str(p) for p in paths], options, config,
                  progress=lambda rule: marks.append((time.perf_counter(), rule)))
    end = time.perf_counter()
    # each progress mark starts a rule; the first mark ends loading
    spans = [(later[0] - mark[0], mark[1]) for mark, later in zip(marks, [*marks[1:], (end, "")], strict=True)]
    codes = Counter(f.code for f in result.findings)
    return ({"pods": pods, "policies": policies, "load_s": (marks[0][0] if marks else end) - start,
             "total_s": end - start, "findings": ", ".join(f"{c} × {n}" for c, n in sorted(codes.items())) or "none"},
            sorted(spans, reverse=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="PODS:NAMESPACES:POLICIES")
    parser.add_argument("--policy-map-max", type=int, default=16384)
    parser.add_argument("--select", nargs="+", default=["ALL"],
                        help="codes or prefixes, as netpolc lint --select (e.g. NP5 for the opt-in proof rules)")
    args = parser.parse_args()
    options = LintOptions(policy_map_max=args.policy_map_max)
    print("| pods | policies | load s | total s | findings |")
    print("|---:|---:|---:|---:|---|")
    slowest: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            row, slowest = run(size, options, LintConfig(select=tuple(args.select)), Path(tmp))
            print(f"| {row['pods']} | {row['policies']} | {row['load_s']:.2f} | {row['total_s']:.2f} | "
                  f"{row['findings']} |", flush=True)
    print("\nslowest rules at the last size:")
    for seconds, rule in slowest[:5]:
        print(f"  {seconds:7.2f} s  {rule}")


if __name__ == "__main__":
    main()
