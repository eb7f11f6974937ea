"""Each target's outcome formula, built from its artifact files, behind one interface.

A proof process holds one :class:`TargetEncodings` per artifact set and asks it, slice by slice,
whether two targets can disagree. Adding a target means adding its builder to :data:`BUILDERS`.
The source semantics (:mod:`verifier.encoding.source`) takes part as one more side, ``source``,
when the policies are given.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping

import z3

from verifier.encoding.ebpf import EbpfEncoding
from verifier.encoding.iptables import IptablesEncoding, Unencodable
from verifier.encoding.solve import Answer, differ, packet_of
from verifier.encoding.terms import KIND_ALLOWED, SymPacket
from verifier.encoding.terms import outcome as outcome_constant
from verifier.proofs.result import SourceSpec
from verifier.proofs.slices import Slice

Outcome = Callable[[SymPacket, Slice], z3.BitVecRef]

#: The name the source semantics goes by among the targets.
SOURCE = "source"


def _iptables(files: Mapping[str, str], node_ip: str) -> Outcome:
    from compiler.targets.iptables import marks
    from verifier.artifacts import read_ipsets, read_iptables

    encodings: dict[int, IptablesEncoding] = {}
    node = frozenset({int(ipaddress.ip_address(node_ip))})
    for family in (4, 6):
        rules = files.get(f"rules.v{family}")
        if rules is not None:
            ruleset = read_iptables(rules, f"iptables/rules.v{family}", family)
            ipsets = read_ipsets(files.get(f"ipsets.v{family}", ""), f"iptables/ipsets.v{family}")
            encodings[family] = IptablesEncoding(ruleset, ipsets, node, (marks.PROXY, marks.PROXY))

    def outcome(packet: SymPacket, piece: Slice) -> z3.BitVecRef:
        enc = encodings.get(packet.family)
        if enc is None:
            return outcome_constant(KIND_ALLOWED)  # no rules of this family were emitted: nothing filters it
        return enc.outcome(packet, piece.local_src, piece.local_dst)

    return outcome


def _ebpf(files: Mapping[str, str], node_ip: str) -> Outcome:
    from verifier.simulate.ebpf import EbpfArtifacts

    enc = EbpfEncoding(EbpfArtifacts(files))
    return lambda packet, _piece: enc.outcome(packet)


#: target → builder of its outcome formula from ``OUT/<target>/`` files and the node address.
BUILDERS: dict[str, Callable[[Mapping[str, str], str], Outcome]] = {"iptables": _iptables, "ebpf": _ebpf}


class TargetEncodings:
    """The outcome formulas of the targets in ``files`` (target → relative path → text)."""

    def __init__(self, files: Mapping[str, Mapping[str, str]], node_ip: str, source: SourceSpec | None = None) -> None:
        self.outcomes = {name: BUILDERS[name](texts, node_ip) for name, texts in files.items() if name in BUILDERS}
        if source is not None:
            from verifier.encoding.source import SourceEncoding

            self.outcomes[SOURCE] = SourceEncoding(source.inputs, source.profile, source.label_filter).outcome

    def compare(self, left: str, right: str, piece: Slice, timeout_ms: int) -> Answer:
        """Can ``left`` and ``right`` give different outcomes to a packet of ``piece``?"""
        packet, domain = packet_of(piece)
        try:
            a = self.outcomes[left](packet, piece)
            b = self.outcomes[right](packet, piece)
        except Unencodable as err:
            return Answer("unknown", reason=str(err))
        return differ(a, b, packet, domain, timeout_ms)
