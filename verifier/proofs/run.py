"""Running a target-against-target proof: slices, their answers, and replaying witnesses.

The slices are independent, so they are spread over ``ctx.jobs`` processes; each process builds
the formulas once from the artifact texts (Z3 objects do not cross process boundaries), and one
pass answers every proof that shares its slices (:mod:`verifier.proofs.passes`). A witness the
solver finds is replayed through both targets' simulators: only a difference the simulators
confirm is reported as a counterexample, with both traces.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from compiler.flow import Flow, Protocol
from verifier.proofs import passes
from verifier.proofs.passes import SOURCE, Solved, answers_of, missing_side, plan
from verifier.proofs.result import Counterexample, ProofContext, ProofResult, Side, Status
from verifier.proofs.slices import Slice

SHOWN = 5  # counterexamples kept per proof (the first ones, in slice order)


def _whole(piece: Slice, node: int | None) -> Slice:
    """The whole-flow slice a half slice is re-proved with when its halves cannot decide."""
    nodes = frozenset() if node is None else frozenset({node})
    src_not = piece.src_not | nodes | (frozenset({piece.dst}) if piece.dst is not None else frozenset())
    dst_not = piece.dst_not | nodes | (frozenset({piece.src}) if piece.src is not None else frozenset())
    return replace(piece, name=f"{piece.name} (whole flows)", half="", src_not=src_not, dst_not=dst_not,
                   src_kind="" if piece.src_kind == "class" else piece.src_kind,
                   dst_kind="" if piece.dst_kind == "class" else piece.dst_kind)


def compare_targets(name: str, claim: str, left: str, right: str, ctx: ProofContext) -> ProofResult:
    """Prove ``left`` ≡ ``right`` on every slice of the cluster (either may be ``source``, the
    semantics of ``ctx.source``), reading the answers an earlier proof's pass solved for it
    (verifier/proofs/passes.py) or running a pass, which solves later proofs' slices too."""
    started = time.perf_counter()
    missing = missing_side(left, right, ctx)
    if missing is not None:
        return ProofResult(name, claim, Status.UNKNOWN, 0, 0.0, unknown=(missing,))
    solved: Solved | None = ctx.passes.pop((left, right), None)
    if solved is not None:
        work, stream, extra = solved.pass_, iter(solved.answers), solved.seconds
    else:
        work = plan(left, right, ctx)
        stream, extra = passes.run(name, work, ctx), 0.0
    pieces = work.pieces
    node = ipaddress.ip_address(ctx.cluster.node_ip)
    found: list[Counterexample] = []
    unknown: list[str] = []
    differing = 0
    sims = ctx.simulators
    total = len(pieces)
    done = 0

    def confirm(piece: Slice, witness: Any) -> Counterexample | None:
        nonlocal sims
        if sims is None or any(t not in sims for t in (left, right)):
            sims = _simulators(left, right, ctx)
        return _replay(piece, witness, left, right, sims)

    while pieces:
        again: list[Slice] = []  # half slices the halves could not decide, as whole flows
        for piece, (status, witness, reason, _seconds) in stream:
            done += 1
            ctx.progress(name, done, total)
            if status == "same":
                continue
            if piece.half and (status == "unknown" or len(found) < SHOWN):
                example = confirm(piece, witness) if status == "differ" else None
                if example is None:  # the halves differ where the other halves mask it, or could not say
                    again.append(_whole(piece, int(node) if node.version == piece.family else None))
                    total += 1
                else:
                    differing += 1
                    found.append(example)
                continue
            if status == "unknown":
                unknown.append(f"{piece.name}: {reason}")
            elif status == "differ":
                differing += 1
                if len(found) >= SHOWN:
                    continue
                example = confirm(piece, witness)
                if example is None:
                    unknown.append(f"{piece.name}: the formulas differ on {flow_text(_flow_of(piece, witness))} but "
                                   "the simulators agree there (an encoding fault; not reported as a counterexample)")
                else:
                    found.append(example)
        pieces = again
        stream = ((piece, answers[0]) for piece, answers in
                  answers_of(((left, right),), pieces, ctx, work.classes.excluded, work.space))
    status_ = Status.COUNTEREXAMPLE if found else Status.UNKNOWN if unknown else Status.PROVED
    if differing > len(found) and found:
        unknown.append(f"{differing} slice(s) differ; the first {len(found)} are shown")
    lent = sum(s.seconds for p in work.pairs[1:] if (s := ctx.passes.get(p)) is not None and s.by == name)
    return ProofResult(name, claim, status_, total, time.perf_counter() - started + extra - lent, tuple(found),
                       tuple(unknown), solved_in=solved.by if solved is not None else "")


def _simulators(left: str, right: str, ctx: ProofContext) -> dict[str, Any]:
    from verifier.simulate.targets import SourceSimulator, simulators

    sims = dict(ctx.simulators or {})
    missing = {t: ctx.files[t] for t in (left, right) if t not in sims and t != SOURCE}
    sims.update(simulators(missing, ctx.cluster))
    if SOURCE in (left, right) and SOURCE not in sims:
        assert ctx.source is not None
        sims[SOURCE] = SourceSimulator(ctx.source.inputs, ctx.source.profile, ctx.source.label_filter)
    return sims


def _flow_of(piece: Slice, witness: Any) -> Flow:
    def address(value: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.IPv4Address(value) if piece.family == 4 else ipaddress.IPv6Address(value)

    return Flow(address(witness.src), address(witness.dst), Protocol(witness.protocol), witness.port)


def flow_text(flow: Flow) -> str:
    """``10.0.0.1 -> 10.0.0.2 TCP/80``, as counterexamples name their flow."""
    return f"{flow.src} -> {flow.dst} {flow.protocol.name}/{flow.port}"


def _replay(piece: Slice, witness: Any, left: str, right: str, sims: Mapping[str, Any]) -> Counterexample | None:
    flow = _flow_of(piece, witness)
    answers = [sims[t].answer(flow) for t in (left, right)]
    if answers[0].verdict == answers[1].verdict:
        return None
    sides = tuple(Side(t, str(a), tuple(a.trace)) for t, a in zip((left, right), answers, strict=True))
    return Counterexample(piece.name, flow_text(flow), sides, str(flow.src), str(flow.dst),
                          flow.protocol.name, flow.port)
