"""The dashboard at /ui: page shells, the HTML parts they load, and their static files.

Actions (cancel, clone, delete, archive, aliases) are the JSON API's own routes, called by
tailor.js with the same header: no cookie is ever sent, so no other site can make a
browser act (no CSRF), and each action needs the scope and ownership the API demands.

Auth: the shells and static files hold no data, so they need no key. Everything with data
comes from /ui/parts/* and the JSON API, fetched by tailor.js with `Authorization: Bearer`
from the key the user typed once (kept in sessionStorage). Events are read with fetch()
streaming instead of EventSource, because EventSource cannot send that header: no cookie,
no token in the URL, no second auth scheme.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.templating import Jinja2Templates

from app.core.config import get_settings
from app.core.deps import ClassifyScope, SessionDep, TrainScope
from app.core.errors import NotFound
from app.core.params import OffsetQuery, VersionQuery
from app.jobs.schemas import NAME_PATTERN
from app.registry.service import list_models
from app.ui import views
from tailor_common.metrics import fmt

HERE = Path(__file__).parent
STATIC = {"tailor.css": "text/css", "tailor.js": "text/javascript"}
# The pages run only their own script and style: no inline code, nothing from elsewhere.
# form-action and base-uri do not fall back to default-src: without them, HTML slipped into
# a page could post what a user types (their API key) to another site.
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                      "style-src 'self'; script-src 'self'; "
                                      "form-action 'self'; base-uri 'none'; "
                                      "frame-ancestors 'none'",
           "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
JOBS_PER_PAGE = 50
# What a shell may put into the URL its script fetches with the user's key. Browsers read `\`
# as `/` and fold `..`, so `/ui/jobs/..%5C..%5C..%5Ckeys` would make the page fetch /keys and
# show whatever came back; ids and model names never hold anything but these characters.
JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["fmt"] = fmt
router = APIRouter(prefix="/ui", include_in_schema=False)


def render(request: Request, template: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context, headers=HEADERS)


@router.get("", response_class=HTMLResponse)
def jobs_shell(request: Request, offset: OffsetQuery = 0) -> HTMLResponse:
    return render(request, "shell.html", title="Jobs", page="jobs",
                  part=f"/ui/parts/jobs?offset={offset}")


def _checked(value: str, pattern: str | re.Pattern[str], what: str,
             code: str = "not_found") -> str:
    """`value` if it may go into a part's URL, else 404 as the API answers an absent one."""
    if not re.fullmatch(pattern, value):
        raise NotFound(f"no {what} {value!r}", code=code)
    return value


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_shell(request: Request, job_id: str) -> HTMLResponse:
    job_id = _checked(job_id, JOB_ID, "job with id")
    return render(request, "shell.html", title=f"Job {job_id}", page="job", job_id=job_id,
                  part=f"/ui/parts/jobs/{job_id}")


@router.get("/submit", response_class=HTMLResponse)
def submit_shell(request: Request,
                 from_job: Annotated[str | None, Query(alias="from")] = None) -> HTMLResponse:
    suffix = f"?from={_checked(from_job, JOB_ID, 'job with id')}" if from_job else ""
    return render(request, "shell.html", title="Submit a job", page="submit",
                  part=f"/ui/parts/submit{suffix}")


@router.get("/datasets", response_class=HTMLResponse)
def datasets_shell(request: Request, offset: OffsetQuery = 0) -> HTMLResponse:
    return render(request, "shell.html", title="Datasets", page="datasets",
                  part=f"/ui/parts/datasets?offset={offset}")


@router.get("/models", response_class=HTMLResponse)
def models_shell(request: Request) -> HTMLResponse:
    return render(request, "shell.html", title="Models", page="models", part="/ui/parts/models")


@router.get("/models/{name}", response_class=HTMLResponse)
def model_shell(request: Request, name: str,
                version: VersionQuery = None) -> HTMLResponse:
    name = _checked(name, NAME_PATTERN, "model named", code="model_not_found")
    suffix = f"?version={version}" if version else ""
    return render(request, "shell.html", title=f"Model {name}", page="model",
                  part=f"/ui/parts/models/{name}{suffix}")


@router.get("/parts/jobs", response_class=HTMLResponse)
def jobs_part(request: Request, db: SessionDep, principal: TrainScope,
              offset: OffsetQuery = 0) -> HTMLResponse:
    return render(request, "jobs.html", **views.jobs_page(db, principal, JOBS_PER_PAGE, offset))


@router.get("/parts/jobs/{job_id}", response_class=HTMLResponse)
def job_part(request: Request, job_id: str, db: SessionDep, principal: TrainScope
             ) -> HTMLResponse:
    return render(request, "job.html", **views.job_page(db, principal, job_id))


@router.get("/parts/submit", response_class=HTMLResponse)
def submit_part(request: Request, db: SessionDep, principal: TrainScope,
                from_job: Annotated[str | None, Query(alias="from", max_length=64)] = None
                ) -> HTMLResponse:
    return render(request, "submit.html", **views.submit_page(db, principal, from_job))


@router.get("/parts/datasets", response_class=HTMLResponse)
def datasets_part(request: Request, db: SessionDep, principal: TrainScope,
                  offset: OffsetQuery = 0) -> HTMLResponse:
    return render(request, "datasets.html",
                  **views.datasets_page(db, principal, JOBS_PER_PAGE, offset))


@router.get("/parts/models", response_class=HTMLResponse)
def models_part(request: Request, db: SessionDep, _: ClassifyScope) -> HTMLResponse:
    return render(request, "models.html", models=list_models(db=db))


@router.get("/parts/models/{name}", response_class=HTMLResponse)
def model_part(request: Request, name: str, db: SessionDep, principal: ClassifyScope,
               version: VersionQuery = None) -> HTMLResponse:
    return render(request, "model.html", **views.model_page(db, name, version),
                  evaluations=views.evaluation_groups(db, principal, name),
                  max_explain_texts=get_settings().max_explain_texts)


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    if name not in STATIC:
        raise NotFound(f"no static file {name!r}")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name],
                        headers={"Cache-Control": "no-cache"})
