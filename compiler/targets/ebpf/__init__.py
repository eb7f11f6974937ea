"""eBPF target: Cilium 1.18 ipcache and per-endpoint policy maps (see :mod:`.target`)."""

from __future__ import annotations

from compiler.targets import register
from compiler.targets.ebpf.target import EbpfTarget, map_name

register(EbpfTarget)

__all__ = ["EbpfTarget", "map_name"]
