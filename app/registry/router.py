"""HTTP routes for the registry: models, versions, aliases, archiving, deleting."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from app.core.config import get_settings
from app.core.db import after_commit
from app.core.deps import AdminScope, ClassifyScope, SessionDep
from app.core.params import VersionPath
from app.core.strict_json import StrictJsonRoute
from app.models import ModelVersion
from app.registry import service
from app.registry.schemas import AliasIn, AliasOut, ModelDetail, ModelList, VersionDetail
from app.serving import exports

router = APIRouter(prefix="/models", tags=["registry"], route_class=StrictJsonRoute)
NamePath = Annotated[str, Path(max_length=64)]
ArchivedQuery = Annotated[bool, Query(description="Also list archived versions.")]
FormatQuery = Annotated[Literal["onnx", "hf"], Query(
    alias="format", description="`onnx`: one ONNX graph from token ids to calibrated "
    "probabilities, with tokenizer.json; `hf`: a Hugging Face folder (merged encoder for "
    "AutoModel, head as safetensors, tokenizer). Both with labels, metrics, lineage and a "
    "README whose example prints what /classify answers.")]


@router.get("", response_model=ModelList)
def list_models(db: SessionDep, _: ClassifyScope, include_archived: ArchivedQuery = False) -> Any:
    return {"models": service.list_models(db=db, include_archived=include_archived)}


@router.get("/{name}", response_model=ModelDetail)
def get_model(name: NamePath, db: SessionDep, _: ClassifyScope,
              include_archived: ArchivedQuery = False) -> Any:
    return service.get_model(db=db, name=name, include_archived=include_archived)


@router.get("/{name}/versions/{version}", response_model=VersionDetail,
            summary="One version (archived ones too): metrics, lineage, files, markdown card")
def get_version(name: NamePath, version: VersionPath, db: SessionDep, _: ClassifyScope) -> Any:
    return service.version_detail(service.get_version(db=db, name=name, version=version))


@router.get("/{name}/versions/{version}/card", response_class=PlainTextResponse,
            responses={200: {"content": {"text/markdown": {}}}})
def get_card(name: NamePath, version: VersionPath, db: SessionDep, _: ClassifyScope) -> Any:
    card = service.get_version(db=db, name=name, version=version).card
    return PlainTextResponse(card, media_type="text/markdown")


@router.post("/{name}/versions/{version}/archive", response_model=VersionDetail,
             summary="Hide a version from listings and refuse new aliases; files are kept")
def archive(name: NamePath, version: VersionPath, request: Request, db: SessionDep,
            _: AdminScope) -> Any:
    row = service.set_archived(db=db, name=name, version=version, archived=True)
    after_commit(db, request.app.state.refs.clear)  # /classify must stop resolving to it now
    after_commit(db, request.app.state.pool.evict, row.ref)
    return service.version_detail(row)


@router.post("/{name}/versions/{version}/unarchive", response_model=VersionDetail,
             summary="Make an archived version listable and aliasable again")
def unarchive(name: NamePath, version: VersionPath, request: Request, db: SessionDep,
              _: AdminScope) -> Any:
    row = service.set_archived(db=db, name=name, version=version, archived=False)
    after_commit(db, request.app.state.refs.clear)
    return service.version_detail(row)


@router.delete("/{name}/versions/{version}", status_code=204, response_class=Response,
               summary="Delete an archived version no alias points at; its number is never "
                       "reused",
               responses={404: {"description": "no such model or version"},
                          409: {"description": "`version_not_archived` or `version_aliased`"}})
def delete_version(name: NamePath, version: VersionPath, request: Request, db: SessionDep,
                   _: AdminScope) -> Response:
    row = service.delete_version(db=db, name=name, version=version)
    after_commit(db, request.app.state.refs.clear)  # /classify answers 404 for it from now on
    after_commit(db, request.app.state.pool.evict, row.ref)
    after_commit(db, service.remove_version_files, get_settings().artifacts, row.artifact_path)
    return Response(status_code=204)


@router.put("/{name}/aliases/{alias}", response_model=AliasOut,
            summary="Move an alias; the version is loaded for serving before the move",
            description="A version with warnings takes an alias only with `\"force\": true`"
                        " (else 409 `version_has_warnings`, the warnings in `details`).")
def set_alias(name: NamePath, alias: Annotated[str, Path(max_length=64)], body: AliasIn,
              request: Request, db: SessionDep, _: AdminScope) -> Any:
    pool = request.app.state.pool

    def warm(row: ModelVersion) -> None:
        pool.warm(row.ref, row.artifact_path, dict(row.files))

    moved = service.set_alias(db=db, name=name, alias=alias, version=body.version, warm=warm,
                              force=body.force)
    # The next request through the alias gets the new version.
    after_commit(db, request.app.state.refs.clear)
    return moved


@router.get("/{name}/versions/{version}/export", response_class=StreamingResponse,
            summary="Download a version as a standalone student (.tar.gz): ONNX or Hugging Face",
            description="Built on the first request (seconds to a minute), then served from the "
                        "cache beside the version's artifacts, verified by sha256 "
                        "(`X-Tailor-Export-Sha256`; `X-Tailor-Export-Cache`: hit, built or "
                        "rebuilt). Archived versions export too, with `X-Tailor-Archived: "
                        "true`.",
            responses={200: {"content": {exports.MEDIA_TYPE: {}}},
                       404: {"description": "no such model or version"},
                       409: {"description": "`not_exportable`: its files or base model cannot "
                                            "be read, or the exporter failed (the reason in "
                                            "`details.reason`)"}})
def export_version(name: NamePath, version: VersionPath, fmt: FormatQuery, db: SessionDep,
                   _: ClassifyScope) -> StreamingResponse:
    # A plain `def` route: FastAPI runs it in its thread pool, so a build (seconds to a
    # minute) never blocks the event loop.
    source = exports.ExportSource.of(service.get_version(db=db, name=name, version=version))
    db.close()  # a build may take a minute: hold no database connection meanwhile
    settings = get_settings()
    export = exports.open_export(source, fmt, artifacts_root=settings.artifacts,
                                 models_dir=settings.cache / "models")
    return StreamingResponse(export.chunks(), media_type=exports.MEDIA_TYPE,
                             headers=exports.headers(export, source))
