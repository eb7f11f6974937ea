"""``netpolc cost`` output: a table (text or markdown), JSON, and plots (PNG or SVG)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from verifier.cost.model import OperationCosts
from verifier.cost.sweep import PointResult, Stats

COLUMNS = ("pods", "services", "policies", "ipt rules (new) mean/p99", "ipset (new)", "ipt est ns (new) mean/p99",
           "ebpf lookups (new) mean/p99", "ebpf est ns (new) mean/p99", "ipt rules (est.)", "ebpf lookups (est.)",
           "ipt/ebpf ns (new)")


def _pair(stats: Stats, digits: int = 1) -> str:
    return f"{stats.mean:.{digits}f} / {stats.p99:.{digits}f}"


def _row(r: PointResult) -> list[str]:
    ratio = r.new.iptables_ns.mean / r.new.ebpf_ns.mean if r.new.ebpf_ns.mean else 0.0
    return [str(r.point.pods), str(r.point.services), str(r.point.policies), _pair(r.new.iptables_rules),
            f"{r.new.ipset_lookups.mean:.1f}", _pair(r.new.iptables_ns, 0), _pair(r.new.ebpf_lookups),
            _pair(r.new.ebpf_ns, 0), f"{r.established.iptables_rules.mean:.1f}",
            f"{r.established.ebpf_lookups.mean:.1f}", f"{ratio:.1f}x"]


KERNEL_COLUMNS = ("pods", "services", "policies", "ipt nat ns measured", "ipt nat ns est.", "measured/est.",
                  "ebpf policy ns measured", "ebpf policy ns est.", "measured/est.")


def _kernel_row(r: PointResult) -> list[str] | None:
    k = r.kernel
    if k is None:
        return None
    return [str(r.point.pods), str(r.point.services), str(r.point.policies), f"{k.nat_measured_ns:.0f}",
            f"{k.nat_estimated_ns:.0f}", f"{k.nat_ratio:.2f}x", f"{k.policy_measured_ns:.0f}",
            f"{k.policy_estimated_ns:.0f}", f"{k.policy_ratio:.2f}x"]


def _kernel_rows(results: Sequence[PointResult]) -> list[list[str]]:
    return [row for r in results if (row := _kernel_row(r)) is not None]


def render_markdown(results: Sequence[PointResult], costs: OperationCosts) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---:|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in results]
    measured = _kernel_rows(results)
    if measured:
        lines += ["", "Measured on this kernel (new connections; see verifier/kernel/measure_cost.py):", "",
                  "| " + " | ".join(KERNEL_COLUMNS) + " |", "|" + "---:|" * len(KERNEL_COLUMNS)]
        lines += ["| " + " | ".join(row) + " |" for row in measured]
    lines += ["", f"Per-operation costs: {costs.source}; iptables rule {costs.iptables_rule_ns:g} ns, ipset lookup "
              f"{costs.ipset_lookup_ns:g} ns, BPF hash lookup {costs.bpf_hash_lookup_ns:g} ns, LPM lookup by size "
              f"({costs.lpm_lookup_ns(1000):.0f} ns at 1k entries)."]
    return "\n".join(lines) + "\n"


def _aligned(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    rows = [list(header), *body]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]


def render_text(results: Sequence[PointResult], costs: OperationCosts) -> str:
    out = _aligned(COLUMNS, [_row(r) for r in results])
    measured = _kernel_rows(results)
    if measured:
        out += ["", "measured on this kernel (new connections):", *_aligned(KERNEL_COLUMNS, measured)]
    out.append(f"per-operation costs: {costs.source}")
    return "\n".join(out) + "\n"


def render_json(results: Sequence[PointResult], costs: OperationCosts) -> str:
    points = []
    for r in results:
        item = {**asdict(r), "point": str(r.point)}
        if r.kernel is not None:
            item["kernel"].update(nat_ratio=round(r.kernel.nat_ratio, 3), policy_ratio=round(r.kernel.policy_ratio, 3))
        points.append(item)
    doc = {"costs": json.loads(costs.to_json()), "points": points}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}


def plot(results: Sequence[PointResult], path: Path, x: str) -> None:
    """Estimated ns per new-connection packet (mean and p99) on both datapaths against ``x``
    ("services" or "policies"), written as PNG or SVG by the file's suffix."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.hashsalt"] = "netpolc"  # stable element ids: same numbers, same file
    import matplotlib.pyplot as plt

    if path.suffix.lower() not in (".png", ".svg"):
        raise ValueError(f"{path}: plots are .png or .svg")
    ordered = sorted(results, key=lambda r: getattr(r.point, x))
    xs = [getattr(r.point, x) for r in ordered]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    series: list[tuple[str, list[Stats], str]] = [("iptables", [r.new.iptables_ns for r in ordered], "tab:red"),
                                                  ("eBPF", [r.new.ebpf_ns for r in ordered], "tab:blue")]
    for name, stats, color in series:
        top.plot(xs, [s.mean / 1000 for s in stats], "o-", color=color, label=f"{name} mean")
        top.plot(xs, [s.p99 / 1000 for s in stats], "s--", color=color, alpha=0.6, label=f"{name} p99")
    top.set_ylabel("estimated µs per new-connection packet")
    top.legend()
    top.grid(alpha=0.3)
    bottom.plot(xs, [r.new.iptables_rules.mean for r in ordered], "o-", color="tab:red", label="iptables rules")
    bottom.plot(xs, [r.new.ebpf_lookups.mean for r in ordered], "o-", color="tab:blue", label="eBPF map lookups")
    bottom.set_ylabel("operations per packet (mean)")
    bottom.set_xlabel(f"{x} (pods {ordered[0].point.pods if ordered else ''})")
    bottom.set_yscale("log")
    bottom.legend()
    bottom.grid(alpha=0.3)
    fig.suptitle(f"Per-packet lookup cost vs {x} (netpolc cost)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # no timestamps in the SVG/PNG metadata: the same numbers give the same file
    fig.savefig(path, metadata={"Date": None} if path.suffix.lower() == ".svg" else {"Software": None})
    plt.close(fig)
