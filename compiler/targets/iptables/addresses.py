"""Which addresses a rule's peer stands for, as ``hash:net`` entries with ``nomatch`` holes.

A :class:`~compiler.ir.model.Peer` is a union of identities, CIDRs and world entities; the kernel
sees addresses. Each component becomes a prefix with holes (SEMANTICS §1, §4, §5):

- an endpoint identity: its endpoints' addresses;
- the host (1): the node address;
- world (2): every address that is not a cluster address (endpoint or node address);
- a CIDR identity: the world addresses inside its prefix (only world addresses carry one);
- ``world_families``: world addresses of that IP version;
- a CIDR peer: the prefix minus its excepts, and under ``cilium`` minus cluster addresses too
  (the ipcache gives those their own identity [cilium.md §7.4]; under ``k8s`` they match).

Representation: an ipset ``hash:net`` lookup takes the most specific matching entry and fails when
that entry is ``nomatch`` (ipset(8); kube-router and Azure NPM express ``except`` this way,
reference/iptables.md §2.3, §3). Any union of "prefix minus holes" is exactly such a set: take every
prefix and hole as a boundary; an address's membership only depends on which boundaries contain it,
so the label of each boundary prefix (for the addresses it holds that no more specific boundary
holds) is decided once, and entries whose label equals their parent's are dropped. ``hash:net``
cannot hold a /0, so /0 is split into its two /1 halves (as kube-router and NPM do).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from compiler.flow import Profile
from compiler.identity import ID_HOST, ID_WORLD
from compiler.ir.model import IR, IPAddress, IPNetwork, Peer


@dataclass(frozen=True)
class Component:
    """One prefix with its holes: ``except`` prefixes, and cluster addresses when ``no_cluster``."""

    network: IPNetwork
    excepts: tuple[IPNetwork, ...] = ()
    no_cluster: bool = False


@dataclass(frozen=True)
class Entry:
    """One ``add SET PREFIX [nomatch]`` line."""

    network: IPNetwork
    nomatch: bool = False

    def __str__(self) -> str:
        net = self.network
        text = str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)
        return f"{text} nomatch" if self.nomatch else text


def _host(address: IPAddress) -> IPNetwork:
    return ipaddress.ip_network(address)


def _whole(version: int) -> IPNetwork:
    return ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")


class AddressBook:
    """Peer → entries for one IR and family, with the cluster's addresses indexed once."""

    def __init__(self, ir: IR) -> None:
        self.ir = ir
        cluster = ir.cluster
        self.cluster_addresses: frozenset[IPAddress] = frozenset(
            [cluster.node_address, *(a for ep in cluster.endpoints for a in ep.addresses)]
        )
        self.identity_addresses: dict[int, tuple[IPAddress, ...]] = {}
        for ident in ir.identities.identities():
            found: list[IPAddress] = []
            for key in ident.endpoints:
                ep = cluster.endpoint(key)
                if ep is not None:
                    found.extend(ep.addresses)
            if found:
                self.identity_addresses[ident.number] = tuple(sorted(set(found), key=lambda a: (a.version, a)))
        self.cidr_of_identity = {n: ipaddress.ip_network(p) for p, n in ir.identities.cidr_identities().items()}

    def components(self, peer: Peer, version: int) -> list[Component]:
        """The peer's components of one IP version (empty: the peer has no address of it)."""
        out: list[Component] = []
        for number in sorted(peer.identities):
            if number == ID_HOST:
                node = self.ir.cluster.node_address
                if node.version == version:
                    out.append(Component(_host(node)))
            elif number == ID_WORLD:
                out.append(Component(_whole(version), no_cluster=True))
            elif number in self.cidr_of_identity:
                net = self.cidr_of_identity[number]
                if net.version == version:
                    out.append(Component(net, no_cluster=True))
            else:  # endpoint identities; other reserved identities have no address here
                out.extend(Component(_host(a)) for a in self.identity_addresses.get(number, ()) if a.version == version)
        if version in peer.world_families:
            out.append(Component(_whole(version), no_cluster=True))
        cilium = self.ir.profile is Profile.CILIUM
        for cidr in peer.cidrs:
            if cidr.network.version == version:
                excepts = tuple(e for e in cidr.excepts if e.version == version)
                out.append(Component(cidr.network, excepts, no_cluster=cilium))
        return out

    def entries(self, components: Iterable[Component]) -> list[Entry]:
        """The smallest ``hash:net`` entry list (with ``nomatch``) matching exactly the components."""
        comps = list(components)
        if not comps:
            return []
        if all(c.network.prefixlen == c.network.max_prefixlen and not c.excepts and not c.no_cluster for c in comps):
            return [Entry(n) for n in sorted({c.network for c in comps})]  # plain addresses: the common case
        wide: set[IPNetwork] = set()
        for comp in comps:
            wide.update(_split_zero(comp.network))
            for hole in comp.excepts:
                wide.update(_split_zero(hole))
        boundaries = set(wide)
        if any(c.no_cluster for c in comps):
            version = comps[0].network.version
            boundaries.update(_host(a) for a in self.cluster_addresses if a.version == version)
        wide_sorted = sorted(wide, key=lambda n: n.prefixlen)

        def member(prefix: IPNetwork) -> bool:
            for comp in comps:
                if not _contains(comp.network, prefix):
                    continue
                if any(_contains(hole, prefix) for hole in comp.excepts):
                    continue
                if comp.no_cluster and prefix.prefixlen == prefix.max_prefixlen and (
                    prefix.network_address in self.cluster_addresses
                ):
                    continue
                return True
            return False

        out: list[Entry] = []
        for prefix in sorted(boundaries, key=lambda n: (n.prefixlen, n)):
            label = member(prefix)
            parent = None
            for candidate in reversed(wide_sorted):  # the most specific strictly wider boundary
                if candidate.prefixlen < prefix.prefixlen and _contains(candidate, prefix):
                    parent = candidate
                    break
            parent_label = member(parent) if parent is not None else False
            if label != parent_label:
                out.append(Entry(prefix, nomatch=not label))
        return sorted(out, key=lambda e: (e.network.network_address, e.network.prefixlen))


def _contains(outer: IPNetwork, inner: IPNetwork) -> bool:
    return outer.version == inner.version and outer.prefixlen <= inner.prefixlen and inner.subnet_of(outer)  # type: ignore[arg-type]


def _split_zero(net: IPNetwork) -> list[IPNetwork]:
    """A /0 as its two /1 halves (``hash:net`` rejects /0); anything else as is."""
    return list(net.subnets(prefixlen_diff=1)) if net.prefixlen == 0 else [net]
