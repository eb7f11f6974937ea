"""Diff inputs: a path (file, directory, ``-``) or ``git:REV:PATH`` (that path as of a revision).

``git:REV:PATH`` is materialised into a temporary directory with ``git archive`` so that the
loader sees ordinary files; error messages name ``git:REV:PATH/...`` rather than the temporary copy.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from compiler.source import NetpolcError


class SourceSpecError(NetpolcError):
    """A ``git:REV:PATH`` that cannot be read."""


@contextmanager
def materialize(spec: str) -> Iterator[str]:
    """A local path holding the inputs ``spec`` names (removed afterwards for git specs)."""
    if not spec.startswith("git:"):
        yield spec
        return
    rev, sep, path = spec[4:].partition(":")
    if not sep or not rev:
        raise SourceSpecError(f"{spec}: expected git:REV:PATH (e.g. git:origin/main:policies/)")
    if shutil.which("git") is None:
        raise SourceSpecError(f"{spec}: git is not installed")
    path = path.strip("/") or "."
    proc = subprocess.run(["git", "archive", "--format=tar", rev, "--", path], capture_output=True, check=False)
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SourceSpecError(f"{spec}: {message[-1] if message else 'git archive failed'}")
    tmp = Path(tempfile.mkdtemp(prefix="netpolc-diff-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
            tar.extractall(tmp, filter="data")
        yield str(tmp / path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
