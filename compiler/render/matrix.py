"""Render a reachability matrix as JSON, text, CSV or markdown.

The matrix is ``allowed[port][src] = [dst, ...]``: every destination endpoint the source may
open a connection to on that port (a flow redirected to an L7 proxy counts as allowed: the
connection is made, and the proxy then judges each request).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence

Matrix = Mapping[str, Mapping[str, Sequence[str]]]

ALLOWED_MARK = "."
DENIED_MARK = "X"


def render_json(profile: str, ports: Sequence[str], endpoints: Sequence[str], allowed: Matrix) -> str:
    doc = {
        "profile": profile,
        "ports": list(ports),
        "endpoints": list(endpoints),
        "allowed": {port: {src: list(allowed[port].get(src, ())) for src in endpoints} for port in ports},
    }
    return json.dumps(doc, indent=2) + "\n"


def _grid(ports: Sequence[str], endpoints: Sequence[str], allowed: Matrix) -> list[tuple[str, list[list[str]]]]:
    out = []
    for port in ports:
        rows = []
        for src in endpoints:
            reach = set(allowed[port].get(src, ()))
            rows.append([ALLOWED_MARK if dst in reach else DENIED_MARK for dst in endpoints])
        out.append((port, rows))
    return out


def render_text(profile: str, ports: Sequence[str], endpoints: Sequence[str], allowed: Matrix) -> str:
    """The Kubernetes e2e truth-table layout: rows are sources, numbered columns destinations.

    Columns carry the row numbers instead of names so that a table of long pod names stays
    narrow; with short names (the conformance model's ``x/a``) the names themselves are used.
    """
    short = max((len(e) for e in endpoints), default=1) <= 4
    labels = list(endpoints) if short else [str(i) for i in range(len(endpoints))]
    col = max((len(x) for x in labels), default=1)
    rows_w = max((len(e) for e in endpoints), default=1) + (0 if short else len(str(len(endpoints))) + 1)
    lines = [f"profile: {profile}   ({ALLOWED_MARK} allowed, {DENIED_MARK} denied; rows = from, columns = to)"]
    for port, rows in _grid(ports, endpoints, allowed):
        lines += ["", port, " " * (rows_w + 1) + " ".join(x.rjust(col) for x in labels)]
        for index, (src, row) in enumerate(zip(endpoints, rows, strict=True)):
            name = src if short else f"{str(index).rjust(len(str(len(endpoints))))} {src}"
            lines.append(name.ljust(rows_w) + " " + " ".join(mark.rjust(col) for mark in row))
        count = sum(r.count(ALLOWED_MARK) for r in rows)
        lines.append(f"{count} of {len(endpoints) ** 2} pairs allowed")
    return "\n".join(lines) + "\n"


def render_csv(profile: str, ports: Sequence[str], endpoints: Sequence[str], allowed: Matrix) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["profile", "port", "from", "to", "allowed"])
    for port in ports:
        for src in endpoints:
            reach = set(allowed[port].get(src, ()))
            for dst in endpoints:
                writer.writerow([profile, port, src, dst, "true" if dst in reach else "false"])
    return buf.getvalue()


def render_markdown(profile: str, ports: Sequence[str], endpoints: Sequence[str], allowed: Matrix) -> str:
    lines = [f"Reachability under profile `{profile}` (✓ allowed, ✗ denied; rows = from, columns = to)."]
    for port, rows in _grid(ports, endpoints, allowed):
        lines += ["", f"### {port}", ""]
        lines.append("| from \\ to | " + " | ".join(f"`{e}`" for e in endpoints) + " |")
        lines.append("|---|" + "|".join(":-:" for _ in endpoints) + "|")
        for src, row in zip(endpoints, rows, strict=True):
            marks = ["✓" if m == ALLOWED_MARK else "✗" for m in row]
            lines.append(f"| `{src}` | " + " | ".join(marks) + " |")
    return "\n".join(lines) + "\n"


RENDERERS = {"json": render_json, "text": render_text, "csv": render_csv, "markdown": render_markdown}
