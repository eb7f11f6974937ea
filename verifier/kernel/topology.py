"""The testbed's network layout, computed from a :class:`~compiler.cluster.Cluster` before anything is built.

Layout (one ``npc-<id>-…`` namespace per box)::

    e0 [eth0: pod IPs/32]──veth──[v0]┐
    e1 [eth0: pod IPs/32]──veth──[v1]┤  node [lo: node IP/32, FORWARD path]
    …                                 ├──[vworld]──veth──[eth0: world IPs/32] world
    eN [eth0: pod IPs/32]──veth──[vN]┘

Every endpoint's default route points at a link-local gateway (169.254.1.1 / fe80::1) that every
node-side veth carries, and the node has one /32 (/128) host route per address, so
endpoint-to-endpoint and endpoint-to-world traffic is routed through the node's FORWARD path, and
host traffic starts/ends in the node's OUTPUT/INPUT path. This is how Calico and Cilium (in
routing mode) wire pods, and it keeps policy rules independent of interface names.

Pure data: building and tearing down is :mod:`verifier.kernel.testbed`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from compiler.cluster import Cluster
from verifier.kernel.netns import PREFIX

GATEWAY_V4 = "169.254.1.1"
GATEWAY_V6 = "fe80::1"
#: Label of the node's site (the ``host`` entity).
HOST = "host"
#: Label of the outside-world site.
WORLD = "world"
#: Documentation addresses (RFC 5737 / RFC 3849) used when a world is asked for without addresses.
DEFAULT_WORLD_ADDRESSES = ("192.0.2.10", "203.0.113.5")
#: Interface names are limited to 15 characters; ours are short and fixed.
ENDPOINT_IFNAME = "eth0"
WORLD_NODE_IFNAME = "vworld"


def _addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def _host_prefix(text: str) -> str:
    return f"{text}/{32 if _addr(text).version == 4 else 128}"


@dataclass(frozen=True)
class Site:
    """A place traffic can start from or end at: one namespace and the addresses it owns.

    ``label`` is the endpoint key (``namespace/name``), :data:`HOST` or :data:`WORLD`.
    ``node_ifname`` is the node-side veth leading to it (None for the node itself).
    """

    label: str
    netns: str
    addresses: tuple[str, ...]
    node_ifname: str | None = None

    def address(self, version: int | None = None) -> str | None:
        """The first own address of an IP version (IPv4 first when ``version`` is None)."""
        if version is None:
            return self.address(4) or (self.addresses[0] if self.addresses else None)
        return next((a for a in self.addresses if _addr(a).version == version), None)

    def source_for(self, dst: str) -> str | None:
        """The address this site sends from when talking to ``dst`` (same IP version)."""
        return self.address(_addr(dst).version)


@dataclass(frozen=True)
class Topology:
    """Names and addresses of everything a testbed run creates."""

    run_id: str
    node: Site
    endpoints: Mapping[str, Site]  # endpoint key -> site (host-network endpoints share the node's)
    world: Site | None = None
    skipped: tuple[str, ...] = field(default=())  # endpoint keys without addresses

    @property
    def leaves(self) -> tuple[Site, ...]:
        """Sites with a namespace of their own behind a veth (endpoints, then the world)."""
        own = [s for s in self.endpoints.values() if s.netns != self.node.netns]
        return (*own, *([self.world] if self.world else []))

    @property
    def sites(self) -> tuple[Site, ...]:
        """The node, then every leaf."""
        return (self.node, *self.leaves)

    @property
    def namespaces(self) -> tuple[str, ...]:
        return tuple(site.netns for site in self.sites)

    def site(self, label: str) -> Site:
        """The site for an endpoint key, ``host`` or ``world``; KeyError names what exists."""
        if label == HOST:
            return self.node
        if label == WORLD and self.world is not None:
            return self.world
        try:
            return self.endpoints[label]
        except KeyError:
            raise KeyError(f"no site {label!r} in this testbed (endpoints, {HOST!r}, {WORLD!r})") from None

    def site_of(self, address: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> Site | None:
        """The site that owns an address (None for addresses nothing in the testbed owns)."""
        wanted = _addr(str(address))
        for site in self.sites:
            if any(_addr(a) == wanted for a in site.addresses):
                return site
        return None

    # --- ip -batch scripts -----------------------------------------------------------------

    def node_script(self) -> list[str]:
        """``ip -batch`` lines run in the node namespace: loopback with the node IP, one veth per leaf."""
        node_ip = self.node.addresses[0]
        lines = ["link set lo up", f"addr add {_host_prefix(node_ip)} dev lo"]
        for site in self.leaves:
            assert site.node_ifname is not None
            dev = site.node_ifname
            lines += [
                f"link add {dev} type veth peer name {ENDPOINT_IFNAME} netns {site.netns}",
                f"link set {dev} up",
                f"addr add {GATEWAY_V4}/32 dev {dev}",
            ]
            if any(_addr(a).version == 6 for a in site.addresses):
                lines.append(f"addr add {GATEWAY_V6}/64 dev {dev} nodad")
            for address in site.addresses:
                # Host-originated traffic leaves from the node IP when the family matches.
                src = f" src {node_ip}" if _addr(address).version == _addr(node_ip).version else ""
                lines.append(f"route add {_host_prefix(address)} dev {dev}{src}")
        return lines

    def leaf_script(self, site: Site) -> list[str]:
        """``ip -batch`` lines run in a leaf namespace: addresses on eth0, default routes via the node."""
        dev = ENDPOINT_IFNAME
        lines = ["link set lo up", f"link set {dev} up"]
        for address in site.addresses:
            nodad = " nodad" if _addr(address).version == 6 else ""  # usable at once, no DAD wait
            lines.append(f"addr add {_host_prefix(address)} dev {dev}{nodad}")
        if v4 := site.address(4):
            lines += [
                f"route add {GATEWAY_V4}/32 dev {dev} scope link",
                f"route add 0.0.0.0/0 via {GATEWAY_V4} dev {dev} src {v4}",
            ]
        if v6 := site.address(6):
            lines.append(f"route add ::/0 via {GATEWAY_V6} dev {dev} src {v6}")
        return lines

    def node_sysctls(self) -> dict[str, str]:
        """Forwarding on; reverse-path filtering off (set before the veths exist so ``default`` applies)."""
        return {
            "net.ipv4.ip_forward": "1",
            "net.ipv6.conf.all.forwarding": "1",
            "net.ipv4.conf.all.rp_filter": "0",
            "net.ipv4.conf.default.rp_filter": "0",
        }

    def leaf_sysctls(self) -> dict[str, str]:
        """Reverse-path filtering off in leaves too (a world site owns addresses outside any route)."""
        return {"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0"}


def plan(
    cluster: Cluster,
    run_id: str,
    *,
    world: bool | Sequence[str] = False,
) -> Topology:
    """Lay out a testbed for ``cluster``: names, addresses, interfaces.

    ``world``: False for none, True for :data:`DEFAULT_WORLD_ADDRESSES`, or a list of addresses.
    Raises ValueError for address clashes (a world address that an endpoint or the node owns, or
    the link-local gateway) so a probe can never be misdirected.
    """
    node = Site(HOST, f"{PREFIX}{run_id}-node", (cluster.node_ip,))
    endpoints: dict[str, Site] = {}
    skipped: list[str] = []
    index = 0
    for ep in cluster.endpoints:
        if ep.host_network:
            endpoints[ep.key] = Site(ep.key, node.netns, node.addresses)
            continue
        if not ep.ips:
            skipped.append(ep.key)
            continue
        endpoints[ep.key] = Site(ep.key, f"{PREFIX}{run_id}-e{index}", tuple(ep.ips), f"v{index}")
        index += 1
    world_site = None
    if world:
        if world is True:
            addresses: tuple[str, ...] = DEFAULT_WORLD_ADDRESSES
        else:
            addresses = (world,) if isinstance(world, str) else tuple(world)
        if not addresses:
            raise ValueError("a world site needs at least one address")
        world_site = Site(WORLD, f"{PREFIX}{run_id}-world", tuple(addresses), WORLD_NODE_IFNAME)
    topology = Topology(run_id, node, endpoints, world_site, tuple(skipped))
    _check_addresses(topology.sites)
    return topology


def _check_addresses(sites: Iterable[Site]) -> None:
    owner: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {
        _addr(GATEWAY_V4): "the testbed gateway",
        _addr(GATEWAY_V6): "the testbed gateway",
    }
    for site in sites:
        for text in site.addresses:
            try:
                address = _addr(text)
            except ValueError:
                raise ValueError(f"{site.label}: invalid address {text!r}") from None
            if address in owner and owner[address] != site.label:
                raise ValueError(f"address {text} of {site.label} is also {owner[address]}")
            owner[address] = site.label
