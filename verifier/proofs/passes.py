"""One pass over the slices for every pair of sides that can share it.

``iptables-ebpf`` and ``ebpf-source`` cut the flow space the same way when their sides' address
classes and slicing mode agree: then one pass over the slices of the *joint* classes (the
classes under all three sides, each a class under any two of them, so every representative still
stands for its members in each proof) builds each side's formula once per slice and asks both
questions. The proof that runs first solves the later one's slices too; the later one finds its
answers in :attr:`ProofContext.passes` and only reads them (replays witnesses, re-proves what its
halves could not decide).

Which later proofs can join is told by :func:`verifier.proofs.run_proofs` (``ctx.ahead``: the
side pairs of the proofs still to run that compare slice by slice); a pair joins when its
sides are there and its slicing mode (half flows or whole flows, :func:`_halvable`) is the first
pair's.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from compiler.cluster import Cluster
from verifier.proofs.address_classes import AddressClasses, address_classes
from verifier.proofs.result import ProofContext
from verifier.proofs.slices import ClassSpace, Slice, half_slices, slices

SOURCE = "source"  # the source semantics' name among the sides (verifier.encoding.targets.SOURCE)
TIMEOUT_MS = 60_000

Pair = tuple[str, str]
Files = Mapping[str, Mapping[str, str]]
#: per pair asked: status ("same", "differ", "unknown"), witness, reason, seconds the worker spent on it
Answer = tuple[str, Any, str, float]

#: the sides whose encodings have a half-flow outcome (verifier/encoding/targets.py, ``Encoded.half``)
HALVED = frozenset({"iptables", "ebpf", SOURCE})

_WORKER: Any = None


@dataclass
class Pass:
    """The slices of one pass and the classes they were cut from."""

    pairs: tuple[Pair, ...]  # the first is the proof running the pass
    classes: AddressClasses
    pieces: list[Slice]
    space: ClassSpace | None  # what free addresses range over (half-flow slices only)


@dataclass
class Solved:
    """A later proof's answers, solved in an earlier proof's pass, with its share of that pass's
    time (the pass's wall time split by the workers' seconds per pair)."""

    by: str  # the proof whose pass it was
    pass_: Pass
    answers: list[tuple[Slice, Answer]]
    seconds: float


def missing_side(left: str, right: str, ctx: ProofContext) -> str | None:
    """Why the pair cannot be compared here (no such artifacts, no policies), None when it can."""
    for side in (left, right):
        if side == SOURCE and ctx.source is None:
            return "no source policies given"
        if side != SOURCE and side not in ctx.files:
            return f"no {side} artifacts"
    return None


def sides_files(pairs: Sequence[Pair], ctx: ProofContext) -> dict[str, Mapping[str, str]]:
    """The artifacts of the pairs' target sides."""
    return {t: ctx.files[t] for pair in pairs for t in pair if t in ctx.files}


def _halvable(pair: Pair, files: Files) -> bool:
    """Whether the pair can be proved by half flows (verifier/proofs/slices.py, half_slices):
    every side composes from halves (eBPF by construction, the source by definition, iptables when
    its layout shows it). It is, unless an address belongs to two endpoints."""
    from verifier.encoding.targets import composable

    own = {t: files[t] for t in pair if t in files}  # iptables' layout is asked about only when it is a side
    return set(pair) <= HALVED and composable(own) is None


def plan(left: str, right: str, ctx: ProofContext) -> Pass:
    """The pass of a proof of ``left`` against ``right``: the pairs of ``ctx.ahead`` that
    can join it, the joint classes and their slices."""
    files = sides_files([(left, right), *ctx.ahead], ctx)
    mode = _halvable((left, right), files)
    pairs = [(left, right)] + [p for p in dict.fromkeys(ctx.ahead) if p != (left, right)
                               and missing_side(*p, ctx) is None and _halvable(p, files) == mode]
    sides = {side for pair in pairs for side in pair}
    classes = address_classes(sides_files(pairs, ctx), ctx.cluster, sides, ctx.source, ctx.jobs)
    if mode and not classes.shared:
        pieces, space = cluster_half_slices(ctx.cluster, classes)
        return Pass(tuple(pairs), classes, pieces, space)
    return Pass(tuple(pairs), classes, cluster_slices(ctx.cluster, classes), None)


def cluster_slices(cluster: Cluster, classes: AddressClasses | None = None) -> list[Slice]:
    """Every slice of the families the cluster's endpoints (or node) have addresses in; with
    ``classes``, one endpoint's slices per class, named for the endpoints they stand for."""
    classes = classes or AddressClasses()
    node = ipaddress.ip_address(cluster.node_ip)
    out: list[Slice] = []
    for family in (4, 6):
        excluded = classes.excluded.get(family, frozenset())
        kept = [(ep.key, int(a)) for ep in cluster.endpoints for a in ep.addresses
                if a.version == family and int(a) not in excluded]
        if not kept and node.version != family:
            continue
        heads = {(_named(key, classes.stands_for(family, address)), address) for key, address in kept
                 if classes.representative(family, address)}
        out.extend(slices(family, heads, int(node) if node.version == family else None, {a for _, a in kept}))
    return out


def cluster_half_slices(cluster: Cluster, classes: AddressClasses) -> tuple[list[Slice], ClassSpace]:
    """The half-flow slices of the cluster (one endpoint per class) and what their free
    addresses range over."""
    node = ipaddress.ip_address(cluster.node_ip)
    space = ClassSpace()
    out: list[Slice] = []
    for family in (4, 6):
        addresses = {int(a) for ep in cluster.endpoints for a in ep.addresses if a.version == family}
        heads = sorted((a, k) for (f, a), k in classes.members.items() if f == family)
        if not addresses and node.version != family:
            continue
        space.values[family] = tuple(a for a, _ in heads)
        space.alternates[family] = {a: alt for (f, a), alt in classes.alternates.items() if f == family}
        space.endpoints[family] = frozenset(addresses)
        named = [(_named(keys[0], keys), address) for address, keys in heads]
        out.extend(half_slices(family, named, int(node) if node.version == family else None))
    return out, space


def _named(key: str, members: tuple[str, ...]) -> str:
    return key if len(members) <= 1 else f"{key} (+{len(members) - 1} alike)"


def run(name: str, work: Pass, ctx: ProofContext) -> Iterator[tuple[Slice, Answer]]:
    """The first pair's answers, slice by slice, for proof ``name``; once they are all out,
    the other pairs' answers are in ``ctx.passes``."""
    started = time.perf_counter()
    later: dict[Pair, list[tuple[Slice, Answer]]] = {p: [] for p in work.pairs[1:]}
    spent = dict.fromkeys(work.pairs, 0.0)
    for piece, answers in answers_of(work.pairs, work.pieces, ctx, work.classes.excluded, work.space):
        for pair, answer in zip(work.pairs, answers, strict=True):
            spent[pair] += answer[3]
            if pair in later:
                later[pair].append((piece, answer))
        yield piece, answers[0]
    wall = time.perf_counter() - started
    total = sum(spent.values()) or 1.0
    for pair, found in later.items():
        ctx.passes[pair] = Solved(name, work, found, wall * spent[pair] / total)


def answers_of(pairs: Sequence[Pair], pieces: list[Slice], ctx: ProofContext,
               excluded: Mapping[int, frozenset[int]], space: ClassSpace | None = None,
               ) -> Iterator[tuple[Slice, tuple[Answer, ...]]]:
    """Every pair's answer on every slice, in slice order, from ``ctx.jobs`` worker processes
    (each builds the formulas once from the artifact texts: Z3 objects do not cross processes)."""
    pairs = tuple(pairs)
    source = ctx.source if any(SOURCE in pair for pair in pairs) else None
    init = (sides_files(pairs, ctx), ctx.cluster.node_ip, source, excluded, space)
    if ctx.jobs <= 1 or len(pieces) < 8:
        _init(*init)
        yield from map(_check, ((pairs, piece) for piece in pieces))
        return
    # the slices that fix no endpoint address take the longest (every rule may see their flows):
    # handed out first, they do not leave one worker busy at the end while the others idle
    order = sorted(range(len(pieces)), key=lambda i: not _broad(pieces[i]))
    held: dict[int, tuple[Slice, tuple[Answer, ...]]] = {}
    following = 0
    with ProcessPoolExecutor(ctx.jobs, initializer=_init, initargs=init) as pool:
        # chunks small enough that no worker idles long at the end, large enough to amortise the messages
        chunk = max(1, len(pieces) // (ctx.jobs * 32))
        for index, found in zip(order, pool.map(_check, [(pairs, pieces[i]) for i in order], chunksize=chunk),
                                strict=True):
            held[index] = found
            while following in held:  # in slice order, whatever order they were solved in
                yield held.pop(following)
                following += 1


def _broad(piece: Slice) -> bool:
    """Whether a slice fixes no endpoint address (only the node's, or none)."""
    return not ((piece.src is not None and not piece.local_src) or (piece.dst is not None and not piece.local_dst))


def _init(files: Files, node_ip: str, source: Any, excluded: Mapping[int, frozenset[int]],
          space: ClassSpace | None = None) -> None:
    global _WORKER
    from verifier.encoding.targets import TargetEncodings

    _WORKER = TargetEncodings(files, node_ip, source, excluded, space)


def _check(job: tuple[tuple[Pair, ...], Slice]) -> tuple[Slice, tuple[Answer, ...]]:
    pairs, piece = job
    found = _WORKER.compare_all(pairs, piece, TIMEOUT_MS)
    return piece, tuple((a.status, a.witness, a.reason, seconds) for a, seconds in found)
