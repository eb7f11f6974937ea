"""One packet on both datapaths, counted: what each does to find the Service backend and the
policy verdict, read back from the compiled artifacts.

iptables (one node holds every endpoint, DESIGN §4): a new connection walks kube-proxy's nat table
(services.v4), then the policy rules (rules.v4, filter and mangle) for the translated flow; an
established packet skips nat (conntrack remembers the DNAT) and leaves the policy at the
``ESTABLISHED`` accept. Counted: rules evaluated (nat and policy apart) and ipset lookups.

eBPF (Cilium): every packet from a pod looks up the lb service map (three lookups for a new
connection to a Service, two for an established one, one miss otherwise), conntrack once per
endpoint program it crosses, the ipcache once per policed side and the policy map twice per side
(bpf_lxc.c calls ``policy_can_egress`` for every packet that is not a reply, reference/cilium.md
§1.7). Counted per map; the LPM lookups are priced by map size.

The estimated time is the counts times :class:`verifier.cost.model.OperationCosts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from compiler.cluster import Cluster
from compiler.flow import Flow
from verifier.cost.model import OperationCosts
from verifier.simulate.ebpf import EbpfArtifacts, EbpfSimulator
from verifier.simulate.iptables_flow import verdict_of_result
from verifier.simulate.services import KubeProxySimulator, LbMapSimulator
from verifier.simulate.targets import iptables_simulators


@dataclass(frozen=True)
class IptablesCost:
    verdict: str  # "allowed", "dropped", "redirected"
    nat_rules: int
    policy_rules: int
    ipset_lookups: int
    ns: float
    nat_ns: float  # the part of ``ns`` spent in the nat table (the Service lookup and its DNAT)

    @property
    def rules(self) -> int:
        return self.nat_rules + self.policy_rules


@dataclass(frozen=True)
class EbpfCost:
    verdict: str
    lb_lookups: int
    ct_lookups: int
    ipcache_lookups: int
    policy_lookups: int
    ns: float
    lb_ns: float  # the part of ``ns`` spent in the load balancer's maps (the Service lookup)

    @property
    def lookups(self) -> int:
        return self.lb_lookups + self.ct_lookups + self.ipcache_lookups + self.policy_lookups


@dataclass(frozen=True)
class PacketCost:
    flow: Flow  # as sent (to the Service address, for Service traffic)
    backend: Flow  # after the load balancer
    new: bool
    iptables: IptablesCost
    ebpf: EbpfCost


class CostEvaluator:
    """Counts packets on the artifacts of one compilation (``OUT/iptables``, ``OUT/ebpf``)."""

    def __init__(self, files: Mapping[str, Mapping[str, str]], cluster: Cluster,
                 costs: OperationCosts | None = None) -> None:
        self.costs = costs or OperationCosts()
        ipt = files["iptables"]
        self.filter = iptables_simulators(ipt, cluster)[4]
        services = {v: (ipt[f"services.v{v}"], f"iptables/services.v{v}") for v in (4, 6) if f"services.v{v}" in ipt}
        self.kube_proxy = KubeProxySimulator(services, cluster.node_address)
        self.lb = LbMapSimulator(files["ebpf"])
        artifacts = EbpfArtifacts(files["ebpf"])
        self.ebpf = EbpfSimulator(artifacts)
        self.ipcache_size = len(artifacts.ipcache.entries)
        self.map_sizes = {ep.key: len(artifacts.maps[ep.policy_map].entries) for ep in artifacts.endpoints}

    def packet(self, flow: Flow, *, new: bool, sport: int = 40000) -> PacketCost:
        """The cost of the first packet (``new``) or a later packet of ``flow``'s connection."""
        costs = self.costs
        # the connection's DNAT (a later packet follows it through conntrack without walking nat)
        nat = self.kube_proxy.resolve(flow, sport)
        lb = self.lb.resolve(flow, sport, new=new)
        # both balance over the same backends but draw differently: count each on its own backend
        ipt_flow = Flow(flow.src, nat.address, flow.protocol, nat.port)
        result = self.filter.simulate(ipt_flow, "NEW" if new else "ESTABLISHED")
        nat_rules = nat.rules_evaluated if new else 0
        dnat = new and nat.service
        # a DNAT ends the walk; otherwise it went through KUBE-SERVICES to the NodePort rule at its end
        fixed = costs.service_ns if dnat else costs.addrtype_ns if nat_rules else 0.0
        nat_ns = nat_rules * costs.iptables_rule_ns + fixed
        ipt_ns = nat_ns + result.cost.rules_evaluated * costs.iptables_rule_ns + \
            result.cost.ipset_lookups * costs.ipset_lookup_ns
        ipt = IptablesCost(verdict_of_result(result).kind, nat_rules, result.cost.rules_evaluated,
                           result.cost.ipset_lookups, ipt_ns, nat_ns)
        ebpf_flow = Flow(flow.src, lb.address, flow.protocol, lb.port)
        got = self.ebpf.evaluate(ebpf_flow)
        sides = [s for s in (got.egress, got.ingress) if s is not None]
        ct = max(1, len(sides))
        policy_ns = sum(s.policy_lookups * costs.lpm_lookup_ns(self.map_sizes.get(s.endpoint, 1)) for s in sides)
        lb_ns = lb.lookups * costs.bpf_hash_lookup_ns
        ebpf_ns = lb_ns + ct * costs.bpf_hash_lookup_ns + \
            got.ipcache_lookups * costs.lpm_lookup_ns(self.ipcache_size) + policy_ns
        kind = "dropped" if not got.allowed else "redirected" if any(s.proxy_port for s in sides) else "allowed"
        ebpf = EbpfCost(kind, lb.lookups, ct, got.ipcache_lookups, got.policy_lookups, ebpf_ns, lb_ns)
        return PacketCost(flow, ebpf_flow, new, ipt, ebpf)
