"""Stable, length-limited names for our chains and ipsets, with collisions detected, never merged.

Limits (shared/reference/iptables.md §1.1, §1.5, §5.1): chain names at most 28 characters
(``XT_EXTENSION_MAXNAMELEN`` - 1), ipset names at most 31. Every name starts with ``NPC`` so our
objects are recognisable beside Calico's ``cali-``, kube-router's ``KUBE-`` and Cilium's ``CILIUM_``.

Names come from what a chain or set *means*, never from its position in the output, so adding or
removing unrelated objects does not rename anything:

- endpoint chains and identity sets carry the identity number (stable by construction, DESIGN §3):
  ``NPC-I-4711`` / ``NPC-E-4711``, set ``NPC4-id-4711``;
- policy chains and peer sets carry a readable slug plus base32(SHA-256(canonical key)) cut to fit,
  after Calico's ``GetLengthLimitedID`` and kube-router's base32 suffixes (§1.1, §2.1):
  ``NPC-PI-allow-api-5KQ2N3MZ4T``, ``NPC4-p-K3JX0Q7D3W2ZP4AB``.

Two different keys that end up with the same name are a collision; :class:`Namer` reports it
through the callback (the target's ``unsupported``) and keeps the first owner.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

MAX_CHAIN = 28
MAX_SET = 31
HASH_CHARS = 8
_SLUG = re.compile(r"[^A-Za-z0-9]+")


def digest(key: str, length: int) -> str:
    """``length`` characters of base32(SHA-256(key)), upper case, no padding."""
    return base64.b32encode(hashlib.sha256(key.encode()).digest()).decode()[:length]


def slug(text: str, length: int) -> str:
    """A readable fragment: runs of other characters become ``-``, cut to ``length``."""
    return _SLUG.sub("-", text).strip("-")[:length].strip("-")


class Namer:
    """Hands out names for (kind, key) pairs and reports two keys sharing one name."""

    def __init__(self, on_collision: Callable[[str, str, str], None]) -> None:
        self._owner: dict[str, str] = {}
        self._on_collision = on_collision

    def claim(self, name: str, key: str, limit: int) -> str:
        """Register ``name`` for ``key``; a name over ``limit`` or owned by another key is reported."""
        if len(name) > limit:
            self._on_collision(name, key, f"name {name!r} is longer than {limit} characters")
        owner = self._owner.setdefault(name, key)
        if owner != key:
            self._on_collision(name, key, f"name {name!r} of {key!r} collides with {owner!r}")
        return name

    def chain(self, prefix: str, readable: str, key: str) -> str:
        """``prefix`` + slug of ``readable`` + ``-`` + hash, at most 28 characters."""
        room = MAX_CHAIN - len(prefix) - HASH_CHARS - 1
        part = slug(readable, room)
        name = f"{prefix}{part}-{digest(key, HASH_CHARS)}" if part else f"{prefix}{digest(key, HASH_CHARS)}"
        return self.claim(name, key, MAX_CHAIN)

    def fixed(self, name: str, key: str, limit: int = MAX_CHAIN) -> str:
        """A name that is already meaningful and short (identity chains, top-level chains)."""
        return self.claim(name, key, limit)

    def hashed_set(self, prefix: str, key: str) -> str:
        """``prefix`` + as much hash as fits in 31 characters (at least 16)."""
        return self.claim(f"{prefix}{digest(key, max(16, MAX_SET - len(prefix)))}", key, MAX_SET)
