"""API keys and scopes. Keys come from TAILOR_API_KEYS (bootstrap, hashed in memory) and from
the api_keys table (created and revoked through /keys, stored as sha256). With neither, auth
is off and Settings keeps the API on loopback.

Scopes nest: `admin` holds every scope, `train` also holds `classify` (a trainer tries what it
trained). A principal's `key_id` is who owns what it creates (app.models.owned): the stored
key's id, `env:` plus the first 12 hex digits of an env key's sha256 (so it survives
restarts; the key itself is never stored), or `local` while auth is off.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from fastapi import Request
from sqlalchemy import select

from app.core.config import get_settings
from app.core.db import session_scope
from app.core.errors import Forbidden, Unauthorized
from app.models import ApiKey
from app.models.owned import LOCAL_OWNER

SCOPES = ("classify", "train", "admin")
# What each scope grants (DESIGN.md section 3: a bare key has every scope).
GRANTS: dict[str, frozenset[str]] = {"classify": frozenset({"classify"}),
                                     "train": frozenset({"train", "classify"}),
                                     "admin": frozenset(SCOPES)}
ENV_ID_HEX = 12  # 48 bits of the key's sha256: unique among a handful of bootstrap keys


@dataclass(frozen=True)
class Principal:
    """Who is calling: `key_id` owns what it creates; `scopes` as configured for the key."""

    key_id: str
    scopes: frozenset[str]

    def holds(self, scope: str) -> bool:
        """Say whether any of the key's scopes grants `scope`."""
        return any(scope in GRANTS.get(s, frozenset()) for s in self.scopes)

    @property
    def sees_all(self) -> bool:
        """Admin keys see every owner's datasets and jobs."""
        return "admin" in self.scopes

    def may_see(self, owner: str) -> bool:
        """Say whether a row owned by `owner` exists for this principal."""
        return self.sees_all or owner == self.key_id


# With auth off everything belongs to one local owner, which holds every scope.
LOCAL = Principal(key_id=LOCAL_OWNER, scopes=frozenset(SCOPES))


def hash_key(key: str) -> str:
    """Return the sha256 hex digest under which a key is remembered (never the key itself)."""
    return hashlib.sha256(key.encode()).hexdigest()


@lru_cache
def _env_keys(raw: str) -> dict[str, frozenset[str]]:
    keys: dict[str, frozenset[str]] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, _, scope_text = item.partition(":")
        scopes = frozenset(s for s in scope_text.split("+") if s) or frozenset(SCOPES)
        unknown = scopes - set(SCOPES)
        if unknown:
            raise ValueError(f"TAILOR_API_KEYS names unknown scopes {sorted(unknown)}")
        keys[hash_key(key)] = scopes
    return keys


def _stored_key(digest: str) -> ApiKey | None:
    with session_scope() as db:
        return db.scalar(select(ApiKey).where(ApiKey.key_hash == digest))


def _stored_keys_exist() -> bool:
    with session_scope() as db:
        return db.scalar(select(ApiKey.id).where(ApiKey.revoked_at.is_(None)).limit(1)) is not None


def authenticate(authorization: str | None) -> Principal:
    """Map an Authorization header to a principal, or raise 401."""
    env = _env_keys(get_settings().api_keys)
    token = authorization[7:].strip() if authorization and authorization[:7].lower() == "bearer " \
        else None
    if not token:
        if env or _stored_keys_exist():
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        return LOCAL
    digest = hash_key(token)
    for known, scopes in env.items():
        if hmac.compare_digest(known, digest):
            return Principal(key_id=f"env:{digest[:ENV_ID_HEX]}", scopes=scopes)
    row = _stored_key(digest)
    if row is not None and row.revoked_at is None:
        return Principal(key_id=row.id, scopes=frozenset(row.scopes))
    if row is not None:
        raise Unauthorized(f"API key {row.id} was revoked", code="key_revoked")
    if not env and not _stored_keys_exist():
        return LOCAL  # auth is off; a stray header changes nothing
    raise Unauthorized("unknown API key")


def require(scope: str) -> Callable[[Request], Principal]:
    """Build a dependency that admits only principals holding `scope` (see GRANTS)."""

    def dependency(request: Request) -> Principal:
        principal = authenticate(request.headers.get("authorization"))
        if not principal.holds(scope):
            raise Forbidden(f"this API key lacks the '{scope}' scope")
        request.state.principal = principal
        return principal

    return dependency
