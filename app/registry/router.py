"""HTTP routes for the registry: models, versions, aliases."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse

from app.core.deps import AdminScope, ClassifyScope, SessionDep
from app.models.base import MAX_INT
from app.registry import service
from app.registry.schemas import AliasIn, AliasOut, ModelDetail, ModelList, VersionDetail

router = APIRouter(prefix="/models", tags=["registry"])
NamePath = Annotated[str, Path(max_length=64)]
VersionPath = Annotated[int, Path(ge=1, le=MAX_INT)]


@router.get("", response_model=ModelList)
def list_models(db: SessionDep, _: ClassifyScope,
                include_archived: Annotated[bool, Query()] = False) -> Any:
    return {"models": service.list_models(db=db, include_archived=include_archived)}


@router.get("/{name}", response_model=ModelDetail)
def get_model(name: NamePath, db: SessionDep, _: ClassifyScope) -> Any:
    return service.get_model(db=db, name=name)


@router.get("/{name}/versions/{version}", response_model=VersionDetail)
def get_version(name: NamePath, version: VersionPath, db: SessionDep, _: ClassifyScope) -> Any:
    return service.version_detail(service.get_version(db=db, name=name, version=version))


@router.get("/{name}/versions/{version}/card", response_class=PlainTextResponse,
            responses={200: {"content": {"text/markdown": {}}}})
def get_card(name: NamePath, version: VersionPath, db: SessionDep, _: ClassifyScope) -> Any:
    card = service.get_version(db=db, name=name, version=version).card
    return PlainTextResponse(card, media_type="text/markdown")


@router.put("/{name}/aliases/{alias}", response_model=AliasOut)
def set_alias(name: NamePath, alias: Annotated[str, Path(max_length=64)], body: AliasIn,
              db: SessionDep, _: AdminScope) -> Any:
    return service.set_alias(db=db, name=name, alias=alias, version=body.version)
