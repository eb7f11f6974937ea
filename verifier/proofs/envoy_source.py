"""Envoy ≡ source at L7: on every connection either side sends to a proxy, the proxy admits
exactly the requests the policies' L7 rules admit.

The Envoy side is read from ``OUT/envoy/`` (the index, NPDS resources, DNS-proxy documents), with
the remote's identity from ``OUT/ebpf/ipcache.json`` as ``bpf_metadata`` gets it; the source side
from the parsed policies (:meth:`verifier.simulate.source.ReferenceEvaluator.evaluate_direction`).
Connections are enumerated by :mod:`verifier.proofs.l7_cases`: the remotes one endpoint address
per class of :func:`verifier.proofs.address_classes.address_classes` under the eBPF side (the
remote's identity) and the source (its view), the proxied endpoints one address per class and
Envoy config. For each distinct pair of rule sets the solver looks for an HTTP, Kafka or DNS
request one side admits and the other does not (:mod:`verifier.encoding.l7`). A request it finds
is replayed through the Envoy simulator and the reference evaluator; only a difference both
confirm is a counterexample.

A connection the source sends to a parser for which Envoy holds no policy, or holds another
parser's, is a counterexample without a request.
"""

from __future__ import annotations

import time

from compiler.flow import Direction, Flow, L7Request
from verifier.proofs.address_classes import address_classes
from verifier.proofs.l7_cases import L7Case, l7_cases
from verifier.proofs.passes import SOURCE, TIMEOUT_MS
from verifier.proofs.result import Counterexample, ProofContext, ProofResult, Side, Status
from verifier.proofs.run import SHOWN, flow_text
from verifier.simulate.ebpf import EbpfArtifacts
from verifier.simulate.envoy import EnvoySimulator
from verifier.simulate.source import ReferenceEvaluator

NAME = "envoy-source"
CLAIM = "the L7 proxies admit exactly the requests the source L7 rules admit, on every proxied connection"


def prove(ctx: ProofContext) -> ProofResult:
    started = time.perf_counter()
    missing = [t for t in ("envoy", "ebpf") if t not in ctx.files]
    if missing or ctx.source is None:
        why = f"no {missing[0]} artifacts" if missing else "no source policies given"
        if missing == ["ebpf"]:
            why += " (remote identities come from its ipcache)"
        return ProofResult(NAME, CLAIM, Status.UNKNOWN, 0, 0.0, unknown=(why,))
    from verifier.encoding.l7 import compare

    envoy = EnvoySimulator(ctx.files["envoy"])
    ipcache = EbpfArtifacts.of(ctx.files["ebpf"]).ipcache
    ref = ReferenceEvaluator(ctx.source.inputs, ctx.source.profile, ctx.source.label_filter)
    classes = address_classes(ctx.files, ctx.cluster, ("ebpf", SOURCE), ctx.source)

    def enumerating(done: int, total: int) -> None:
        ctx.progress(f"{NAME} (connections)", done, total)

    groups: dict[tuple[object, ...], list[L7Case]] = {}
    for case in l7_cases(ref, envoy, ipcache, classes, enumerating):
        groups.setdefault(case.key(), []).append(case)
    found: list[Counterexample] = []
    unknown: list[str] = []
    differing = 0
    for done, cases in enumerate(groups.values(), 1):
        ctx.progress(NAME, done, len(groups))
        case = cases[0]
        example = _without_request(case)
        if example is None:
            assert case.envoy is not None
            parser = case.source_parser or case.envoy.parser
            alternatives = [None] if case.source_parser is None else [m.l7 for m in case.source]
            rules = [rule for _, rule in case.envoy.allows]
            answer = compare(parser, rules, bool(case.envoy.denies), alternatives, TIMEOUT_MS)
            if answer.status == "unknown":
                unknown.append(f"{case.name}: {answer.reason}")
                continue
            if answer.status == "same":
                continue
            assert answer.request is not None
            example = _replay(case, answer.request, envoy, ref)
            if example is None:
                unknown.append(f"{case.name}: the formulas differ on {answer.request} but the simulators agree "
                               "there (an encoding fault; not reported as a counterexample)")
                continue
        differing += 1
        if len(found) < SHOWN:
            found.append(example)
    status = Status.COUNTEREXAMPLE if found else Status.UNKNOWN if unknown else Status.PROVED
    if differing > len(found):
        unknown.append(f"{differing} connection classes differ; the first {len(found)} are shown")
    cases_total = sum(len(c) for c in groups.values())
    return ProofResult(NAME, CLAIM, status, cases_total, time.perf_counter() - started, tuple(found), tuple(unknown))


def _example(case: L7Case, text: str, sides: tuple[Side, ...], request: str = "") -> Counterexample:
    flow = case.flow
    return Counterexample(case.name, text, sides, str(flow.src), str(flow.dst), flow.protocol.name, flow.port,
                          request)


def _source_side(case: L7Case) -> Side:
    rules = tuple(f"allowed by {m.ref}" for m in case.source)
    what = f"sent to the {case.source_parser} proxy" if case.source_parser else "allowed without a proxy"
    return Side("source", what, rules)


def _without_request(case: L7Case) -> Counterexample | None:
    """The cases that differ before any request: no Envoy policy, or another parser's."""
    text = flow_text(case.flow)
    if case.envoy is None:
        return _example(case, text, (Side("envoy", "no proxy policy for this connection"), _source_side(case)))
    if case.source_parser is not None and case.source_parser != case.envoy.parser:
        envoy = Side("envoy", f"{case.envoy.parser} rules on {case.envoy.listener}", case.envoy.trace)
        return _example(case, text, (envoy, _source_side(case)))
    return None


def _replay(case: L7Case, request: L7Request, envoy: EnvoySimulator, ref: ReferenceEvaluator) -> Counterexample | None:
    flow = case.flow
    endpoint = flow.dst if case.direction is Direction.INGRESS else flow.src
    verdict = envoy.decide(endpoint, case.direction.value, case.identity, flow.protocol, flow.port, request)
    decision, matches = ref.evaluate_direction(Flow(flow.src, flow.dst, flow.protocol, flow.port, request),
                                               case.direction)
    admitted = decision.allowed and decision.l7_allowed is not False
    if verdict.allowed == admitted:
        return None
    admitting = [str(m.ref) for m in matches if m.admits(request)]
    source = Side("source", "allowed" if admitted else "denied: no matching rule's L7 rules admit it",
                  tuple(f"admitted by {r}" for r in admitting) or tuple(f"matching rule {m.ref}" for m in matches))
    sides = (Side("envoy", str(verdict), verdict.trace), source)
    return _example(case, f"{flow_text(flow)}: {request}", sides, str(request))
