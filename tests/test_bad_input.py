"""Bad input: a clear error with file, line and field, exit code 2, no traceback, nothing written.

Each case is a document and the (line, text) the error must contain.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from compiler.cli import main

NP_HEAD = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: x}
spec:
"""
CNP_HEAD = """\
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: c, namespace: x}
spec:
"""

CASES: list[tuple[str, str, int, str]] = [
    ("malformed yaml", "a: [1, 2\nb: c\n", 2, "YAML syntax error"),
    ("unknown kind", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", 1, "unknown kind 'Widget'"),
    (
        "wrong api version",
        "apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: p}\nspec: {}\n",
        1,
        "use networking.k8s.io",
    ),
    (
        "misspelled field",
        NP_HEAD + "  podSelector: {}\n  ingres: []\n",
        6,
        "spec.ingres: unknown field (did you mean 'ingress'?)",
    ),
    ("wrong type", NP_HEAD + "  podSelector: {}\n  ingress: {from: []}\n", 6, "spec.ingress"),
    ("missing podSelector", NP_HEAD + "  ingress: []\n", 4, "spec.podSelector: required field is missing"),
    (
        "invalid cidr",
        NP_HEAD + "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.300/8}\n",
        8,
        "invalid CIDR '10.0.0.300/8'",
    ),
    (
        "except outside cidr",
        NP_HEAD
        + "  podSelector: {}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}\n",
        8,
        "is not inside cidr",
    ),
    (
        "port out of range",
        NP_HEAD + "  podSelector: {}\n  ingress:\n  - ports: [{port: 70000}]\n",
        7,
        "port 70000 is out of range",
    ),
    (
        "endPort below port",
        NP_HEAD + "  podSelector: {}\n  ingress:\n  - ports: [{port: 90, endPort: 80}]\n",
        7,
        "endPort 80 is smaller than port 90",
    ),
    (
        "endPort with named port",
        NP_HEAD + "  podSelector: {}\n  ingress:\n  - ports: [{port: http, endPort: 80}]\n",
        7,
        "endPort may not be used with a named port",
    ),
    (
        "numeric string port",
        NP_HEAD + "  podSelector: {}\n  ingress:\n  - ports: [{port: '80'}]\n",
        7,
        "must contain a letter",
    ),
    (
        "bad selector operator",
        NP_HEAD + "  podSelector:\n    matchExpressions: [{key: a, operator: Contains, values: [b]}]\n",
        6,
        "operator",
    ),
    (
        "In without values",
        NP_HEAD + "  podSelector:\n    matchExpressions: [{key: a, operator: In}]\n",
        6,
        "needs a non-empty 'values'",
    ),
    ("bad label value", NP_HEAD + "  podSelector: {matchLabels: {app: 'a b'}}\n", 5, "invalid label value"),
    (
        "cilium combined L3",
        CNP_HEAD + "  endpointSelector: {}\n  ingress:\n  - fromEndpoints: [{}]\n    fromCIDR: [10.0.0.0/8]\n",
        7,
        "combining fromEndpoints and fromCIDR is not supported",
    ),
    (
        "cilium integer port",
        CNP_HEAD + "  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: 80}]}]\n",
        7,
        'port must be a string in CiliumNetworkPolicy (write "80")',
    ),
    (
        "cilium invalid regex",
        CNP_HEAD + "  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports: [{port: '80', protocol: TCP}]\n"
        "      rules: {http: [{path: '/a(['}]}\n",
        9,
        "is not a valid regex",
    ),
    (
        "cilium TLS interception (not modelled)",
        CNP_HEAD + "  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports: [{port: '443', protocol: TCP}]\n"
        "      terminatingTLS: {secret: {name: s}}\n",
        8,
        "terminatingTLS is not supported by netpolc",
    ),
    (
        "cilium lookahead regex",
        CNP_HEAD + "  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports: [{port: '80', protocol: TCP}]\n"
        "      rules: {http: [{path: '/(?!admin).*'}]}\n",
        9,
        "RE2 does not support",
    ),
    (
        "cilium L7 on UDP",
        CNP_HEAD + "  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports: [{port: '80', protocol: UDP}]\n"
        "      rules: {http: [{path: '/'}]}\n",
        7,
        "toPorts[0]: L7 http rules are only allowed on TCP",
    ),
    (
        "cilium kafka role and apiKey",
        CNP_HEAD + "  endpointSelector: {}\n  ingress:\n  - toPorts:\n    - ports: [{port: '9092', protocol: TCP}]\n"
        "      rules: {kafka: [{role: produce, apiKey: produce}]}\n",
        9,
        "role and apiKey may not be combined",
    ),
    ("cilium no selector", CNP_HEAD + "  ingress: [{}]\n", 4, "exactly one of endpointSelector and nodeSelector"),
    ("cilium no rules", CNP_HEAD + "  endpointSelector: {}\n", 4, "at least one of ingress"),
    (
        "cilium unknown entity",
        CNP_HEAD + "  endpointSelector: {}\n  egress:\n  - toEntities: [internet]\n",
        7,
        "toEntities",
    ),
    ("duplicate key", NP_HEAD + "  podSelector: {}\n  podSelector: {}\n", 6, "duplicate key 'podSelector'"),
    ("document is a list", "- a\n- b\n", 1, "expected a Kubernetes object"),
]


def run(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, Path]:
    path = tmp_path / "input.yaml"
    path.write_text(text)
    out = tmp_path / "out"
    code = main(["matrix", "-f", str(path), "--port", "80/TCP"])
    err = capsys.readouterr().err
    return code, err, out


@pytest.mark.parametrize(("name", "text", "line", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_reported_with_file_line_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, line: int, expected: str
) -> None:
    code, err, _ = run(tmp_path, textwrap.dedent(text), capsys)
    assert code == 2, err
    assert f"input.yaml:{line}:" in err, err
    assert expected in err, err
    assert "Traceback" not in err


def test_yaml_tags_are_never_evaluated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "apiVersion: v1\nkind: Pod\nmetadata: !!python/object/apply:os.system ['touch pwned']\n"
    code, err, _ = run(tmp_path, text, capsys)
    assert code == 2 and "input.yaml:3:" in err
    assert not Path("pwned").exists()


def test_alias_bombs_are_refused_quickly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bomb}\ndata:\n" + "\n".join("  " + x for x in lines) + "\n"
    )
    start = time.monotonic()
    code, err, _ = run(tmp_path, text, capsys)
    assert time.monotonic() - start < 5
    assert code == 2 and "alias bomb" in err


def test_oversized_input_is_refused_before_reading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("compiler.inputs.yamlload.MAX_INPUT_BYTES", 1000)
    code, err, _ = run(tmp_path, "# padding\n" * 200, capsys)
    assert code == 2 and "over the limit" in err


def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err, _ = run(tmp_path, "a: " + "[" * 50000 + "]" * 50000 + "\n", capsys)
    assert code == 2 and "Traceback" not in err


def test_all_errors_of_all_files_are_reported_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.yaml").write_text(NP_HEAD + "  podSelector: {}\n  ingres: []\n")
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: Widget\n")
    code = main(["matrix", "-f", str(tmp_path), "--port", "80/TCP"])
    err = capsys.readouterr().err
    assert code == 2
    assert "a.yaml:6:" in err and "b.yaml:1:" in err and "2 input error(s)" in err


def test_missing_file_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["matrix", "-f", str(tmp_path / "nope.yaml"), "--port", "80/TCP"])
    assert code == 2 and "no such file or directory" in capsys.readouterr().err


def test_duplicate_objects_name_both_places(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = NP_HEAD + "  podSelector: {}\n"
    (tmp_path / "a.yaml").write_text(doc + "---\n" + doc)
    code = main(["matrix", "-f", str(tmp_path / "a.yaml"), "--port", "80/TCP"])
    err = capsys.readouterr().err
    assert code == 2 and "defined twice (first at" in err


@pytest.mark.parametrize("port", ["80", "80/XTP", "0/TCP", "70000/UDP"])
def test_bad_port_option_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], port: str) -> None:
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n")
    code = main(["matrix", "-f", str(tmp_path / "a.yaml"), "--port", port])
    assert code == 2 and "--port" in capsys.readouterr().err
