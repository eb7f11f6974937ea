"""One lint rule per module; the code table is :mod:`verifier.lint.codes`."""
