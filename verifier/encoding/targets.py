"""Each target's outcome formula, built from its artifact files, behind one interface.

A proof process holds one :class:`TargetEncodings` per artifact set and asks it, slice by slice,
whether two targets can disagree. Adding a target means adding its builder to :data:`BUILDERS`.
The source semantics (:mod:`verifier.encoding.source`) takes part as one more side, ``source``,
when the policies are given.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import z3

from verifier.encoding.ebpf import EbpfEncoding
from verifier.encoding.iptables import IptablesEncoding, NotComposable, Unencodable
from verifier.encoding.solve import Answer, check_bv, differ, packet_of
from verifier.encoding.terms import KIND_ALLOWED, Cond, SymPacket, and_, or_
from verifier.encoding.terms import outcome as outcome_constant
from verifier.proofs.result import SourceSpec
from verifier.proofs.slices import ClassSpace, Slice

Outcome = Callable[[SymPacket, Slice], z3.BitVecRef]
Half = Callable[[SymPacket, str], z3.BitVecRef]  # (packet, "src"/"dst") → that half's outcome


@dataclass(frozen=True)
class Encoded:
    """One side's formulas: the whole-flow outcome, and the half-flow outcome where the side
    composes from halves (verifier/proofs/slices.py, half_slices)."""

    outcome: Outcome
    half: Half | None = None

#: The name the source semantics goes by among the targets.
SOURCE = "source"


Excluded = Mapping[int, frozenset[int]]


def _iptables(files: Mapping[str, str], node_ip: str, excluded: Excluded) -> Encoded:
    from compiler.targets.iptables import marks
    from verifier.artifacts import read_ipsets, read_iptables

    encodings: dict[int, IptablesEncoding] = {}
    node = frozenset({int(ipaddress.ip_address(node_ip))})
    for family in (4, 6):
        rules = files.get(f"rules.v{family}")
        if rules is not None:
            ruleset = read_iptables(rules, f"iptables/rules.v{family}", family)
            ipsets = read_ipsets(files.get(f"ipsets.v{family}", ""), f"iptables/ipsets.v{family}")
            encodings[family] = IptablesEncoding(ruleset, ipsets, node, (marks.PROXY, marks.PROXY),
                                                 excluded.get(family, frozenset()))

    def outcome(packet: SymPacket, piece: Slice) -> z3.BitVecRef:
        enc = encodings.get(packet.family)
        if enc is None:
            return outcome_constant(KIND_ALLOWED)  # no rules of this family were emitted: nothing filters it
        return enc.outcome(packet, piece.local_src, piece.local_dst)

    def half(packet: SymPacket, side: str) -> z3.BitVecRef:
        enc = encodings.get(packet.family)
        return outcome_constant(KIND_ALLOWED) if enc is None else enc.half(packet, side)

    return Encoded(outcome, half)


def composable(files: Mapping[str, Mapping[str, str]]) -> str | None:
    """Why the iptables artifacts in ``files`` are not an egress half and an ingress half
    (verifier/encoding/iptables_phases.py), None when they are (or there are none)."""
    from verifier.artifacts import read_iptables
    from verifier.encoding.iptables_phases import phases

    for family in (4, 6):
        rules = files.get("iptables", {}).get(f"rules.v{family}")
        if rules is not None:
            layout = phases(read_iptables(rules, f"iptables/rules.v{family}", family))
            if isinstance(layout, str):
                return f"iptables/rules.v{family}: {layout}"
    return None


def _ebpf(files: Mapping[str, str], node_ip: str, excluded: Excluded) -> Encoded:
    from verifier.simulate.ebpf import EbpfArtifacts

    enc = EbpfEncoding(EbpfArtifacts.of(files), excluded)
    return Encoded(lambda packet, _piece: enc.outcome(packet), enc.half)


#: target → builder of its outcome formula from ``OUT/<target>/`` files, the node address and the
#: excluded addresses (verifier/proofs/address_classes.py).
BUILDERS: dict[str, Callable[[Mapping[str, str], str, Excluded], Encoded]] = {"iptables": _iptables, "ebpf": _ebpf}

#: witnesses on excluded addresses ruled out per slice before the answer is ``unknown``
SPURIOUS_RETRIES = 16


class TargetEncodings:
    """The outcome formulas of the targets in ``files`` (target → relative path → text), over a
    flow space without the ``excluded`` addresses (per family; see
    verifier/proofs/address_classes.py)."""

    def __init__(self, files: Mapping[str, Mapping[str, str]], node_ip: str, source: SourceSpec | None = None,
                 excluded: Excluded | None = None, space: ClassSpace | None = None) -> None:
        """``space``: what the free addresses of half-flow slices range over."""
        self.excluded: Excluded = excluded or {}
        self.space = space or ClassSpace()
        self.sides = {name: BUILDERS[name](texts, node_ip, self.excluded) for name, texts in files.items()
                      if name in BUILDERS}
        if source is not None:
            from verifier.encoding.source import SourceEncoding

            enc = SourceEncoding(source.inputs, source.profile, source.label_filter, self.excluded)
            self.sides[SOURCE] = Encoded(enc.outcome, enc.half)

    def _terms(self, name: str, packet: SymPacket, piece: Slice) -> z3.BitVecRef:
        side = self.sides[name]
        if not piece.half:
            return side.outcome(packet, piece)
        if side.half is None:
            raise NotComposable(f"{name} has no half-flow encoding")
        return side.half(packet, piece.half)

    def compare(self, left: str, right: str, piece: Slice, timeout_ms: int) -> Answer:
        """Can ``left`` and ``right`` give different outcomes to a packet of ``piece``?"""
        return self.compare_all(((left, right),), piece, timeout_ms)[0][0]

    def compare_all(self, pairs: Sequence[tuple[str, str]], piece: Slice,
                    timeout_ms: int) -> list[tuple[Answer, float]]:
        """:meth:`compare` for each pair of sides on one slice, each side's formula built once
        (proofs that share their slices ask together); with each answer, the seconds it took
        (a formula two pairs share counts for the first). Pairs whose formulas are not one term
        are first asked at once, whether any of them differs anywhere in the slice: in a proved
        cluster none does, and one query is answered faster than several."""
        clock = [time.perf_counter()]
        seconds = [0.0] * len(pairs)

        def lap(index: int, share: int = 1) -> None:  # the time since the last lap, to pair ``index``
            now = time.perf_counter()
            seconds[index] += (now - clock[0]) / share
            if share == 1:
                clock[0] = now

        packet, domain = packet_of(piece, self.space)
        terms: dict[str, z3.BitVecRef | Unencodable] = {}
        answers: list[Answer] = []
        asked: list[tuple[int, z3.BitVecRef, z3.BitVecRef]] = []
        for index, (left, right) in enumerate(pairs):
            a, b = (self._term_once(terms, name, packet, piece) for name in (left, right))
            if isinstance(a, Unencodable) or isinstance(b, Unencodable):
                answers.append(Answer("unknown", reason=str(a if isinstance(a, Unencodable) else b)))
            elif a.eq(b):  # one term (Z3 shares equal terms): equal on every packet, no solver needed
                answers.append(Answer("same"))
            else:
                answers.append(Answer("same"))  # until asked below
                asked.append((index, a, b))
            lap(index)
        if len(asked) > 1:
            either = or_(*(a != b for _, a, b in asked))
            if check_bv(domain, either, timeout_ms=timeout_ms)[0] == "unsat":  # none differs anywhere in the slice
                for index, _, _ in asked:
                    lap(index, len(asked))
                return list(zip(answers, seconds, strict=True))
        for index, a, b in asked:
            answers[index] = self._differ(a, b, packet, domain, piece, timeout_ms)
            lap(index)
        return list(zip(answers, seconds, strict=True))

    def _term_once(self, terms: dict[str, z3.BitVecRef | Unencodable], name: str, packet: SymPacket,
                   piece: Slice) -> z3.BitVecRef | Unencodable:
        if name not in terms:
            try:
                terms[name] = self._terms(name, packet, piece)
            except Unencodable as err:
                terms[name] = err
        return terms[name]

    def _differ(self, a: z3.BitVecRef, b: z3.BitVecRef, packet: SymPacket, domain: Cond,
                piece: Slice, timeout_ms: int) -> Answer:
        """Search the slice for a packet where ``a`` and ``b`` (two terms) differ, ruling out
        witnesses on addresses the proof stands for by others."""
        excluded = self.excluded.get(piece.family, frozenset())
        endpoints = self.space.endpoints.get(piece.family, frozenset())
        skips = {"src": endpoints if piece.src_kind == "outside" else excluded,
                 "dst": endpoints if piece.dst_kind == "outside" else excluded}
        for _ in range(SPURIOUS_RETRIES):
            answer = differ(a, b, packet, domain, timeout_ms)
            w = answer.witness
            if w is None or (w.src not in skips["src"] and w.dst not in skips["dst"]):
                return answer
            # the formulas say nothing true of an excluded address: rule it out and ask again
            domain = and_(domain, *(field != value for name, field, value in
                                    (("src", packet.src, w.src), ("dst", packet.dst, w.dst))
                                    if isinstance(field, z3.BitVecRef) and value in skips[name]))
        return Answer("unknown", reason=f"{SPURIOUS_RETRIES} witnesses in a row fell on addresses the proof "
                                        "stands for by others (verifier/proofs/address_classes.py)")
