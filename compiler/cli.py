"""The ``netpolc`` command line (DESIGN.md §6).

Every sub-command reads inputs with the same ``-f`` options. Exit codes: 0 ok, 1 findings,
2 usage or input errors (with file, line and field), never a traceback for bad input.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn, Protocol

from compiler import __version__
from compiler.cluster import DEFAULT_CLUSTER_NAME, DEFAULT_NODE_IP, DEFAULT_POD_CIDR, Cluster
from compiler.flow import (
    Decision,
    DnsRequest,
    Flow,
    HttpRequest,
    IPAddress,
    KafkaRequest,
    L7Request,
    PortSpec,
    Profile,
)
from compiler.source import InputError, InputErrors, NetpolcError
from compiler.targets.base import TargetError

if TYPE_CHECKING:
    from pathlib import Path

    from compiler.inputs import Inputs
    from compiler.inputs.cache import DocumentCache
    from compiler.labels import LabelFilter
    from verifier.simulate.targets import TargetSimulator


class _HasAllowed(Protocol):
    @property
    def allowed(self) -> bool: ...


class UsageError(NetpolcError):
    """A command-line mistake (exit 2)."""


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inputs")
    group.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="PATH",
        help="policy/cluster YAML file, directory (recursive) or - for stdin; repeatable",
    )
    group.add_argument(
        "--profile",
        choices=[p.value for p in Profile],
        default=Profile.CILIUM.value,
        help="semantic profile (docs/SEMANTICS.md): cilium (default) or k8s",
    )
    group.add_argument(
        "--pod-cidr",
        dest="pod_cidrs",
        action="append",
        metavar="CIDR",
        help=f"CIDR to allocate pod addresses from (default {DEFAULT_POD_CIDR}); repeat for dual stack",
    )
    group.add_argument("--node-ip", default=DEFAULT_NODE_IP, help=f"address of the node (default {DEFAULT_NODE_IP})")
    group.add_argument("--cluster-name", default=DEFAULT_CLUSTER_NAME, help="Cilium cluster name (default 'default')")
    group.add_argument(
        "--labels",
        dest="label_patterns",
        action="append",
        default=[],
        metavar="PATTERN",
        help="extra Cilium label-filter entry [source:][!]regex-prefix (like cilium-agent --labels)",
    )


def _load(args: argparse.Namespace, cache: DocumentCache | None = None) -> Inputs:
    from compiler.inputs import load_inputs

    try:
        ipaddress.ip_address(args.node_ip)
    except ValueError:
        raise UsageError(f"--node-ip {args.node_ip!r} is not an IP address") from None
    return load_inputs(
        args.files,
        pod_cidrs=tuple(args.pod_cidrs or [DEFAULT_POD_CIDR]),
        node_ip=args.node_ip,
        cluster_name=args.cluster_name,
        cache=cache,
    )


def _label_filter(args: argparse.Namespace) -> LabelFilter:
    from compiler.labels import LabelFilter

    try:
        return LabelFilter.from_options(args.label_patterns) if args.label_patterns else LabelFilter.default()
    except ValueError as err:
        raise UsageError(f"--labels: {err}") from None


def _ports(values: Sequence[str]) -> list[PortSpec]:
    out = []
    for value in values:
        try:
            out.append(PortSpec.parse(value))
        except ValueError as err:
            raise UsageError(f"--port: {err}") from None
    return out


def _write_atomic(path: Path, text: str) -> None:
    """Write a whole file or nothing (never a partial output file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None


def _progress(message: str) -> None:
    if sys.stderr.isatty() and not os.environ.get("NETPOLC_QUIET"):
        print(f"netpolc: {message}", file=sys.stderr)


# --- matrix -----------------------------------------------------------------------------------


def cmd_matrix(args: argparse.Namespace) -> int:
    from compiler.render.matrix import RENDERERS

    ports = _ports(args.ports)
    inputs = _load(args)
    profile = Profile(args.profile)
    endpoints = [ep.key for ep in inputs.cluster.endpoints]
    start = time.monotonic()
    if args.target == "ir":
        from compiler.ir.build import build_ir
        from compiler.ir.evaluate import matrix

        allowed = matrix(build_ir(inputs, profile, _label_filter(args)), ports)
    elif args.target == "source":
        from verifier.simulate.source import ReferenceEvaluator

        reference = ReferenceEvaluator(inputs, profile, _label_filter(args))
        allowed = _pairwise_matrix(inputs.cluster, ports, reference.evaluate)
    else:
        simulator = _target_simulators(args, inputs, [args.target])[args.target]
        allowed = _pairwise_matrix(inputs.cluster, ports, simulator.answer)
    _progress(f"matrix of {len(endpoints)} endpoints x {len(ports)} ports in {time.monotonic() - start:.1f}s")
    sys.stdout.write(RENDERERS[args.output](profile.value, [str(p) for p in ports], endpoints, allowed))
    return 0


def _target_simulators(args: argparse.Namespace, inputs: Inputs, names: Sequence[str]) -> dict[str, TargetSimulator]:
    """Simulators over the targets' artifact files: compiled now, or read from ``--artifacts DIR``."""
    from pathlib import Path

    from verifier.simulate.targets import simulators

    files: dict[str, dict[str, str]] = {}
    if getattr(args, "artifacts", None):
        root = Path(args.artifacts)
        for name in names:
            directory = root / name
            if not directory.is_dir():
                raise UsageError(f"--artifacts {root}: no {name}/ directory (run `netpolc compile -o {root}` first)")
            files[name] = _read_target_dir(directory)
            node = _scoped_node(files[name])
            if node is not None:
                raise UsageError(f"--artifacts {root}: {name}/ was compiled with --node {node} and holds only that "
                                 f"node's endpoints; comparing with the whole cluster needs a compile without --node")
    else:
        from compiler.ir.build import build_ir
        from compiler.targets import TargetOptions, available_targets, emit_targets

        offered = available_targets()
        missing = [n for n in names if n not in offered]
        if missing:
            raise UsageError(f"--target {missing[0]}: not available (available: {', '.join(offered) or 'none'})")
        ir = build_ir(inputs, Profile(args.profile), _label_filter(args))
        files, _ = emit_targets(ir, names, TargetOptions(), progress=_progress)
    return simulators(files, inputs.cluster)


def _read_target_dir(directory: Path) -> dict[str, str]:
    """``OUT/<target>/`` as the simulators and proofs take it: relative path → text."""
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def _scoped_node(files: Mapping[str, str]) -> str | None:
    """The node a target's artifacts were scoped to (``--node``), read from its summary or index."""
    for name in ("summary.json", "index.json"):
        try:
            doc = json.loads(files.get(name, "{}"))
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("node"), str):
            return str(doc["node"])
    return None


def _pairwise_matrix(
    cluster: Cluster, ports: Sequence[PortSpec], evaluate: Callable[[Flow], _HasAllowed]
) -> dict[str, dict[str, list[str]]]:
    out: dict[str, dict[str, list[str]]] = {}
    for port in ports:
        rows: dict[str, list[str]] = {}
        for src in cluster.endpoints:
            reach = []
            for dst in cluster.endpoints:
                if not src.ips or not dst.ips:
                    continue
                flow = Flow(_primary(src.addresses), _primary(dst.addresses), port.protocol, port.port)
                if evaluate(flow).allowed:
                    reach.append(dst.key)
            rows[src.key] = reach
        out[str(port)] = rows
    return out


def _primary(addresses: Sequence[IPAddress]) -> IPAddress:
    """An endpoint's IPv4 address if it has one (flows are probed over IPv4 first)."""
    return next((a for a in addresses if a.version == 4), addresses[0])


# --- query ------------------------------------------------------------------------------------


def _address(cluster: Cluster, value: str, option: str) -> IPAddress:
    if value == "host":
        return cluster.node_address
    if "/" in value:
        ep = cluster.endpoint(value)
        if ep is None:
            raise UsageError(f"{option}: no endpoint {value!r} (endpoints are namespace/pod; see `netpolc identities`)")
        if not ep.ips:
            raise UsageError(f"{option}: endpoint {value} has no address")
        return _primary(ep.addresses)
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise UsageError(f"{option}: {value!r} is neither namespace/pod, 'host', nor an IP address") from None


def _l7_request(args: argparse.Namespace) -> L7Request | None:
    given = [x for x in (args.http, args.kafka, args.dns) if x]
    if len(given) > 1:
        raise UsageError("give at most one of --http, --kafka, --dns")
    try:
        if args.http:
            request = HttpRequest.parse(args.http)
            headers = []
            for header in args.headers:
                name, sep, value = header.partition(":")
                if not sep:
                    raise ValueError(f"--header {header!r}: expected 'Name: value'")
                headers.append((name.strip(), value.strip()))
            return HttpRequest(request.method, request.path, args.http_host or "", tuple(headers))
        if args.kafka:
            return _kafka_request(args.kafka)
        if args.dns:
            return DnsRequest(args.dns)
    except ValueError as err:
        raise UsageError(str(err)) from None
    return None


def _kafka_request(text: str) -> KafkaRequest:
    """``APIKEY[:VERSION[:CLIENT_ID[:TOPIC]]]`` with APIKEY a name (produce, fetch, ...) or number."""
    from compiler.kafka import api_key_number

    parts = text.split(":")
    key = int(parts[0]) if parts[0].isdigit() else api_key_number(parts[0])
    version = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    client = parts[2] if len(parts) > 2 else ""
    topic = parts[3] if len(parts) > 3 else ""
    return KafkaRequest(key, version, client, topic)


def cmd_query(args: argparse.Namespace) -> int:
    from compiler.ir.build import build_ir
    from compiler.ir.evaluate import IREvaluator
    from compiler.render import query as render
    from verifier.simulate.source import ReferenceEvaluator

    (port,) = _ports([args.port])
    inputs = _load(args)
    cluster = inputs.cluster
    flow = Flow(
        _address(cluster, args.src, "--from"),
        _address(cluster, args.dst, "--to"),
        port.protocol,
        port.port,
        _l7_request(args),
    )
    profile = Profile(args.profile)
    label_filter = _label_filter(args)
    decision = IREvaluator(build_ir(inputs, profile, label_filter)).evaluate(flow)
    reference = ReferenceEvaluator(inputs, profile, label_filter).evaluate(flow)
    agrees = _same_decision(decision, reference)
    names = {str(a): ep.key for ep in cluster.endpoints for a in ep.addresses}
    names[cluster.node_ip] = "host"
    text = (render.render_json if args.output == "json" else render.render_text)(decision, names, agrees)
    targets = _query_targets(args, inputs, flow, decision)
    if targets is not None:
        if args.output == "json":
            doc = json.loads(text)
            doc["targets"] = targets[1]
            text = json.dumps(doc, indent=2) + "\n"
        else:
            text += targets[0]
    sys.stdout.write(text)
    return 0 if agrees and (targets is None or all(t["agrees"] for t in targets[1])) else 1


def _query_targets(
    args: argparse.Namespace, inputs: Inputs, flow: Flow, decision: Decision
) -> tuple[str, list[dict[str, object]]] | None:
    """Each requested target's answer for the flow, with its trace and cost, against the semantics."""
    if not args.targets:
        return None
    from verifier.simulate.targets import READERS, expected

    names = sorted(READERS) if "all" in args.targets else sorted(set(args.targets))
    sims = _target_simulators(args, inputs, names)
    want = expected(decision)
    lines: list[str] = []
    rows: list[dict[str, object]] = []
    for name in names:
        answer = sims[name].answer(flow)
        same = answer.verdict == want
        cost = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in answer.cost.items())
        lines.append(f"target {name}: {answer}  [{cost}]" + ("" if same else f"  DISAGREES (semantics: {want[0]})"))
        lines += [f"    {step}" for step in answer.trace]
        rows.append(
            {
                "target": name,
                "kind": answer.kind,
                "proxy_port": answer.proxy_port,
                "detail": answer.detail,
                "cost": dict(answer.cost),
                "trace": list(answer.trace),
                "agrees": same,
            }
        )
    return "\n".join(lines) + "\n", rows


def _same_decision(a: Decision, b: Decision) -> bool:
    from verifier.compare import decisions_differ

    return not decisions_differ(a, b)


# --- identities -------------------------------------------------------------------------------


def cmd_identities(args: argparse.Namespace) -> int:
    from compiler.identity import allocate, render_identities
    from compiler.ir.build import policy_cidrs

    inputs = _load(args)
    table = allocate(inputs.cluster, Profile(args.profile), _label_filter(args), policy_cidrs(inputs))
    sys.stdout.write(render_identities(table, args.output))
    return 0


# --- compile --------------------------------------------------------------------------------------


def cmd_compile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from compiler.ir.build import build_ir
    from compiler.targets import TARGETS, TargetOptions, available_targets, compile_targets

    offered = available_targets()
    if not offered:
        raise UsageError("no compilation target is available in this version")
    names = offered if args.target == "all" else [args.target]
    if args.target != "all" and args.target not in offered:
        raise UsageError(f"--target {args.target}: not available (available: {', '.join(offered) or 'none'})")
    if args.node is not None:
        scoped = [n for n in offered if TARGETS[n].per_node]
        if args.target != "all" and args.target not in scoped:
            raise UsageError(f"--node: the {args.target} target has no per-node form "
                             f"(node-scoped targets: {', '.join(scoped)})")
        names = [n for n in names if n in scoped]
    if args.policy_map_max < 1:
        raise UsageError("--policy-map-max must be positive")
    inputs = _load(args)
    _progress(f"loaded {len(inputs.cluster.endpoints)} endpoints and {len(inputs.policies)} policies")
    if args.node is not None:
        _check_node(inputs.cluster, args.node)
    ir = build_ir(inputs, Profile(args.profile), _label_filter(args))
    options = TargetOptions(policy_map_max=args.policy_map_max, allow_overflow=args.allow_overflow,
                            node=args.node)
    artifacts = compile_targets(inputs, ir, names, Path(args.out), options, progress=_progress)
    for name, files in artifacts.items():
        print(f"{name}: {len(files)} file(s) in {Path(args.out) / name}")
    return 0


def _check_node(cluster: Cluster, node: str) -> None:
    """``--node`` must name a node some pod is scheduled on (``spec.nodeName``): a typo would
    otherwise compile an empty node."""
    nodes = sorted({ep.node for ep in cluster.endpoints if ep.node is not None})
    if node in nodes:
        return
    if not nodes:
        raise UsageError(f"--node {node}: no pod in the inputs has spec.nodeName, so no endpoint is on a node")
    shown = ", ".join(nodes[:10]) + (f" and {len(nodes) - 10} more" if len(nodes) > 10 else "")
    raise UsageError(f"--node {node}: no pod has spec.nodeName {node!r} (nodes in the inputs: {shown})")


# --- lint ---------------------------------------------------------------------------------------


def cmd_lint(args: argparse.Namespace) -> int:
    from pathlib import Path

    from verifier.lint.config import ConfigError, check_codes, find_config, load_config
    from verifier.lint.context import LintOptions
    from verifier.lint.engine import LoadOptions, all_rules, lint
    from verifier.lint.finding import Severity
    from verifier.lint.render import RENDERERS

    rules = all_rules()
    if args.list_rules:
        for code, rule in sorted(rules.items()):
            opt_in = " (opt-in)" if rule.opt_in else ""
            print(f"{code}  {rule.name:<40} {rule.severity.value:<8} {rule.summary()}{opt_in}")
        return 0
    files = [*(args.files or []), *args.paths]
    if not files:
        raise UsageError("lint: give inputs with -f PATH or as arguments (or --list-rules)")
    path = Path(args.config) if args.config else find_config(Path.cwd())
    if args.config and not path.is_file():  # type: ignore[union-attr]
        raise UsageError(f"--config {args.config}: no such file")
    config = load_config(path, rules)
    try:
        check_codes(args.select or [], set(rules), "--select")
        check_codes(args.ignore or [], set(rules), "--ignore")
    except ConfigError as err:
        raise UsageError(str(err)) from None
    config = config.with_selection(_split(args.select), _split(args.ignore))
    settings = config.settings
    profile = Profile(args.profile or settings.get("profile", Profile.CILIUM.value))
    options = LintOptions(
        profile=profile,
        platform=args.platform or settings.get("platform"),
        policy_map_max=int(args.policy_map_max or settings.get("policy-map-max", 16384)),
        identity_limit=int(args.identity_limit or settings.get("identity-limit", 65535)),
        label_filter=_label_filter(args),
    )
    load = LoadOptions(tuple(args.pod_cidrs or [DEFAULT_POD_CIDR]), args.node_ip, args.cluster_name)
    result = lint(files, options, config, load, progress=_progress)
    sys.stdout.write(RENDERERS[args.format](result))
    return 1 if any(f.severity is Severity.ERROR for f in result.findings) else 0


def _split(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


# --- diff ---------------------------------------------------------------------------------------


def cmd_diff(args: argparse.Namespace) -> int:
    """Load both versions through one document cache (NEW parses only what differs from OLD)
    and compare them. The cyclic garbage collector is off meanwhile: the two versions are
    millions of long-lived, acyclic objects, and its full passes over them cost more than the
    loading itself at 20k pods (the peak memory is the same with and without it)."""
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        return _diff(args)
    finally:
        if enabled:
            gc.enable()


def _diff(args: argparse.Namespace) -> int:
    from compiler.inputs.cache import DocumentCache
    from verifier.diff.compute import semantic_diff
    from verifier.diff.render import RENDERERS
    from verifier.diff.sources import materialize

    base = Profile(args.profile)
    old_profile = Profile(args.profile_old) if args.profile_old else base
    new_profile = Profile(args.profile_new) if args.profile_new else base
    cache = DocumentCache()
    loaded = []
    start = time.monotonic()
    for spec in (args.old, args.new):
        with materialize(spec) as local:
            args.files = [local]
            try:
                loaded.append(_load(args, cache))
            except InputErrors as err:
                raise InputErrors([_relabel(e, local, spec) for e in err.errors]) from None
            except InputError as err:
                raise _relabel(err, local, spec) from None
    old, new = loaded
    _progress(f"loaded both versions in {time.monotonic() - start:.1f}s "
              f"({cache.parsed} documents parsed, {cache.reused} reused)")
    start = time.monotonic()
    result = semantic_diff(old, new, old_profile, new_profile, _label_filter(args), progress=_progress)
    _progress(f"{result.cells} flow cells compared in {time.monotonic() - start:.1f}s")
    sys.stdout.write(RENDERERS[args.output](result))
    return 0 if result.equivalent else 1


def _relabel(err: InputError, local: str, spec: str) -> InputError:
    """Name ``git:REV:PATH/...`` instead of the temporary copy in an error."""
    from compiler.source import SourceRef

    if err.source is None or local == spec or not err.source.file.startswith(local):
        return err
    name = spec.rstrip("/") + err.source.file[len(local) :]
    source = SourceRef(name, err.source.line, err.source.column)
    return InputError(err.message, source=source, field=err.field, subject=err.subject)


# --- verify -------------------------------------------------------------------------------------

VERIFY_TARGETS = ("iptables", "ebpf", "envoy")


def cmd_verify(args: argparse.Namespace) -> int:
    """Prove the compiled artifacts equivalent (verifier/proofs): exit 0 proved, 1 counterexample, 3 unknown."""
    from verifier.proofs import ProofContext, SourceSpec, proofs, run_proofs
    from verifier.proofs.render import RENDERERS, exit_code

    if args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    inputs = _load(args)
    files = _verify_artifacts(args, inputs)
    try:
        from verifier.simulate.targets import simulators

        sims = simulators(files, inputs.cluster)  # every artifact parses before any proof starts
    except ValueError as err:
        raise UsageError(f"artifacts: {err}") from None
    known = proofs()
    unknown = [p for p in args.proofs or () if p not in known]
    if unknown:
        raise UsageError(f"--proof {unknown[0]}: no such proof (proofs: {', '.join(known)})")
    source = SourceSpec(inputs, Profile(args.profile), _label_filter(args))
    ctx = ProofContext(files, inputs.cluster, args.jobs, _slice_progress(), sims, source)
    results = run_proofs(ctx, args.proofs or None, lambda name: _progress(f"proving {name}"))
    sys.stdout.write(RENDERERS[args.output](results))
    return exit_code(results)


def _slice_progress() -> Callable[[str, int, int], None]:
    """A proof's slices as a progress bar on a terminal (silent in CI logs and pipes)."""
    bar = _ProgressBar(0)

    def report(name: str, done: int, total: int) -> None:
        bar.total = total
        bar.show(done, f"{name}: slices")

    return report


def _verify_artifacts(args: argparse.Namespace, inputs: Inputs) -> dict[str, dict[str, str]]:
    """The artifacts to prove: read from ``--artifacts OUT`` (checked against the inputs), or compiled."""
    from pathlib import Path

    if not args.artifacts:
        from compiler.ir.build import build_ir
        from compiler.targets import TargetOptions, available_targets, emit_targets

        ir = build_ir(inputs, Profile(args.profile), _label_filter(args))
        names = [n for n in VERIFY_TARGETS if n in available_targets()]
        return emit_targets(ir, names, TargetOptions(), progress=_progress)[0]
    root = Path(args.artifacts)
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise UsageError(f"--artifacts {root}: no manifest.json (run `netpolc compile -o {root}` first)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as err:
        raise UsageError(f"{manifest_path}: not JSON ({err})") from None
    if manifest.get("profile") != args.profile:
        raise UsageError(f"--artifacts {root} was compiled with --profile {manifest.get('profile')}, "
                         f"not {args.profile}")
    compiled = {f.get("path"): f.get("sha256") for f in manifest.get("inputs", [])}
    given = {f.path: f.sha256 for f in inputs.files}
    if compiled != given:
        changed = sorted(set(compiled.items()) ^ set(given.items()))
        raise UsageError(f"--artifacts {root} was compiled from other inputs than -f gives "
                         f"(first difference: {changed[0][0]}); recompile or pass the same files")
    files: dict[str, dict[str, str]] = {}
    for name in VERIFY_TARGETS:
        directory = root / name
        if directory.is_dir():
            files[name] = _read_target_dir(directory)
            node = _scoped_node(files[name])
            if node is not None:
                raise UsageError(f"--artifacts {root}: {name}/ was compiled with --node {node}; the proofs "
                                 "cover the whole cluster, so compile without --node")
    if not files:
        raise UsageError(f"--artifacts {root}: none of {', '.join(VERIFY_TARGETS)}/ is there")
    return files


# --- cost ---------------------------------------------------------------------------------------

DEFAULT_COST_SIZES = ("1000:10:100", "1000:1000:100", "5000:2500:500", "20000:5000:1000")


def cmd_cost(args: argparse.Namespace) -> int:
    """Sweep synthetic clusters and report per-packet lookup cost on both datapaths."""
    from pathlib import Path

    from verifier.cost.model import OperationCosts
    from verifier.cost.render import RENDERERS, plot
    from verifier.cost.sweep import Point, measure

    try:
        points = [Point.parse(text) for text in args.sizes or DEFAULT_COST_SIZES]
        costs = OperationCosts.load(args.costs) if args.costs else OperationCosts()
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.connections < 1 or args.established < 0:
        raise UsageError("--connections must be at least 1 and --established at least 0")
    if args.plot and Path(args.plot).suffix.lower() not in (".png", ".svg"):
        raise UsageError(f"--plot {args.plot}: a .png or .svg file")
    if args.measure:
        from verifier.cost.calibrate import unavailable_reason

        reason = unavailable_reason()
        if reason:
            raise UsageError(f"--measure: cannot time packets on this machine: {reason}")
    if args.calibrate:
        from verifier.cost.calibrate import CalibrationUnavailable, calibrate, table

        try:
            costs = calibrate(progress=_progress)
        except CalibrationUnavailable as err:
            raise UsageError(str(err)) from None
        _write_atomic(Path(args.calibrate), costs.to_json())
        sys.stdout.write(table(costs))
        _progress(f"wrote {args.calibrate} (use it with --costs {args.calibrate})")
        if not args.sizes:
            return 0
    bar = _ProgressBar(len(points))
    results = []
    for i, point in enumerate(points):
        bar.show(i, f"{point} (pods:services:policies)")

        def report(text: str, done: int = i) -> None:
            bar.show(done, text)

        results.append(measure(point, connections_=args.connections, established=args.established, seed=args.seed,
                               costs=costs, progress=report, kernel=args.measure))
    bar.show(len(points), "done")
    sys.stdout.write(RENDERERS[args.output](results, costs))
    if args.plot:
        plot(results, Path(args.plot), args.plot_x)
        _progress(f"wrote {args.plot}")
    return 0


class _ProgressBar:
    """``[####------] 2/5 what`` rewritten in place on a terminal; silent in pipes and CI logs."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.shown = sys.stderr.isatty() and not os.environ.get("NETPOLC_QUIET")

    def show(self, done: int, text: str) -> None:
        if not self.shown:
            return
        filled = round(20 * done / max(1, self.total))
        end = "\n" if done >= self.total else ""
        print(f"\r\033[K[{'#' * filled}{'-' * (20 - filled)}] {done}/{self.total} {text}", end=end,
              file=sys.stderr, flush=True)


# --- testbed ------------------------------------------------------------------------------------


def cmd_testbed(args: argparse.Namespace) -> int:
    """Load a target's artifacts into the kernel testbed, probe real packets, compare with simulate."""
    import tempfile
    from pathlib import Path

    from compiler.ir.build import build_ir
    from compiler.render.matrix import RENDERERS
    from compiler.targets import TargetOptions, compile_targets
    from verifier.kernel import Testbed, kernel_matrix, kernel_unavailable_reason, unsupported_reason
    from verifier.simulate.targets import simulators

    tools = {"iptables": ["iptables-restore", "ipset"], "ebpf": ["clang", "bpftool", "tc"]}[args.target]
    reason = kernel_unavailable_reason(tools)
    if reason is None and args.target == "ebpf":
        from verifier.kernel.bpf import ebpf_unavailable_reason

        reason = ebpf_unavailable_reason()
    if reason is not None:
        raise UsageError(f"testbed: {reason}")
    ports = _ports(args.ports)
    skipped = [(p, r) for p in ports if (r := unsupported_reason(p)) is not None]
    for port, why in skipped:
        print(f"netpolc: {port}: not probed ({why})", file=sys.stderr)
    probed = [p for p in ports if unsupported_reason(p) is None]
    if not probed:
        raise UsageError("testbed: none of the ports can be probed on this kernel")
    inputs = _load(args)
    profile = Profile(args.profile)
    ir = build_ir(inputs, profile, _label_filter(args))
    cluster = inputs.cluster
    with tempfile.TemporaryDirectory(prefix="netpolc-testbed-") as tmp:
        out = Path(tmp)
        compile_targets(inputs, ir, [args.target], out, TargetOptions(), progress=_progress)
        directory = out / args.target
        files = _read_target_dir(directory)
        simulator = simulators({args.target: files}, cluster)[args.target]
        start = time.monotonic()
        with Testbed(cluster, ports=probed) as testbed:
            _progress(f"testbed {testbed.run_id} built in {testbed.build_seconds:.1f}s; loading {args.target}")
            if args.target == "iptables":
                from verifier.kernel.load_iptables import load_iptables

                load_iptables(testbed, out)
                kernel = kernel_matrix(testbed, probed)
            else:
                from verifier.kernel.load_ebpf import load_ebpf

                with load_ebpf(testbed, out):
                    kernel = kernel_matrix(testbed, probed)
        _progress(f"probed {len(cluster.endpoints) ** 2 * len(probed)} flows in {time.monotonic() - start:.1f}s")
    simulated = _pairwise_matrix(cluster, probed, simulator.answer)
    endpoints = [ep.key for ep in cluster.endpoints]
    sys.stdout.write(RENDERERS[args.output](profile.value, [str(p) for p in probed], endpoints, kernel))
    differences = []
    for port_key in [str(p) for p in probed]:
        for src in endpoints:
            for dst in endpoints:
                if src == dst:
                    continue  # self-traffic stays on the pod's loopback (SEMANTICS §1)
                got, want = dst in kernel[port_key][src], dst in simulated[port_key][src]
                if got != want:
                    differences.append(
                        f"{src} -> {dst} {port_key}: kernel {'allowed' if got else 'dropped'}, "
                        f"simulate {'allowed' if want else 'dropped'}"
                    )
    if args.output == "text":
        if differences:
            print(f"\n{len(differences)} difference(s) between the kernel and simulate ({args.target}):")
            print("\n".join(f"  {d}" for d in differences))
        else:
            print(f"\nkernel == simulate ({args.target}) on every probed pair (self-pairs excluded: loopback)")
    return 1 if differences else 0


# --- entry point --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netpolc",
        description="Compile and verify Kubernetes NetworkPolicy and CiliumNetworkPolicy.",
    )
    parser.add_argument("--version", action="version", version=f"netpolc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("matrix", help="reachability table between all endpoints on the given ports")
    _add_input_options(p)
    p.add_argument(
        "--port",
        dest="ports",
        action="append",
        required=True,
        metavar="PORT/PROTO",
        help="port to check, e.g. 80/TCP; repeatable",
    )
    p.add_argument("-o", "--output", choices=["text", "json", "csv", "markdown"], default="text")
    p.add_argument(
        "--target",
        choices=["ir", "source", "iptables", "ebpf"],
        default="ir",
        help="evaluate on the IR (default), with the reference semantics over the parsed policies, or by "
        "simulating a compiled target's artifacts",
    )
    p.add_argument(
        "--artifacts", metavar="OUT", help="with --target iptables|ebpf: read OUT/<target>/ instead of compiling"
    )
    p.set_defaults(func=cmd_matrix)

    p = sub.add_parser("query", help="the verdict for one flow, with the rules that decided it")
    _add_input_options(p)
    p.add_argument("--from", dest="src", required=True, help="namespace/pod, 'host', or an IP address")
    p.add_argument("--to", dest="dst", required=True, help="namespace/pod, 'host', or an IP address")
    p.add_argument("--port", required=True, metavar="PORT/PROTO", help="e.g. 80/TCP, 53/UDP, 8/ICMP (type)")
    p.add_argument("--http", metavar="METHOD:/path", help="an HTTP request to judge at L7, e.g. GET:/api/v1")
    p.add_argument("--http-host", metavar="HOST", help="the request's :authority (with --http)")
    p.add_argument(
        "--header",
        dest="headers",
        action="append",
        default=[],
        metavar="'Name: value'",
        help="an HTTP request header (with --http); repeatable",
    )
    p.add_argument(
        "--kafka", metavar="APIKEY[:VERSION[:CLIENT[:TOPIC]]]", help="a Kafka request, e.g. produce:0::events"
    )
    p.add_argument("--dns", metavar="NAME", help="a DNS query name to judge at L7")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.add_argument(
        "--target",
        dest="targets",
        action="append",
        choices=["iptables", "ebpf", "all"],
        help="also simulate the flow on a compiled target (trace and lookup cost); repeatable",
    )
    p.add_argument("--artifacts", metavar="OUT", help="with --target: read OUT/<target>/ instead of compiling")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("compile", help="emit datapath artifacts (iptables, eBPF maps, Envoy L7 config)")
    _add_input_options(p)
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output directory (OUT/<target>/...)")
    p.add_argument(
        "--target",
        default="all",
        metavar="TARGET",
        help="iptables, ebpf, envoy or all (default: every available target)",
    )
    p.add_argument(
        "--policy-map-max",
        type=int,
        default=16384,
        help="eBPF policy map capacity per endpoint (Cilium bpf-policy-map-max, default 16384)",
    )
    p.add_argument(
        "--allow-overflow",
        action="store_true",
        help="write eBPF maps even when an endpoint exceeds --policy-map-max (reported, exit 0)",
    )
    p.add_argument(
        "--node",
        metavar="NAME",
        help="emit policy maps and NPDS only for the pods with spec.nodeName NAME, as that node's Cilium "
        "agent holds them (ipcache stays cluster-wide; eBPF and Envoy targets)",
    )
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("identities", help="security identities with their labels and endpoint counts")
    _add_input_options(p)
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_identities)

    p = sub.add_parser("lint", help="coded checks for CI (text, JSON, SARIF, GitHub annotations)")
    _add_input_options(p)
    for action in p._actions:
        if action.dest == "files":
            action.required = False
        if action.dest == "profile":
            action.default = None
    p.add_argument("--format", "-o", dest="format", choices=["text", "json", "sarif", "github"], default="text")
    p.add_argument("--select", action="append", metavar="CODES", help="rule codes or prefixes to run (e.g. NP2,NP301)")
    p.add_argument("--ignore", action="append", metavar="CODES", help="rule codes or prefixes to skip")
    p.add_argument("--config", metavar="FILE", help="pyproject.toml or .netpolc.toml (default: nearest one)")
    p.add_argument("--platform", choices=["aks-managed"], help="enable managed-platform rules")
    p.add_argument("--policy-map-max", type=int, help="eBPF policy map capacity per endpoint (default 16384)")
    p.add_argument("--identity-limit", type=int, help="identity limit to check against (default 65535)")
    p.add_argument("--list-rules", action="store_true", help="list every rule and exit")
    p.add_argument("paths", nargs="*", metavar="PATH", help="more inputs, as with -f (for pre-commit)")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("verify", help="prove the compiled targets equivalent (Z3); exit 0 proved, 1 "
                       "counterexample, 2 input error, 3 unknown")
    _add_input_options(p)
    p.add_argument("--artifacts", metavar="OUT", help="prove OUT/ (from `netpolc compile -o OUT`) instead of compiling")
    p.add_argument("-o", "--output", choices=["text", "json", "markdown"], default="text")
    p.add_argument("--proof", dest="proofs", action="append", metavar="NAME", help="run only this proof; repeatable")
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1,
                   help="worker processes for the proof slices (default: the CPU count)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("diff", help="semantic difference of two policy versions on one cluster (exhaustive)")
    p.add_argument("old", metavar="OLD", help="path (file, directory) or git:REV:PATH")
    p.add_argument("new", metavar="NEW", help="path (file, directory) or git:REV:PATH")
    _add_input_options(p)
    for action in p._actions:
        if action.dest == "files":
            action.required = False
    p.add_argument("--profile-old", choices=[x.value for x in Profile], help="profile for OLD (default --profile)")
    p.add_argument("--profile-new", choices=[x.value for x in Profile], help="profile for NEW (default --profile)")
    p.add_argument("-o", "--output", choices=["text", "markdown", "json"], default="text")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("cost", help="per-packet lookup cost of Services and policy, iptables vs eBPF, by size")
    p.add_argument("--sizes", nargs="+", metavar="PODS:SERVICES:POLICIES",
                   help=f"synthetic cluster sizes to sweep (default: {' '.join(DEFAULT_COST_SIZES)})")
    p.add_argument("--connections", type=int, default=200, help="connections per size (default 200)")
    p.add_argument("--established", type=int, default=4, help="later packets per allowed connection (default 4)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--costs", metavar="FILE", help="per-operation costs (JSON from --calibrate; default: published)")
    p.add_argument("--calibrate", metavar="FILE",
                   help="measure the per-operation costs on this kernel (root), write them to FILE and use them; "
                        "without --sizes, stop there")
    p.add_argument("--measure", action="store_true",
                   help="also time the first packets on this kernel (root): kube-proxy's nat walk with real "
                        "packets, the eBPF policy path with BPF_PROG_TEST_RUN; shown next to the estimates")
    p.add_argument("-o", "--output", choices=["text", "markdown", "json"], default="text")
    p.add_argument("--plot", metavar="FILE", help="also plot estimated cost per packet (.png or .svg)")
    p.add_argument("--plot-x", choices=["services", "policies"], default="services", help="the plot's x axis")
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("testbed", help="load a target into a kernel testbed, probe real packets (root)")
    _add_input_options(p)
    p.add_argument("--target", required=True, choices=["iptables", "ebpf"])
    p.add_argument("--port", dest="ports", action="append", required=True, metavar="PORT/PROTO")
    p.add_argument("-o", "--output", choices=["text", "json", "csv", "markdown"], default="text")
    p.set_defaults(func=cmd_testbed)
    return parser


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"netpolc: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except InputErrors as err:
        for error in err.errors:
            print(f"netpolc: error: {error}", file=sys.stderr)
        print(f"netpolc: {len(err.errors)} input error(s); nothing was written", file=sys.stderr)
        return 2
    except TargetError as err:
        for problem in err.problems:
            print(f"netpolc: error: {problem}", file=sys.stderr)
        count = len(err.problems)
        print(f"netpolc: {count} construct(s) the target cannot express; nothing was written", file=sys.stderr)
        return 2
    except (InputError, NetpolcError) as err:
        print(f"netpolc: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("netpolc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
