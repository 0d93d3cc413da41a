"""Ownership of what a key creates (datasets, jobs, and later evaluations).

A row's `owner` is the id of the API key that created it (`key_...` for stored keys,
`env:<12 hex of sha256(key)>` for TAILOR_API_KEYS keys, both stable across restarts),
`local` when auth is off, and `admin` for rows that predate ownership (migration 0003).
Non-admin keys see only their own rows; admin keys see all (app.core.ownership).
Every owned table mixes in `Owned` and scopes its idempotency keys by owner, so one key's
Idempotency-Key can never replay another key's row.
"""

from __future__ import annotations

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

# Owner of rows written before ownership existed, and of any row inserted without one:
# failing closed, such rows are visible to admin keys only. Migration 0003 repeats the
# literal (migrations never import the models they migrate).
ADMIN_OWNER = "admin"
# Owner of everything created while auth is off (no keys configured; loopback only).
LOCAL_OWNER = "local"
OWNER_LENGTH = 40  # fits every key id: api_keys.id is String(40), env ids are 16 chars


class Owned:
    """Mixin: an indexed, non-null `owner` column (the creating key's id)."""

    owner: Mapped[str] = mapped_column(String(OWNER_LENGTH), index=True,
                                       server_default=ADMIN_OWNER)


def idempotency_unique(table: str) -> UniqueConstraint:
    """The (owner, idempotency_key) uniqueness every owned table declares."""
    return UniqueConstraint("owner", "idempotency_key", name=f"uq_{table}_owner_idempotency_key")
