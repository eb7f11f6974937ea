"""NP202: a Kafka rule with both ``role`` and ``apiKey``."""

from __future__ import annotations

import re
from typing import ClassVar

from verifier.lint.finding import Severity
from verifier.lint.rule import LintRule


class KafkaRoleWithApiKey(LintRule):
    """A Kafka L7 rule sets both `role` and `apiKey`.

    ## What it does
    Flags `rules.kafka` entries that combine `role` (produce/consume) with `apiKey`.

    ## Why is this bad?
    Cilium rejects the combination: `role` is a shorthand for a set of api keys, so the two
    contradict each other and the policy is not imported.

    ## Example
    ```yaml
    rules:
      kafka:
        - role: produce
          apiKey: fetch
          topic: orders
    ```

    ## Use instead
    ```yaml
    rules:
      kafka:
        - role: produce
          topic: orders
    ```
    """

    code = "NP202"
    name = "kafka-role-with-api-key"
    severity: ClassVar[Severity] = Severity.ERROR
    claims: ClassVar[re.Pattern[str] | None] = re.compile(r"role and apiKey may not be combined")
