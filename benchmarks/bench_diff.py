"""``netpolc diff`` at scale: one-policy changes on a generated cluster, timed end to end.

Generates a cluster (benchmarks/scale.py; 20k pods / 200 namespaces / 5,000 policies by
default) as OLD, then one NEW per change — a CiliumNetworkPolicy's port or peer, a
NetworkPolicy's port or peer, a policy removed, a policy added, a cluster-wide policy changed —
each differing from OLD in that one document, and runs ``netpolc diff OLD NEW -o json`` as a
separate process: the wall time covers interpreter start, loading both versions and the
comparison. With ``--git`` the first real change is also diffed as two revisions of a repository
(``git:HEAD~1:. git:HEAD:.``).

    python benchmarks/bench_diff.py                                  # 20k pods, every change
    python benchmarks/bench_diff.py --pods 2000 --policies 500 --changes cnp-port np-peer
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.scale import Scale, generate, write

ROOT = Path(__file__).resolve().parent.parent
Objects = list[dict[str, Any]]
NAMESPACE = "ns-0015"  # team-15: no cluster-wide baseline selects it, so its peers' egress is open


def _find(objects: Objects, test: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
    for obj in objects:
        if obj["metadata"].get("namespace") == NAMESPACE and test(obj):
            return obj
    raise SystemExit(f"bench_diff: the generated cluster has no {what} in {NAMESPACE}; use more policies")


def _cnp_ingress(objects: Objects) -> dict[str, Any]:
    return _find(objects, lambda o: o["kind"] == "CiliumNetworkPolicy" and "ingress" in o["spec"], "ingress CNP")


def _np(objects: Objects, peer_keys: set[str]) -> dict[str, Any]:
    """A NetworkPolicy whose first ingress peer has exactly these selectors."""

    def test(o: dict[str, Any]) -> bool:
        rules: list[dict[str, Any]] = o["spec"].get("ingress") or [] if o["kind"] == "NetworkPolicy" else []
        return bool(rules) and set(rules[0]["from"][0]) == peer_keys

    return _find(objects, test, f"NetworkPolicy with a {'+'.join(sorted(peer_keys))} peer")


def cnp_port(objects: Objects) -> str:
    policy = _cnp_ingress(objects)
    policy["spec"]["ingress"][0]["toPorts"][0]["ports"][0]["port"] = "8050"
    return f"CiliumNetworkPolicy {NAMESPACE}/{policy['metadata']['name']}: ingress port → 8050"


def cnp_peer(objects: Objects) -> str:
    policy = _cnp_ingress(objects)
    policy["spec"]["ingress"][0]["fromEndpoints"] = [{"matchLabels": {"tier": "web"}}]
    return f"CiliumNetworkPolicy {NAMESPACE}/{policy['metadata']['name']}: ingress peer → tier=web"


def np_port(objects: Objects) -> str:
    policy = _np(objects, {"namespaceSelector", "podSelector"})
    policy["spec"]["ingress"][0]["ports"][-1]["port"] = 9200
    return f"NetworkPolicy {NAMESPACE}/{policy['metadata']['name']}: port 9100 → 9200"


def np_peer(objects: Objects) -> str:
    policy = _np(objects, {"podSelector"})
    policy["spec"]["ingress"][0]["from"][0]["podSelector"] = {"matchLabels": {"tier": "worker"}}
    return f"NetworkPolicy {NAMESPACE}/{policy['metadata']['name']}: peer → tier=worker"


def remove_policy(objects: Objects) -> str:
    policy = _find(objects, lambda o: o["metadata"]["name"] == "default-deny", "default-deny")
    objects.remove(policy)
    return f"NetworkPolicy {NAMESPACE}/default-deny removed"


def add_policy(objects: Objects) -> str:
    objects.append({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": "deny-metrics", "namespace": NAMESPACE},
        "spec": {
            "endpointSelector": {},
            "ingressDeny": [{"fromEntities": ["world"], "toPorts": [{"ports": [{"port": "9100", "protocol": "TCP"}]}]}],
        },
    })
    return f"CiliumNetworkPolicy {NAMESPACE}/deny-metrics added (ingress deny world → 9100)"


def ccnp_port(objects: Objects) -> str:
    policy = next(o for o in objects if o["kind"] == "CiliumClusterwideNetworkPolicy")
    policy["spec"]["egress"][1]["toPorts"][0]["ports"][0]["port"] = "8443"
    return f"CiliumClusterwideNetworkPolicy {policy['metadata']['name']}: egress to world 443 → 8443"


CHANGES: dict[str, Callable[[Objects], str]] = {
    "none": lambda objects: "no change",
    "cnp-port": cnp_port,
    "cnp-peer": cnp_peer,
    "np-port": np_port,
    "np-peer": np_peer,
    "remove": remove_policy,
    "add": add_policy,
    "ccnp": ccnp_port,
}


def run_diff(old: str, new: str, cwd: Path) -> tuple[float, dict[str, Any]]:
    """Wall time of ``netpolc diff OLD NEW -o json`` in a fresh process, and its JSON."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NETPOLC_QUIET": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "compiler.cli", "diff", old, new, "-o", "json"],
        capture_output=True, text=True, cwd=cwd, env=env, check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        raise SystemExit(f"bench_diff: netpolc diff failed ({proc.returncode}): {proc.stderr.strip()}")
    return seconds, json.loads(proc.stdout)


def _git_repo(old: Objects, new: Objects, path: Path) -> None:
    git = ["git", "-C", str(path), "-c", "user.email=bench@example.com", "-c", "user.name=bench"]
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    write(old, path)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "old"], check=True)
    write(new, path)
    subprocess.run([*git, "commit", "-qam", "new", "--allow-empty"], check=True)


def _row(name: str, what: str, seconds: float, doc: dict[str, Any]) -> str:
    result = "equivalent" if doc["equivalent"] else f"{len(doc['regions'])} region(s)"
    return f"| {name} | {what} | {seconds:.2f} | {doc['evaluated']} | {result} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pods", type=int, default=20000)
    parser.add_argument("--namespaces", type=int, default=200)
    parser.add_argument("--policies", type=int, default=5000)
    parser.add_argument("--changes", nargs="+", choices=sorted(CHANGES), default=list(CHANGES))
    parser.add_argument("--git", action="store_true", help="also diff the first change as two git revisions")
    parser.add_argument("--repeat", type=int, default=1, help="runs per change; the table shows the fastest")
    args = parser.parse_args()
    objects = generate(Scale(args.pods, args.namespaces, args.policies))
    print(f"{args.pods} pods, {args.namespaces} namespaces, {args.policies} policies; "
          f"`netpolc diff OLD NEW -o json`, wall clock of the whole process, {os.cpu_count()} CPUs\n")
    print("| change | what | wall s | outcomes evaluated | result |")
    print("|---|---|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp:
        old_dir = Path(tmp) / "old"
        write(objects, old_dir)
        for name in args.changes:
            changed = copy.deepcopy(objects)
            what = CHANGES[name](changed)
            new_dir = Path(tmp) / name
            write(changed, new_dir)
            runs = [run_diff(str(old_dir), str(new_dir), Path(tmp)) for _ in range(args.repeat)]
            seconds, doc = min(runs, key=lambda r: r[0])
            print(_row(name, what, seconds, doc), flush=True)
        if args.git:
            name = next((c for c in args.changes if c != "none"), "none")
            changed = copy.deepcopy(objects)
            what = CHANGES[name](changed)
            repo = Path(tmp) / "repo"
            _git_repo(objects, changed, repo)
            seconds, doc = min((run_diff("git:HEAD~1:.", "git:HEAD:.", repo) for _ in range(args.repeat)),
                               key=lambda r: r[0])
            print(_row(f"{name} (git revisions)", what, seconds, doc), flush=True)


if __name__ == "__main__":
    main()
