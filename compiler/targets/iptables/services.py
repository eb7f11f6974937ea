"""ClusterIP Services as kube-proxy's iptables mode programs them: ``OUT/iptables/services.v4``.

The nat table of reference/iptables.md §4.1, so that the per-packet cost of Services on an
iptables node can be counted (and loaded into a kernel) next to the policy rules:

    PREROUTING, OUTPUT ─► KUBE-SERVICES
      one rule per (cluster IP, protocol, port) ─► KUBE-SVC-<hash>       (a linear scan)
      last: -m addrtype --dst-type LOCAL ─► KUBE-NODEPORTS              (NodePorts: not modelled, empty)
    KUBE-SVC-<hash>
      ! -s <pod CIDR> ─► KUBE-MARK-MASQ                                 (traffic from outside the pods)
      backend i of n: -m statistic --mode random --probability 1/(n-i) ─► KUBE-SEP-<hash>; the last without
    KUBE-SEP-<hash>
      -s <backend> ─► KUBE-MARK-MASQ                                    (hairpin)
      -p PROTO ─► DNAT --to-destination <backend>:<port>
    POSTROUTING ─► KUBE-POSTROUTING: MASQUERADE what KUBE-MARK-MASQ marked 0x4000

So each service port costs 2 + 3E rules for E backends (§4.2). Chain suffixes are kube-proxy's:
the first 16 characters of base32(SHA-256(servicePortName + protocol [+ endpoint])). Probabilities
are written as kube-proxy writes them (``%0.10f``). A Service port without backends gets no rules
here: kube-proxy REJECTs it from the filter table, which this file leaves alone (it is loaded with
``iptables-restore --noflush`` next to rules.v4, whose filter table it must not replace).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from compiler.services import Frontend
from compiler.targets.iptables.render import Table, comment

MASQ_MARK = "0x4000"  # kube-proxy's masquerade bit (reference/iptables.md §4.1)
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}


def chain_suffix(*parts: str) -> str:
    """kube-proxy's ``servicePortChainName``/``servicePortEndpointChainName`` hash."""
    digest = hashlib.sha256("".join(parts).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


def svc_chain(frontend: Frontend) -> str:
    return "KUBE-SVC-" + chain_suffix(frontend.name, frontend.protocol.lower())


def sep_chain(frontend: Frontend, endpoint: str) -> str:
    return "KUBE-SEP-" + chain_suffix(frontend.name, frontend.protocol.lower(), endpoint)


def _endpoint(address: object, port: int, version: int) -> str:
    return f"{address}:{port}" if version == 4 else f"[{address}]:{port}"


def build_nat(frontends: Sequence[Frontend], version: int, pod_cidrs: Sequence[str]) -> Table:
    """The nat table for the frontends of one address family."""
    nat = Table("nat", ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"))
    width = 32 if version == 4 else 128
    portals = comment("kubernetes service portals")
    nat.hook("PREROUTING", [*portals, "-j", "KUBE-SERVICES"])
    nat.hook("OUTPUT", [*portals, "-j", "KUBE-SERVICES"])
    nat.hook("POSTROUTING", [*comment("kubernetes postrouting rules"), "-j", "KUBE-POSTROUTING"])
    services = nat.chain("KUBE-SERVICES")
    nat.chain("KUBE-NODEPORTS")
    nat.chain("KUBE-MARK-MASQ").append(["-j", "MARK", "--or-mark", MASQ_MARK])
    postrouting = nat.chain("KUBE-POSTROUTING")
    postrouting.append(["-m", "mark", "!", "--mark", f"{MASQ_MARK}/{MASQ_MARK}", "-j", "RETURN"])
    postrouting.append(["-j", "MARK", "--xor-mark", MASQ_MARK])
    postrouting.append([*comment("kubernetes service traffic requiring SNAT"), "-j", "MASQUERADE", "--random-fully"])
    cidrs = [c for c in pod_cidrs if (":" in c) == (version == 6)]
    for frontend in frontends:
        if frontend.address.version != version or not frontend.backends:
            continue
        proto = PROTOCOLS[frontend.protocol]
        vip = f"{frontend.address}/{width}"
        match = ["-p", proto, "-m", proto, "--dport", str(frontend.port)]
        label = f"{frontend.name} cluster IP"
        svc = svc_chain(frontend)
        services.append(["-d", vip, "-p", proto, *comment(label), "-m", proto, "--dport", str(frontend.port),
                         "-j", svc])
        rules = nat.chain(svc)
        for cidr in cidrs[:1]:
            rules.append(["!", "-s", cidr, "-d", vip, *match[:2], *comment(label), *match[2:], "-j", "KUBE-MARK-MASQ"])
        count = len(frontend.backends)
        for i, backend in enumerate(frontend.backends):
            endpoint = _endpoint(backend.address, backend.port, version)
            sep = sep_chain(frontend, endpoint)
            pick = [] if i == count - 1 else ["-m", "statistic", "--mode", "random", "--probability",
                                              f"{1 / (count - i):0.10f}"]
            rules.append([*comment(f"{frontend.name} -> {endpoint}"), *pick, "-j", sep])
            sep_rules = nat.chain(sep)
            sep_rules.append(["-s", f"{backend.address}/{width}", *comment(frontend.name), "-j", "KUBE-MARK-MASQ"])
            sep_rules.append(["-p", proto, *comment(frontend.name), "-m", proto, "-j", "DNAT", "--to-destination",
                              endpoint])
    services.append([*comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain"),
                     "-m", "addrtype", "--dst-type", "LOCAL", "-j", "KUBE-NODEPORTS"])
    return nat


def service_rule_count(table: Table) -> int:
    """Rules kube-proxy's ``number_generated_rules`` counts (the built-in chains' jumps excluded)."""
    return sum(len(rules) for rules in table.chains.values())
