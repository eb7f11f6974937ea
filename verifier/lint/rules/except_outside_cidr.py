"""NP201: an ipBlock/CIDR ``except`` that is not inside its CIDR."""

from __future__ import annotations

import re
from typing import ClassVar

from verifier.lint.finding import Severity
from verifier.lint.rule import LintRule


class ExceptOutsideCidr(LintRule):
    """An `except` entry is not contained in the `cidr` it carves out of.

    ## What it does
    Flags `ipBlock.except` (NetworkPolicy) and `toCIDRSet`/`fromCIDRSet` `except` entries that are
    not subnets of their `cidr`.

    ## Why is this bad?
    The API server rejects such a NetworkPolicy and Cilium refuses the rule; usually the except was
    meant for another block, so the exclusion you intended does not exist.

    ## Example
    ```yaml
    ipBlock:
      cidr: 10.0.0.0/16
      except: [10.1.0.0/24]
    ```

    ## Use instead
    ```yaml
    ipBlock:
      cidr: 10.0.0.0/16
      except: [10.0.1.0/24]
    ```
    """

    code = "NP201"
    name = "except-outside-cidr"
    severity: ClassVar[Severity] = Severity.ERROR
    claims: ClassVar[re.Pattern[str] | None] = re.compile(r"except .* is not (inside|contained in) cidr")
