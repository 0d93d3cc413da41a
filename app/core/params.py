"""Integer query and path parameters every router shares, bounded once.

An integer a user puts in a URL reaches the database as a bind parameter; past the column's
(or the driver's) range SQLite raises OverflowError and PostgreSQL a DataError, both a 500.
So every list route and every version number in a path or query takes its type from here,
and an out-of-range value is a 422 naming `query.offset`, `path.version`, ...
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from app.core.limits import MAX_LIST_OFFSET
from app.models.base import MAX_INT

# Page size of the JSON list routes: large enough for a script, small enough for one response.
MAX_LIST_LIMIT = 500
DEFAULT_LIST_LIMIT = 50

LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT, description="Items per page.")]
OffsetQuery = Annotated[int, Query(ge=0, le=MAX_LIST_OFFSET, description="Items to skip.")]
VersionPath = Annotated[int, Path(ge=1, le=MAX_INT)]
VersionQuery = Annotated[int | None, Query(ge=1, le=MAX_INT)]
