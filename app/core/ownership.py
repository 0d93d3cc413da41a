"""One rule for owned rows (datasets, jobs, evaluations): a non-admin key finds only its own;
anyone else's answers exactly like an id that does not exist. Services call these two
functions for every read, so no query can forget the rule."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select

from app.core.security import Principal
from app.models.owned import Owned

OwnedRow = TypeVar("OwnedRow", bound=Owned)


def visible(row: OwnedRow | None, viewer: Principal) -> OwnedRow | None:
    """Return `row` if `viewer` may see it, else None (as if it were absent)."""
    return row if row is not None and viewer.may_see(row.owner) else None


def only_visible(stmt: Select[Any], table: type[Owned], viewer: Principal) -> Select[Any]:
    """Narrow a SELECT over an owned table to the rows `viewer` may see."""
    return stmt if viewer.sees_all else stmt.where(table.owner == viewer.key_id)
