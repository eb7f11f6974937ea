"""Slices of the flow space as Z3 domains, and the one question every proof asks of them.

A :class:`verifier.proofs.slices.Slice` says which address is fixed and which is free (and what
a free one may not be); here it becomes a :class:`SymPacket` and a domain constraint. The
question is :func:`differ`: is there a packet in the domain on which two outcome terms disagree?
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import z3

from verifier.encoding.terms import Address, ClassAddress, Cond, SymPacket, Value, and_, in_network, not_, or_
from verifier.proofs.slices import ICMP_NUMBER, PORT_PROTOCOLS, ClassSpace, Slice

_LOOPBACK = {4: "127.0.0.0/8", 6: "::1/128"}


@dataclass(frozen=True)
class Witness:
    """A packet on which the two terms differ: field values and both outcomes."""

    src: int
    dst: int
    protocol: int
    port: int
    left: int
    right: int


@dataclass(frozen=True)
class Answer:
    """``same`` (proved for the whole slice), ``differ`` (with a witness) or ``unknown`` (reason)."""

    status: str
    witness: Witness | None = None
    reason: str = ""


_CLASS_ADDRESSES: dict[tuple[str, int], ClassAddress] = {}  # the last one per (name, family)
_NO_ALTERNATES: Mapping[int, int] = {}


def _class_address(name: str, family: int, values: tuple[int, ...], alternates: Mapping[int, int]) -> ClassAddress:
    """The class address of one ClassSpace, made once per process (every half slice has one)."""
    held = _CLASS_ADDRESSES.get((name, family))
    if held is None or held.values is not values or held.alternates is not alternates:
        held = _CLASS_ADDRESSES[(name, family)] = ClassAddress(name, family, values, alternates)
    return held


def packet_of(piece: Slice, space: ClassSpace | None = None) -> tuple[SymPacket, Cond]:
    """The symbolic packet of a slice and the constraint its free fields must satisfy (``space``:
    what "class" and "outside" addresses range over)."""
    import ipaddress

    space = space or ClassSpace()
    family = piece.family
    width = 32 if family == 4 else 128
    conds: list[Cond] = []
    avoid: dict[str, frozenset[int]] = {}
    fields: dict[str, Address] = {}
    for name, fixed, kind in (("src", piece.src, piece.src_kind), ("dst", piece.dst, piece.dst_kind)):
        if fixed is not None:
            fields[name] = fixed
        elif kind == "class":
            values = space.values.get(family, ())
            alternates = space.alternates.get(family, _NO_ALTERNATES)
            address = fields[name] = _class_address(f"{name}_class", family, values, alternates)
            conds.append(address.domain())
            other = piece.dst if name == "src" else piece.src
            if other is not None and other not in alternates:  # its class has no other member
                conds.append(not_(address.is_(other)))
        else:
            fields[name] = z3.BitVec(name, width)
            if kind == "outside":
                avoid[name] = space.endpoints.get(family, frozenset())
    src, dst = fields["src"], fields["dst"]
    protocol = z3.BitVec("protocol", 8)
    dport = z3.BitVec("port", 16)
    icmp = ICMP_NUMBER[piece.family]
    conds += [
        or_(*(protocol == p for p in (*PORT_PROTOCOLS, icmp))),
        or_(protocol != icmp, z3.ULE(dport, 255)),
    ]
    loopback = ipaddress.ip_network(_LOOPBACK[piece.family])
    for value, excluded in ((src, piece.src_not), (dst, piece.dst_not)):
        if isinstance(value, int | ClassAddress):
            continue
        conds.append(not_(in_network(value, loopback)))
        conds.extend(value != a for a in sorted(excluded))
    if isinstance(src, z3.BitVecRef) and isinstance(dst, z3.BitVecRef):
        conds.append(src != dst)
    from verifier.simulate.iptables_flow import EPHEMERAL_PORT

    return SymPacket(piece.family, src, dst, protocol, dport, EPHEMERAL_PORT, avoid.get("src", frozenset()),
                     avoid.get("dst", frozenset())), and_(*conds)


class _Solvers:
    """One QF_BV solver per process, reused for every query in a scope of its own (push, add,
    check, pop): making a solver costs more than most slices' queries do. Renewed now and then
    so that what it keeps between scopes stays small."""

    RENEW = 2_000  # queries per solver

    def __init__(self) -> None:
        self.solver: z3.Solver | None = None
        self.timeout = -1
        self.used = 0

    def get(self, timeout_ms: int) -> z3.Solver:
        if self.solver is None or self.used >= self.RENEW:
            self.solver, self.timeout, self.used = z3.SolverFor("QF_BV"), -1, 0
        if timeout_ms != self.timeout:
            self.solver.set("timeout", timeout_ms)
            self.timeout = timeout_ms
        self.used += 1
        return self.solver


_SOLVERS = _Solvers()


def check_bv(*conds: Cond, timeout_ms: int) -> tuple[str, Callable[[Value], int] | None, str]:
    """Solve the conjunction over bit-vectors: ``("sat", value of a term in the model, "")``,
    ``("unsat", None, "")`` or ``("unknown", None, the solver's reason)`` (a timeout included)."""
    solver = _SOLVERS.get(timeout_ms)
    solver.push()
    try:
        solver.add(*(z3.BoolVal(c) if isinstance(c, bool) else c for c in conds))
        result = solver.check()
        if result == z3.unsat:
            return "unsat", None, ""
        if result == z3.unknown:
            return "unknown", None, f"solver: {solver.reason_unknown()}"
        model = solver.model()  # a model outlives the scope it was found in
    finally:
        solver.pop()

    def value(term: Value) -> int:
        if isinstance(term, int):
            return term
        return model.eval(term, model_completion=True).as_long()  # type: ignore[no-any-return]

    return "sat", value, ""


def differ(left: z3.BitVecRef, right: z3.BitVecRef, packet: SymPacket, domain: Cond,
           timeout_ms: int = 60_000) -> Answer:
    """Search for a packet of the domain where ``left != right``; never ``same`` on a timeout."""
    status, value, reason = check_bv(domain, left != right, timeout_ms=timeout_ms)
    if status == "unsat":
        return Answer("same")
    if value is None:
        return Answer("unknown", reason=reason)
    def address(field: Address, other: Address) -> int:
        if not isinstance(field, ClassAddress):
            return value(field)
        chosen = field.values[value(field.index)]
        return field.alternates.get(chosen, chosen) if isinstance(other, int) and other == chosen else chosen

    witness = Witness(address(packet.src, packet.dst), address(packet.dst, packet.src), value(packet.protocol),
                      value(packet.dport), value(left), value(right))
    return Answer("differ", witness)
