"""eBPF target at scale: policy-map entries per endpoint (mean / max) and compile time.

Generated clusters (benchmarks/scale.py) from 1k pods / 100 policies to 20k pods / 5,000
policies, their pods scheduled 250 per node (AKS's maximum). The compile is what one node's
agent needs, ``netpolc compile --node node-0000``: the cluster-wide ipcache and the policy maps
of that node's endpoints. Times loading, the IR build and the eBPF emit separately.

``--whole-cluster`` compiles every endpoint's map as if all pods were on one node (the testbed's
model). More than 4095 endpoints do not fit one node's endpoint-ID range, so that mode uses
``allow_overflow`` (IDs up to 65535); at 20k pods it writes ~25 GB and takes minutes.

    python benchmarks/bench_ebpf.py                       # the sweep, markdown table on stdout
    python benchmarks/bench_ebpf.py --sizes 5000:50:1000 --profile k8s
    python benchmarks/bench_ebpf.py --sizes 5000:50:1000 --whole-cluster
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scale import Scale, generate, node_name, write
from compiler.flow import Profile
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.targets.base import TargetOptions
from compiler.targets.ebpf import EbpfTarget

DEFAULT_SIZES = ("1000:20:100", "5000:50:1000", "20000:200:5000")
PODS_PER_NODE = 250  # AKS's maximum pods per node


def run(pods: int, namespaces: int, policies: int, profile: Profile, workdir: Path,
        whole_cluster: bool) -> dict[str, float]:
    scale = Scale(pods, namespaces, policies, pods_per_node=0 if whole_cluster else PODS_PER_NODE)
    paths = write(generate(scale), workdir / f"{pods}-{namespaces}-{policies}-{scale.pods_per_node}")
    t0 = time.perf_counter()
    inputs = load_inputs([str(p) for p in paths])
    t1 = time.perf_counter()
    ir = build_ir(inputs, profile)
    t2 = time.perf_counter()
    node = None if whole_cluster else node_name(0)
    target = EbpfTarget(ir, TargetOptions(allow_overflow=whole_cluster, node=node))
    files = target.emit()
    t3 = time.perf_counter()
    if target.problems:
        raise SystemExit("\n".join(str(p) for p in target.problems))
    sizes = [len(entries) for entries in target.entries.values()] or [0]
    return {
        "pods": len(inputs.cluster.endpoints),
        "policies": len(inputs.policies),
        "identities": len(ir.identities.identities()),
        "local": len(target.entries),
        "mean": sum(sizes) / len(sizes),
        "max": max(sizes),
        "over": sum(1 for s in sizes if s > target.options.policy_map_max),
        "load_s": t1 - t0,
        "ir_s": t2 - t1,
        "emit_s": t3 - t2,
        "total_s": t3 - t0,
        "mb": sum(len(text) for text in files.values()) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="PODS:NAMESPACES:POLICIES")
    parser.add_argument("--profile", choices=[p.value for p in Profile], default="cilium")
    parser.add_argument("--whole-cluster", action="store_true",
                        help="every endpoint's map on one node instead of one node's endpoints")
    args = parser.parse_args()
    print("| pods | policies | identities | endpoints compiled | entries/endpoint mean | max | maps > 16384 | "
          "load s | IR build s | eBPF emit s | compile total s | output MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            pods, namespaces, policies = (int(x) for x in size.split(":"))
            r = run(pods, namespaces, policies, Profile(args.profile), Path(tmp), args.whole_cluster)
            print(f"| {r['pods']:.0f} | {r['policies']:.0f} | {r['identities']:.0f} | {r['local']:.0f} | "
                  f"{r['mean']:.1f} | {r['max']:.0f} | {r['over']:.0f} | {r['load_s']:.2f} | {r['ir_s']:.2f} | "
                  f"{r['emit_s']:.2f} | {r['total_s']:.2f} | {r['mb']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
