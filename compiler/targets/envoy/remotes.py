"""The remote identities the proxy sees, and which of them an IR peer matches.

Envoy never sees addresses in a policy: the ``cilium.bpf_metadata`` listener filter looks the
remote address up in the ipcache and the L7 policy matches the resulting numeric identity against
``remote_policies`` (reference/cilium.md §5.2, §5.6). So every IR peer (identities, CIDRs, world
families, the wildcard) must become a set of identities that means exactly the same thing.

The ipcache view used here (the one the eBPF target's ipcache gives, DESIGN §3):
- an endpoint address → the endpoint's identity; the node address → host (1);
- any other address → the identity of the longest policy CIDR prefix containing it, else the
  world fallback of its family: ``0.0.0.0/0`` → world-ipv4 (9), ``::/0`` → world-ipv6 (10), as
  the eBPF target's ipcache (compiler/targets/ebpf/peers.py ``WORLD_FALLBACK``) and Cilium in
  dual-stack mode.

A peer matches an identity when it matches every address carrying it (SEMANTICS §4, §5). When a
peer matches only some of the addresses behind one identity — under the ``k8s`` profile a CIDR
that holds some but not all pods of an identity — no identity set can express it, and
:class:`Inexpressible` says why.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import cached_property

from compiler.flow import Profile
from compiler.identity import ID_HOST, ID_WORLD, ID_WORLD_IPV4, ID_WORLD_IPV6
from compiler.ir.model import IR, IPAddress, IPNetwork, Peer

#: ``None`` stands for the wildcard (every remote; NPDS: empty ``remote_policies``).
Remotes = frozenset[int] | None
#: The identity of world addresses outside every policy prefix, per IP version.
WORLD_FALLBACK = {4: ID_WORLD_IPV4, 6: ID_WORLD_IPV6}


class Inexpressible(Exception):
    """A peer that no set of identities can express; the message says why."""


class RemoteIdentities:
    """The ipcache view of one compilation, and peer → identity-set translation."""

    def __init__(self, ir: IR) -> None:
        self.ir = ir
        self._memo: dict[tuple[Peer, frozenset[int]], Remotes] = {}

    @cached_property
    def _prefixes(self) -> tuple[tuple[IPNetwork, int], ...]:
        """Policy CIDR prefixes with their identities, longest first (the ipcache LPM order)."""
        items = [(ipaddress.ip_network(p), n) for p, n in self.ir.identities.cidr_identities().items()]
        return tuple(sorted(items, key=lambda item: (-item[0].prefixlen, item[0].version, str(item[0]))))

    @cached_property
    def _members(self) -> dict[int, tuple[IPAddress, ...]]:
        """Endpoint identity → the addresses of every endpoint carrying it."""
        out: dict[int, list[IPAddress]] = {}
        for ep in self.ir.cluster.endpoints:
            if ep.ips and not ep.host_network:
                out.setdefault(self.ir.endpoint_identity(ep.key), []).extend(ep.addresses)
        return {number: tuple(addrs) for number, addrs in sorted(out.items())}

    def of_address(self, address: IPAddress) -> int:
        """The identity the ipcache gives an address (see the module docstring)."""
        if address == self.ir.cluster.node_address:
            return ID_HOST
        ep = self.ir.cluster.endpoint_at(address)
        if ep is not None:
            return self.ir.endpoint_identity(ep.key)
        for network, number in self._prefixes:
            if address.version == network.version and address in network:
                return number
        return WORLD_FALLBACK[address.version]

    def select(self, peer: Peer, families: Iterable[int]) -> Remotes:
        """The identities ``peer`` matches, for a subject endpoint whose addresses have ``families``
        (a remote always has the subject's family). Raises :class:`Inexpressible`."""
        if peer.any:
            return None
        key = (peer, frozenset(families))
        if key not in self._memo:
            self._memo[key] = self._select(peer, key[1])
        return self._memo[key]

    def _select(self, peer: Peer, families: frozenset[int]) -> frozenset[int]:
        k8s = self.ir.profile is Profile.K8S
        hits: set[int] = set()
        for number, addresses in self._members.items():
            if number in peer.identities:
                hits.add(number)
            elif k8s and peer.cidrs and self._cidr_covers(peer, [a for a in addresses if a.version in families],
                                                          f"identity {number}"):
                hits.add(number)  # k8s: ipBlock matches pod addresses (SEMANTICS §5)
        node = self.ir.cluster.node_address
        if ID_HOST in peer.identities or (k8s and node.version in families and self._cidr_covers(peer, [node], "")):
            hits.add(ID_HOST)
        for network, number in self._prefixes:
            if self._matches_prefix(peer, network):
                hits.add(number)
        for family, number in WORLD_FALLBACK.items():
            if self._matches_world(peer, family):
                hits.add(number)
        # identities no address carries here (world 2, remote-node, kube-apiserver, ...): kept as
        # Cilium's selector cache would send them; they can never match a connection in this model
        carried = set(self._members) | {ID_HOST, *WORLD_FALLBACK.values()} | {n for _, n in self._prefixes}
        hits.update(peer.identities - carried)
        return frozenset(hits)

    @staticmethod
    def _cidr_covers(peer: Peer, addresses: list[IPAddress], what: str) -> bool:
        inside = [any(c.contains(a) for c in peer.cidrs) for a in addresses]
        if any(inside) and not all(inside):
            raise Inexpressible(f"CIDR peer {peer} holds some but not all addresses of {what}; "
                                "the proxy matches identities, not addresses")
        return bool(inside) and all(inside)

    def _matches_prefix(self, peer: Peer, prefix: IPNetwork) -> bool:
        """Whether the peer matches the world addresses whose longest policy prefix is ``prefix``.

        Those addresses carry world and every policy prefix containing ``prefix`` (IR ``Remote``),
        and a policy CIDR (or except) contains them iff it contains ``prefix``, so the answer is the
        same for all of them.
        """
        carried = {ID_WORLD} | {n for net, n in self._prefixes if _within(prefix, net)}
        if not carried.isdisjoint(peer.identities) or prefix.version in peer.world_families:
            return True
        return any(_within(prefix, c.network) and not any(_within(prefix, e) for e in c.excepts) for c in peer.cidrs)

    def _matches_world(self, peer: Peer, family: int) -> bool:
        """Whether the peer matches world addresses of ``family`` outside every policy prefix."""
        if ID_WORLD in peer.identities or family in peer.world_families:
            return True
        known = {net for net, _ in self._prefixes}
        for cidr in peer.cidrs:
            if cidr.network.version != family:
                continue
            if cidr.network.prefixlen == 0:
                return True  # excepts are policy prefixes, so they never hold these addresses
            if cidr.network not in known:
                raise Inexpressible(f"CIDR {cidr.network} has no CIDR identity")
        return False


def _within(inner: IPNetwork, outer: IPNetwork) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]
