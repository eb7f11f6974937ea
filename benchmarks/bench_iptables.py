"""iptables target at scale: compile time, artifact size, and rules evaluated per packet.

Generated clusters (benchmarks/scale.py) from 1k pods / 100 policies to 20k pods / 5,000
policies. For each size: the IR build and the iptables emit are timed separately, the emitted
``rules.v4``/``ipsets.v4`` are read back with the Lark grammars (as the verifier reads them), and
a deterministic sample of pod-to-pod first packets (NEW connections, on the ports the policies
name) is replayed through the simulator, counting rules evaluated and ipset lookups.

The point of the layout (dispatch on identity ipsets, one chain per identity and direction) is
that per-packet work follows the policies that select the two endpoints, not the cluster size:
the table shows the mean number of those policies next to the rule counts, and ``rules/policy``
should stay roughly constant down the sweep.

    python benchmarks/bench_iptables.py                    # the sweep, markdown table on stdout
    python benchmarks/bench_iptables.py --sizes 5000:50:1000 --flows 5000 --profile k8s
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scale import Scale, generate, write
from compiler.cluster import Endpoint
from compiler.flow import Direction, Flow, Profile, Protocol
from compiler.inputs import load_inputs
from compiler.ir.build import build_ir
from compiler.ir.model import IR
from compiler.targets.base import TargetOptions
from compiler.targets.iptables import IptablesTarget, marks
from compiler.targets.iptables.chains import FILTER_TOP, MANGLE_OUTPUT, MANGLE_TOP
from compiler.targets.iptables.dispatch import is_tree_chain
from verifier.artifacts import read_ipsets, read_iptables
from verifier.simulate.iptables import Outcome
from verifier.simulate.iptables_flow import FlowSimulator

DEFAULT_SIZES = ("1000:20:100", "5000:50:1000", "20000:200:5000")


def _ports(ir: IR) -> list[tuple[Protocol, int]]:
    """The TCP/UDP ports the policies name (so the sample exercises real rules), plus 80/TCP."""
    found = {(Protocol.TCP, 80)}
    for policy in ir.endpoint_policies():
        for rule in (*policy.allow, *policy.deny):
            for match in rule.ports:
                if match.protocol in (Protocol.TCP, Protocol.UDP) and match.name is None and match.lo:
                    found.add((match.protocol, match.lo))
    return sorted(found)


def _selecting(ir: IR, src: str, dst: str) -> int:
    """Distinct user policies with rules for the source's egress or the destination's ingress."""
    names: set[str] = set()
    for key, direction in ((src, Direction.EGRESS), (dst, Direction.INGRESS)):
        policy = ir.policy(key, direction)
        names.update(r.origin.policy for r in (*policy.allow, *policy.deny) if not r.origin.policy.startswith("<"))
    return len(names)


def _allowed_pair(
    ir: IR, rng: random.Random, endpoints: list[Endpoint], by_identity: dict[int, list[Endpoint]]
) -> tuple[Endpoint, Endpoint, Protocol, int] | None:
    """A source and port one of a random destination's ingress allow rules names (None: no such rule)."""
    dst = rng.choice(endpoints)
    candidates = [
        (rule, match)
        for rule in ir.policy(dst.key, Direction.INGRESS).allow
        if rule.peer.identities and not rule.origin.policy.startswith("<")
        for match in rule.ports
        if match.protocol in (Protocol.TCP, Protocol.UDP) and match.name is None and match.lo
    ]
    if not candidates:
        return None
    rule, match = rng.choice(candidates)
    sources = [ep for n in sorted(rule.peer.identities) for ep in by_identity.get(n, ()) if ep is not dst]
    if not sources or match.protocol is None:
        return None
    return rng.choice(sources), dst, match.protocol, match.lo


def _is_dispatch(chain: str) -> bool:
    """Chains of the address trie (compiler/targets/iptables/dispatch.py) and the top-level chains."""
    return is_tree_chain(chain) or chain in (FILTER_TOP, MANGLE_TOP, MANGLE_OUTPUT)


def _p99(values: list[int]) -> float:
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))])


def run(pods: int, namespaces: int, policies: int, flows: int, profile: Profile, workdir: Path) -> dict[str, float]:
    paths = write(generate(Scale(pods, namespaces, policies)), workdir / f"{pods}-{namespaces}-{policies}")
    inputs = load_inputs([str(p) for p in paths])
    t0 = time.perf_counter()
    ir = build_ir(inputs, profile)
    t1 = time.perf_counter()
    target = IptablesTarget(ir, TargetOptions())
    files = target.emit()
    t2 = time.perf_counter()
    ruleset = read_iptables(files["rules.v4"], "iptables/rules.v4", 4)
    ipsets = read_ipsets(files["ipsets.v4"], "iptables/ipsets.v4")
    t3 = time.perf_counter()
    sim = FlowSimulator(ruleset, ipsets, ir.cluster, tproxy_route=(marks.PROXY, marks.PROXY))
    rng = random.Random(pods * 7919 + policies)
    endpoints = [ep for ep in ir.cluster.endpoints if any(a.version == 4 for a in ep.addresses)]
    by_identity: dict[int, list[Endpoint]] = {}
    for ep in endpoints:
        by_identity.setdefault(ir.endpoint_identity(ep.key), []).append(ep)
    ports = _ports(ir)
    rules: list[int] = []
    dispatch: list[int] = []
    lookups: list[int] = []
    selecting: list[int] = []
    allowed = 0
    for n in range(flows):
        # every other flow follows an allow rule of the destination (else the sample is nearly all drops)
        pair = _allowed_pair(ir, rng, endpoints, by_identity) if n % 2 else None
        if pair is None:
            src, dst = rng.sample(endpoints, 2)
            protocol, port = rng.choice(ports)
        else:
            src, dst, protocol, port = pair
        src_ip = next(a for a in src.addresses if a.version == 4)
        dst_ip = next(a for a in dst.addresses if a.version == 4)
        result = sim.simulate(Flow(src_ip, dst_ip, protocol, port))
        rules.append(result.cost.rules_evaluated)
        dispatch.append(sum(1 for step in result.trace if step.rule and _is_dispatch(step.chain)))
        lookups.append(result.cost.ipset_lookups)
        selecting.append(_selecting(ir, src.key, dst.key))
        allowed += result.outcome is not Outcome.DROP
    t4 = time.perf_counter()
    counts = target.counts()
    mean_selecting = statistics.fmean(selecting)
    return {
        "pods": len(inputs.cluster.endpoints),
        "policies": len(inputs.policies),
        "rules": counts.get("rules_v4", 0),
        "set_entries": counts.get("ipset_entries_v4", 0),
        "ir_s": t1 - t0,
        "emit_s": t2 - t1,
        "parse_s": t3 - t2,
        "sim_us": (t4 - t3) / flows * 1e6,
        "selecting": mean_selecting,
        "mean": statistics.fmean(rules),
        "p99": _p99(rules),
        "lookups": statistics.fmean(lookups),
        "lookups_p99": _p99(lookups),
        "dispatch": statistics.fmean(dispatch),
        "policy_rules": statistics.fmean(r - d for r, d in zip(rules, dispatch, strict=True)),
        "per_policy": statistics.fmean(r - d for r, d in zip(rules, dispatch, strict=True)) / max(mean_selecting, 1.0),
        "allowed": allowed / flows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES), metavar="PODS:NAMESPACES:POLICIES")
    parser.add_argument("--flows", type=int, default=2000, help="sampled NEW connections per size (default 2000)")
    parser.add_argument("--profile", choices=[p.value for p in Profile], default="cilium")
    args = parser.parse_args()
    print(
        "| pods | policies | rules (v4) | ipset entries | IR build s | iptables emit s | read back s | "
        "policies on the flow (mean) | rules evaluated mean | p99 | of which dispatch | policy-chain rules "
        "| per policy | ipset lookups mean | p99 | allowed |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            pods, namespaces, policies = (int(x) for x in size.split(":"))
            r = run(pods, namespaces, policies, args.flows, Profile(args.profile), Path(tmp))
            print(
                f"| {r['pods']:.0f} | {r['policies']:.0f} | {r['rules']:.0f} | {r['set_entries']:.0f} | "
                f"{r['ir_s']:.2f} | {r['emit_s']:.2f} | {r['parse_s']:.2f} | {r['selecting']:.2f} | "
                f"{r['mean']:.1f} | {r['p99']:.0f} | {r['dispatch']:.1f} | {r['policy_rules']:.1f} | "
                f"{r['per_policy']:.1f} | {r['lookups']:.1f} | "
                f"{r['lookups_p99']:.0f} | {r['allowed']:.0%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
