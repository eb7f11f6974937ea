"""Endpoint IDs: the number in ``cilium_policy_v2_<EPID>`` (reference/cilium.md §1.1).

Cilium allocates endpoint IDs per node at run time from 1..4095. The compiler needs a number
that is the same on every run and does not move when unrelated endpoints come and go, so (like
identities, DESIGN §3) an ID is a hash of ``namespace/name`` into the range: first every
endpoint whose home slot is free gets it (in sorted key order), then the ones that collided probe
linearly from their home slot, in sorted order. An endpoint only moves when another one really
hashes onto its slot. Numbering endpoints by their sorted position would renumber half the node
whenever one pod is added, which is what this avoids.

More endpoints than the range holds is not something one Cilium node can run; the caller reports
it (``--allow-overflow`` widens the range to the 65535 slots of the policy tail-call array
``cilium_call_policy``, §1.1, so the benchmark can still compile 20k pods on "one node").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

ENDPOINT_ID_MAX = 4095  # Cilium's per-node endpoint-ID space is 1..4095
TAIL_CALL_SLOTS = 65535  # cilium_call_policy ProgramArray size (reference/cilium.md §1.1)


def _home(key: str, size: int) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % size


def allocate_endpoint_ids(keys: Sequence[str], id_max: int = ENDPOINT_ID_MAX) -> dict[str, int]:
    """``ns/name`` → ID in ``1..id_max``; ValueError when there are more keys than IDs."""
    names = sorted(set(keys))
    if len(names) > id_max:
        raise ValueError(f"{len(names)} endpoints do not fit in the endpoint-ID range 1..{id_max}")
    taken: set[int] = set()
    out: dict[str, int] = {}
    collided: list[str] = []
    for name in names:
        slot = _home(name, id_max)
        if slot in taken:
            collided.append(name)
        else:
            taken.add(slot)
            out[name] = slot + 1
    for name in collided:
        slot = _home(name, id_max)
        while slot in taken:
            slot = (slot + 1) % id_max
        taken.add(slot)
        out[name] = slot + 1
    return out


def node_endpoint_ids(keys: Sequence[str], allow_overflow: bool, report: Callable[[str], None]) -> dict[str, int]:
    """The IDs every target that names ``cilium_policy_v2_<EPID>`` uses (eBPF maps, Envoy NPDS).

    More endpoints than one node's range is reported through ``report`` unless ``allow_overflow``;
    either way they are numbered in the tail-call range so the output stays complete.
    """
    if len(keys) <= ENDPOINT_ID_MAX:
        return allocate_endpoint_ids(keys)
    if not allow_overflow:
        report(f"{len(keys)} endpoints on one node exceed Cilium's endpoint-ID range "
               f"1..{ENDPOINT_ID_MAX} (use --allow-overflow to number them up to {TAIL_CALL_SLOTS})")
    return allocate_endpoint_ids(keys, TAIL_CALL_SLOTS)
