"""What one datapath operation costs in nanoseconds: published defaults, or a calibration profile
measured on this machine (``netpolc cost --calibrate``), stored as a small JSON file.

Defaults, from reference/iptables.md §7 (the estimates use the nf_tables backend's rule cost; a
profile also records the legacy backend's):

- iptables rule: 22 ns, the slope of Kubernetes' first-packet latency per extra KUBE-SERVICES rule
  (k8s blog 2025-02-28, p99 ≈ 21–23 ns per service); §7.1's working figure is 20–75 ns.
- A new connection to a Service, beyond the nat rules it walks (chain jumps, the backend draw,
  the DNAT's nat setup): 0, as no published figure separates it; calibration measures it (~0.5–1 µs here).
- kube-proxy's NodePort rule (``-m addrtype --dst-type LOCAL``, a route lookup), paid beyond a plain
  rule by every new connection not to a Service: 0 until calibrated, likewise.
- ipset lookup: 60 ns. No published per-lookup figure (§7.2); an estimate of a hash lookup plus
  xt_set's overhead, until calibrated.
- BPF hash lookup: 30 ns (Protopopov's bpf-hashmap-lookup bench: 20–32 ns for 4-byte keys,
  44–56 ns for 64-byte ones; the lb keys are 12 bytes). Conntrack: the same hash cost.
- BPF LPM trie lookup: by entries, log-interpolated from Fleming's lpm-trie-lookup bench (37 ns at
  1 entry, 62 at 100, 85 at 1k, 133 at 10k, 263 at 100k, 665 at 1M; /32 keys) minus its ≈27.5 ns
  harness. The ipcache and the policy maps are LPM tries (reference/cilium.md §1.1, §2).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: (entries, ns per lookup) from the lpm-trie-lookup bench (reference/iptables.md §7.3), harness removed.
LPM_POINTS: tuple[tuple[int, float], ...] = (
    (1, 37 - 27.5), (100, 62 - 27.5), (1_000, 85 - 27.5), (10_000, 133 - 27.5), (100_000, 263 - 27.5),
    (1_000_000, 665 - 27.5),
)


@dataclass(frozen=True)
class OperationCosts:
    """Nanoseconds per operation, and where the numbers come from."""

    iptables_rule_ns: float = 22.0  # the nf_tables backend (iptables-nft), today's default
    iptables_legacy_rule_ns: float = 22.0  # the legacy backend (x_tables); published figures do not split them
    ipset_lookup_ns: float = 60.0
    #: a new connection to a kube-proxy Service beyond the rules it walks (jumps, backend draw,
    #: DNAT); no published figure, so 0 until ``--calibrate`` measures it
    service_ns: float = 0.0
    #: the NodePort rule's address-type check (a route lookup) beyond a plain rule, paid by every new
    #: connection that walks KUBE-SERVICES to its end; 0 until ``--calibrate`` measures it
    addrtype_ns: float = 0.0
    bpf_hash_lookup_ns: float = 30.0
    lpm_points: tuple[tuple[int, float], ...] = LPM_POINTS
    source: str = "published figures (reference/iptables.md §7)"
    details: dict[str, str] = field(default_factory=dict)

    def lpm_lookup_ns(self, entries: int) -> float:
        """One LPM trie lookup in a map of ``entries`` entries (log-linear between the points)."""
        points = self.lpm_points
        n = max(1, entries)
        if n <= points[0][0]:
            return points[0][1]
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            if n <= x1:
                t = (math.log(n) - math.log(x0)) / (math.log(x1) - math.log(x0))
                return y0 + t * (y1 - y0)
        return points[-1][1]

    def to_json(self) -> str:
        doc = asdict(self)
        doc["lpm_points"] = [list(p) for p in self.lpm_points]
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: str | Path) -> OperationCosts:
        """A profile written by ``netpolc cost --calibrate`` (a clear error for anything else)."""
        try:
            doc = json.loads(Path(path).read_text())
            points = tuple((int(x), float(y)) for x, y in doc.pop("lpm_points", LPM_POINTS))
            known = {f for f in cls.__dataclass_fields__ if f != "lpm_points"}
            unknown = sorted(set(doc) - known)
            if unknown:
                hint = "; recalibrate with netpolc cost --calibrate" if unknown == ["dnat_ns"] else ""
                raise ValueError(f"unknown field {unknown[0]!r}{hint}")
            return cls(**doc, lpm_points=points)
        except (OSError, ValueError, TypeError) as err:
            raise ValueError(f"{path}: not a netpolc cost profile ({err})") from None
