"""Stored API keys: create, list, revoke, look up by public id.

Only a salted hash of each secret is stored (see :mod:`barfill.domain.apikeys`);
the full key is shown once, when created, and never again.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from barfill.domain.apikeys import Scope, format_key, hash_secret, parse_scopes
from barfill.errors import InvalidInput
from barfill.store.db import db_now
from barfill.store.schema import api_keys


@dataclass(frozen=True)
class ApiKey:
    """A stored key without its secret. Times: database-clock Unix seconds."""

    id: int
    key_id: str
    name: str
    scopes: tuple[Scope, ...]
    created_at: float
    revoked_at: float | None
    salt: str
    secret_hash: str

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def create_key(conn: Connection, name: str, scopes: str | list[str]) -> tuple[ApiKey, str]:
    """Create a key; returns the stored row and the full key (shown once, never stored).

    Raises:
        InvalidInput: for an empty or over-long name, or unknown scopes.
    """
    name = name.strip()
    if not 0 < len(name) <= 64:
        raise InvalidInput("name", "1 to 64 characters", name)
    granted = parse_scopes(scopes)
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    new_id = conn.execute(
        sa.insert(api_keys)
        .values(
            key_id=key_id,
            name=name,
            scopes=",".join(granted),
            salt=salt,
            secret_hash=hash_secret(salt, secret),
            created_at=db_now(conn),
        )
        .returning(api_keys.c.id)
    ).scalar_one()
    row = get_key(conn, key_id)
    assert row is not None and row.id == new_id
    return row, format_key(key_id, secret)


def _key(row: sa.Row[tuple[object, ...]]) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=int(m["id"]),
        key_id=str(m["key_id"]),
        name=str(m["name"]),
        scopes=parse_scopes(str(m["scopes"])),
        created_at=float(m["created_at"]),
        revoked_at=None if m["revoked_at"] is None else float(m["revoked_at"]),
        salt=str(m["salt"]),
        secret_hash=str(m["secret_hash"]),
    )


def get_key(conn: Connection, key_id: str) -> ApiKey | None:
    row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).one_or_none()
    return None if row is None else _key(row)


def list_keys(conn: Connection) -> list[ApiKey]:
    return [_key(r) for r in conn.execute(sa.select(api_keys).order_by(api_keys.c.id))]


def active_key_count(conn: Connection) -> int:
    query = sa.select(sa.func.count()).select_from(api_keys).where(api_keys.c.revoked_at.is_(None))
    return int(conn.execute(query).scalar_one())


def revoke_key(conn: Connection, key_id: str) -> bool:
    """Revoke by public id (or name); True if a valid key was revoked."""
    result = conn.execute(
        sa.update(api_keys)
        .where(
            sa.or_(api_keys.c.key_id == key_id, api_keys.c.name == key_id), api_keys.c.revoked_at.is_(None)
        )
        .values(revoked_at=db_now(conn))
    )
    return int(result.rowcount) > 0
