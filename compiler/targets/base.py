"""What every compilation target is: IR in, artifact files out, inexpressible constructs reported.

A target (sqlglot's shape) is one class. It reports what it cannot express through
:meth:`Target.unsupported` — never by dropping it — and :func:`compiler.targets.compile_targets`
refuses to write anything when a target reported a problem.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from compiler.cluster import Endpoint
from compiler.flow import RuleRef
from compiler.ir.model import IR
from compiler.source import NetpolcError


@dataclass(frozen=True)
class TargetOptions:
    """Options shared by the targets (each reads the ones it needs)."""

    policy_map_max: int = 16384  # Cilium's bpf-policy-map-max default (reference/cilium.md §1.1)
    allow_overflow: bool = False
    #: emit per-endpoint objects only for the endpoints on this node (pods' ``spec.nodeName``), as
    #: one Cilium agent holds them; None: every endpoint, the one-node model (README "node model")
    node: str | None = None
    #: emit per-endpoint objects only for these endpoints (``namespace/name``), as if one node held
    #: just them; None: no such restriction. ``netpolc cost`` uses it to compile the endpoints its
    #: sampled traffic touches, not all of a 20k-pod cluster
    endpoints: frozenset[str] | None = None
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, order=True)
class Unsupported:
    """Something a target cannot express, with the rule (file:line) and endpoint it concerns."""

    target: str
    message: str
    rule: RuleRef | None = None
    endpoint: str | None = None

    def __str__(self) -> str:
        where = f"{self.rule.file}:{self.rule.line}: " if self.rule is not None and self.rule.file else ""
        who = f"{self.rule.policy} {self.rule.path}: " if self.rule is not None else ""
        ep = f" (endpoint {self.endpoint})" if self.endpoint else ""
        return f"{where}{who}{self.target}: {self.message}{ep}"


class TargetError(NetpolcError):
    """A target could not express the policy; nothing was written."""

    def __init__(self, problems: list[Unsupported]) -> None:
        super().__init__("\n".join(str(p) for p in sorted(problems)))
        self.problems = sorted(problems)


class Target(ABC):
    """One compilation target. Subclasses set :attr:`name` and implement :meth:`emit`."""

    name: ClassVar[str]
    #: whether the target keeps per-endpoint objects per node, so ``--node`` can scope it
    per_node: ClassVar[bool] = False

    def __init__(self, ir: IR, options: TargetOptions | None = None) -> None:
        self.ir = ir
        self.options = options or TargetOptions()
        self.problems: list[Unsupported] = []

    def unsupported(self, message: str, rule: RuleRef | None = None, endpoint: str | None = None) -> None:
        """Report a construct this target cannot express (compilation then fails)."""
        self.problems.append(Unsupported(self.name, message, rule, endpoint))

    def local_endpoints(self) -> tuple[Endpoint, ...]:
        """The endpoints this node enforces for: all of them, or those scheduled on ``options.node``.

        Only per-endpoint objects (policy maps, NPDS resources) are scoped; what describes the
        rest of the cluster (the ipcache, peer identities) stays cluster-wide, as on a real node.
        """
        endpoints = self.ir.cluster.endpoints
        if self.options.endpoints is not None:
            endpoints = tuple(ep for ep in endpoints if ep.key in self.options.endpoints)
        if self.options.node is None:
            return endpoints
        return tuple(ep for ep in endpoints if ep.node == self.options.node)

    @abstractmethod
    def emit(self) -> dict[str, str]:
        """The artifact files: path relative to ``OUT/<name>/`` → text (deterministic bytes)."""

    def counts(self) -> dict[str, int]:
        """Numbers for the manifest (rules, sets, entries, ...); override to add some."""
        return {}
