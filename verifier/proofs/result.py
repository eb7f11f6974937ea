"""What a proof returns, and what it is given.

Every proof ends in exactly one of three verdicts (DESIGN.md §5):

- ``proved``: the solver showed that no packet of any slice tells the two sides apart;
- ``counterexample``: a concrete flow on which they differ, replayed through both simulators so
  that the difference is shown with both traces (a witness the simulators do not confirm is not a
  counterexample: it makes the proof ``unknown``);
- ``unknown``: something was not decided (a solver timeout, a construct not encoded), with why.
  A timeout is never ``proved``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from compiler.cluster import Cluster
from compiler.flow import Profile
from compiler.inputs import Inputs
from compiler.labels import LabelFilter


class Status(str, Enum):
    PROVED = "proved"
    COUNTEREXAMPLE = "counterexample"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Side:
    """One side's answer for the counterexample flow: verdict, detail, trace."""

    name: str
    verdict: str
    trace: tuple[str, ...] = ()


@dataclass(frozen=True)
class Counterexample:
    """A flow on which the two sides differ, in the slice where it was found."""

    slice: str
    flow: str  # "10.0.0.1 -> 10.0.0.2 TCP/80"
    sides: tuple[Side, ...]
    src: str = ""
    dst: str = ""
    protocol: str = ""  # Protocol name: TCP, UDP, SCTP, ICMP, ICMPV6
    port: int = 0
    request: str = ""  # the L7 request the sides decide differently (L7 proofs)

    def to_json(self) -> dict[str, Any]:
        return {"slice": self.slice, "flow": self.flow, "src": self.src, "dst": self.dst,
                "protocol": self.protocol, "port": self.port, "request": self.request or None,
                "sides": [{"name": s.name, "verdict": s.verdict, "trace": list(s.trace)} for s in self.sides]}


@dataclass(frozen=True)
class ProofResult:
    """One proof's verdict over all its slices."""

    name: str
    claim: str
    status: Status
    slices: int
    seconds: float
    counterexamples: tuple[Counterexample, ...] = ()
    unknown: tuple[str, ...] = ()  # "slice: reason"
    skipped: str = ""  # why the proof did not apply (no such artifacts); status is then proved vacuously
    via: tuple[str, ...] = ()  # proved as the composition of these proofs (verifier/proofs/iptables_source.py)
    solved_in: str = ""  # the earlier proof whose pass solved this one's slices (verifier/proofs/passes.py)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "claim": self.claim, "status": self.status.value, "slices": self.slices,
                "seconds": round(self.seconds, 3), "skipped": self.skipped or None, "via": list(self.via) or None,
                "solved_in": self.solved_in or None,
                "counterexamples": [c.to_json() for c in self.counterexamples], "unknown": list(self.unknown)}


@dataclass(frozen=True)
class SourceSpec:
    """The parsed policies and the profile whose semantics the "target ≡ source" proofs use."""

    inputs: Inputs
    profile: Profile
    label_filter: LabelFilter | None = None


@dataclass(frozen=True)
class ProofContext:
    """What a proof may use: the artifact files (target → relative path → text), the cluster they
    were compiled for, how many processes to use, where to report progress, and the targets'
    simulators when the caller already built them (else they are built when a witness needs one),
    and the source policies (without them, the proofs against the source are ``unknown``). ``results``
    collects the verdicts as :func:`verifier.proofs.run_proofs` goes, so that a proof may follow
    from earlier ones; ``ahead`` names the side pairs of the slice-by-slice proofs still to run,
    and ``passes`` holds their answers once an earlier proof's pass has solved them
    (:mod:`verifier.proofs.passes`)."""

    files: Mapping[str, Mapping[str, str]]
    cluster: Cluster
    jobs: int = 1
    progress: Callable[[str, int, int], None] = field(default=lambda _name, _done, _total: None)
    simulators: Mapping[str, Any] | None = None
    source: SourceSpec | None = None
    results: dict[str, ProofResult] = field(default_factory=dict)  # the proofs run so far, by name
    ahead: list[tuple[str, str]] = field(default_factory=list)
    passes: dict[tuple[str, str], Any] = field(default_factory=dict)  # side pair → passes.Solved

    def proved(self, name: str) -> bool:
        """Whether the proof ``name`` already ran here and proved its claim (not vacuously)."""
        result = self.results.get(name)
        return result is not None and result.status is Status.PROVED and not result.skipped
