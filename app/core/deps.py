"""FastAPI dependencies as Annotated aliases: a DB session per request, auth by scope."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.core.security import Principal, require


def get_db() -> Iterator[Session]:
    """One session per request; it commits when the route function returns."""
    with session_scope() as session:
        yield session


# scope="function": the session commits (or rolls back) as soon as the route function
# returns, before the response is sent, so a client that got a 201/202 can read at once what
# it created, and a failed commit answers with an error instead of a lost write.
SessionDep = Annotated[Session, Depends(get_db, scope="function")]
ClassifyScope = Annotated[Principal, Depends(require("classify"))]
TrainScope = Annotated[Principal, Depends(require("train"))]
AdminScope = Annotated[Principal, Depends(require("admin"))]
