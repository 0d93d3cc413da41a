"""HTTP routes for API keys (admin scope): create (secret shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from app.core.deps import AdminScope, SessionDep
from app.core.strict_json import StrictJsonRoute
from app.keys import service
from app.keys.schemas import KeyCreate, KeyCreated, KeyList, KeyOut

router = APIRouter(prefix="/keys", tags=["keys"], route_class=StrictJsonRoute)


@router.post("", status_code=201, response_model=KeyCreated,
             summary="Create an API key (the key is shown only in this response)")
def create_key(body: KeyCreate, db: SessionDep, principal: AdminScope) -> Any:
    row, secret = service.create_key(db=db, name=body.name, scopes=list(body.scopes),
                                     created_by=principal.key_id[:40])
    return {**row.summary(), "key": secret}


@router.get("", response_model=KeyList, summary="List stored API keys (never their secrets)")
def list_keys(db: SessionDep, _: AdminScope) -> Any:
    return {"keys": [k.summary() for k in service.list_keys(db=db)]}


@router.delete("/{key_id}", response_model=KeyOut, summary="Revoke an API key at once")
def revoke_key(key_id: Annotated[str, Path(max_length=40)], db: SessionDep, _: AdminScope) -> Any:
    return service.revoke_key(db=db, key_id=key_id).summary()
