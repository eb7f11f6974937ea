"""One endpoint's policy-map state: Cilium 1.18's allow/deny/proxy-priority combination.

Candidate entries (one per selected identity per L4 key per rule) are merged into the final map
the way ``insertWithChanges`` leaves it (reference/cilium.md §4.4); the result does not depend
on insertion order, so it is computed directly:

- same key: deny beats allow; two allows keep the higher ``proxy_port_priority``, on a tie the
  lower proxy port (§1.5, ``Merge``);
- a deny is dropped when a *different* broader-or-equal deny covers it; an allow is dropped when
  any broader-or-equal deny covers it ("deny always wins");
- an allow is dropped when a broader-or-equal allow has a higher proxy-port priority (a redirect
  over a range applies to the whole range);
- an identity entry on a port key equal to the identity-0 entry of the same key is skipped
  (``toMapState``'s wildcard short-cut, §4.3), as the L4-only lookup already gives that answer.

"Broader-or-equal" is a key with the same direction, the same identity **or identity 0**, and a
protocol/port prefix containing this one (§4.4). The datapath resolves the rest at lookup time
(§1.7; verifier/simulate/ebpf.py models it).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from compiler.flow import RuleRef
from compiler.targets.ebpf.layout import PolicyEntry, PolicyKey
from compiler.targets.ebpf.ports import L4Key, covering


@dataclass(frozen=True)
class Value:
    """What a candidate entry says: deny, or allow with an optional redirect."""

    deny: bool
    proxy_port: int = 0
    priority: int = 0

    def better_than(self, other: Value) -> bool:
        """Cilium's merge order for one key (§1.5, §4.4)."""
        if self.deny != other.deny:
            return self.deny
        if self.priority != other.priority:
            return self.priority > other.priority
        return self.proxy_port < other.proxy_port


ALLOW = Value(False)
DENY = Value(True)


def _key(identity: int, egress: int, l4: L4Key) -> PolicyKey:
    return PolicyKey(identity, egress, l4[0], l4[1], l4[2])


@dataclass
class MapState:
    """Candidate entries of one endpoint, and the final map Cilium would write."""

    values: dict[PolicyKey, Value] = field(default_factory=dict)
    #: key → the rules that produced a candidate for it (for overflow reports and policy.txt)
    origins: dict[PolicyKey, set[RuleRef]] = field(default_factory=dict)

    def add(self, identities: Iterable[int], egress: int, l4_keys: Iterable[L4Key], value: Value,
            origin: RuleRef) -> None:
        keys = list(l4_keys)
        for identity in identities:
            for l4 in keys:
                key = _key(identity, egress, l4)
                current = self.values.get(key)
                if current is None or value.better_than(current):
                    self.values[key] = value
                self.origins.setdefault(key, set()).add(origin)

    def final(self) -> dict[PolicyKey, PolicyEntry]:
        """The entries Cilium writes, keyed and sorted (deterministic)."""
        # (identity, egress) → L4 key → value: the covering lookups below hash small tuples only
        index: dict[tuple[int, int], dict[L4Key, Value]] = {}
        for key, value in self.values.items():
            index.setdefault((key.identity, key.egress), {})[(key.protocol, key.port, key.port_prefix)] = value
        out: dict[PolicyKey, PolicyEntry] = {}
        for key in sorted(self.values):
            value = self.values[key]
            l4 = (key.protocol, key.port, key.port_prefix)
            own = index[(key.identity, key.egress)]
            broader = [v for cover in covering(l4) if cover != l4 and (v := own.get(cover)) is not None]
            if key.identity != 0:  # lookup 2's identity-0 entries cover it too, the equal key included
                zero = index.get((0, key.egress), {})
                broader += [v for cover in covering(l4) if (v := zero.get(cover)) is not None]
            if any(v.deny for v in broader):
                continue  # a covering deny (a different one, for a deny) wins
            if not value.deny:
                if any(v.priority > value.priority for v in broader):
                    continue  # a covering redirect with higher priority applies across it
                if key.identity != 0 and key.port_prefix > 8:
                    wildcard = index.get((0, key.egress), {}).get(l4)
                    if wildcard == value:
                        continue  # the L4-only entry already says the same (§4.3)
            if value.deny:
                out[key] = PolicyEntry(True, 0, 0, key.port_prefix)
            else:
                out[key] = PolicyEntry(False, value.proxy_port, value.priority, key.port_prefix)
        return out

    def origins_of(self, keys: Iterable[PolicyKey]) -> dict[RuleRef, int]:
        """How many of ``keys`` each rule contributed to."""
        counts: dict[RuleRef, int] = {}
        for key in keys:
            for ref in self.origins.get(key, ()):
                counts[ref] = counts.get(ref, 0) + 1
        return counts
