"""Write a synthetic cluster (compiler/synth.py) as two YAML files, for the benchmarks and by hand.

    python benchmarks/scale.py --pods 20000 --namespaces 200 --policies 5000 --services 5000 -o /tmp/scale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from compiler.synth import Scale, generate, node_name, write

__all__ = ["Scale", "generate", "node_name", "write"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=20000)
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--policies", type=int, default=5000)
    parser.add_argument("--services", type=int, default=0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pods-per-node", type=int, default=0,
                        help="write scheduled Pods (spec.nodeName), N per node, instead of workloads")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    scale = Scale(args.pods, args.namespaces, args.policies, args.services, args.seed, args.pods_per_node)
    for path in write(generate(scale), args.out):
        print(path)


if __name__ == "__main__":
    main()
