"""NP207: L7 rules on a UDP/SCTP port."""

from __future__ import annotations

import re
from typing import ClassVar

from verifier.lint.finding import Severity
from verifier.lint.rule import LintRule


class L7RulesOnNonTcpPort(LintRule):
    """HTTP or Kafka rules are attached to a port that is not TCP.

    ## What it does
    Flags `toPorts` entries whose `rules` (http, kafka) apply to UDP or SCTP ports.

    ## Why is this bad?
    Cilium's proxies parse TCP streams only; Cilium refuses the rule, so the L7 restriction you
    wrote is never applied.

    ## Example
    ```yaml
    toPorts:
      - ports: [{port: "8080", protocol: UDP}]
        rules: {http: [{method: GET}]}
    ```

    ## Use instead
    ```yaml
    toPorts:
      - ports: [{port: "8080", protocol: TCP}]
        rules: {http: [{method: GET}]}
    ```
    """

    code = "NP207"
    name = "l7-rules-on-non-tcp-port"
    severity: ClassVar[Severity] = Severity.ERROR
    claims: ClassVar[re.Pattern[str] | None] = re.compile(r"L7 \w+ rules are only allowed on TCP")
