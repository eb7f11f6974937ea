"""One flow on each compiled target, read back from its artifact files, in one vocabulary.

``matrix``, ``query`` and ``testbed`` ask "what does target T do with this flow?" without knowing
how T's artifacts look. Each target contributes a reader that builds its simulator from the
files ``compile`` wrote (never from compiler objects) and answers with a :class:`TargetAnswer`.
Adding a target means adding one entry to :data:`READERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from compiler.cluster import Cluster
from compiler.flow import Decision, Direction, DirectionDecision, Flow, Profile, Verdict
from compiler.inputs import Inputs
from compiler.labels import LabelFilter
from compiler.targets.proxyports import proxy_port

if TYPE_CHECKING:
    from verifier.simulate.iptables_flow import FlowSimulator


@dataclass(frozen=True)
class TargetAnswer:
    """What a target does with a flow at L3/L4: allowed, dropped, or redirected to a proxy port."""

    target: str
    kind: str  # "allowed", "dropped", "redirected"
    proxy_port: int | None = None
    detail: str = ""  # drop reason, match type, deciding rule
    trace: tuple[str, ...] = ()
    cost: Mapping[str, int] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.kind != "dropped"

    @property
    def verdict(self) -> tuple[str, int | None]:
        """What two targets (or a target and the semantics) must agree on."""
        return (self.kind, self.proxy_port)

    def __str__(self) -> str:
        text = self.kind + (f" to proxy port {self.proxy_port}" if self.kind == "redirected" else "")
        return text + (f" ({self.detail})" if self.detail else "")


Kind = Literal["allowed", "dropped", "redirected"]


def expected(decision: Decision) -> tuple[Kind, int | None]:
    """The L3/L4 verdict a target must produce for a flow the semantics decided as ``decision``.

    A flow denied only by an L7 proxy still reached the proxy: redirected. When both sides
    redirect, the source's egress proxy receives the connection first (Cilium's order).
    """
    if decision.verdict is Verdict.DROPPED and not decision.l7_denied:
        return ("dropped", None)
    for side, direction in ((decision.egress, Direction.EGRESS), (decision.ingress, Direction.INGRESS)):
        if side is not None and side.redirect:
            return ("redirected", proxy_port(side.redirect, direction))
    return ("allowed", None)


class TargetSimulator(Protocol):
    def answer(self, flow: Flow) -> TargetAnswer: ...


def iptables_simulators(files: Mapping[str, str], cluster: Cluster) -> dict[int, FlowSimulator]:
    """A flow simulator per family of ``OUT/iptables/`` rules (with the TPROXY route the loader installs)."""
    from compiler.targets.iptables import marks
    from verifier.artifacts import read_ipsets, read_iptables
    from verifier.simulate.iptables_flow import FlowSimulator

    sims = {}
    for family in (4, 6):
        rules = files.get(f"rules.v{family}")
        if rules is None:
            continue
        ruleset = read_iptables(rules, f"iptables/rules.v{family}", family)
        ipsets = read_ipsets(files.get(f"ipsets.v{family}", ""), f"iptables/ipsets.v{family}")
        sims[family] = FlowSimulator(ruleset, ipsets, cluster, tproxy_route=(marks.PROXY, marks.PROXY))
    return sims


class _Iptables:
    def __init__(self, files: Mapping[str, str], cluster: Cluster) -> None:
        self._sims = iptables_simulators(files, cluster)

    def answer(self, flow: Flow) -> TargetAnswer:
        from verifier.simulate.iptables_flow import verdict_of_result

        sim = self._sims.get(flow.src.version)
        if sim is None:
            return TargetAnswer("iptables", "allowed", detail=f"no IPv{flow.src.version} rules emitted")
        result = sim.simulate(flow)
        verdict = verdict_of_result(result)
        cause = ""
        if result.cause is not None:
            cause = f"{result.cause.table}/{result.cause.chain}" + (
                f"#{result.cause.rule}" if result.cause.rule else ""
            )
        cost = {"rules_evaluated": result.cost.rules_evaluated, "ipset_lookups": result.cost.ipset_lookups}
        trace = tuple(result.render().splitlines())
        return TargetAnswer("iptables", verdict.kind, verdict.proxy_port, cause, trace, cost)


class _Ebpf:
    def __init__(self, files: Mapping[str, str], cluster: Cluster) -> None:
        from verifier.simulate.ebpf import EbpfArtifacts, EbpfSimulator

        self._sim = EbpfSimulator(EbpfArtifacts.of(files))

    def answer(self, flow: Flow) -> TargetAnswer:
        result = self._sim.evaluate(flow)
        sides = [s for s in (result.egress, result.ingress) if s is not None]
        port = next((s.proxy_port for s in sides if s.proxy_port), None)
        if result.verdict is Verdict.DROPPED:
            kind, detail = (
                "dropped",
                f"{result.drop_reason.name} {int(result.drop_reason)}" if result.drop_reason else "",
            )
        elif port:
            kind, detail = "redirected", ""
        else:
            kind, detail = "allowed", ""
        matches = ", ".join(f"{s.direction.value} {s.match}" for s in sides)
        cost = {"ipcache_lookups": result.ipcache_lookups, "policy_lookups": result.policy_lookups}
        detail = "; ".join(x for x in (detail, matches) if x)
        return TargetAnswer("ebpf", kind, port if kind == "redirected" else None, detail, result.trace, cost)


#: target name → reader of its artifact files (relative to OUT/<target>/) into a simulator.
READERS: dict[str, Callable[[Mapping[str, str], Cluster], TargetSimulator]] = {
    "iptables": _Iptables,
    "ebpf": _Ebpf,
}


class SourceSimulator:
    """The source semantics (the reference evaluator) answering as a target must: what the first
    packet of the flow meets at L3/L4, with the rules that decided as its trace."""

    def __init__(self, inputs: Inputs, profile: Profile, label_filter: LabelFilter | None = None) -> None:
        from verifier.simulate.source import ReferenceEvaluator

        self._ref = ReferenceEvaluator(inputs, profile, label_filter)

    def answer(self, flow: Flow) -> TargetAnswer:
        decision = self._ref.evaluate(flow)
        kind, port = expected(decision)
        trace = tuple(_describe(side) for side in (decision.egress, decision.ingress) if side is not None)
        detail = decision.drop_reason.name if decision.drop_reason is not None else ""
        return TargetAnswer("source", kind, port, detail, trace or ("no endpoint on either side: not policed",))


def _describe(side: DirectionDecision) -> str:
    where = f"{side.direction.value} of {side.endpoint}"
    if not side.enforced:
        return f"{where}: no policy selects it for {side.direction.value}: allowed"
    if side.deny_rules:
        return f"{where}: denied by {', '.join(map(str, sorted(side.deny_rules)))}"
    if not side.allowed:
        return f"{where}: no allow rule matches: dropped"
    text = f"{where}: allowed by {', '.join(map(str, sorted(side.allow_rules)))}"
    return text + (f", redirected to the {side.redirect} proxy" if side.redirect else "")


def simulators(artifacts: Mapping[str, Mapping[str, str]], cluster: Cluster) -> dict[str, TargetSimulator]:
    """A simulator for every target with a reader among ``artifacts`` (target → files)."""
    return {name: READERS[name](files, cluster) for name, files in artifacts.items() if name in READERS}
