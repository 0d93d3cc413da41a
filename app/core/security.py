"""API keys and scopes. Keys come from TAILOR_API_KEYS; with none configured, auth is off."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from fastapi import Request

from app.core.config import get_settings
from app.core.errors import Forbidden, Unauthorized

SCOPES = ("classify", "train", "admin")


@dataclass(frozen=True)
class Principal:
    key_id: str
    scopes: frozenset[str]


ANONYMOUS = Principal(key_id="anonymous", scopes=frozenset(SCOPES))


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


def authenticate(authorization: str | None) -> Principal:
    """Map an Authorization header to a principal, or raise 401."""
    keys = _env_keys(get_settings().api_keys)
    if not keys:
        return ANONYMOUS
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    digest = hash_key(authorization[7:].strip())
    for known, scopes in keys.items():
        if hmac.compare_digest(known, digest):
            return Principal(key_id=digest[:12], scopes=scopes)
    raise Unauthorized("unknown API key")


def require(scope: str) -> Callable[[Request], Principal]:
    """Build a dependency that admits only principals holding `scope` (admin holds all)."""

    def dependency(request: Request) -> Principal:
        principal = authenticate(request.headers.get("authorization"))
        if scope not in principal.scopes and "admin" not in principal.scopes:
            raise Forbidden(f"this API key lacks the '{scope}' scope")
        request.state.principal = principal
        return principal

    return dependency
