"""Dispatch from the top-level chain to per-identity chains in O(log n) rules, by endpoint address.

A flat list ``-m set --match-set NPC4-id-N dst -j NPC-I-N`` (one rule per enforced identity)
makes every packet pay for every identity on the node: cost grows with the cluster. Calico
avoids that with a prefix tree over interface names (``cali-from-wl-dispatch-X``, reference/
iptables.md §1.2); our rules key on addresses (the node model in ``__init__``), so the tree is a
binary (Patricia) trie over the endpoints' addresses:

- a node holding at most :data:`LEAF_CHAINS` distinct target chains is a *leaf*: one identity-set
  match per chain, exactly the flat form (so small clusters read as before);
- otherwise the node splits at the first bit where its addresses differ:
  ``-d 10.244.0.0/17 -g <lower half>`` then ``-g <upper half>``.

Leaves match identity sets, never prefixes, so an address that is not an endpoint of a dispatched
identity falls through every leaf and returns to the caller: a split only narrows *which* sets
are worth testing. The tree's root is entered with ``-j`` and its inner edges are gotos, so the
leaf's target chain returns straight back to the top-level chain. Per packet: at most two rules
per level, ``log2(endpoints / LEAF_CHAINS)`` levels, then at most :data:`LEAF_CHAINS` set lookups.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

from compiler.targets.iptables.names import Namer, digest
from compiler.targets.iptables.render import Table, comment

#: A node with this many distinct target chains or fewer tests them one by one.
LEAF_CHAINS = 4
DIGEST_CHARS = 12
#: ``NPC-<label><family>-<digest>``: the names :meth:`DispatchTree._name` gives (labels DI, DE, LI, LE, O).
_TREE_CHAIN = re.compile(rf"NPC-[A-Z]{{1,2}}[46]-[A-Z2-7]{{{DIGEST_CHARS}}}")


def is_tree_chain(name: str) -> bool:
    """Whether ``name`` is one of the trie's own chains (cost accounting tells dispatch from policy)."""
    return _TREE_CHAIN.fullmatch(name) is not None


@dataclass(frozen=True)
class Item:
    """One dispatched address: where it goes and the identity set that recognises it."""

    address: int
    identity: int
    identity_set: str
    chain: str


class DispatchTree:
    """Builds the dispatch rules for one table, direction and family into ``table``."""

    def __init__(self, table: Table, namer: Namer, version: int, label: str, side: str) -> None:
        """``label`` names the tree's chains (``DI`` ingress, ``DE`` egress, ``LI``/``LE`` for L7);
        ``side`` is ``src`` or ``dst``: which address of the packet selects the identity."""
        self.table = table
        self.namer = namer
        self.version = version
        self.bits = 32 if version == 4 else 128
        self.label = label
        self.side = side

    def rules(self, items: Sequence[Item]) -> list[list[str]]:
        """The rules to put in the calling chain: a flat leaf, or one jump into the tree."""
        ordered = sorted(items, key=lambda i: (i.address, i.chain))
        if self._is_leaf(ordered):
            return self._leaf(ordered)
        root = self._node(ordered)
        return [["-j", root]]

    def _is_leaf(self, items: Sequence[Item]) -> bool:
        return len({i.chain for i in items}) <= LEAF_CHAINS or items[0].address == items[-1].address

    def _leaf(self, items: Sequence[Item]) -> list[list[str]]:
        """One set match per target chain, in the order of the identity numbers (as the flat form)."""
        chains = sorted({(i.identity, i.identity_set, i.chain) for i in items})
        return [["-m", "set", "--match-set", s, self.side, "-j", c] for _, s, c in chains]

    def _node(self, items: Sequence[Item]) -> str:
        """The chain of one inner node (its addresses differ somewhere); returns its name."""
        low, high = items[0].address, items[-1].address
        split = self.bits - (low ^ high).bit_length()  # length of the common prefix
        prefix = low >> (self.bits - split) << (self.bits - split) if split else 0
        bit = 1 << (self.bits - split - 1)
        lower = [i for i in items if not i.address & bit]
        upper = [i for i in items if i.address & bit]
        network = self._network(prefix, split)
        flag = "-s" if self.side == "src" else "-d"
        name = self._name(network)
        self.table.chains[name] = [
            [flag, self._network(prefix, split + 1), *comment(f"dispatch {network}"), *self._edge(lower)],
            self._edge(upper),
        ]
        return name

    def _edge(self, items: Sequence[Item]) -> list[str]:
        """``-g`` to the child's chain (a leaf gets its own small chain too)."""
        if self._is_leaf(items):
            name = self._name(f"leaf {self._network(items[0].address, self.bits)}")
            self.table.chains[name] = self._leaf(items)
            return ["-g", name]
        return ["-g", self._node(items)]

    def _network(self, prefix: int, length: int) -> str:
        if self.version == 4:
            return str(ipaddress.IPv4Network((prefix, length)))
        return str(ipaddress.IPv6Network((prefix, length)))

    def _name(self, key: str) -> str:
        full = f"dispatch:{self.table.name}:{self.label}:{self.version}:{self.side}:{key}"
        return self.namer.fixed(f"NPC-{self.label}{self.version}-{digest(full, DIGEST_CHARS)}", full)

