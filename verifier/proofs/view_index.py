"""Which of many endpoint views a selector requirement, a peer or a subject holds for, at once.

The L7 proof asks, for every own endpoint group, what the source's rules say of every remote
class (:func:`verifier.proofs.l7_cases.l7_cases`): thousands of views against the peers of the
units selecting the group, a few million selector tests one by one. Here a set of views is a bit
mask (bit ``i``: ``views[i]``), and a requirement is tested once per distinct set of labels its
key has among the views, not once per view: for an endpoint, a requirement reads the view only
through the (source, value) pairs of its key (:func:`verifier.simulate.source_labels.requirement_holds`;
the ``cidr:`` labels of world addresses are the one other reading, and no endpoint has them).
Every answer is the reference evaluator's own, asked of one view per distinct reading.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from verifier.simulate.source import ReferenceEvaluator
from verifier.simulate.source_labels import PeerKind, PeerView, Requirement, requirement_holds
from verifier.simulate.source_rules import Peer, Requires, SelectorPeer, ServicePeer

Pairs = tuple[tuple[str, str], ...]  # a view's (source, value) pairs of one key


class ViewIndex:
    """Bit masks of endpoint views (``views``, all of kind ENDPOINT) per requirement and peer."""

    def __init__(self, ref: ReferenceEvaluator, views: Sequence[PeerView]) -> None:
        if any(view.kind is not PeerKind.ENDPOINT for view in views):
            raise ValueError("a view index holds endpoint views only")
        self.ref = ref
        self.views = tuple(views)
        self.every = (1 << len(self.views)) - 1
        self._keys: dict[str, dict[Pairs, tuple[int, int]]] = {}  # key → pairs → (mask, first view)
        self._requirements: dict[Requirement, int] = {}
        self._peers: dict[tuple[int, Requires], tuple[int, Peer]] = {}  # (id(peer), requires) → (mask, peer)

    def holding(self, requirements: Iterable[Requirement]) -> int:
        """The views every one of ``requirements`` holds for."""
        mask = self.every
        for requirement in requirements:
            mask &= self._requirement(requirement)
            if not mask:
                break
        return mask

    def selecting(self, peer: Peer, requires: Requires) -> int:
        """The views ``peer`` selects with the units' fromRequires/toRequires
        (:meth:`ReferenceEvaluator.peer_matches`)."""
        key = (id(peer), requires)
        found = self._peers.get(key)
        if found is None:
            if isinstance(peer, SelectorPeer):  # endpoints only or not: every view here is an endpoint
                mask = self.holding(peer.requirements)
                for group in requires:
                    mask &= self.holding(group)
            elif isinstance(peer, ServicePeer):
                mask = self.holding(peer.requirements)
            else:  # CIDR, entity and "any" peers: few, and read more than labels
                mask = sum(1 << i for i, view in enumerate(self.views) if self.ref.peer_matches(peer, view, requires))
            found = self._peers[key] = (mask, peer)  # the memo holds the peer: its id stays its own
        return found[0]

    def _requirement(self, requirement: Requirement) -> int:
        found = self._requirements.get(requirement)
        if found is None:
            found = 0
            for mask, first in self._by_key(requirement.key).values():
                if requirement_holds(requirement, self.views[first]):
                    found |= mask
            self._requirements[requirement] = found
        return found

    def _by_key(self, key: str) -> dict[Pairs, tuple[int, int]]:
        found = self._keys.get(key)
        if found is None:
            groups: dict[Pairs, list[int]] = {}
            for index, view in enumerate(self.views):
                groups.setdefault(view.by_key.get(key, ()), []).append(index)
            found = self._keys[key] = {pairs: (sum(1 << i for i in members), members[0])
                                       for pairs, members in groups.items()}
        return found


def refine(parts: Iterable[int], masks: Iterable[int]) -> list[int]:
    """The coarsest partition of ``parts`` (disjoint masks) that no mask of ``masks`` cuts."""
    out = [part for part in parts if part]
    for mask in masks:
        out = [piece for part in out for piece in (part & mask, part & ~mask) if piece]
    return out


def members(mask: int) -> Iterator[int]:
    """The indices of a mask's bits, ascending."""
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low
