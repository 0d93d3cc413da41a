"""`tailor models ...` and `tailor datasets ...`: the registry, data uploads, deletes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tailor import Client, TailorError
from tailor_cli.client import CliError, UsageError
from tailor_cli.confirm import confirm_delete, report_deleted
from tailor_cli.render import (
    err,
    esc,
    models_table,
    out,
    show_metrics,
    versions_table,
    warnings_panel,
)

models = typer.Typer(help="The model registry: list, show, alias, export, delete.",
                     no_args_is_help=True)
datasets = typer.Typer(help="Upload (JSONL or CSV with a text column), list and delete "
                            "datasets.", no_args_is_help=True)
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]
JsonOption = Annotated[bool, typer.Option(
    "--json", help='print {"deleted": true, ...} with the object as it was')]


def split_ref(ref: str) -> tuple[str, int | None]:
    """`name` or `name:version` -> (name, version or None)."""
    name, sep, version = ref.partition(":")
    if not sep:
        return name, None
    if not version.isdigit():
        raise CliError(f"{ref!r}: the version after ':' must be a number")
    return name, int(version)


@models.command("list")
def list_models(ctx: typer.Context) -> None:
    """Registered models with their latest version and aliases."""
    out.print(models_table(ctx.obj.models.list()))


@models.command()
def show(ctx: typer.Context,
         ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]")]) -> None:
    """A model's versions, or one version's metrics (teacher vs student), prompts and lineage."""
    client: Client = ctx.obj
    name, version = split_ref(ref)
    model = client.models.get(name)
    if version is None:
        out.print(versions_table(model))
        version = model["latest_version"]
        if version is None:
            return
    detail = client.models.get(name, version)
    out.print(f"[bold]{esc(name)}:{version}[/bold]  labels: {esc(', '.join(detail['labels']))}"
              f"{'  (multi-label)' if detail['multi_label'] else ''}")
    out.print(f"base model: {esc(detail['base_model'])}")
    lineage = detail.get("lineage") or {}
    if lineage.get("job_id"):
        out.print(f"trained by job {esc(lineage['job_id'])}")
    show_metrics(detail.get("metrics") or {}, detail.get("warnings"))


@models.command()
def alias(ctx: typer.Context, name: str, alias_name: Annotated[str, typer.Argument(
        metavar="ALIAS")], version: int,
          force: Annotated[bool, typer.Option(
              "--force", help="move it even though the version has warnings")] = False
          ) -> None:
    """Point ALIAS (e.g. production) at a version of NAME."""
    client: Client = ctx.obj
    try:
        body = client.models.alias(name, alias_name, version, force=force)
    except TailorError as exc:
        if exc.code != "version_has_warnings":
            raise
        detail = client.models.get(name, version)
        panel = warnings_panel(detail.get("warnings") or [])
        if panel is not None:
            err.print(panel)
        raise CliError(f"{exc.message} (tailor: pass --force)", code=exc.code,
                       status=exc.status) from exc
    out.print(esc(f"{body['name']}@{body['alias']} → version {body['version']}"))


@models.command()
def export(ctx: typer.Context,
           ref: Annotated[str, typer.Argument(metavar="NAME[:VERSION]")],
           fmt: Annotated[str, typer.Option(
               "--format", "-f", help="onnx (onnxruntime + tokenizers) or hf (transformers)")
           ] = "onnx",
           output: Annotated[Path | None, typer.Option(
               "--output", "-o", help="file to write; default NAME-vVERSION-FORMAT.tar.gz")
           ] = None) -> None:
    """Download a version as a standalone student (.tar.gz) that runs without Tailor; its
    README.md shows how. Without :VERSION, the latest version."""
    client: Client = ctx.obj
    name, version = split_ref(ref)
    detail = client.models.get(name, version) if version is not None else None
    if version is None:
        version = client.models.get(name)["latest_version"]
        if version is None:
            raise CliError(f"model {name!r} has no version to export")
    target = output or Path(f"{name}-v{version}-{fmt}.tar.gz")
    path = client.models.export(name, version, fmt, target)
    if detail is not None and detail.get("archived"):
        err.print(esc(f"note: {name}:{version} is archived"))
    out.print(esc(f"{name}:{version} ({fmt}) → {path} ({path.stat().st_size} bytes)"))


@datasets.command()
def upload(ctx: typer.Context, file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
           name: Annotated[str | None, typer.Option(help="default: the file name")] = None,
           text_column: Annotated[str | None, typer.Option(
               help="column (CSV) or field (JSONL) holding the text; default: text")] = None,
           label_column: Annotated[str | None, typer.Option(
               help="column (CSV) or field (JSONL) holding the label; default: label")] = None,
           ) -> None:
    """Upload a JSONL or CSV file (`text`, optional `label`); prints the dataset id."""
    client: Client = ctx.obj
    ds = client.datasets.upload(file, name=name, text_column=text_column,
                                label_column=label_column)
    labels = ", ".join(ds.get("labels") or []) or "none"
    out.print(f"dataset [bold]{esc(ds['id'])}[/bold] {esc(ds['name'])}: {ds['rows']} rows, "
              f"{ds['labeled_rows']} labeled (labels: {esc(labels)})")
    for warning in ds.get("warnings") or []:
        out.print(f"[yellow]warning:[/yellow] {esc(warning['message'])}")


@datasets.command("list")
def list_datasets(ctx: typer.Context) -> None:
    """Uploaded datasets, newest first."""
    for ds in ctx.obj.datasets.list():
        out.print(esc(f"{ds['id']}  {ds['name']}  {ds['rows']} rows, {ds['labeled_rows']} labeled"))


@models.command("delete")
def delete_version(ctx: typer.Context,
                   ref: Annotated[str, typer.Argument(metavar="NAME:VERSION")],
                   yes: YesOption = False, as_json: JsonOption = False) -> None:
    """Delete an archived version no alias points at, and its files (needs an admin key);
    its number is never reused."""
    client: Client = ctx.obj
    name, version = split_ref(ref)
    if version is None:
        raise UsageError(f"{ref!r}: name the version to delete, as NAME:VERSION")
    detail = client.models.get(name, version)
    state = "archived" if detail.get("archived") else "not archived"
    confirm_delete(f"version {name}:{version} ({state}) and its files", yes)
    client.models.delete_version(name, version)
    report_deleted("version", f"{name}:{version}", detail, as_json)


@datasets.command("delete")
def delete_dataset(ctx: typer.Context, dataset_id: Annotated[str, typer.Argument(metavar="ID")],
                   yes: YesOption = False, as_json: JsonOption = False) -> None:
    """Delete a dataset and its rows (refused while a job that is not final uses it)."""
    client: Client = ctx.obj
    ds = client.datasets.get(dataset_id)
    confirm_delete(f"dataset {ds['id']} {ds['name']!r} ({ds['rows']} rows, "
                   f"{ds['labeled_rows']} labeled)", yes)
    client.datasets.delete(dataset_id)
    report_deleted("dataset", f"{ds['id']} ({ds['name']})", ds, as_json)
