"""``netpolc verify`` output: text for terminals, JSON for machines, markdown for pull requests."""

from __future__ import annotations

import json
from collections.abc import Sequence

from verifier.proofs.result import ProofResult, Status

EXIT = {Status.PROVED: 0, Status.COUNTEREXAMPLE: 1, Status.UNKNOWN: 3}


def exit_code(results: Sequence[ProofResult]) -> int:
    """1 if any proof found a counterexample, else 3 if any is unknown, else 0."""
    statuses = {r.status for r in results}
    if Status.COUNTEREXAMPLE in statuses:
        return 1
    return 3 if Status.UNKNOWN in statuses else 0


def render_json(results: Sequence[ProofResult]) -> str:
    return json.dumps({"exit": exit_code(results), "proofs": [r.to_json() for r in results]}, indent=2) + "\n"


def render_text(results: Sequence[ProofResult]) -> str:
    lines: list[str] = []
    for r in results:
        lines.append(f"{r.status.value.upper():<14} {r.name}: {r.claim} ({_extent(r)})")
        for example in r.counterexamples:
            lines.append(f"  counterexample in slice '{example.slice}': {example.flow}")
            for side in example.sides:
                lines.append(f"    {side.name}: {side.verdict}")
                lines.extend(f"      {step}" for step in side.trace)
        lines.extend(f"  unknown: {reason}" for reason in r.unknown)
    return "\n".join(lines) + "\n"


def _via(r: ProofResult) -> str:
    return "from " + " and ".join(r.via) + ": equality is transitive"


def _extent(r: ProofResult) -> str:
    """What a proof took: its slices and time, or the proofs it follows from."""
    if r.via:
        return _via(r)
    return f"{r.slices} slices, {r.seconds:.2f}s" + (f", {_shared(r)}" if r.solved_in else "")


def _shared(r: ProofResult) -> str:
    return f"solved in one pass with {r.solved_in}"


def render_markdown(results: Sequence[ProofResult]) -> str:
    lines = ["| proof | claim | result | slices | seconds |", "|---|---|---|---:|---:|"]
    for r in results:
        how = f" ({_via(r)})" if r.via else f" ({_shared(r)})" if r.solved_in else ""
        lines.append(f"| `{r.name}` | {r.claim} | **{r.status.value}**{how} | {r.slices} | {r.seconds:.2f} |")
    for r in results:
        for example in r.counterexamples:
            lines += ["", f"<details><summary><code>{r.name}</code> counterexample: {example.flow} "
                      f"(slice {example.slice})</summary>", ""]
            for side in example.sides:
                lines += [f"**{side.name}**: {side.verdict}", "", "```", *side.trace, "```", ""]
            lines.append("</details>")
        if r.unknown:
            lines += ["", f"`{r.name}` undecided:", *(f"- {reason}" for reason in r.unknown)]
    return "\n".join(lines) + "\n"


RENDERERS = {"text": render_text, "json": render_json, "markdown": render_markdown}
