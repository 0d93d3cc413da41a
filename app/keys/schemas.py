"""Request and response shapes for /keys."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.core.texts import check_name

Scope = Literal["classify", "train", "admin"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    # The rule every name follows (datasets too): one line, something visible.
    name: Annotated[str, AfterValidator(check_name)] = Field(
        min_length=1, max_length=100, description="Who or what uses the key: one line with a "
                                                  "visible character.")
    scopes: list[Scope] = Field(min_length=1, max_length=3,
                                description="classify, train and/or admin (admin holds all).")


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str = Field(description="The first characters of the key, to recognise it.")
    scopes: list[Scope]
    created_by: str | None
    created_at: datetime
    revoked_at: datetime | None


class KeyCreated(KeyOut):
    key: str = Field(description="The secret. Shown only in this response; store it now.")


class KeyList(BaseModel):
    keys: list[KeyOut]
