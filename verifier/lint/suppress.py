"""Per-policy suppression: ``metadata.annotations["netpolc.io/ignore"]: "NP203,NP3"``.

The annotation lists codes or code prefixes (``ALL`` for every rule) and silences them for the
findings about that policy (every finding a rule reports about a policy names it).
"""

from __future__ import annotations

from compiler.inputs import Inputs
from verifier.lint.finding import Finding

ANNOTATION = "netpolc.io/ignore"


def suppressed(finding: Finding, inputs: Inputs) -> bool:
    """Whether the annotation of the policy the finding is about silences it."""
    if finding.policy is None:
        return False
    for policy in inputs.policies:
        if policy.display != finding.policy:
            continue
        value = (policy.metadata.annotations or {}).get(ANNOTATION, "")
        entries = [c.strip() for c in value.split(",") if c.strip()]
        return any(e == "ALL" or finding.code.startswith(e) for e in entries)
    return False
