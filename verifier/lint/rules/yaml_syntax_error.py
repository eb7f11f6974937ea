"""NP001: an input file is not valid YAML."""

from __future__ import annotations

from typing import ClassVar

from verifier.lint.finding import Severity
from verifier.lint.rule import LintRule


class YamlSyntaxError(LintRule):
    """An input file cannot be parsed as YAML.

    ## What it does
    Reports YAML syntax errors (and inputs refused as YAML: alias bombs, excessive nesting,
    oversized files) with the line and column the parser stopped at.

    ## Why is this bad?
    `kubectl apply` refuses the file, so none of the objects in it exist in the cluster; the other
    files are still linted without it.

    ## Example
    ```yaml
    spec:
      podSelector: {matchLabels: {app: api}
    ```

    ## Use instead
    ```yaml
    spec:
      podSelector: {matchLabels: {app: api}}
    ```
    """

    code = "NP001"
    name = "yaml-syntax-error"
    severity: ClassVar[Severity] = Severity.ERROR
