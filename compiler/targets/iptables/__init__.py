"""The iptables target: ``OUT/iptables/rules.v4`` (iptables-restore) and ``ipsets.v4`` (ipset restore), ``.v6`` too,
and ``services.v4``: the cluster's Services as kube-proxy programs them (:mod:`.services`).

Node model (DESIGN §4): the files are loaded on the node; endpoints sit behind routed veths, so
endpoint traffic crosses the node's FORWARD path, host traffic its INPUT/OUTPUT paths. Everything
is keyed on **addresses**, never interface names. Layout after Calico and kube-router
(reference/iptables.md §1, §2, §8), dispatching on identity ipsets instead of interfaces:

filter table — the L3/L4 verdict::

    INPUT, FORWARD, OUTPUT ─► NPC-POLICY
      ESTABLISHED,RELATED ─► ACCEPT          (return traffic of allowed connections)
      clear ALLOW|DENY
      source address ─► NPC-E-N              (source's egress, for every enforced identity)
      destination address ─► NPC-I-M         (destination's ingress)
      -m set NPC4-endpoints src|dst ─► ACCEPT

    "address ─► chain" is :mod:`.dispatch`: ``-m set NPC4-id-N src`` per identity while there are
    few, else a binary trie over the endpoint addresses (``NPC-DE4-…``/``NPC-DI4-…``), so a packet
    walks O(log endpoints) dispatch rules, then only the chains of its two endpoints.
    NPC-E-N / NPC-I-N  (endpoint chain, one per identity and direction: its endpoints share it)
      ─► NPC-PE-…  (per-policy chains holding deny rules first, each followed by "DENY ─► DROP")
      ─► NPC-PE-…  (allow-only policy chains, skipped once ALLOW is set)
      no ALLOW ─► DROP; clear ALLOW|DENY; RETURN
    NPC-PE-… / NPC-PI-…  (one policy's rules: set DENY or ALLOW and RETURN, never a verdict)

So a flow passes iff each enforced side has an allow match and no deny match (SEMANTICS §2), exactly
:class:`compiler.ir.evaluate.IREvaluator`. Unenforced directions get no chain (allowed). The
synthetic rules (``<allow-localhost>`` under ``cilium``, ``<default-allow-…>``) are ordinary policy
chains. Peers are ipsets (:mod:`.addresses`: ``nomatch`` for excepts and for cluster addresses a CIDR
must not match under ``cilium``); named ports are ``hash:ip,port`` sets matched ``dst,dst``.

mangle table — L7 redirects (TPROXY, as Cilium's iptables mode and Istio do, reference §6.2-6.4)::

    PREROUTING ─► NPC-PREROUTING
      tcp -m socket --transparent ─► set PROXY   (later packets of a proxied flow)
      PROXY and not NEW ─► RETURN
      tcp, not NEW ─► RETURN
      source address ─► NPC-L7E-N          (egress L7 allows: TPROXY to the egress proxy port)
      destination address ─► NPC-L7I-M     (ingress L7 allows: TPROXY to the ingress proxy port)

    OUTPUT ─► NPC-OUTPUT                  (connections the node itself opens)
      SO_MARK FROM_PROXY ─► RETURN          (a proxy's upstream connection: never sent back)
      connmark PROXY ─► set PROXY; PROXY ─► RETURN; not NEW ─► RETURN
      destination address ─► NPC-L7O-M     (M's ingress L7 allows that match the host: set PROXY)
      PROXY ─► CONNMARK set PROXY

Why the verdict is still the IR's: TPROXY only *delivers the packet locally*, with its original
addresses; ``ip rule fwmark PROXY lookup 2024`` + ``local 0.0.0.0/0 dev lo table 2024`` (loaded by
verifier/kernel/load_iptables.py) route it to INPUT, whose hook runs the same NPC-POLICY on the
original source and destination. A flow an L7 rule would redirect but a deny (or the other side)
drops is therefore dropped in INPUT, and a redirected flow is one both sides allow with an L7 allow
matching (SEMANTICS §7). When both sides would redirect, the source's egress proxy gets the flow
first (Cilium's order); egress is dispatched before ingress. Ports come from
:mod:`compiler.targets.proxyports`, so the eBPF target redirects to the same ports.

Not expressible (reported through :meth:`Target.unsupported`): TPROXY of protocols other than TCP and
UDP (an SCTP expansion of a DNS rule), ICMP type ranges beyond 255, a protocol-less port range,
and name collisions or over-long names. TPROXY only exists in PREROUTING, so a connection the node
opens to an endpoint with an ingress L7 rule is marked in mangle OUTPUT, and the same policy route
turns it around through ``lo`` into PREROUTING, where it is redirected like a forwarded one (the
usual transparent-proxy recipe for local traffic).

Marks: :mod:`.marks` (mask 0x07000000). Names: :mod:`.names`.
"""

from __future__ import annotations

from typing import ClassVar

from compiler.flow import RuleRef
from compiler.services import frontends
from compiler.targets import register
from compiler.targets.base import Target
from compiler.targets.iptables.addresses import AddressBook
from compiler.targets.iptables.chains import FamilyBuilder
from compiler.targets.iptables.names import Namer
from compiler.targets.iptables.render import render_rules, render_sets
from compiler.targets.iptables.services import build_nat, service_rule_count


class IptablesTarget(Target):
    """IR → iptables-restore and ipset restore files, per IP family."""

    name: ClassVar[str] = "iptables"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._counts: dict[str, int] = {}
        self._reported: set[tuple[str, RuleRef | None, str | None]] = set()

    def families(self) -> list[int]:
        """IPv4 always; IPv6 when some endpoint has an IPv6 address."""
        v6 = any(a.version == 6 for ep in self.ir.cluster.endpoints for a in ep.addresses)
        return [4, 6] if v6 else [4]

    def emit(self) -> dict[str, str]:
        namer = Namer(self._collision)
        book = AddressBook(self.ir)
        files: dict[str, str] = {}
        header = f"netpolc iptables target, profile {self.ir.profile.value}, node {self.ir.cluster.node_ip}"
        for version in self.families():
            builder = FamilyBuilder(self.ir, version, namer, book, self._report)
            builder.build_filter()
            builder.build_mangle()
            files[f"rules.v{version}"] = render_rules(header, [builder.filter, builder.mangle])
            files[f"ipsets.v{version}"] = render_sets(header, list(builder.sets.values()))
            self._counts[f"rules_v{version}"] = builder.filter.rule_count() + builder.mangle.rule_count()
            self._counts[f"chains_v{version}"] = len(builder.filter.chains) + len(builder.mangle.chains)
            self._counts[f"ipsets_v{version}"] = len(builder.sets)
            self._counts[f"ipset_entries_v{version}"] = sum(len(s.members) for s in builder.sets.values())
        services = frontends(self.ir.cluster)
        for version in sorted({f.address.version for f in services}):
            nat = build_nat(services, version, self.ir.cluster.pod_cidrs)
            files[f"services.v{version}"] = render_rules(f"{header}; kube-proxy iptables mode Services, load with "
                                                         "iptables-restore --noflush", [nat])
            self._counts[f"service_rules_v{version}"] = service_rule_count(nat)
        return files

    def counts(self) -> dict[str, int]:
        return dict(sorted(self._counts.items()))

    def _report(self, message: str, rule: RuleRef | None, endpoint: str | None) -> None:
        """Report once, however many identities and families share the rule."""
        if (message, rule, endpoint) not in self._reported:
            self._reported.add((message, rule, endpoint))
            self.unsupported(message, rule, endpoint)

    def _collision(self, name: str, key: str, message: str) -> None:
        self.unsupported(message)


register(IptablesTarget)

__all__ = ["IptablesTarget"]
