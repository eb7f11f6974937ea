"""Kafka API keys and Cilium's role expansion (reference/cilium.md §5.5)."""

from __future__ import annotations

#: Kafka protocol API key names as Cilium accepts them (lower-case) → numbers (Kafka protocol spec).
API_KEYS: dict[str, int] = {
    "produce": 0,
    "fetch": 1,
    "offsets": 2,
    "metadata": 3,
    "leaderandisr": 4,
    "stopreplica": 5,
    "updatemetadata": 6,
    "controlledshutdown": 7,
    "offsetcommit": 8,
    "offsetfetch": 9,
    "findcoordinator": 10,
    "joingroup": 11,
    "heartbeat": 12,
    "leavegroup": 13,
    "syncgroup": 14,
    "describegroups": 15,
    "listgroups": 16,
    "saslhandshake": 17,
    "apiversions": 18,
    "createtopics": 19,
    "deletetopics": 20,
    "deleterecords": 21,
    "initproducerid": 22,
    "offsetforleaderepoch": 23,
    "addpartitionstotxn": 24,
    "addoffsetstotxn": 25,
    "endtxn": 26,
    "writetxnmarkers": 27,
    "txnoffsetcommit": 28,
    "describeacls": 29,
    "createacls": 30,
    "deleteacls": 31,
    "describeconfigs": 32,
    "alterconfigs": 33,
}

#: ``role: produce`` / ``role: consume`` expansions (Cilium proxy pkg/policy/api/kafka).
ROLE_API_KEYS: dict[str, tuple[int, ...]] = {
    "produce": (0, 3, 18),
    "consume": (1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18),
}


def api_key_number(name: str) -> int:
    """The number of a Kafka API key given by name (case-insensitive), or a clear error."""
    try:
        return API_KEYS[name.lower()]
    except KeyError:
        raise ValueError(f"kafka: unknown apiKey {name!r}") from None


def allowed_api_keys(role: str | None, api_key: str | None) -> tuple[int, ...] | None:
    """API keys a Kafka rule admits; ``None`` means any."""
    if role:
        return ROLE_API_KEYS[role.lower()]
    if api_key:
        return (api_key_number(api_key),)
    return None
