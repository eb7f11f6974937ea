"""Run the lint rules over input files: load what can be loaded, report what cannot, never crash.

Files are loaded together (rules need the whole cluster). When some cannot be read, their errors
become findings (a rule that :attr:`~verifier.lint.rule.LintRule.claims` the message reports it,
otherwise NP001/NP002) and the remaining files are linted without them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache

from compiler.cluster import DEFAULT_CLUSTER_NAME, DEFAULT_NODE_IP, DEFAULT_POD_CIDR
from compiler.inputs import Inputs, load_inputs
from compiler.inputs.yamlload import expand_paths
from compiler.source import InputError, InputErrors, SourceRef
from verifier.lint.codes import CODES
from verifier.lint.config import LintConfig
from verifier.lint.context import LintContext, LintOptions
from verifier.lint.finding import Finding
from verifier.lint.rule import LintRule
from verifier.lint.suppress import suppressed


@cache
def all_rules() -> dict[str, type[LintRule]]:
    """Code → rule class, from the table in :mod:`verifier.lint.codes` (one rule per module)."""
    rules: dict[str, type[LintRule]] = {}
    for code, module_name in CODES.items():
        module = importlib.import_module(f"verifier.lint.rules.{module_name}")
        found = [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, LintRule)
            and obj is not LintRule
            and obj.__module__ == module.__name__
        ]
        if len(found) != 1 or found[0].code != code:
            raise RuntimeError(f"verifier/lint/rules/{module_name}.py must define exactly one rule with code {code}")
        rules[code] = found[0]
    return rules


@dataclass(frozen=True)
class LintResult:
    findings: tuple[Finding, ...]
    files: tuple[str, ...]  # every input file examined
    rules_run: tuple[str, ...]


@dataclass(frozen=True)
class LoadOptions:
    pod_cidrs: tuple[str, ...] = (DEFAULT_POD_CIDR,)
    node_ip: str = DEFAULT_NODE_IP
    cluster_name: str = DEFAULT_CLUSTER_NAME


def lint(
    paths: Sequence[str],
    options: LintOptions,
    config: LintConfig,
    load: LoadOptions | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> LintResult:
    """Lint the inputs at ``paths`` (files, directories, ``-``)."""
    load = load or LoadOptions()
    rules = {code: cls() for code, cls in all_rules().items()
             if config.enabled(code) and (not cls.opt_in or config.explicitly_selected(code))}
    files = expand_paths(list(paths))
    findings: list[Finding] = []
    inputs, load_findings = _load_what_loads(files, load, rules)
    findings.extend(load_findings)
    if inputs is not None:
        ctx = LintContext(inputs, options)
        for code, rule in sorted(rules.items()):
            progress(f"{code} {rule.name}")
            try:
                findings.extend(rule.check(ctx))
            except InputError as err:  # e.g. the IR refusing conflicting L7 parsers
                findings.append(_error_finding(err, rules))
        findings = [f for f in findings if not suppressed(f, inputs)]
    findings = [_with_severity(f, config) for f in findings if config.enabled(f.code)]
    return LintResult(tuple(sorted(set(findings))), tuple(files), tuple(sorted(rules)))


def _load_what_loads(
    files: list[str], load: LoadOptions, rules: dict[str, LintRule]
) -> tuple[Inputs | None, list[Finding]]:
    findings: list[Finding] = []
    remaining = list(files)
    while remaining:
        try:
            inputs = load_inputs(
                remaining, pod_cidrs=load.pod_cidrs, node_ip=load.node_ip, cluster_name=load.cluster_name
            )
            return inputs, findings
        except InputErrors as many:
            errors = many.errors
        except InputError as one:
            errors = [one]
        findings.extend(_error_finding(e, rules) for e in errors)
        bad = {e.source.file for e in errors if e.source is not None}
        if not bad & set(remaining):
            return None, findings  # an error not tied to one of the files: nothing left to lint
        remaining = [f for f in remaining if f not in bad]
    return None, findings


def _error_finding(err: InputError, rules: dict[str, LintRule]) -> Finding:
    """An input error as a finding: claimed by a specific rule, else NP001 (syntax) / NP002."""
    text = str(err.message)
    claimer = next((r for _, r in sorted(rules.items()) if r.claims is not None and r.claims.search(text)), None)
    if claimer is None:
        claimer = all_rules()["NP001" if text.startswith("YAML") else "NP002"]()
    where = err.source or SourceRef("-", 1)
    field = f"{err.field}: " if err.field else ""
    return claimer.finding(where, f"{field}{text}", policy=err.subject)


def _with_severity(finding: Finding, config: LintConfig) -> Finding:
    severity = config.severity.get(finding.code)
    if severity is None or severity is finding.severity:
        return finding
    from dataclasses import replace

    return replace(finding, severity=severity)


def rule_codes() -> Iterable[str]:
    return CODES.keys()
