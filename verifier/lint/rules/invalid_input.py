"""NP002: an object the API server (or Cilium) would refuse."""

from __future__ import annotations

from typing import ClassVar

from verifier.lint.finding import Severity
from verifier.lint.rule import LintRule


class InvalidInput(LintRule):
    """An object fails validation: unknown kind or field, wrong type, bad CIDR, port or selector.

    ## What it does
    Reports every input error the loader finds (file, line and field), unless a more specific rule
    covers it (for example NP201 for an `except` outside its CIDR).

    ## Why is this bad?
    The API server rejects the object, or Cilium refuses to import the policy and logs an error:
    the policy you reviewed is not the policy that runs.

    ## Example
    ```yaml
    ports:
      - port: 80
        endPort: 70
    ```

    ## Use instead
    ```yaml
    ports:
      - port: 70
        endPort: 80
    ```
    """

    code = "NP002"
    name = "invalid-input"
    severity: ClassVar[Severity] = Severity.ERROR
