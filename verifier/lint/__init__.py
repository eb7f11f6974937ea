"""``netpolc lint``: coded rules over policies and clusters, for CI (DESIGN.md §6, issue 7).

- :mod:`verifier.lint.codes` — the table of codes; :mod:`verifier.lint.rules` — one rule per file;
- :mod:`verifier.lint.engine` — loads inputs (bad files become findings), runs the rules;
- :mod:`verifier.lint.render` — text, JSON, SARIF 2.1.0 and GitHub workflow-command output;
- :mod:`verifier.lint.config` — ``[tool.netpolc]`` / ``.netpolc.toml``, ``--select``/``--ignore``;
- :mod:`verifier.lint.suppress` — the ``netpolc.io/ignore`` annotation;
- :mod:`verifier.lint.docs` — ``docs/rules/`` generated from the rules' docstrings.
"""
