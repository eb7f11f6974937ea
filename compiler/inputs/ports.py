"""Port numbers and named ports as Kubernetes and Cilium validate them."""

from __future__ import annotations

import re

_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def check_port_name(name: str) -> str:
    """An IANA service name: 1-15 lowercase alphanumerics or '-', with a letter, no '--' or edge '-'."""
    if not (1 <= len(name) <= 15) or not _IANA_SVC_NAME.match(name) or "--" in name:
        raise ValueError(
            f"invalid named port {name!r}: 1-15 lowercase letters, digits or '-', not starting or ending with '-'"
        )
    if not any(c.isalpha() for c in name):
        raise ValueError(f"invalid named port {name!r}: must contain a letter (a number must be an integer)")
    return name


def check_port_number(port: int, *, allow_zero: bool = False) -> int:
    low = 0 if allow_zero else 1
    if not (low <= port <= 65535):
        raise ValueError(f"port {port} is out of range {low}-65535")
    return port
