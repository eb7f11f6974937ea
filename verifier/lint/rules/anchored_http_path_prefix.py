"""NP210: an HTTP ``path`` that reads like a prefix but is matched as a whole-path regex."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import ClassVar

from verifier.lint.context import LintContext
from verifier.lint.finding import Finding, Severity
from verifier.lint.rule import LintRule
from verifier.lint.walk import cilium_items

_REGEX_CHARS = re.compile(r"[.*+?()\[\]{}|^$\\]")
_PREFIX_WORDS = frozenset({"api", "apis", "v1", "v2", "v3", "static", "assets", "public", "admin", "internal"})


class AnchoredHttpPathPrefix(LintRule):
    """An HTTP rule's `path` looks like a prefix (`/api`) but only matches that exact path.

    ## What it does
    Flags literal paths (no regex syntax) that end in `/`, or whose last segment is a typical
    prefix (`api`, `v1`, `static`, ...), or that are a prefix of another path used in the inputs.

    ## Why is this bad?
    Cilium hands `path` to Envoy as a regular expression matched against the *whole* path, so
    `/api` allows `GET /api` and nothing under it; requests to `/api/users` are denied with 403.

    ## Example
    ```yaml
    rules:
      http:
        - method: GET
          path: /api
    ```

    ## Use instead
    ```yaml
    rules:
      http:
        - method: GET
          path: /api/.*
    ```
    """

    code = "NP210"
    name = "anchored-http-path-prefix"
    severity: ClassVar[Severity] = Severity.WARNING

    def check(self, ctx: LintContext) -> Iterator[Finding]:
        rules = []
        for item in cilium_items(ctx):
            for p, port_rule in enumerate(item.item.toPorts or []):
                for h, http in enumerate((port_rule.rules.http or []) if port_rule.rules else []):
                    if http.path:
                        rules.append((item, f"{item.path}.toPorts[{p}].rules.http[{h}]", http))
        paths = [http.path for _, _, http in rules if http.path]
        for item, path, http in rules:
            value = http.path or ""
            if value == "/" or _REGEX_CHARS.search(value):
                continue
            last = value.rstrip("/").rsplit("/", 1)[-1]
            longer = any(o != value and o.startswith(value.rstrip("/") + "/") for o in paths)
            if not ((value.endswith("/") and value != "/") or last.lower() in _PREFIX_WORDS or longer):
                continue
            base = value.rstrip("/")
            yield self.finding(
                http.line_of("path"),
                f"{path}: path {value!r} is a whole-path regex: it matches only {value!r}, not the paths under it",
                fix=f"write {base + '/.*'!r} for everything under it (or {base + '(/.*)?'!r} to include {base!r})",
                policy=item.policy.display,
            )
