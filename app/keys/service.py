"""API keys: create (the secret is returned once, only its sha256 is kept), list, revoke."""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.db import lock_row
from app.core.errors import NotFound
from app.core.security import hash_key
from app.models import ApiKey
from app.models.base import new_id, utcnow

KEY_PREFIX = "tlr_"  # makes a leaked Tailor key easy to recognise in logs and secret scanners
KEY_BYTES = 32
SHOWN_PREFIX_CHARS = 10


def create_key(*, db: Session, name: str, scopes: list[str],
               created_by: str | None) -> tuple[ApiKey, str]:
    """Create a key; return the row and the secret (which is not stored anywhere)."""
    secret = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    row = ApiKey(id=new_id("key"), name=name, prefix=secret[:SHOWN_PREFIX_CHARS],
                 key_hash=hash_key(secret), scopes=sorted(set(scopes)), created_by=created_by)
    db.add(row)
    db.flush()
    return row, secret


def list_keys(*, db: Session) -> list[ApiKey]:
    """All stored keys, newest first, revoked ones included."""
    return list(db.scalars(select(ApiKey).order_by(ApiKey.created_at.desc(), ApiKey.id)))


def revoke_key(*, db: Session, key_id: str) -> ApiKey:
    """Revoke a key at once (idempotent: revoking twice keeps the first time)."""
    row = lock_row(db, ApiKey, key_id)
    if row is None:
        raise NotFound(f"no API key with id {key_id!r}", code="key_not_found")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        db.flush()
    return row
