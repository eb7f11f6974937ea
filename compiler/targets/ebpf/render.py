"""``policy.txt``: each endpoint's map as ``cilium-dbg bpf policy get <ep-id>`` prints it.

Columns, row order and cell values follow reference/cilium.md §6.1: ``POLICY DIRECTION LABELS
PORT/PROTO PROXY PORT AUTH TYPE BYTES PACKETS PREFIX``, one identity label per line with
continuation lines left empty, identity 0 shown as ``ANY``, rows sorted deny first, then by
direction and identity. BYTES/PACKETS come from ``cilium_policystats`` at run time, so they are
``-`` here. Cilium aligns with tabs; this file aligns with spaces so it diffs well.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from compiler.targets.ebpf.layout import PolicyEntry, PolicyKey
from compiler.targets.ebpf.ports import port_proto_string

HEADER = ("POLICY", "DIRECTION", "LABELS (source:key[=value])", "PORT/PROTO", "PROXY PORT", "AUTH TYPE", "BYTES",
          "PACKETS", "PREFIX")
AUTH_TYPES = {0: "disabled", 1: "spire", 2: "test-always-fail"}
EMPTY = "Policy stats empty. Perhaps the policy enforcement is disabled?"


def row_order(item: tuple[PolicyKey, PolicyEntry]) -> tuple[int, int, int, int, int, int]:
    key, entry = item
    return (0 if entry.deny else 1, key.egress, key.identity, key.protocol, key.port, key.port_prefix)


def render_policy_table(entries: Mapping[PolicyKey, PolicyEntry], labels_of: Callable[[int], list[str]]) -> str:
    """One map as a table (text, newline-terminated)."""
    if not entries:
        return EMPTY + "\n"
    rows: list[tuple[str, ...]] = []
    for key, entry in sorted(entries.items(), key=row_order):
        labels = ["ANY"] if key.identity == 0 else (labels_of(key.identity) or [str(key.identity)])
        rows.append((
            "Deny" if entry.deny else "Allow",
            "Egress" if key.egress else "Ingress",
            labels[0],
            port_proto_string((key.protocol, key.port, key.port_prefix)),
            str(entry.proxy_port) if entry.proxy_port else "NONE",
            AUTH_TYPES.get(entry.auth_type & 0x7F, str(entry.auth_type & 0x7F)),
            "-",
            "-",
            str(entry.port_prefix),
        ))
        rows.extend(("", "", label, "", "", "", "", "", "") for label in labels[1:])
    widths = [max(map(len, column)) for column in zip(HEADER, *rows, strict=False)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(line.format(*row).rstrip() for row in [HEADER, *rows]) + "\n"
