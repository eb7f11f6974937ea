"""iptables ≡ eBPF: on every flow the two datapaths give the same L3/L4 verdict and proxy port.

Both sides are built from the artifact files (``OUT/iptables/``, ``OUT/ebpf/``) and compared
slice by slice (:mod:`verifier.proofs.slices`) for the first packet of a connection. What the
packet then meets in a proxy is the business of the L7 proofs.
"""

from __future__ import annotations

from verifier.proofs.result import ProofContext, ProofResult
from verifier.proofs.run import compare_targets

NAME = "iptables-ebpf"
CLAIM = "iptables and eBPF give every flow the same verdict and proxy port"
SIDES = ("iptables", "ebpf")  # compared slice by slice (verifier/proofs/passes.py)


def prove(ctx: ProofContext) -> ProofResult:
    return compare_targets(NAME, CLAIM, *SIDES, ctx)
