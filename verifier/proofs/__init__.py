"""The proofs ``netpolc verify`` runs, one per module (DESIGN.md §5).

A proof module has ``NAME``, ``CLAIM`` and ``prove(ctx) -> ProofResult``
(:mod:`verifier.proofs.result`); adding a proof means writing its module and listing it in
:data:`PROOFS`. A proof that compares two sides slice by slice names them in ``SIDES``, so that
an earlier proof's pass over the same slices can solve its slices too
(:mod:`verifier.proofs.passes`). Proofs never import z3: formulas and solving live in :mod:`verifier.encoding`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import ModuleType

from verifier.proofs import ebpf_source, envoy_source, iptables_ebpf, iptables_source
from verifier.proofs.result import Counterexample, ProofContext, ProofResult, Side, SourceSpec, Status

PROOFS: tuple[ModuleType, ...] = (iptables_ebpf, ebpf_source, iptables_source, envoy_source)


def proofs() -> dict[str, Callable[[ProofContext], ProofResult]]:
    """Proof name → its ``prove``."""
    return {module.NAME: module.prove for module in PROOFS}


def run_proofs(ctx: ProofContext, names: Iterable[str] | None = None,
               starting: Callable[[str], None] = lambda _name: None) -> list[ProofResult]:
    """Run the proofs ``names`` (default: all) in :data:`PROOFS` order, recording each verdict in
    ``ctx.results`` as it comes (a later proof may follow from earlier ones); ``starting`` is
    told each proof's name before it runs."""
    wanted = set(names) if names is not None else {module.NAME for module in PROOFS}
    chosen = [module for module in PROOFS if module.NAME in wanted]
    results: list[ProofResult] = []
    for index, module in enumerate(chosen):
        # the slice-by-slice proofs still to come, whose slices this one's pass may solve too
        ctx.ahead[:] = [later.SIDES for later in chosen[index + 1:] if hasattr(later, "SIDES")]
        starting(module.NAME)
        result = ctx.results[module.NAME] = module.prove(ctx)
        results.append(result)
    ctx.ahead.clear()
    ctx.passes.clear()
    return results


__all__ = ["PROOFS", "Counterexample", "ProofContext", "ProofResult", "Side", "SourceSpec", "Status", "proofs",
           "run_proofs"]
