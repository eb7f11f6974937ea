"""The pre-commit hooks and the GitHub Action, run act-style: their own command lines and shell
steps, read from ``.pre-commit-hooks.yaml`` and ``action.yml``, executed here in a scratch git
repository with a ``netpolc`` on PATH and a stand-in ``gh`` that records the pull-request comment.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_verify_targets import _drop_rule

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """``netpolc`` (this checkout) and a ``gh`` that logs what it is asked to post."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    netpolc = bin_ / "netpolc"
    netpolc.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m compiler.cli "$@"\n')
    gh = bin_ / "gh"
    gh.write_text('#!/bin/sh\necho "$@" >> "$GH_LOG"\nwhile [ $# -gt 0 ]; do\n'
                  '  if [ "$1" = --body-file ]; then cat "$2" >> "$GH_LOG"; fi; shift\ndone\n')
    for tool in (netpolc, gh):
        tool.chmod(0o755)
    return bin_


def _env(bin_dir: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "NETPOLC_QUIET": "1"}
    env.update(extra)
    return env


# --- pre-commit ----------------------------------------------------------------------------------

def _hook(hook_id: str) -> dict[str, Any]:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    return next(h for h in hooks if h["id"] == hook_id)  # type: ignore[no-any-return]


def test_pre_commit_verify_hook_proves_committed_artifacts(bin_dir: Path, tmp_path: Path) -> None:
    hook = _hook("netpolc-verify")
    assert hook["pass_filenames"] is False and hook["language"] == "python"
    out = tmp_path / "build"
    subprocess.run(["netpolc", "compile", "-f", str(SHOP), "-o", str(out)], env=_env(bin_dir), check=True,
                   capture_output=True)
    argv = [*shlex.split(hook["entry"]), "-f", str(SHOP), "--artifacts", str(out)]  # the README's args
    proved = subprocess.run(argv, env=_env(bin_dir), capture_output=True, text=True)
    assert proved.returncode == 0, proved.stdout + proved.stderr
    rules = out / "iptables" / "rules.v4"
    rules.write_text(_drop_rule(rules.read_text()))
    broken = subprocess.run(argv, env=_env(bin_dir), capture_output=True, text=True)
    assert broken.returncode == 1 and "COUNTEREXAMPLE" in broken.stdout


# --- the GitHub Action ---------------------------------------------------------------------------

def _step(step_id: str) -> dict[str, Any]:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    return next(s for s in action["runs"]["steps"] if s.get("id") == step_id)  # type: ignore[no-any-return]


def _resolve(value: str, context: dict[str, str]) -> str:
    """``${{ a || b }}`` with names from ``context`` (inputs.*, github.*), as the runner expands."""
    def expand(match: re.Match[str]) -> str:
        for option in match.group(1).split("||"):
            got = context.get(option.strip(), "")
            if got:
                return got
        return ""

    return re.sub(r"\$\{\{\s*(.*?)\s*\}\}", expand, str(value))


def _run_step(step: dict[str, Any], context: dict[str, str], cwd: Path, env: dict[str, str]) -> \
        subprocess.CompletedProcess[str]:
    step_env = {k: _resolve(v, context) for k, v in step.get("env", {}).items()}
    assert step["shell"] == "bash"
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=cwd, env={**env, **step_env}, capture_output=True,
                          text=True)


def _repo(tmp_path: Path) -> Path:
    """A repository whose ``main`` holds the shop example, with one policy edited in the work tree."""
    repo = tmp_path / "repo"
    shutil.copytree(SHOP, repo / "k8s", ignore=shutil.ignore_patterns("queries", "ports", "README.md"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*git, "add", "."], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=repo, check=True)
    ingress = repo / "k8s" / "ingress.yaml"
    text = ingress.read_text()
    changed = re.sub(r"port: (\d+)", lambda m: f"port: {int(m.group(1)) + 1}", text, count=1)
    assert changed != text
    ingress.write_text(changed)
    return repo


def test_action_verifies_diffs_against_the_base_and_comments_on_the_pull_request(bin_dir: Path,
                                                                                  tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    runner = tmp_path / "runner"
    runner.mkdir()
    output, summary, gh_log = runner / "output", runner / "summary", runner / "gh.log"
    env = _env(bin_dir, RUNNER_TEMP=str(runner), GITHUB_OUTPUT=str(output), GITHUB_STEP_SUMMARY=str(summary),
               GH_LOG=str(gh_log))
    context = {"inputs.paths": "k8s", "inputs.profile": "cilium", "inputs.platform": "", "inputs.verify": "true",
               "inputs.artifacts": "", "inputs.diff-path": "", "inputs.diff-base": "", "github.base_ref": "main",
               "github.token": "t", "github.event.pull_request.number": "7"}

    lint = _run_step(_step("lint"), context, repo, env)
    assert lint.returncode == 0, lint.stderr
    sarif = Path(re.findall(r"^sarif=(.*)$", output.read_text(), re.M)[-1])
    assert '"version": "2.1.0"' in sarif.read_text()

    report_step = _run_step(_step("report"), context, repo, env)
    assert report_step.returncode == 0, report_step.stdout + report_step.stderr
    report = Path(re.findall(r"^report=(.*)$", output.read_text(), re.M)[-1]).read_text()
    assert "### verify" in report and "**proved**" in report and "**counterexample**" not in report
    assert "### diff against main" in report and "→" in report  # the edited port changes flows
    assert summary.read_text() == report

    action = yaml.safe_load((ROOT / "action.yml").read_text())
    comment = next(s for s in action["runs"]["steps"] if s.get("name") == "Comment on the pull request")
    context["steps.report.outputs.report"] = str(runner / "netpolc-report.md")
    posted = _run_step(comment, context, repo, env)
    assert posted.returncode == 0, posted.stderr
    log = gh_log.read_text()
    assert log.startswith("pr comment 7 --body-file") and "### diff against main" in log


def test_action_fails_when_committed_artifacts_do_not_prove(bin_dir: Path, tmp_path: Path) -> None:
    repo = _repo(tmp_path)
    subprocess.run(["git", "checkout", "-q", "--", "."], cwd=repo, check=True)  # policies as compiled
    subprocess.run(["netpolc", "compile", "-f", "k8s", "-o", "build"], cwd=repo, env=_env(bin_dir), check=True,
                   capture_output=True)
    rules = repo / "build" / "iptables" / "rules.v4"
    rules.write_text(_drop_rule(rules.read_text()))
    runner = tmp_path / "runner"
    runner.mkdir()
    env = _env(bin_dir, RUNNER_TEMP=str(runner), GITHUB_OUTPUT=str(runner / "output"))
    context = {"inputs.paths": "k8s", "inputs.profile": "cilium", "inputs.verify": "true",
               "inputs.artifacts": "build", "inputs.diff-path": "", "inputs.diff-base": "", "github.base_ref": ""}
    result = _run_step(_step("report"), context, repo, env)
    assert result.returncode == 1
    assert "**counterexample**" in (runner / "netpolc-report.md").read_text()
