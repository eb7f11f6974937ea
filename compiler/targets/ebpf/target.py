"""The eBPF target: ipcache + one Cilium 1.18 policy map per endpoint (DESIGN §4).

``emit()`` writes, under ``OUT/ebpf/``:

- ``endpoints.json`` — ID, name, addresses, identity, map name, enforcement per endpoint;
- ``ipcache.json`` — ``cilium_ipcache_v2`` entries (reference/cilium.md §2) in bpftool JSON;
- ``cilium_policy_v2_<EPID>.json`` — each endpoint's map entries (§1.2, §1.4) in bpftool JSON;
- ``policy.txt`` — every map as ``cilium-dbg bpf policy get`` prints it (§6.1);
- ``summary.json`` — entries per endpoint against ``--policy-map-max``.

Map state per endpoint follows Cilium (§4.3, §4.4; :mod:`.mapstate`): each IR rule gives one
candidate per selected identity (:mod:`.peers`) per L4 key (:mod:`.ports`); the unenforced
direction's allow-all, default-allow and allow-localhost are IR rules like any other. Endpoints
that share an identity (and, for ingress named ports, their declared ports) share the work.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from functools import cached_property
from typing import Any

from compiler.cluster import Endpoint
from compiler.flow import Direction, Profile, Protocol, RuleRef
from compiler.identity import ID_HOST
from compiler.ir.model import Action, EndpointPolicy, IPNetwork, PortMatch, Rule
from compiler.services import frontends
from compiler.targets import proxyports
from compiler.targets.base import Target
from compiler.targets.ebpf.endpoint_ids import node_endpoint_ids
from compiler.targets.ebpf.layout import (
    EGRESS,
    INGRESS,
    IpcacheEntry,
    PolicyEntry,
    PolicyKey,
    ipcache_dump_entry,
    policy_dump_entry,
)
from compiler.targets.ebpf.mapstate import ALLOW, DENY, MapState, Value
from compiler.targets.ebpf.peers import WORLD_FALLBACK, PeerResolver
from compiler.targets.ebpf.ports import L4_ANY, L4Key, exact_key, l4_keys
from compiler.targets.ebpf.render import render_policy_table
from compiler.targets.ebpf.services import lb_entries, map_names

ICMP_PROTOCOLS = (Protocol.ICMP, Protocol.ICMPV6)
Entries = dict[PolicyKey, PolicyEntry]


def map_name(endpoint_id: int) -> str:
    """``cilium_policy_v2_<EPID>``, 5 digits zero-padded (reference/cilium.md §1.1)."""
    return f"cilium_policy_v2_{endpoint_id:05d}"


def _dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _dump_line(item: dict[str, Any]) -> str:
    return json.dumps(item, sort_keys=True, separators=(",", ":"))


def _join_lines(lines: list[str]) -> str:
    """A JSON list with one compact object per line: the bpftool shape, small and diffable."""
    return "[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n"


def _dump_lines(items: list[dict[str, Any]]) -> str:
    return _join_lines([_dump_line(i) for i in items])


class EbpfTarget(Target):
    """IR → ipcache and per-endpoint policy maps."""

    name = "ebpf"
    per_node = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache: dict[tuple[Any, ...], tuple[Entries, MapState]] = {}
        self._reported: set[str] = set()
        self._label_text: dict[int, list[str]] = {}
        self.entries: dict[str, Entries] = {}  # endpoint key → final map, filled by emit()
        self._entries_by_shape: dict[tuple[Any, ...], Entries] = {}
        self._lines: dict[tuple[PolicyKey, PolicyEntry], str] = {}
        self.endpoint_ids: dict[str, int] = {}
        self._members = {i.number: i.endpoints for i in self.ir.identities.identities() if i.endpoints}

    # --- emit -------------------------------------------------------------------------------

    def emit(self) -> dict[str, str]:
        ir = self.ir
        ipcache = self.ipcache_entries()
        self.endpoint_ids = self._endpoint_ids()
        files: dict[str, str] = {}
        endpoints_doc: list[dict[str, Any]] = []
        summary: list[dict[str, Any]] = []
        tables: list[str] = []
        rendered: dict[tuple[Any, ...], tuple[str, int]] = {}  # shape → (bpftool dump, first EPID)
        for ep in sorted(self.local_endpoints(), key=lambda e: (self.endpoint_ids[e.key], e.key)):
            epid = self.endpoint_ids[ep.key]
            identity = ir.endpoint_identity(ep.key)
            ingress, egress = ir.policy(ep.key, Direction.INGRESS), ir.policy(ep.key, Direction.EGRESS)
            entries = self.endpoint_entries(ep)
            self.entries[ep.key] = entries
            name = map_name(epid)
            shape = self.map_shape(ep)  # endpoints with the same shape have the same map
            header = f"Endpoint {epid} {ep.key} (identity {identity}, map {name})"
            if shape not in rendered:
                rendered[shape] = (_join_lines([self._dump_line(k, v) for k, v in entries.items()]), epid)
                tables.append(header + "\n" + render_policy_table(entries, self._labels))
            else:
                # the table of an identical map is not repeated (a 20k-pod node would need gigabytes)
                tables.append(f"{header}\nsame entries as endpoint {rendered[shape][1]}\n")
            dump = rendered[shape][0]
            files[f"{name}.json"] = dump
            endpoints_doc.append({
                "id": epid, "namespace": ep.namespace, "name": ep.name, "ips": list(ep.ips), "identity": identity,
                "policy_map": name, "ingress_enforced": ingress.enforced, "egress_enforced": egress.enforced,
            })
            overflow = len(entries) > self.options.policy_map_max
            summary.append({"id": epid, "endpoint": ep.key, "policy_map": name, "entries": len(entries),
                            "overflow": overflow})
            if overflow:
                self._report_overflow(ep, name, entries, self.endpoint_map(ep)[1])
        files["endpoints.json"] = _dumps(endpoints_doc)
        files["ipcache.json"] = _dump_lines([ipcache_dump_entry(e) for e in ipcache])
        files["policy.txt"] = "\n".join(tables)
        services, backends = lb_entries(frontends(ir.cluster))
        for version in sorted({e.version for e in services}):
            service_map, backend_map = map_names(version)
            files[f"{service_map}.json"] = _dump_lines([e.dump() for e in services if e.version == version])
            files[f"{backend_map}.json"] = _dump_lines([e.dump() for e in backends if e.address.version == version])
        counts = [s["entries"] for s in summary]
        scope = {} if self.options.node is None else {"node": self.options.node}
        files["summary.json"] = _dumps({
            **scope,
            "policy_map_max": self.options.policy_map_max,
            "profile": ir.profile.value,
            "endpoints": summary,
            "entries": {"total": sum(counts), "max": max(counts, default=0),
                        "mean": round(sum(counts) / len(counts), 2) if counts else 0.0},
            "ipcache_entries": len(ipcache),
            "overflowing_endpoints": sum(1 for s in summary if s["overflow"]),
            "lb_service_entries": len(services),
            "lb_backend_entries": len(backends),
        })
        return files

    def counts(self) -> dict[str, int]:
        sizes = [len(e) for e in self.entries.values()]
        return {"endpoints": len(sizes), "policy_entries": sum(sizes), "policy_entries_max": max(sizes, default=0)}

    # --- endpoints and ipcache --------------------------------------------------------------

    def _endpoint_ids(self) -> dict[str, int]:
        keys = [ep.key for ep in self.local_endpoints()]
        return node_endpoint_ids(keys, self.options.allow_overflow, self.unsupported)

    def ipcache_entries(self) -> list[IpcacheEntry]:
        """Endpoint and node addresses, policy CIDRs, and the world fallbacks (reference/cilium.md §2).

        A CIDR equal to a cluster address keeps the cluster identity (the endpoint is the more
        authoritative source in Cilium's ipcache), so that CIDR identity never appears.
        """
        ir = self.ir
        by_network: dict[IPNetwork, int] = {}
        for prefix, number in ir.identities.cidr_identities().items():
            by_network[ipaddress.ip_network(prefix)] = number
        for version, number in WORLD_FALLBACK.items():
            by_network[ipaddress.ip_network("0.0.0.0/0" if version == 4 else "::/0")] = number
        node = ir.cluster.node_address
        by_network[ipaddress.ip_network(node)] = ID_HOST
        for ep in ir.cluster.endpoints:
            number = ir.endpoint_identity(ep.key)
            for address in ep.addresses:
                by_network[ipaddress.ip_network(address)] = number
        return [IpcacheEntry(net, num) for net, num in
                sorted(by_network.items(), key=lambda item: (item[0].version, item[0].network_address,
                                                             item[0].prefixlen))]

    @cached_property
    def resolver(self) -> PeerResolver:
        """Peers → map identities, against the CIDR prefixes the ipcache holds."""
        cidrs = {e.network: e.identity for e in self.ipcache_entries() if e.identity >> 24 == 1}
        return PeerResolver(self.ir, cidrs)

    def _labels(self, number: int) -> list[str]:
        found = self._label_text.get(number)
        if found is None:
            try:
                found = [str(label) for label in sorted(self.ir.identities.by_number(number).labels)]
            except KeyError:
                found = [str(number)]
            self._label_text[number] = found
        return found

    def map_shape(self, ep: Endpoint) -> tuple[Any, ...]:
        """What an endpoint's map depends on: its identity, and its ports (ingress named ports)."""
        return (self.ir.endpoint_identity(ep.key), ep.ports)

    def _dump_line(self, key: PolicyKey, entry: PolicyEntry) -> str:
        """One entry's bpftool line; maps of different endpoints share most lines, so they are cached."""
        line = self._lines.get((key, entry))
        if line is None:
            line = self._lines[(key, entry)] = _dump_line(policy_dump_entry(key, entry))
        return line

    # --- one endpoint's map -----------------------------------------------------------------

    def endpoint_entries(self, ep: Endpoint) -> Entries:
        """The final entries of one endpoint's map (computed once per identity and ports: its shape)."""
        shape = self.map_shape(ep)
        found = self._entries_by_shape.get(shape)
        if found is None:
            entries: Entries = {}
            for direction in Direction:
                entries.update(self._direction_final(ep, direction)[0])
            found = self._entries_by_shape[shape] = dict(sorted(entries.items()))
        return found

    def _direction_final(self, ep: Endpoint, direction: Direction) -> tuple[Entries, MapState]:
        policy = self.ir.policy(ep.key, direction)
        cache_key = (policy.identity, direction, ep.ports if direction is Direction.INGRESS else None)
        hit = self._cache.get(cache_key)
        if hit is None:
            state = self._direction_state(policy, ep)
            hit = self._cache[cache_key] = (state.final(), state)
        return hit

    def entry_bound(self, ep: Endpoint) -> int:
        """An upper bound on ``len(endpoint_entries(ep))``, cheap enough for every endpoint.

        It counts the distinct candidate keys (peer identity × L4 key per direction; an egress
        named port resolves to at most one key per peer identity) without merging values: the
        final map only merges and drops candidates (:meth:`MapState.final`). ``netpolc lint``
        (NP103) computes the exact map only where this bound exceeds the capacity.
        """
        total = 0
        for direction in Direction:
            policy = self.ir.policy(ep.key, direction)
            by_key: dict[L4Key | tuple[str, str], set[int]] = {}
            for rule in (*policy.allow, *policy.deny):
                identities = self.resolver.resolve(rule.peer).identities
                for match in rule.ports or (PortMatch(None),):
                    if match.name is not None:
                        assert match.protocol is not None
                        if direction is Direction.EGRESS and self.ir.profile is Profile.K8S and 0 in identities:
                            identities = frozenset(self._members)  # resolved per destination identity
                        keys: list[L4Key | tuple[str, str]] = [(match.name, match.protocol.name)]
                    else:
                        keys = list(self._l4(match, direction, ep))
                    for key in keys:
                        by_key.setdefault(key, set()).update(identities)
            total += sum(len(ids) for ids in by_key.values())
        return total

    def endpoint_map(self, ep: Endpoint) -> tuple[Entries, MapState]:
        """The final entries of one endpoint's map, and its candidates (for provenance)."""
        entries: Entries = {}
        combined = MapState()
        for direction in Direction:
            hit = self._direction_final(ep, direction)
            entries.update(hit[0])
            combined.values.update(hit[1].values)
            combined.origins.update(hit[1].origins)
        return dict(sorted(entries.items())), combined

    def _direction_state(self, policy: EndpointPolicy, subject: Endpoint) -> MapState:
        state = MapState()
        egress = EGRESS if policy.direction is Direction.EGRESS else INGRESS
        for rule in (*policy.allow, *policy.deny):
            value = self._value(rule, subject)
            if value is None:
                continue
            resolved = self.resolver.resolve(rule.peer)
            for problem in resolved.problems:
                self._once(problem, rule, subject)
            identities = resolved.identities
            fixed: list[L4Key] = []
            named: list[PortMatch] = []
            for match in rule.ports or (PortMatch(None),):
                if match.name is not None and policy.direction is Direction.EGRESS and self.ir.profile is Profile.K8S:
                    named.append(match)
                else:
                    fixed.extend(self._l4(match, policy.direction, subject))
            state.add(identities, egress, fixed, value, rule.origin)
            if named:
                for number, keys in self._named_egress(named, identities, rule, subject):
                    state.add((number,), egress, keys, value, rule.origin)
        return state

    def _value(self, rule: Rule, subject: Endpoint) -> Value | None:
        if rule.action is Action.DENY:
            return DENY
        if rule.l7 is None:
            return ALLOW
        try:
            port = proxyports.proxy_port(rule.l7.parser, rule.direction)
        except ValueError as err:
            self._once(f"cannot redirect to the {rule.l7.parser} proxy: {err}", rule, subject)
            return None
        return Value(False, port, proxyports.priority(rule.l7.parser))

    def _l4(self, match: PortMatch, direction: Direction, subject: Endpoint) -> list[L4Key]:
        if match.protocol is None:
            return [L4_ANY]
        proto = int(match.protocol)
        if match.name is not None:
            span = self.ir.port_range(match, direction, subject, None)
            return [] if span is None else [exact_key(proto, span[0])]
        if match.protocol in ICMP_PROTOCOLS and match.lo == match.hi:
            return [exact_key(proto, match.lo)]  # an ICMP type, 0 (echo reply) included
        return l4_keys(proto, match.lo, match.hi)

    def _named_egress(self, named: list[PortMatch], identities: Iterable[int], rule: Rule,
                      subject: Endpoint) -> list[tuple[int, list[L4Key]]]:
        """k8s profile: egress named ports resolve against each destination (SEMANTICS §6): per
        destination identity, only when all its endpoints agree on the number."""
        members = self._members
        wanted = sorted(members) if 0 in identities else sorted(n for n in identities if n in members)
        out: list[tuple[int, list[L4Key]]] = []
        for number in wanted:
            keys: list[L4Key] = []
            for match in named:
                assert match.name is not None and match.protocol is not None
                found: set[int | None] = set()
                for key in members[number]:
                    ep = self.ir.cluster.endpoint(key)
                    found.add(ep.named_port(match.name, match.protocol.name) if ep is not None else None)
                if len(found) > 1:
                    numbers = ", ".join(str(n) if n is not None else "undeclared" for n in
                                        sorted(found, key=lambda n: -1 if n is None else n))
                    self._once(f"named port {match.name}/{match.protocol.name} means {numbers} on the endpoints "
                               f"of identity {number}; a policy map key cannot tell them apart", rule, subject)
                    continue
                port = found.pop()
                if port is not None:
                    keys.append(exact_key(int(match.protocol), port))
            if keys:
                out.append((number, keys))
        return out

    # --- problems ---------------------------------------------------------------------------

    def _once(self, message: str, rule: Rule | RuleRef, subject: Endpoint) -> None:
        ref = rule.origin if isinstance(rule, Rule) else rule
        marker = f"{ref}|{message}|{subject.key}"
        if marker not in self._reported:
            self._reported.add(marker)
            self.unsupported(message, ref, subject.key)

    def _report_overflow(self, ep: Endpoint, name: str, entries: Entries, state: MapState) -> None:
        """E2BIG: name the map, its size, and the policies whose rules fill it (most entries first)."""
        by_rule = state.origins_of(entries)
        by_policy: dict[str, int] = {}
        for ref, count in by_rule.items():
            by_policy[ref.policy] = by_policy.get(ref.policy, 0) + count
        top = sorted(by_policy.items(), key=lambda item: (-item[1], item[0]))
        worst = min(by_rule.items(), key=lambda item: (-item[1], item[0]))[0] if by_rule else None
        listed = ", ".join(f"{policy} ({count} entries)" for policy, count in top[:5])
        more = f" and {len(top) - 5} more" if len(top) > 5 else ""
        message = (f"policy map {name} needs {len(entries)} entries, more than --policy-map-max "
                   f"{self.options.policy_map_max} (Cilium fails to insert with E2BIG); from {listed}{more}")
        if self.options.allow_overflow:
            return
        self.unsupported(message, worst, ep.key)

