"""iptables ≡ source: the iptables artifacts do to every flow what docs/SEMANTICS.md says the policies do.

The iptables side is built from ``OUT/iptables/``; the other side straight from the parsed policies
(:mod:`verifier.encoding.source`), under the profile the artifacts were compiled with. Compared
slice by slice for the first packet of a connection: the same verdict and, for flows the
policies send to an L7 parser, the same proxy port. What the proxy then decides is the
``envoy-source`` proof's business.

When ``iptables-ebpf`` and ``ebpf-source`` were both proved earlier in the same run, this claim
follows without a solver call: each of them says two outcome formulas (verdict and proxy port,
:mod:`verifier.encoding.targets`) are equal on every flow of the cluster, and equality is
transitive. The composition is reported as such (``via``); either one unproved, or this proof
asked for on its own, and it runs in full.
"""

from __future__ import annotations

from verifier.proofs.passes import SOURCE
from verifier.proofs.result import ProofContext, ProofResult, Status
from verifier.proofs.run import compare_targets

NAME = "iptables-source"
CLAIM = "iptables gives every flow the verdict and proxy port the source policies give it"
#: iptables ≡ ebpf and ebpf ≡ source: the two proofs this one is the composition of
VIA = ("iptables-ebpf", "ebpf-source")


def prove(ctx: ProofContext) -> ProofResult:
    if all(ctx.proved(name) for name in VIA):
        return ProofResult(NAME, CLAIM, Status.PROVED, 0, 0.0, via=VIA)
    return compare_targets(NAME, CLAIM, "iptables", SOURCE, ctx)
