"""FastAPI dependencies as Annotated aliases: a DB session per request, auth by scope."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from app.core.db import session_scope
from app.core.security import Principal, require


def get_db() -> Iterator[Session]:
    with session_scope() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]
ClassifyScope = Annotated[Principal, Depends(require("classify"))]
TrainScope = Annotated[Principal, Depends(require("train"))]
AdminScope = Annotated[Principal, Depends(require("admin"))]
