"""ebpf ≡ source: the ebpf artifacts do to every flow what docs/SEMANTICS.md says the policies do.

The ebpf side is built from ``OUT/ebpf/``; the other side straight from the parsed policies
(:mod:`verifier.encoding.source`), under the profile the artifacts were compiled with. Compared
slice by slice for the first packet of a connection: the same verdict and, for flows the
policies send to an L7 parser, the same proxy port. What the proxy then decides is the
``envoy-source`` proof's business.
"""

from __future__ import annotations

from verifier.proofs.passes import SOURCE
from verifier.proofs.result import ProofContext, ProofResult
from verifier.proofs.run import compare_targets

NAME = "ebpf-source"
CLAIM = "ebpf gives every flow the verdict and proxy port the source policies give it"
SIDES = ("ebpf", SOURCE)  # compared slice by slice (verifier/proofs/passes.py)


def prove(ctx: ProofContext) -> ProofResult:
    return compare_targets(NAME, CLAIM, *SIDES, ctx)
