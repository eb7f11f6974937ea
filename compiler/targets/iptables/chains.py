"""Build the filter and mangle chains of one IP family from the IR (the layout is in __init__'s docstring).

One :class:`FamilyBuilder` per family (4 or 6) turns every :class:`~compiler.ir.model.EndpointPolicy`
into an endpoint chain and its policy chains, collecting the ipsets the rules reference. Rules are
rendered the way :class:`~compiler.ir.evaluate.IREvaluator` matches them (``_matches``): peer by
address set, then any one of the rule's port matches; empty ports = every protocol and port.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from compiler.flow import Direction, Profile, Protocol, RuleRef
from compiler.ir.model import IR, MAX_PORT, Action, EndpointPolicy, Peer, PortMatch, Rule
from compiler.targets.iptables import marks
from compiler.targets.iptables.addresses import AddressBook
from compiler.targets.iptables.dispatch import DispatchTree, Item
from compiler.targets.iptables.names import MAX_SET, Namer, digest
from compiler.targets.iptables.render import IPSet, Table, comment
from compiler.targets.proxyports import proxy_port

Report = Callable[[str, RuleRef | None, str | None], None]

FILTER_TOP = "NPC-POLICY"
MANGLE_TOP = "NPC-PREROUTING"
MANGLE_OUTPUT = "NPC-OUTPUT"
PROTO_NAMES = {Protocol.TCP: "tcp", Protocol.UDP: "udp", Protocol.SCTP: "sctp"}
#: IPv6 neighbour discovery (router/neighbour solicitation and advertisement, redirect) is link
#: plumbing, not a policy flow: Cilium answers it in its datapath before policy. Left alone here.
NDP_TYPES = (133, 134, 135, 136, 137)
TPROXY_IP = {4: "127.0.0.1", 6: "::1"}  # Cilium's --on-ip (reference/iptables.md §6.2)


@dataclass(frozen=True)
class Match:
    """The match part of one iptables rule (everything before ``-j``), with the rule it renders."""

    args: tuple[str, ...]
    rule: Rule


class FamilyBuilder:
    """Everything of one IP family: filter table, mangle table, ipsets."""

    def __init__(self, ir: IR, version: int, namer: Namer, book: AddressBook, report: Report) -> None:
        self.ir = ir
        self.version = version
        self.namer = namer
        self.book = book
        self.report = report
        self.sets: dict[str, IPSet] = {}
        self.filter = Table("filter", ("INPUT", "FORWARD", "OUTPUT"))
        self.mangle = Table("mangle", ("PREROUTING", "OUTPUT"))
        self._peer_sets: dict[Peer, str | None] = {}
        self._named_sets: dict[tuple[str, Protocol], str | None] = {}

    # --- ipsets --------------------------------------------------------------------------

    @property
    def set_prefix(self) -> str:
        return f"NPC{self.version}-"

    def _add_set(self, name: str, kind: str, members: Sequence[str]) -> str:
        self.sets[name] = IPSet(name, kind, self.version, tuple(members))
        return name

    def identity_set(self, number: int) -> str | None:
        """``NPC4-id-N``: the addresses of the endpoints with identity N (None: none of this family)."""
        addresses = [a for a in self.book.identity_addresses.get(number, ()) if a.version == self.version]
        if not addresses:
            return None
        name = self.namer.fixed(f"{self.set_prefix}id-{number}", f"set:{self.version}:identity:{number}", MAX_SET)
        return self._add_set(name, "hash:ip", [str(a) for a in addresses])

    def endpoints_set(self) -> str | None:
        """``NPC4-endpoints``: every endpoint address (traffic to or from one is ours to accept)."""
        cluster = self.ir.cluster
        addresses = sorted({a for ep in cluster.endpoints for a in ep.addresses if a.version == self.version})
        if not addresses:
            return None
        name = self.namer.fixed(f"{self.set_prefix}endpoints", f"set:{self.version}:endpoints", MAX_SET)
        return self._add_set(name, "hash:ip", [str(a) for a in addresses])

    def peer_set(self, peer: Peer) -> str | None:
        """The set standing for a peer's addresses of this family (None: it has none)."""
        if peer in self._peer_sets:
            return self._peer_sets[peer]
        name: str | None = None
        endpoint_ids = [n for n in peer.identities if n in self.book.identity_addresses]
        if (len(peer.identities) == 1 and endpoint_ids and not peer.cidrs and not peer.world_families):
            name = self.identity_set(endpoint_ids[0])  # one endpoint identity: its own set
        else:
            entries = self.book.entries(self.book.components(peer, self.version))
            if entries:
                key = f"set:{self.version}:peer:{peer_key(peer, self.ir.profile)}"
                name = self._add_set(self.namer.hashed_set(f"{self.set_prefix}p-", key), "hash:net",
                                     [str(e) for e in entries])
        self._peer_sets[peer] = name
        return name

    def named_port_set(self, name: str, protocol: Protocol) -> str | None:
        """``NPC4-np-<name>-<proto>``: ``IP,proto:port`` of every endpoint declaring the named port.

        Matched ``dst,dst`` it answers both resolutions the IR uses (SEMANTICS §6): ingress — the
        destination is the subject endpoint; egress under ``k8s`` — the destination endpoint.
        """
        key = (name, protocol)
        if key in self._named_sets:
            return self._named_sets[key]
        proto = PROTO_NAMES[protocol]
        members = sorted(
            {(a, number) for ep in self.ir.cluster.endpoints
             if (number := ep.named_port(name, protocol.name)) is not None
             for a in ep.addresses if a.version == self.version},
            key=lambda m: (m[0], m[1]),
        )
        set_name: str | None = None
        if members:
            ident = f"set:{self.version}:named-port:{name}/{proto}"
            readable = f"{self.set_prefix}np-{name}-{proto}"
            if len(readable) <= MAX_SET and all(c.isalnum() or c == "-" for c in name):
                set_name = self.namer.fixed(readable, ident, MAX_SET)
            else:
                set_name = self.namer.fixed(f"{self.set_prefix}np-{digest(ident, 16)}", ident, MAX_SET)
            self._add_set(set_name, "hash:ip,port", [f"{a},{proto}:{n}" for a, n in members])
        self._named_sets[key] = set_name
        return set_name

    # --- one IR rule → match alternatives ------------------------------------------------

    def matches(self, rule: Rule) -> list[Match]:
        """Every iptables match that renders ``rule`` (an OR of them); [] when it cannot match here."""
        peer_args: list[str] = []
        if not rule.peer.any:
            peer_set = self.peer_set(rule.peer)
            if peer_set is None:
                return []
            side = "src" if rule.direction is Direction.INGRESS else "dst"
            peer_args = ["-m", "set", "--match-set", peer_set, side]
        note = comment(str(rule.origin))
        if not rule.ports:
            return [Match((*peer_args, *note), rule)]
        out: list[Match] = []
        for port in rule.ports:
            for proto_args, port_args in self.port_alternatives(port, rule):
                out.append(Match((*proto_args, *peer_args, *port_args, *note), rule))
        return out

    def port_alternatives(self, port: PortMatch, rule: Rule) -> list[tuple[list[str], list[str]]]:
        """(protocol args, port args) pairs that together match ``port`` (an OR)."""
        if port.protocol is None:
            if (port.lo, port.hi) != (0, MAX_PORT):
                self.report(f"a port range without a protocol ({port}) has no iptables form", rule.origin, None)
            return [([], [])]
        if port.protocol in (Protocol.ICMP, Protocol.ICMPV6):
            return self._icmp(port, rule)
        proto = PROTO_NAMES[port.protocol]
        proto_args = ["-p", proto]
        if port.name is not None:
            if rule.direction is Direction.EGRESS and self.ir.profile is Profile.CILIUM:
                number = self.ir.named_ports.get((port.name, port.protocol))  # cluster-wide, unique (§6)
                if number is None:
                    return []
                return [(proto_args, ["-m", proto, "--dport", str(number)])]
            named = self.named_port_set(port.name, port.protocol)
            return [] if named is None else [(proto_args, ["-m", "set", "--match-set", named, "dst,dst"])]
        if (port.lo, port.hi) == (0, MAX_PORT):
            return [(proto_args, [])]
        span = str(port.lo) if port.lo == port.hi else f"{port.lo}:{port.hi}"
        return [(proto_args, ["-m", proto, "--dport", span])]

    def _icmp(self, port: PortMatch, rule: Rule) -> list[tuple[list[str], list[str]]]:
        v6 = port.protocol is Protocol.ICMPV6
        if (6 if v6 else 4) != self.version:
            return []  # ICMP is IPv4's, ICMPv6 IPv6's: a flow of the other family never has it
        proto_args = ["-p", "ipv6-icmp" if v6 else "icmp"]
        if (port.lo, port.hi) == (0, MAX_PORT):
            return [(proto_args, [])]
        if port.hi > 255:
            self.report(f"ICMP type range {port} beyond 255 has no iptables form", rule.origin, None)
            return []
        module, option = ("icmp6", "--icmpv6-type") if v6 else ("icmp", "--icmp-type")
        return [(proto_args, ["-m", module, option, str(t)]) for t in range(port.lo, port.hi + 1)]

    # --- filter: endpoint and policy chains ------------------------------------------------

    def policy_chains(self, policy: EndpointPolicy) -> list[tuple[str, bool]]:
        """The policy chains of one endpoint policy: (name, has deny rules), denies first."""
        groups: dict[str, list[Rule]] = {}
        for rule in (*policy.deny, *policy.allow):
            groups.setdefault(rule.origin.policy, []).append(rule)
        out: list[tuple[str, bool]] = []
        for policy_name in sorted(groups):
            rules = groups[policy_name]
            name = self.policy_chain(policy.direction, policy_name, rules)
            if name is not None:
                out.append((name, any(r.action is Action.DENY for r in rules)))
        return sorted(out, key=lambda item: not item[1])  # deny-carrying chains first (stable)

    def policy_chain(self, direction: Direction, policy_name: str, rules: list[Rule]) -> str | None:
        """One policy's rules for one direction: set DENY/ALLOW and RETURN, never a verdict (§1.3)."""
        key = "chain:" + repr((direction.value, policy_name, [rule_key(r, self.ir.profile) for r in rules]))
        prefix = "NPC-PI-" if direction is Direction.INGRESS else "NPC-PE-"
        label = policy_name.split(" ", 1)[-1] if " " in policy_name else policy_name
        name = self.namer.chain(prefix, label.split("/")[-1], key)
        if name in self.filter.chains:
            return name  # the same rules for another identity: shared
        body: list[list[str]] = []
        for rule in rules:
            bit = marks.DENY if rule.action is Action.DENY else marks.ALLOW
            found = self.matches(rule)
            body += [[*m.args, *marks.set_bits(bit)] for m in found]
            if found:
                body.append([*marks.has_bits(bit), "-j", "RETURN"])
        if body and body[-1][-1] == "RETURN":
            body.pop()  # falling off the end returns anyway
        if not body:
            return None  # nothing of this policy can match in this family
        self.filter.chains[name] = body
        return name

    def endpoint_chain(self, policy: EndpointPolicy) -> str | None:
        """``NPC-I-N`` / ``NPC-E-N``: run the policy chains, drop on deny or on no allow, clear bits."""
        if not policy.enforced and not policy.deny:
            return None  # unenforced: everything allowed, nothing to evaluate (SEMANTICS §2)
        letter = "I" if policy.direction is Direction.INGRESS else "E"
        name = self.namer.fixed(f"NPC-{letter}-{policy.identity}", f"chain:{letter}:{policy.identity}")
        body = self.filter.chain(name)
        for chain, has_deny in self.policy_chains(policy):
            if has_deny:
                body.append(["-j", chain])
                body.append([*marks.has_bits(marks.DENY), *comment("deny rule matched: POLICY_DENY 181"),
                             "-j", "DROP"])
            else:
                body.append([*marks.lacks_bits(marks.ALLOW), "-j", chain])
        body.append([*marks.lacks_bits(marks.ALLOW), *comment("no allow rule matched: POLICY_DENIED 133"),
                     "-j", "DROP"])
        body.append(marks.clear_bits(marks.ALLOW | marks.DENY))
        return name

    def build_filter(self) -> None:
        top = self.filter.chain(FILTER_TOP)
        for builtin in self.filter.builtins:
            self.filter.hook(builtin, ["-j", FILTER_TOP])
        top.append(["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"])
        if self.version == 6:
            top += [["-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", str(t), "-j", "RETURN"] for t in NDP_TYPES]
        top.append(marks.clear_bits(marks.ALLOW | marks.DENY))
        items: dict[Direction, list[Item]] = {d: [] for d in Direction}
        for policy in self.ir.endpoint_policies():
            members = self.identity_set(policy.identity)
            if members is None:
                continue
            chain = self.endpoint_chain(policy)
            if chain is not None:
                items[policy.direction] += self.dispatch_items(policy.identity, members, chain)
        for direction in (Direction.EGRESS, Direction.INGRESS):  # the source's egress first (§8)
            top += self.dispatch(self.filter, "D", direction, items[direction])
        everyone = self.endpoints_set()
        if everyone is not None:
            for side in ("src", "dst"):
                top.append(["-m", "set", "--match-set", everyone, side, *comment("allowed by policy"), "-j", "ACCEPT"])

    # --- mangle: L7 redirects ---------------------------------------------------------------

    def l7_chain(self, policy: EndpointPolicy, host: bool = False) -> str | None:
        """``NPC-L7I-N`` / ``NPC-L7E-N``: TPROXY flows an L7 allow matches to its proxy port.

        ``host``: ``NPC-L7O-N`` instead, for connections the node itself opens to endpoint N (mangle
        OUTPUT, where TPROXY is not allowed): the same matches set the PROXY mark, and the policy
        route sends the packet through ``lo`` back into PREROUTING, where ``NPC-L7I-N`` redirects it.
        """
        rules = [r for r in policy.allow if r.l7 is not None]
        if host:
            node = self.ir.remote(self.ir.cluster.node_address)
            rules = [r for r in rules if r.peer.matches(node, self.ir.profile)]
        body: list[list[str]] = []
        for rule in rules:
            assert rule.l7 is not None
            port = proxy_port(rule.l7.parser, rule.direction)
            for m in self.matches(rule):
                proto = m.args[m.args.index("-p") + 1] if "-p" in m.args else "every protocol"
                if proto not in ("tcp", "udp"):
                    if not host:
                        self.report(f"TPROXY redirects only TCP and UDP, not {proto.upper()} (the "
                                    f"{rule.l7.parser} redirect of this rule)", rule.origin, None)
                    continue
                if host:
                    body.append([*m.args, *marks.set_bits(marks.PROXY)])
                else:
                    body.append([*m.args, "-j", "TPROXY", "--on-port", str(port), "--on-ip", TPROXY_IP[self.version],
                                 "--tproxy-mark", marks.bits_mask(marks.PROXY)])
        if not body:
            return None
        letter = "O" if host else "I" if policy.direction is Direction.INGRESS else "E"
        name = self.namer.fixed(f"NPC-L7{letter}-{policy.identity}", f"chain:L7{letter}:{policy.identity}")
        self.mangle.chains[name] = body
        return name

    def build_mangle(self) -> None:
        top = self.mangle.chain(MANGLE_TOP)
        self.mangle.hook("PREROUTING", ["-j", MANGLE_TOP])
        top.append(["-p", "tcp", "-m", "socket", "--transparent", *comment("established proxied connection"),
                    *marks.set_bits(marks.PROXY)])
        # a NEW packet with the mark was sent here by NPC-OUTPUT (a host connection to redirect)
        top.append([*marks.has_bits(marks.PROXY), "-m", "conntrack", "!", "--ctstate", "NEW", "-j", "RETURN"])
        top.append(["-p", "tcp", "-m", "conntrack", "!", "--ctstate", "NEW", "-j", "RETURN"])
        items: dict[Direction, list[Item]] = {d: [] for d in Direction}
        host_items: list[Item] = []
        for policy in self.ir.endpoint_policies():
            members = self.identity_set(policy.identity)
            if members is None:
                continue
            chain = self.l7_chain(policy)
            if chain is not None:
                items[policy.direction] += self.dispatch_items(policy.identity, members, chain)
            if policy.direction is Direction.INGRESS:
                host_chain = self.l7_chain(policy, host=True)
                if host_chain is not None:
                    host_items += self.dispatch_items(policy.identity, members, host_chain)
        for direction in (Direction.EGRESS, Direction.INGRESS):  # egress proxy first, as in Cilium
            top += self.dispatch(self.mangle, "L", direction, items[direction])
        if host_items:
            self.build_mangle_output(host_items)

    def build_mangle_output(self, items: list[Item]) -> None:
        """NPC-OUTPUT: mark the node's own connections that an endpoint's ingress L7 rule redirects.

        TPROXY exists only in PREROUTING, so (the usual transparent-proxy recipe for local
        traffic) mangle OUTPUT sets the PROXY mark, the connection mark remembers it for the later
        packets, and the ``ip rule fwmark PROXY`` route turns the packet around through ``lo``
        into PREROUTING, where the endpoint's NPC-L7I chain redirects it like any other.
        """
        out = self.mangle.chain(MANGLE_OUTPUT)
        self.mangle.hook("OUTPUT", ["-j", MANGLE_OUTPUT])
        out.append([*marks.is_value(marks.FROM_PROXY), *comment("upstream connection of a proxy"), "-j", "RETURN"])
        out.append(["-m", "connmark", "--mark", marks.bits_mask(marks.PROXY),
                    *comment("later packets of a host connection sent to a proxy"), *marks.set_bits(marks.PROXY)])
        out.append([*marks.has_bits(marks.PROXY), "-j", "RETURN"])
        out.append(["-m", "conntrack", "!", "--ctstate", "NEW", "-j", "RETURN"])
        out += self.dispatch(self.mangle, "O", Direction.INGRESS, items)
        out.append([*marks.has_bits(marks.PROXY), "-j", "CONNMARK", "--set-xmark",
                    marks.bits_mask(marks.PROXY)])

    # --- dispatch ---------------------------------------------------------------------------

    def dispatch_items(self, identity: int, members: str, chain: str) -> list[Item]:
        """The addresses of this family that ``chain`` is reached for (its identity's endpoints)."""
        addresses = self.book.identity_addresses.get(identity, ())
        return [Item(int(a), identity, members, chain) for a in addresses if a.version == self.version]

    def dispatch(self, table: Table, kind: str, direction: Direction, items: list[Item]) -> list[list[str]]:
        """Rules reaching each item's chain from the top-level chain (:mod:`.dispatch`)."""
        if not items:
            return []
        letter = "I" if direction is Direction.INGRESS else "E"
        side = "dst" if direction is Direction.INGRESS else "src"
        label = kind if kind == "O" else kind + letter
        return DispatchTree(table, self.namer, self.version, label, side).rules(items)


def peer_key(peer: Peer, profile: Profile) -> str:
    """A canonical, family-independent description of a peer (what its set name is hashed from)."""
    if peer.any:
        return "any"
    cidrs = sorted(str(c) for c in peer.cidrs)
    return (f"ids={','.join(map(str, sorted(peer.identities)))};cidrs={'|'.join(cidrs)};"
            f"world={','.join(map(str, sorted(peer.world_families)))};profile={profile.value}")


def rule_key(rule: Rule, profile: Profile) -> str:
    """What a rule means, for naming its chain: not where it was read (file:line only go in the comment),
    so moving a policy within its file or loading it from another path does not rename the chain."""
    ports = ",".join(str(p) for p in rule.ports)
    return f"{rule.action.value}|{rule.origin.policy}|{rule.origin.path}|{peer_key(rule.peer, profile)}|{ports}"
