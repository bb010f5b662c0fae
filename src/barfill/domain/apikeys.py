"""API keys: their format, how a secret is hashed and checked, and what each scope allows.

A key reads ``bfk_<key_id>_<secret>``. ``key_id`` (12 hex characters) is the
public handle shown by ``barfill keys list`` and used to find the stored row;
``secret`` is never stored, only ``sha256(salt || secret)`` with a per-key
random salt, and a presented secret is checked with a constant-time
comparison. Keys are 256-bit random, so a fast salted hash is enough (no
password stretching is needed for a secret nobody chose).

Scopes nest: ``admin`` implies ``write`` implies ``read``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from enum import StrEnum

from barfill.errors import InvalidInput

PREFIX = "bfk"
_KEY = re.compile(r"^bfk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,128})$")


class Scope(StrEnum):
    read = "read"
    write = "write"
    admin = "admin"


_RANK = {Scope.read: 0, Scope.write: 1, Scope.admin: 2}


def parse_scopes(text: str | list[str]) -> tuple[Scope, ...]:
    """``"read,write"`` (or a list) → scopes, in rank order, without duplicates.

    Raises:
        InvalidInput: for an empty list or an unknown scope.
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [s.strip() for s in items if s.strip()]
    try:
        scopes = {Scope(s) for s in names}
    except ValueError:
        raise InvalidInput("scopes", "some of read, write, admin", ",".join(names)) from None
    if not scopes:
        raise InvalidInput("scopes", "at least one of read, write, admin", ",".join(names))
    return tuple(sorted(scopes, key=_RANK.__getitem__))


def allows(granted: tuple[Scope, ...], needed: Scope) -> bool:
    """Whether a key with ``granted`` scopes may do what needs ``needed`` (scopes nest)."""
    return any(_RANK[g] >= _RANK[needed] for g in granted)


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}_{key_id}_{secret}"


def split_key(text: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, or None (never echo what was sent)."""
    m = _KEY.match(text.strip())
    return None if m is None else (m.group(1), m.group(2))


def hash_secret(salt_hex: str, secret: str) -> str:
    """Hex sha256 of the salt bytes followed by the secret's UTF-8 bytes."""
    return hashlib.sha256(bytes.fromhex(salt_hex) + secret.encode()).hexdigest()


def check_secret(salt_hex: str, stored_hash: str, secret: str) -> bool:
    """Constant-time comparison of a presented secret against the stored hash."""
    return hmac.compare_digest(hash_secret(salt_hex, secret), stored_hash)
