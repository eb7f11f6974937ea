"""The (endpoint, direction, peer) cases on which the rule analyses ask their questions.

Endpoints whose direction is decided by the same policy units with the same ports share a case
(one representative); peers are the encoding's address kinds
(:meth:`verifier.encoding.source.SourceEncoding.peer_views`), and of those one per set of
matching rules, since the formulas depend on the peer through that set only (plus the node's
localhost allowance and, under ``k8s``, the named ports of an egress destination). A case whose rules all fail to
match the peer is skipped: no rule can change anything there; so is an endpoint against its own
address when no other endpoint shares its case.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from compiler.cluster import Endpoint
from compiler.flow import Direction, Profile
from verifier.encoding.rule_effect import port_packet
from verifier.encoding.source import DirectionRules, SourceEncoding
from verifier.encoding.terms import Cond, SymPacket
from verifier.simulate.source_labels import PeerKind, PeerView
from verifier.simulate.source_rules import SourceRule


@dataclass
class RuleCase:
    """One direction of the endpoints ``owners`` against the addresses like ``peer``.

    ``matching`` (the rules whose peers select ``peer``) is known concretely; the formulas in
    :attr:`rules` are built only when an analysis asks, so cases that cannot change an answer
    cost no Z3 work.
    """

    enc: SourceEncoding
    direction: Direction
    owners: tuple[Endpoint, ...]
    owner: Endpoint  # the representative: one of ``owners`` with an address of the peer's family
    peer: PeerView
    matching: tuple[SourceRule, ...]
    packet: SymPacket
    domain: Cond

    @cached_property
    def rules(self) -> DirectionRules:
        own = self.enc.ref.view(next(a for a in self.owner.addresses if a.version == self.peer.address.version))
        return self.enc.direction_rules(self.packet, self.direction, own, self.peer)


def rule_cases(enc: SourceEncoding) -> Iterator[RuleCase]:
    ref = enc.ref
    peers = enc.peer_views()
    packets = {family: port_packet(family) for family in (4, 6)}
    for direction in Direction:
        shapes: dict[tuple[object, ...], list[Endpoint]] = {}
        for ep in ref.cluster.endpoints:
            units = ref.units_for(ep, direction) if ep.addresses else []
            if units:
                shapes.setdefault((tuple(id(u) for u in units), ep.ports), []).append(ep)
        for owners in shapes.values():
            seen: set[tuple[object, ...]] = set()
            for peer in peers:
                family = peer.address.version
                # not the peer itself (a pod reaching its own address is not a policy question)
                owner = next((ep for ep in owners if ep is not peer.endpoint
                              and any(a.version == family for a in ep.addresses)), None)
                if owner is None:
                    continue
                matching = enc.peer_matching(direction, owner, peer)
                # what the formulas depend on besides the matching rules: the family, localhost,
                # and (k8s egress) the peer's named ports
                named = peer.endpoint.ports if (enc.profile is Profile.K8S and direction is Direction.EGRESS
                                                and peer.endpoint is not None) else None
                key = (family, tuple(id(r) for r in matching), peer.kind is PeerKind.HOST, named)
                if matching and key not in seen:
                    seen.add(key)
                    packet, domain = packets[family]
                    yield RuleCase(enc, direction, tuple(owners), owner, peer, matching, packet, domain)
