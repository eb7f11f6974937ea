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
