"""The symbolic packet, partly concrete conditions, and the outcome both targets are compared on.

A proof asks one question per *slice* of the flow space (DESIGN.md §5): for every packet whose
fields satisfy the slice's domain, do two artifacts give the same outcome? A field a slice fixes
(the destination endpoint's address, say) is a Python int, so every condition on it is decided
while the formula is built and whole chains or maps drop out; only the free fields become Z3
variables. :data:`Cond` is therefore ``bool | z3.BoolRef`` and the helpers here fold constants.

The outcome is one 18-bit vector: the kind in bits 16-17 (0 dropped, 1 allowed, 2 redirected)
and the proxy port in bits 0-15, so "same verdict and same proxy port" is one equality.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TypeAlias

import z3

from verifier.artifacts.models import IPNetwork

Cond: TypeAlias = bool | z3.BoolRef
Value: TypeAlias = int | z3.BitVecRef

OUTCOME_BITS = 18
KIND_DROPPED, KIND_ALLOWED, KIND_REDIRECTED = 0, 1, 2
KIND_NAMES = {KIND_DROPPED: "dropped", KIND_ALLOWED: "allowed", KIND_REDIRECTED: "redirected"}


def outcome(kind: int, proxy_port: int = 0) -> z3.BitVecRef:
    return z3.BitVecVal(kind << 16 | proxy_port, OUTCOME_BITS)


def redirected(port: Value) -> z3.BitVecRef:
    """Redirected to ``port`` (a 16-bit term or int)."""
    if isinstance(port, int):
        return outcome(KIND_REDIRECTED, port)
    return z3.Concat(z3.BitVecVal(KIND_REDIRECTED, 2), port)


def decode_outcome(value: int) -> tuple[str, int | None]:
    """``(kind, proxy port)`` as :class:`verifier.simulate.targets.TargetAnswer.verdict` spells it."""
    kind = KIND_NAMES.get(value >> 16, f"kind {value >> 16}")
    return kind, (value & 0xFFFF if kind == "redirected" else None)


# --- conditions that fold when concrete --------------------------------------------------------

def is_concrete(value: Value) -> bool:
    return isinstance(value, int)


def and_(*conds: Cond) -> Cond:
    rest: list[z3.BoolRef] = []
    for c in conds:
        if c is False:
            return False
        if c is not True:
            rest.append(c)
    if not rest:
        return True
    return rest[0] if len(rest) == 1 else z3.And(*rest)


def or_(*conds: Cond) -> Cond:
    rest: list[z3.BoolRef] = []
    for c in conds:
        if c is True:
            return True
        if c is not False:
            rest.append(c)
    if not rest:
        return False
    return rest[0] if len(rest) == 1 else z3.Or(*rest)


def not_(cond: Cond) -> Cond:
    if isinstance(cond, bool):
        return not cond
    return z3.Not(cond)


def eq(value: Value | ClassAddress, constant: int) -> Cond:
    if isinstance(value, int):
        return value == constant
    if isinstance(value, ClassAddress):
        return value.is_(constant)
    return value == constant


def in_range(value: Value, lo: int, hi: int) -> Cond:
    """``lo <= value <= hi`` (unsigned)."""
    if isinstance(value, int):
        return lo <= value <= hi
    if lo == hi:
        return value == lo
    parts: list[Cond] = []
    if lo > 0:
        parts.append(z3.UGE(value, lo))
    if hi < (1 << value.size()) - 1:
        parts.append(z3.ULE(value, hi))
    return and_(*parts)


def top_bits(value: Value, width: int, bits: int, constant: int) -> Cond:
    """The top ``bits`` of the ``width``-bit ``value`` equal those of ``constant``."""
    if bits == 0:
        return True
    shift = width - bits
    if isinstance(value, int):
        return value >> shift == constant >> shift
    return z3.Extract(width - 1, shift, value) == constant >> shift


class ClassAddress:
    """A free endpoint address that is one address of each class (verifier/proofs/address_classes.py),
    as an index into ``values`` (ascending).

    The members of a class are interchangeable on every side, so a half-flow proof
    (verifier/proofs/slices.py, half_slices) lets the remote endpoint range over one address per class. Every
    network holds a contiguous run of ``values``, so "in network" is an index range and a
    formula grows with the rules it encodes, not with the endpoints.
    """

    def __init__(self, name: str, family: int, values: tuple[int, ...], alternates: Mapping[int, int]) -> None:
        """``alternates``: per value with one, another member of its class (a witness from an
        address to its own class names that member)."""
        self.family = family
        self.values = values
        self.alternates = alternates
        self.bits = max(1, len(values).bit_length())
        self.index = z3.BitVec(name, self.bits)
        self._at = {v: i for i, v in enumerate(values)}

    def domain(self) -> Cond:
        return z3.ULT(self.index, len(self.values)) if len(self.values) < 1 << self.bits else True

    def indices_in(self, network: IPNetwork) -> range:
        """The indices of the values in ``network``."""
        first = int(network.network_address)
        if network.prefixlen == network.max_prefixlen:
            at = self._at.get(first)
            return range(0) if at is None else range(at, at + 1)
        last = first + (1 << (network.max_prefixlen - network.prefixlen)) - 1
        return range(bisect_left(self.values, first), bisect_right(self.values, last))

    def within(self, network: IPNetwork) -> Cond:
        """The address lies in ``network``: one range of indices."""
        span = self.indices_in(network)
        if not span:
            return False
        if len(span) == 1:
            return self.index == span.start
        return and_(z3.UGE(self.index, span.start) if span.start else True, z3.ULT(self.index, span.stop))

    def is_(self, value: int) -> Cond:
        at = self._at.get(value)
        return False if at is None else self.index == at

    def among(self, indices: AbstractSet[int]) -> Cond:
        """The address is ``values[i]`` for some ``i`` in ``indices`` (as runs of ranges)."""
        runs: list[Cond] = []
        ordered = sorted(indices)
        start = 0
        for k in range(1, len(ordered) + 1):
            if k == len(ordered) or ordered[k] != ordered[k - 1] + 1:
                lo, hi = ordered[start], ordered[k - 1]
                runs.append(self.index == lo if lo == hi else and_(z3.UGE(self.index, lo) if lo else True,
                                                                   z3.ULE(self.index, hi)))
                start = k
        return or_(*runs)


Address: TypeAlias = "Value | ClassAddress"


def in_network(address: Address, network: IPNetwork) -> Cond:
    if isinstance(address, ClassAddress):
        return address.within(network)
    return top_bits(address, network.max_prefixlen, network.prefixlen, int(network.network_address))


def excluded_host(address: Address, network: IPNetwork, excluded: AbstractSet[int]) -> bool:
    """``network`` is one address of ``excluded`` and ``address`` is free, so never that address
    (the slice domain leaves excluded addresses out: verifier/proofs/address_classes.py)."""
    return not isinstance(address, int | ClassAddress) and network.prefixlen == network.max_prefixlen and \
        int(network.network_address) in excluded


def ite(cond: Cond, then: z3.BitVecRef, otherwise: z3.BitVecRef) -> z3.BitVecRef:
    if cond is True or then.eq(otherwise):
        return then
    if cond is False:
        return otherwise
    return z3.If(cond, then, otherwise)


# --- the packet ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SymPacket:
    """The first packet of a connection: addresses of one family, protocol, destination port (the
    ICMP type for ICMP, code 0), source port fixed (verifier/simulate/iptables_flow.EPHEMERAL_PORT)."""

    family: int
    src: Address
    dst: Address
    protocol: Value
    dport: Value
    sport: int
    # per free address, endpoint addresses it is known not to be beyond the encodings' own
    # exclusions (an "outside" address is no endpoint's): their host entries drop out
    src_avoid: frozenset[int] = frozenset()
    dst_avoid: frozenset[int] = frozenset()

    def avoided(self, address: object) -> frozenset[int]:
        """The extra exclusions of whichever field ``address`` is."""
        return self.src_avoid if address is self.src else self.dst_avoid if address is self.dst else frozenset()

    @property
    def width(self) -> int:
        return 32 if self.family == 4 else 128


def address_var(name: str, family: int) -> z3.BitVecRef:
    return z3.BitVec(name, 32 if family == 4 else 128)


def address_of(value: int, family: int) -> IPv4Address | IPv6Address:
    return IPv4Address(value) if family == 4 else IPv6Address(value)


def address_value(text: str) -> int:
    return int(ip_address(text))
