"""netpolc lint: every rule fires on its fixture and stays silent on its near-misses; outputs and config.

Fixtures live in tests/lint_fixtures/<CODE>/{fires,quiet}.yaml and are linted together with
tests/lint_fixtures/_cluster.yaml. In ``fires.yaml`` every line marked ``# expect`` must carry a
finding of that code and no other line may; ``quiet.yaml`` must produce none. A first line
``# lint-options: ...`` passes extra command-line options.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import jsonschema
import pytest

from compiler.cli import main
from verifier.lint.codes import CODES
from verifier.lint.docs import DOCS_DIR, generated
from verifier.lint.engine import all_rules
from verifier.lint.rule import SECTIONS

FIXTURES = Path(__file__).parent / "lint_fixtures"
CLUSTER = FIXTURES / "_cluster.yaml"
SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"


def run_lint(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["lint", *argv])
    return code, capsys.readouterr().out


def lint_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, object]]]:
    code, out = run_lint(capsys, *argv, "--format", "json")
    return code, json.loads(out)


def _options(path: Path) -> list[str]:
    first = path.read_text().splitlines()[0]
    return shlex.split(first.removeprefix("# lint-options:")) if first.startswith("# lint-options:") else []


def _expected_lines(path: Path) -> set[int]:
    return {i for i, line in enumerate(path.read_text().splitlines(), 1) if line.rstrip().endswith("# expect")}


@pytest.mark.parametrize("code", sorted(CODES))
def test_rule_fires_on_its_fixture_exactly_where_marked(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    fires = FIXTURES / code / "fires.yaml"
    assert fires.is_file(), f"rule {code} has no fixture {fires}"
    _, findings = lint_json(capsys, "-f", str(CLUSTER), "-f", str(fires), "--select", code, *_options(fires))
    got = {int(str(f["line"])) for f in findings if f["code"] == code and f["file"] == str(fires)}
    assert got == _expected_lines(fires), findings
    assert all(f["file"] == str(fires) for f in findings), findings


@pytest.mark.parametrize("code", sorted(CODES))
def test_rule_is_silent_on_its_near_misses(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    quiet = FIXTURES / code / "quiet.yaml"
    assert quiet.is_file(), f"rule {code} has no near-miss fixture {quiet}"
    _, findings = lint_json(capsys, "-f", str(CLUSTER), "-f", str(quiet), "--select", code, *_options(quiet))
    assert findings == []


def test_fixture_cluster_itself_lints_clean(capsys: pytest.CaptureFixture[str]) -> None:
    code, findings = lint_json(capsys, "-f", str(CLUSTER))
    assert (code, findings) == (0, [])


def test_every_rule_is_documented_with_the_fixed_sections() -> None:
    for code, rule in all_rules().items():
        sections = rule.sections()
        assert all(sections.get(s) for s in SECTIONS), f"{code} lacks a docstring section"
        assert rule.code == code and rule.name == rule.name.lower()


def test_committed_rule_docs_are_up_to_date() -> None:
    wanted = generated()
    committed = {p.name: p.read_text() for p in DOCS_DIR.glob("*.md")}
    assert committed == wanted, "docs/rules is stale: run `python -m verifier.lint.docs`"


def test_rule_names_are_unique() -> None:
    names = [r.name for r in all_rules().values()]
    assert len(names) == len(set(names))


def test_sarif_output_is_valid_sarif_2_1_0(capsys: pytest.CaptureFixture[str]) -> None:
    _, out = run_lint(capsys, "-f", str(CLUSTER), "-f", str(FIXTURES / "NP204" / "fires.yaml"), "--format", "sarif")
    doc = json.loads(out)
    jsonschema.validate(doc, json.loads(SARIF_SCHEMA.read_text()))
    results = doc["runs"][0]["results"]
    assert {r["ruleId"] for r in results} == {"NP204"}
    rules = doc["runs"][0]["tool"]["driver"]["rules"]
    assert all(rules[r["ruleIndex"]]["id"] == r["ruleId"] for r in results)


def test_json_output_has_every_field(capsys: pytest.CaptureFixture[str]) -> None:
    _, findings = lint_json(capsys, "-f", str(CLUSTER), "-f", str(FIXTURES / "NP203" / "fires.yaml"))
    assert findings
    keys = {"code", "name", "message", "severity", "file", "line", "column", "end", "policy", "fix", "url"}
    assert all(set(f) == keys for f in findings)
    assert findings[0]["url"] == "https://github.com/netpolc/netpolc/blob/main/docs/rules/NP203.md"


def test_github_output_is_workflow_commands(capsys: pytest.CaptureFixture[str]) -> None:
    fixture = FIXTURES / "NP201" / "fires.yaml"
    code, out = run_lint(capsys, "-f", str(CLUSTER), "-f", str(fixture), "--format", "github")
    assert code == 1
    (line,) = out.splitlines()
    assert line.startswith(f"::error file={fixture},line=8,col=1,title=NP201 except-outside-cidr::")


def test_text_output_shows_the_source_line_with_a_caret(capsys: pytest.CaptureFixture[str]) -> None:
    _, out = run_lint(capsys, "-f", str(CLUSTER), "-f", str(FIXTURES / "NP304" / "fires.yaml"))
    assert "NP304 [warning]" in out and "7 |     - {}  # expect" in out and "^" in out


def test_exit_code_is_1_only_for_error_findings(capsys: pytest.CaptureFixture[str]) -> None:
    warning_only = FIXTURES / "NP203" / "fires.yaml"
    assert run_lint(capsys, "-f", str(CLUSTER), "-f", str(warning_only))[0] == 0
    assert run_lint(capsys, "-f", str(CLUSTER), "-f", str(FIXTURES / "NP202" / "fires.yaml"))[0] == 1


def test_bad_files_become_findings_and_the_other_files_are_still_linted(capsys: pytest.CaptureFixture[str]) -> None:
    code, findings = lint_json(
        capsys,
        "-f",
        str(CLUSTER),
        "-f",
        str(FIXTURES / "NP001" / "fires.yaml"),
        "-f",
        str(FIXTURES / "NP203" / "fires.yaml"),
    )
    assert code == 1
    assert {f["code"] for f in findings} == {"NP001", "NP203"}


def test_select_and_ignore_by_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    fixture = str(FIXTURES / "NP301" / "fires.yaml")
    _, findings = lint_json(capsys, "-f", str(CLUSTER), "-f", fixture, "--select", "NP3", "--ignore", "NP301")
    assert [f for f in findings if f["code"] == "NP301"] == []
    _, findings = lint_json(capsys, "-f", str(CLUSTER), "-f", fixture, "--select", "NP301")
    assert findings and {f["code"] for f in findings} == {"NP301"}


def test_unknown_code_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lint", "-f", str(CLUSTER), "--select", "XX9"]) == 2
    assert "not a rule code" in capsys.readouterr().err


def test_config_file_selects_and_overrides_severity(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / ".netpolc.toml"
    config.write_text('select = ["NP2"]\nignore = ["NP204"]\n[severity]\nNP203 = "error"\n')
    both = [
        "-f",
        str(CLUSTER),
        "-f",
        str(FIXTURES / "NP203" / "fires.yaml"),
        "-f",
        str(FIXTURES / "NP204" / "fires.yaml"),
    ]
    code, findings = lint_json(capsys, *both, "--config", str(config))
    assert code == 1
    assert {(f["code"], f["severity"]) for f in findings} == {("NP203", "error")}


def test_pyproject_tool_table_is_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "pyproject.toml"
    config.write_text('[tool.netpolc]\nplatform = "aks-managed"\nselect = ["NP4"]\n')
    _, findings = lint_json(
        capsys, "-f", str(CLUSTER), "-f", str(FIXTURES / "NP401" / "fires.yaml"), "--config", str(config)
    )
    assert [f["code"] for f in findings] == ["NP401"]


def test_bad_config_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / ".netpolc.toml"
    config.write_text('selekt = ["NP2"]\n')
    assert main(["lint", "-f", str(CLUSTER), "--config", str(config)]) == 2
    assert "unknown key(s) selekt" in capsys.readouterr().err


def test_annotation_suppresses_findings_for_that_policy_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    annotated = FIXTURES / "NP301" / "quiet.yaml"  # its web-public policy carries netpolc.io/ignore: NP301
    _, findings = lint_json(capsys, "-f", str(CLUSTER), "-f", str(annotated), "--select", "NP301")
    assert findings == []
    bare = tmp_path / "bare.yaml"
    bare.write_text(annotated.read_text().replace(', annotations: {netpolc.io/ignore: "NP301"}', ""))
    _, findings = lint_json(capsys, "-f", str(CLUSTER), "-f", str(bare), "--select", "NP301")
    assert [f["policy"] for f in findings] == ["NetworkPolicy other/web-public"]


@pytest.mark.parametrize(
    "example", sorted(p.name for p in (Path(__file__).parent.parent / "examples").iterdir() if p.is_dir())
)
def test_examples_have_no_error_findings(example: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = Path(__file__).parent.parent / "examples" / example
    code, findings = lint_json(capsys, "-f", str(root))
    assert code == 0
    assert all(f["severity"] != "error" for f in findings)


ROOT = Path(__file__).parent.parent


def test_pre_commit_hook_runs_lint_on_the_staged_files(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    hook = next(h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text()) if h["id"] == "netpolc-lint")
    assert hook["language"] == "python"
    argv = shlex.split(hook["entry"])
    assert argv[0] == "netpolc"
    staged = [str(ROOT / "examples" / "shop" / "cluster.yaml"), str(ROOT / "examples" / "shop" / "egress.yaml")]
    assert main([*argv[1:], *staged]) == 0  # pre-commit appends the file names
    capsys.readouterr()


def test_github_action_runs_lint_with_options_netpolc_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    script = next(s["run"] for s in action["runs"]["steps"] if s.get("id") == "lint")
    assert "--format sarif" in script and "--format github" in script
    code, out = run_lint(capsys, "--profile", "cilium", "--format", "sarif", str(ROOT / "examples" / "shop"))
    assert code == 0 and json.loads(out)["version"] == "2.1.0"
