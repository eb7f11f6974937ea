"""Every flow whose verdict differs between two policy versions, as compact regions.

Both versions are evaluated with the reference semantics (verifier/simulate/source.py) on a
partition of the flow space refined by both versions' rules (:mod:`verifier.regions`: address
cells cut at every policy prefix, port cells cut at every rule range and declared port); a
cell's verdict holds for every flow in it, so comparing cells is an exhaustive comparison of the
whole flow space: the result is "equivalent" only when no flow differs.

Two reductions keep that exhaustive comparison small, each argued where it lives:

- :mod:`verifier.diff.scope` — only flows whose source's egress or destination's ingress is
  decided by a changed policy can change (when profiles and cluster are the same);
- :mod:`verifier.diff.pairs` — endpoints no policy can tell apart form one class, evaluated once;
  each direction's peer matching is done once per pair and its port checks once per rule set.

Changed cells are merged into regions — adjacent port ranges first, then sources with the same
change, then destinations — and each region names the rules responsible on both sides. A class
stands for its members in a region, so a region ``A → A`` covers the flows between distinct
members of ``A`` (an endpoint to itself is not a flow).

Outcomes compared: dropped (with Hubble's reason), forwarded, redirected to an L7 parser; when
both versions redirect, the L7 rules behind the redirect (:mod:`verifier.diff.outcome`).
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from compiler.flow import Direction, Profile, RuleRef
from compiler.inputs import Inputs
from compiler.labels import LabelFilter
from compiler.source import NetpolcError
from verifier.diff.outcome import Outcome, Side
from verifier.diff.pairs import CellClass, Changed, VersionEvaluator, cell_classes, compare
from verifier.diff.scope import Scope, changed_directions, diff_scope
from verifier.regions import AddressCell, PortCell, address_cells, source_port_cells
from verifier.simulate.source import ReferenceEvaluator

__all__ = ["ClusterMismatch", "DiffResult", "Outcome", "Region", "Side", "semantic_diff"]


class ClusterMismatch(NetpolcError):
    """OLD and NEW do not describe the same cluster (diff compares policies on one cluster)."""


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
    cells: int  # flow cells the comparison covers: the whole flow space, cut into cells
    evaluated: int = 0  # distinct outcomes actually computed (both versions)
    scope: str = ""  # what the comparison was restricted to, and why that is exhaustive

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
    *,
    restrict: bool = True,
) -> DiffResult:
    """Every flow whose outcome changes from OLD to NEW, merged into regions.

    ``restrict=False`` compares every flow even when :mod:`verifier.diff.scope` would allow a
    restriction (the tests check both give the same regions).
    """
    if old.cluster is not new.cluster:
        _check_same_cluster(old, new)
    scope = diff_scope(old, new, profile_old, profile_new)
    ref_old = ReferenceEvaluator(old, profile_old, label_filter)
    # same cluster and profile (a restricted scope): NEW shares OLD's views and unchanged units
    ref_new = ReferenceEvaluator(new, profile_new, label_filter, share=ref_old if scope.restricted else None)
    if not restrict and scope.restricted:
        scope = Scope(False, scope.changed, "restriction turned off")
    if scope.restricted:
        scope = changed_directions(scope, ref_old.units, ref_new.units)
    ports = source_port_cells((*ref_old.units, *ref_new.units), {id(c): c for c in (old.cluster, new.cluster)}.values())
    # world addresses are cut at every prefix a peer test of either version looks at: CIDR peers
    # and excepts, and `cidr:` selector keys (a world address carries a cidr: label per prefix)
    networks = {str(n) for ref in (ref_old, ref_new) for n in ref.policy_networks()}
    cells = address_cells(new.cluster, sorted(networks))
    classes = cell_classes(cells, (ref_old, ref_new))
    progress(f"{len(cells)} address cells in {len(classes)} classes, {len(ports)} port cells; comparing {scope}")
    egress, ingress = _affected(classes, scope, ref_old, ref_new)
    old_side, new_side = VersionEvaluator(ref_old), VersionEvaluator(ref_new)
    found = compare(classes, ports, old_side, new_side, egress, ingress, progress)
    return DiffResult(
        profile_old,
        profile_new,
        tuple(_merge(found.changed)),
        _flow_cells(cells, ports),
        found.evaluations,
        str(scope),
    )


def _affected(
    classes: Sequence[CellClass], scope: Scope, ref_old: ReferenceEvaluator, ref_new: ReferenceEvaluator
) -> tuple[set[int], set[int]]:
    """Class indexes whose egress / ingress may change (:mod:`verifier.diff.scope`): every
    endpoint class, or those selected by a unit, in a version where it has that direction, of a
    policy changed in that direction.

    Endpoints are also checked for conflicting L7 parsers, which the full comparison refuses:
    every class in OLD, and in NEW every class when unrestricted, else the affected ones (an
    endpoint no changed unit selects has the same units, so the same conflicts, in both).
    """
    egress: set[int] = set()
    ingress: set[int] = set()
    endpoints = [c for c in classes if c.kind == "endpoint"]
    wanted = {d: scope.changed_in.get(d, frozenset()) for d in Direction}
    for ref in (ref_old, ref_new):
        changed = [
            (u, [d for d in u.directions if u.display in wanted[d]]) for u in ref.units if u.display in scope.changed
        ] if scope.restricted else []
        for cls in endpoints:
            ep = ref.view(cls.address).endpoint
            if ep is None:
                continue
            if ref is ref_old or not scope.restricted:
                ref.check_parsers(ep)
            for unit, directions in changed:
                if directions and ref.selects(unit, ep):
                    for direction in directions:
                        (egress if direction is Direction.EGRESS else ingress).add(cls.index)
    if not scope.restricted:
        return {c.index for c in endpoints}, {c.index for c in endpoints}
    for cls in endpoints:
        ep = ref_new.view(cls.address).endpoint
        if ep is not None and (cls.index in egress or cls.index in ingress):
            ref_new.check_parsers(ep)
    return egress, ingress


def _flow_cells(cells: Sequence[AddressCell], ports: Sequence[PortCell]) -> int:
    """How many (source cell, destination cell, port cell) flow cells the space holds: ordered
    pairs of distinct cells of one family with an endpoint on at least one side, times the port
    cells of that family."""
    endpoints = Counter(c.representative.version for c in cells if c.kind == "endpoint")
    others = Counter(c.representative.version for c in cells if c.kind != "endpoint")
    total = 0
    for family in (4, 6):
        n_e, n_o = endpoints[family], others[family]
        per_pair = sum(1 for p in ports if p.protocol.name != ("ICMPV6" if family == 4 else "ICMP"))
        total += (n_e * (n_e - 1) + 2 * n_e * n_o) * per_pair
    return total


Change = tuple[Side, Side, bool]


def _merge(changed: Sequence[Changed]) -> list[Region]:
    """Changed (class, class, port cell) triples → regions: join port ranges, then protocols, then
    sources, then destinations. Classes partition the cells the same way for every pass, so this
    is the cell-level merge with each class standing for its members."""
    spans: dict[tuple[CellClass, CellClass, Change], dict[str, list[tuple[int, int]]]] = {}
    for src, dst, port, a, b in changed:
        per_proto = spans.setdefault((src, dst, (a, b, a.l7_changed(b))), {})
        per_proto.setdefault(port.protocol.name, []).append((port.lo, port.hi))
    by_dest: dict[tuple[CellClass, Ports, Change], list[CellClass]] = {}
    for (src, dst, change), per_proto in spans.items():
        ports = tuple((proto, _join(ranges)) for proto, ranges in sorted(per_proto.items()))
        by_dest.setdefault((dst, ports, change), []).append(src)
    by_sources: dict[tuple[tuple[str, ...], Ports, Change], list[CellClass]] = {}
    for (dst, ports, change), sources in by_dest.items():
        by_sources.setdefault((_class_names(sources), ports, change), []).append(dst)
    regions = [
        Region(names, _class_names(dests), ports, a.outcome, b.outcome, a.rules, b.rules, l7)
        for (names, ports, (a, b, l7)), dests in by_sources.items()
    ]
    return sorted(regions, key=lambda r: (r.destinations, r.ports, r.sources))


def _class_names(classes: Sequence[CellClass]) -> tuple[str, ...]:
    return _cell_names([cell for cls in classes for cell in cls.members])


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
