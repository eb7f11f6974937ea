"""``netpolc cost --calibrate``: measure the per-operation costs on this machine's kernel.

iptables (both backends) and ipset with real packets in network namespaces
(:mod:`verifier.kernel.calibrate_iptables`); BPF hash and LPM-trie lookups with
``BPF_PROG_TEST_RUN`` (:mod:`verifier.kernel.calibrate_bpf`). The result is an
:class:`~verifier.cost.model.OperationCosts` profile that ``netpolc cost --costs FILE`` uses.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable

from verifier.cost.model import OperationCosts


class CalibrationUnavailable(RuntimeError):
    """The kernel (or the tools) here cannot run the measurements; the message says why."""


def unavailable_reason() -> str | None:
    from verifier.kernel.bpf import ebpf_unavailable_reason
    from verifier.kernel.netns import kernel_unavailable_reason

    return kernel_unavailable_reason(("iptables-nft-restore", "iptables-legacy-restore", "ipset")) or \
        ebpf_unavailable_reason()


def calibrate(progress: Callable[[str], None] = lambda _: None) -> OperationCosts:
    reason = unavailable_reason()
    if reason:
        raise CalibrationUnavailable(f"cannot calibrate on this machine: {reason}")
    from verifier.kernel import calibrate_bpf, calibrate_iptables
    from verifier.kernel.bpf import BpfToolError
    from verifier.kernel.netns import KernelError

    try:
        ipt = calibrate_iptables.measure(progress=progress)
        bpf = calibrate_bpf.measure(progress=progress)
    except (KernelError, BpfToolError) as err:
        raise CalibrationUnavailable(f"calibration failed: {err}") from None
    host = f"{platform.node()}, Linux {platform.release()}, {os.cpu_count()} CPUs"
    return OperationCosts(
        iptables_rule_ns=ipt.rule_ns["nft"],
        iptables_legacy_rule_ns=ipt.rule_ns["legacy"],
        ipset_lookup_ns=ipt.ipset_lookup_ns,
        service_ns=ipt.service_ns,
        addrtype_ns=ipt.addrtype_ns,
        bpf_hash_lookup_ns=bpf.hash_lookup_ns,
        lpm_points=bpf.lpm_points,
        source=f"calibrated on {host}",
        details={
            "iptables": f"slope of UDP send time through {ipt.rules} non-matching OUTPUT rules "
                        f"(-d VIP/32 -p udp --dport), best of {calibrate_iptables.BATCHES} batches of {ipt.packets} "
                        "packets, per backend",
            "ipset": f"extra slope of {ipt.rules} '-m set --match-set' rules over plain ones "
                     f"({calibrate_iptables.SET_MEMBERS}-member hash:ip set, nf_tables backend)",
            "service": f"new TCP connections through the emitted nat table of one Service of "
                       f"{calibrate_iptables.SERVICE_BACKENDS} backends minus the same without its OUTPUT jump, "
                       "less the rules walked at the nf_tables rule cost: to its cluster IP (service) and to a "
                       "pod address (addrtype)",
            "bpf": f"BPF_PROG_TEST_RUN slope of 0 vs {calibrate_bpf.LOOKUPS} lookups per run, {bpf.repeat} runs; "
                   f"hash keyed like lb4_key ({calibrate_bpf.HASH_ENTRIES} entries), LPM keyed like ipcache_key",
        },
    )


def table(costs: OperationCosts) -> str:
    """The profile as a short text table."""
    rows = [
        ("iptables rule (nf_tables)", costs.iptables_rule_ns),
        ("iptables rule (legacy)", costs.iptables_legacy_rule_ns),
        ("ipset lookup", costs.ipset_lookup_ns),
        ("a new connection to a Service", costs.service_ns),
        ("NodePort rule (addrtype LOCAL)", costs.addrtype_ns),
        ("BPF hash lookup", costs.bpf_hash_lookup_ns),
        *((f"BPF LPM lookup, {n:,} entries", ns) for n, ns in costs.lpm_points),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join([f"{costs.source}", *(f"  {name:<{width}}  {ns:8.1f} ns" for name, ns in rows)]) + "\n"
