"""Every flow whose verdict differs between two policy versions, as compact regions.

Both versions are evaluated with the reference semantics (verifier/simulate/source.py) on one
representative flow of every cell of a partition refined by both versions' rules
(:mod:`verifier.regions`); a cell's verdict holds for every flow in it, so comparing cells is an
exhaustive comparison of the whole flow space: the result is "equivalent" only when no flow
differs. Changed cells are merged into regions — adjacent port ranges first, then sources with
the same change — and each region names the rules responsible on both sides.

Verdicts compared: dropped (with Hubble's reason), forwarded, redirected to an L7 parser. When both
versions redirect, the allow rules (and so the L7 rule sets) they redirect with are compared: a
change there is reported as an L7 change of the region.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from compiler.flow import Decision, DirectionDecision, Flow, Profile, RuleRef, Verdict
from compiler.inputs import Inputs
from compiler.ir.build import build_ir
from compiler.labels import LabelFilter
from compiler.source import NetpolcError
from verifier.regions import AddressCell, PortCell, address_cells, flows, port_cells
from verifier.simulate.source import ReferenceEvaluator


class ClusterMismatch(NetpolcError):
    """OLD and NEW do not describe the same cluster (diff compares policies on one cluster)."""


@dataclass(frozen=True, order=True)
class Outcome:
    """What happens to a flow, in the terms a reviewer cares about."""

    verdict: str  # "allowed", "dropped", "redirected"
    detail: str = ""  # drop reason name, or the L7 parser(s)

    def __str__(self) -> str:
        return f"{self.verdict} ({self.detail})" if self.detail else self.verdict


@dataclass(frozen=True)
class Side:
    outcome: Outcome
    rules: tuple[RuleRef, ...]  # the rules that decided (deny rules if denied, else allow rules)
    l7_rules: tuple[RuleRef, ...]  # allow rules of redirected directions (whose L7 rules apply)


def outcome(decision: Decision) -> Side:
    sides = [s for s in (decision.egress, decision.ingress) if s is not None]
    if decision.verdict is Verdict.DROPPED:
        reason = decision.drop_reason.name if decision.drop_reason is not None else ""
        blocking = next((s for s in sides if not s.allowed), None)
        rules = _deciding(blocking) if blocking is not None else ()
        return Side(Outcome("dropped", reason), rules, ())
    redirects = [s for s in sides if s.redirect]
    # the rules of enforced directions decide; an unenforced side only contributes its synthetic allow
    rules = tuple(sorted({r for s in sides if s.enforced for r in _deciding(s)}))
    rules = rules or tuple(sorted({r for s in sides for r in _deciding(s)}))
    if redirects:
        parsers = "+".join(f"{s.direction.value} {s.redirect}" for s in redirects)
        l7 = tuple(sorted({r for s in redirects for r in s.allow_rules}))
        return Side(Outcome("redirected", parsers), rules, l7)
    return Side(Outcome("allowed"), rules, ())


def _deciding(side: DirectionDecision) -> tuple[RuleRef, ...]:
    if side.deny_rules:
        return tuple(sorted(side.deny_rules))
    return tuple(sorted(side.allow_rules))


Ports = tuple[tuple[str, tuple[tuple[int, int], ...]], ...]  # (protocol, ranges) pairs


@dataclass(frozen=True)
class Region:
    """A set of flows with one change: sources × destinations × (protocol, port ranges)."""

    sources: tuple[str, ...]  # endpoint keys, "host", or world ranges (CIDRs)
    destinations: tuple[str, ...]
    ports: Ports
    old: Outcome
    new: Outcome
    old_rules: tuple[RuleRef, ...]
    new_rules: tuple[RuleRef, ...]
    l7_changed: bool = False  # same verdict, different L7 rules behind the redirect

    @property
    def port_text(self) -> str:
        parts = []
        for proto, spans in self.ports:
            top = 255 if proto.startswith("ICMP") else 65535
            if spans == ((0, top),):
                parts.append(f"{proto} (all)")
            else:
                parts.append(proto + " " + ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in spans))
        return "; ".join(parts)


@dataclass(frozen=True)
class DiffResult:
    profile_old: Profile
    profile_new: Profile
    regions: tuple[Region, ...]
    cells: int  # flows evaluated (one per cell)

    @property
    def equivalent(self) -> bool:
        return not self.regions


def _check_same_cluster(old: Inputs, new: Inputs) -> None:
    a = {ep.key: ep.ips for ep in old.cluster.endpoints}
    b = {ep.key: ep.ips for ep in new.cluster.endpoints}
    if a == b and old.cluster.node_ip == new.cluster.node_ip:
        return
    only_old = sorted(set(a) - set(b))[:5]
    only_new = sorted(set(b) - set(a))[:5]
    moved = sorted(k for k in set(a) & set(b) if a[k] != b[k])[:5]
    raise ClusterMismatch(
        "OLD and NEW describe different clusters; diff compares policies on one cluster "
        f"(only in OLD: {only_old or '-'}; only in NEW: {only_new or '-'}; other addresses: {moved or '-'})"
    )


def semantic_diff(
    old: Inputs,
    new: Inputs,
    profile_old: Profile,
    profile_new: Profile,
    label_filter: LabelFilter | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> DiffResult:
    """Every flow whose outcome changes from OLD to NEW, merged into regions."""
    _check_same_cluster(old, new)
    irs = [build_ir(old, profile_old, label_filter), build_ir(new, profile_new, label_filter)]
    ports = port_cells(irs)
    ref_old = ReferenceEvaluator(old, profile_old, label_filter)
    ref_new = ReferenceEvaluator(new, profile_new, label_filter)
    # world addresses are cut at every prefix a peer test of either version looks at: CIDR peers
    # and excepts, and `cidr:` selector keys (a world address carries a cidr: label per prefix)
    networks = {str(n) for ref in (ref_old, ref_new) for n in ref.policy_networks()}
    cells = address_cells(new.cluster, sorted(networks))
    changed: list[tuple[AddressCell, AddressCell, PortCell, Side, Side, bool]] = []
    count = 0
    all_flows = list(flows(cells, ports))
    progress(f"comparing {len(all_flows)} flow cells")
    for src, dst, port, flow in all_flows:
        count += 1
        a, b = outcome(_evaluate(ref_old, flow)), outcome(_evaluate(ref_new, flow))
        l7_changed = a.outcome == b.outcome and a.outcome.verdict == "redirected" and a.l7_rules != b.l7_rules
        if a.outcome != b.outcome or l7_changed:
            changed.append((src, dst, port, a, b, l7_changed))
    return DiffResult(profile_old, profile_new, tuple(_merge(changed)), count)


def _evaluate(reference: ReferenceEvaluator, flow: Flow) -> Decision:
    return reference.evaluate(flow)


Change = tuple[Side, Side, bool]


def _merge(changed: Sequence[tuple[AddressCell, AddressCell, PortCell, Side, Side, bool]]) -> list[Region]:
    """Changed cells → regions: join port ranges, then protocols, then sources, then destinations."""
    spans: dict[tuple[AddressCell, AddressCell, Change], dict[str, list[tuple[int, int]]]] = {}
    for src, dst, port, a, b, l7 in changed:
        per_proto = spans.setdefault((src, dst, (a, b, l7)), {})
        per_proto.setdefault(port.protocol.name, []).append((port.lo, port.hi))
    by_dest: dict[tuple[AddressCell, Ports, Change], list[AddressCell]] = {}
    for (src, dst, change), per_proto in spans.items():
        ports = tuple((proto, _join(ranges)) for proto, ranges in sorted(per_proto.items()))
        by_dest.setdefault((dst, ports, change), []).append(src)
    by_sources: dict[tuple[tuple[str, ...], Ports, Change], list[AddressCell]] = {}
    for (dst, ports, change), sources in by_dest.items():
        by_sources.setdefault((_cell_names(sources), ports, change), []).append(dst)
    regions = [
        Region(names, _cell_names(dests), ports, a.outcome, b.outcome, a.rules, b.rules, l7)
        for (names, ports, (a, b, l7)), dests in by_sources.items()
    ]
    return sorted(regions, key=lambda r: (r.destinations, r.ports, r.sources))


def _cell_names(cells: Sequence[AddressCell]) -> tuple[str, ...]:
    """Endpoints and the host by name, world cells merged into CIDRs or ranges."""
    return tuple(sorted(c.name for c in cells if c.kind != "world")) + _world_names(cells)


def _world_names(sources: Sequence[AddressCell]) -> tuple[str, ...]:
    """World cells as CIDRs, adjacent cells joined (one range per family when that is shorter)."""
    out: list[str] = []
    for version in (4, 6):
        spans = []
        for cell in sources:
            if cell.kind == "world" and cell.representative.version == version:
                first, _, last = cell.name.partition("-")
                spans.append((int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))))
        for lo, hi in _join(spans):
            a, b = ipaddress.ip_address(lo), ipaddress.ip_address(hi)
            nets = [str(n) for n in ipaddress.summarize_address_range(a, b)]
            out.extend(nets if len(nets) <= 2 else [f"{a}-{b}"])
    return tuple(out)


def _join(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if out and lo == out[-1][1] + 1:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)
