"""How the flow space is cut into slices that are proved one at a time (DESIGN.md §5).

A flow is (source address, destination address, protocol, port). The node sees it on one of a
few paths, decided by whether each address is an endpoint's, the node's, or anyone else's; each
slice fixes that, and fixes the endpoint address when there is one:

- ``to <endpoint>``: any source but the node (endpoints and the world), destination fixed;
- ``node to <endpoint>``: the node's own connections to an endpoint;
- ``<endpoint> to outside``: destination any non-endpoint, non-node address;
- ``<endpoint> to node``;
- ``outside to outside``, ``outside to node``, ``node to outside``: traffic no endpoint is part of.

Together the slices cover every pair of distinct, non-loopback addresses of a family, every
protocol the targets distinguish (TCP, UDP, SCTP and ICMP) and every port (ICMP: type 0-255,
code 0). Endpoint-to-endpoint flows are in ``to <endpoint>``, where the source is free.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

PORT_PROTOCOLS = (6, 17, 132)
ICMP_NUMBER = {4: 1, 6: 58}


@dataclass(frozen=True)
class Slice:
    """One piece of the flow space: ``src``/``dst`` fixed (an int) or free (None, minus ``*_not``)."""

    name: str
    family: int
    src: int | None
    dst: int | None
    local_src: bool
    local_dst: bool
    src_not: frozenset[int] = field(default_factory=frozenset)
    dst_not: frozenset[int] = field(default_factory=frozenset)
    half: str = ""  # "src"/"dst": only the egress/ingress half of the flow (see half_slices)
    src_kind: str = ""  # a free address: "" any (but src_not), "class" one per class, "outside" no endpoint's
    dst_kind: str = ""


@dataclass(frozen=True)
class ClassSpace:
    """What the free addresses of half-flow slices range over, per family: one address per
    class (ascending), another member for the classes that have one, and every endpoint address
    (which an "outside" address is not)."""

    values: dict[int, tuple[int, ...]] = field(default_factory=dict)
    alternates: dict[int, dict[int, int]] = field(default_factory=dict)
    endpoints: dict[int, frozenset[int]] = field(default_factory=dict)


def half_slices(family: int, endpoints: Iterable[tuple[str, int]], node: int | None) -> list[Slice]:
    """The slices of a half-flow proof for one family: per endpoint
    (one per class), its egress half towards every other endpoint class and every outside
    address, its ingress half from the same, and the halves of flows no endpoint sends or
    receives, which no endpoint's rules see. Flows to or from the node keep their whole-flow
    slices (``slices``): they take other hooks.

    Why this covers every flow between two non-node addresses ``s != d``: both sides' outcome
    is ``compose(egress half(s, d), ingress half(s, d))`` (eBPF by construction; iptables by
    verifier/encoding/iptables_phases.py), so equal halves give equal outcomes. The egress half
    of an endpoint ``s`` depends on ``s`` only through its class (address_classes.py), and is
    proved for ``d`` ranging over one address of every class (a ``ClassAddress``; ``s``'s own
    class stands for its other member) and over every non-endpoint address; the egress half of
    a non-endpoint ``s`` ("from outside") for every ``d``. Ingress likewise."""
    eps = sorted(set(endpoints), key=lambda e: (e[1], e[0]))
    nodes = frozenset() if node is None else frozenset({node})
    out: list[Slice] = []
    for name, address in eps:
        out.append(Slice(f"from {name}", family, address, None, False, False, half="src", dst_kind="class"))
        out.append(Slice(f"from {name} to outside", family, address, None, False, False, dst_not=nodes,
                         half="src", dst_kind="outside"))
        out.append(Slice(f"to {name}", family, None, address, False, False, half="dst", src_kind="class"))
        out.append(Slice(f"to {name} from outside", family, None, address, False, False, src_not=nodes,
                         half="dst", src_kind="outside"))
        if node is not None:
            out.append(Slice(f"node to {name}", family, node, address, True, False))
            out.append(Slice(f"{name} to node", family, address, node, False, True))
    out.append(Slice("from outside", family, None, None, False, False, src_not=nodes, dst_not=nodes, half="src",
                     src_kind="outside"))
    out.append(Slice("to outside", family, None, None, False, False, src_not=nodes, dst_not=nodes, half="dst",
                     dst_kind="outside"))
    if node is not None:
        out.append(Slice("outside to node", family, None, node, False, True, src_not=nodes, src_kind="outside"))
        out.append(Slice("node to outside", family, node, None, True, False, dst_not=nodes, dst_kind="outside"))
    return out


def slices(family: int, endpoints: Iterable[tuple[str, int]], node: int | None,
           addresses: Iterable[int] | None = None) -> list[Slice]:
    """Every slice of one family for endpoints ``(name, address)`` and the node's address (None:
    the node has no address of this family). ``addresses``: every endpoint address the free
    fields must avoid, when more than the sliced ones (an address class's other kept member)."""
    eps = sorted(set(endpoints), key=lambda e: (e[1], e[0]))
    addresses = frozenset(a for _, a in eps) | frozenset(addresses or ())
    nodes = frozenset() if node is None else frozenset({node})
    outside = addresses | nodes
    out: list[Slice] = []
    for name, address in eps:
        out.append(Slice(f"to {name}", family, None, address, False, False, src_not=nodes | {address}))
        if node is not None:
            out.append(Slice(f"node to {name}", family, node, address, True, False))
        out.append(Slice(f"{name} to outside", family, address, None, False, False, dst_not=outside))
        if node is not None:
            out.append(Slice(f"{name} to node", family, address, node, False, True))
    out.append(Slice("outside to outside", family, None, None, False, False, src_not=outside, dst_not=outside))
    if node is not None:
        out.append(Slice("outside to node", family, None, node, False, True, src_not=outside))
        out.append(Slice("node to outside", family, node, None, True, False, dst_not=outside))
    return out
