"""One rule for owned rows (datasets, jobs, evaluations): a non-admin key finds only its own;
anyone else's answers exactly like an id that does not exist. Services call these
functions for every read, so no query can forget the rule; idempotency keys are scoped to
their owner the same way."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from app.core.errors import Invalid
from app.core.security import Principal
from app.models.owned import Owned

OwnedRow = TypeVar("OwnedRow", bound=Owned)


def visible(row: OwnedRow | None, viewer: Principal) -> OwnedRow | None:
    """Return `row` if `viewer` may see it, else None (as if it were absent)."""
    return row if row is not None and viewer.may_see(row.owner) else None


def only_visible(stmt: Select[Any], table: type[Owned], viewer: Principal) -> Select[Any]:
    """Narrow a SELECT over an owned table to the rows `viewer` may see."""
    return stmt if viewer.sees_all else stmt.where(table.owner == viewer.key_id)


def by_idempotency_key(db: Session, table: type[OwnedRow], owner: str,
                       key: str | None) -> OwnedRow | None:
    """The row of `table` that `owner` created with Idempotency-Key `key`, if any."""
    column = table.idempotency_key  # type: ignore[attr-defined]
    return db.scalar(select(table).where(table.owner == owner, column == key))


def replay(existing: OwnedRow, request_hash: str) -> OwnedRow:
    """`existing` for a repeated request with the same body.

    Raises:
        Invalid: 422 `idempotency_mismatch` when the key was used with another body.
    """
    if existing.request_hash != request_hash:  # type: ignore[attr-defined]
        raise Invalid("Idempotency-Key", "this key was used with a different request body",
                      code="idempotency_mismatch")
    return existing
