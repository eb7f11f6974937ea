"""The proofs ``netpolc verify`` runs, one per module (DESIGN.md §5).

A proof module has ``NAME``, ``CLAIM`` and ``prove(ctx) -> ProofResult``
(:mod:`verifier.proofs.result`); adding a proof means writing its module and listing it in
:data:`PROOFS`. Proofs never import z3: formulas and solving live in :mod:`verifier.encoding`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from verifier.proofs import ebpf_source, envoy_source, iptables_ebpf, iptables_source
from verifier.proofs.result import Counterexample, ProofContext, ProofResult, Side, SourceSpec, Status

PROOFS: tuple[ModuleType, ...] = (iptables_ebpf, ebpf_source, iptables_source, envoy_source)


def proofs() -> dict[str, Callable[[ProofContext], ProofResult]]:
    """Proof name → its ``prove``."""
    return {module.NAME: module.prove for module in PROOFS}


__all__ = ["PROOFS", "Counterexample", "ProofContext", "ProofResult", "Side", "SourceSpec", "Status", "proofs"]
