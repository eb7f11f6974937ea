"""IR peers → the numeric identities a policy map needs, given what the ipcache will say.

The IR matches a peer on the *address* (a world address carries ``reserved:world`` and every
CIDR identity containing it; CIDR peers test containment — SEMANTICS §1, §5). The datapath only
sees the one identity the ipcache LPM gives the address (reference/cilium.md §2, §7.4). So each
peer becomes the set of identities whose ipcache addresses the IR peer matches:

- identity 0 (``any``) stays the wildcard;
- a CIDR identity C stands for every address in its prefix, so it selects every CIDR identity
  whose prefix lies inside C's (the LPM gives those addresses the longer prefix's identity);
  ``reserved:world`` (2) likewise selects every CIDR identity and the world fallbacks 9/10;
- a CIDR peer with excepts selects the CIDR identities inside it and inside no except, plus the
  world fallback of its family for ``/0`` — the excepts are in the ipcache as longer prefixes
  with their own identities, exactly Cilium's ``cidr:<except> DoesNotExist`` (§7.4);
- world-ipv4/ipv6 entities select the fallback of that family and every CIDR identity of it;
- ``k8s`` profile: a CIDR also matches cluster addresses (SEMANTICS §5), so it selects the
  identities of the endpoints (and the host) whose addresses it contains — which is only
  expressible when it contains all or none of an identity's addresses; otherwise the caller
  reports the construct as unsupported.

World fallbacks: addresses outside every prefix get ``world-ipv4`` (9) / ``world-ipv6`` (10),
Cilium's dual-stack ``WORLD_IPV4_ID``/``WORLD_IPV6_ID`` (reference/cilium.md §2); the ipcache
carries them as explicit ``0.0.0.0/0`` and ``::/0`` entries so no loader needs a fallback.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from compiler.flow import Profile
from compiler.identity import ID_HOST, ID_WORLD, ID_WORLD_IPV4, ID_WORLD_IPV6
from compiler.ir.model import IR, CIDRMatch, IPNetwork, Peer

WORLD_FALLBACK = {4: ID_WORLD_IPV4, 6: ID_WORLD_IPV6}


@dataclass(frozen=True)
class PeerIdentities:
    """A peer's identities for the map, or why it cannot be expressed."""

    identities: frozenset[int]
    problems: tuple[str, ...] = ()


class PeerResolver:
    """Resolves IR peers to map identities (memoized per peer object)."""

    def __init__(self, ir: IR, cidr_prefixes: dict[IPNetwork, int]) -> None:
        self.ir = ir
        #: the CIDR prefixes present in the ipcache (those not shadowed by a cluster address)
        self.cidrs = cidr_prefixes
        self._number_prefix = {number: net for net, number in cidr_prefixes.items()}
        self._memo: dict[int, tuple[Peer, PeerIdentities]] = {}
        self._addresses: list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
        cluster = ir.cluster
        self._addresses.append((cluster.node_address, ID_HOST))
        self._members: dict[int, int] = {ID_HOST: 1}
        for ep in cluster.endpoints:
            number = ir.endpoint_identity(ep.key)
            for address in ep.addresses:
                self._addresses.append((address, number))
                self._members[number] = self._members.get(number, 0) + 1

    def resolve(self, peer: Peer) -> PeerIdentities:
        hit = self._memo.get(id(peer))
        if hit is not None and hit[0] is peer:
            return hit[1]
        result = self._resolve(peer)
        self._memo[id(peer)] = (peer, result)
        return result

    def _resolve(self, peer: Peer) -> PeerIdentities:
        if peer.any:
            return PeerIdentities(frozenset({0}))
        out: set[int] = set()
        for number in peer.identities:
            out.add(number)
            if number == ID_WORLD:
                out.update(self.cidrs.values())
                out.update(WORLD_FALLBACK.values())
            elif number in self._number_prefix:
                inner = self._number_prefix[number]
                out.update(n for net, n in self.cidrs.items() if _inside(net, inner))
        for family in peer.world_families:
            out.add(WORLD_FALLBACK[family])
            out.update(n for net, n in self.cidrs.items() if net.version == family)
        problems: list[str] = []
        for match in peer.cidrs:
            out.update(self._cidr(match))
            if self.ir.profile is Profile.K8S:
                found, partial = self._cluster_members(match)
                out.update(found)
                problems.extend(partial)
        return PeerIdentities(frozenset(out), tuple(problems))

    def _cidr(self, match: CIDRMatch) -> set[int]:
        found = {n for net, n in self.cidrs.items()
                 if _inside(net, match.network) and not any(_inside(net, e) for e in match.excepts)}
        if match.network.prefixlen == 0:
            # addresses outside every prefix: inside the /0 and, being in no prefix, in no except
            found.add(WORLD_FALLBACK[match.network.version])
        return found

    def _cluster_members(self, match: CIDRMatch) -> tuple[set[int], list[str]]:
        """k8s profile: identities of the cluster addresses inside the CIDR (SEMANTICS §5)."""
        inside: dict[int, int] = {}
        for address, number in self._addresses:
            if match.contains(address):
                inside[number] = inside.get(number, 0) + 1
        problems = [
            f"CIDR {match} contains {count} of the {self._members[number]} addresses of identity {number}; "
            "a policy map can only allow or deny a whole identity"
            for number, count in sorted(inside.items()) if count != self._members[number]
        ]
        return {n for n, c in inside.items() if c == self._members[n]}, problems


def _inside(inner: IPNetwork, outer: IPNetwork) -> bool:
    return inner.version == outer.version and inner.prefixlen >= outer.prefixlen and inner.subnet_of(outer)  # type: ignore[arg-type]
