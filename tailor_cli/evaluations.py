"""`tailor evaluate` (score a version on a labeled file or dataset) and `tailor evaluations
...` (list and show the stored ones)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from tailor import Client, TailorError
from tailor_cli.client import UsageError
from tailor_cli.models import split_ref
from tailor_cli.render import err, esc, out, short_time
from tailor_common.metrics import fmt

app = typer.Typer(help="Stored evaluations of versions on labeled sets: list, show.",
                  no_args_is_help=True)
JsonOption = Annotated[bool, typer.Option(
    "--json", help="one JSON document, as the API answers")]


def evaluate(ctx: typer.Context,
             model: Annotated[str, typer.Option(
                 "--model", "-m", help="name, name:version or name@alias")],
             file: Annotated[Path | None, typer.Argument(
                 exists=True, dir_okay=False,
                 help="labeled CSV or JSONL (a `label` column or field), uploaded first")]
             = None,
             dataset: Annotated[str | None, typer.Option(
                 "--dataset", help="score a labeled dataset already uploaded, by id")] = None,
             name: Annotated[str | None, typer.Option(
                 help="name of the uploaded dataset; default: the file name")] = None,
             text_column: Annotated[str | None, typer.Option(
                 help="column (CSV) or field (JSONL) holding the text; default: text")] = None,
             label_column: Annotated[str | None, typer.Option(
                 help="column (CSV) or field (JSONL) holding the label; default: label")]
             = None,
             as_json: JsonOption = False) -> None:
    """Score a version on a labeled FILE or --dataset ID; the evaluation is stored.

    FILE is uploaded as a dataset first (it stays, for later evaluations with --dataset,
    unless the evaluation is refused). Prints accuracy, macro-F1, ECE, ROC-AUC (binary),
    per-class precision/recall/F1 and the confusion matrix; --json the stored evaluation.
    """
    client: Client = ctx.obj
    if (file is None) == (dataset is None):
        raise UsageError("give either a labeled FILE or --dataset ID")
    uploaded: str | None = None
    if file is not None:
        ds = client.datasets.upload(file, name=name, text_column=text_column,
                                    label_column=label_column)
        uploaded = ds["id"]
        (err if as_json else out).print(
            f"dataset [bold]{esc(ds['id'])}[/bold] {esc(ds['name'])}: {ds['rows']} rows, "
            f"{ds['labeled_rows']} labeled")
    try:
        evaluation = client.evaluate(model, uploaded or str(dataset))
    except TailorError as exc:
        if uploaded is not None and exc.status is not None:  # refused: nothing refers to it
            with contextlib.suppress(TailorError):
                client.datasets.delete(uploaded)
                err.print(f"dataset {esc(uploaded)} removed again")
        raise
    show(evaluation, as_json)


def show(evaluation: dict[str, Any], as_json: bool) -> None:
    """The stored evaluation as JSON, or as its tables."""
    if as_json:
        typer.echo(json.dumps(evaluation))
        return
    for part in evaluation_report(evaluation):
        out.print(part)


@app.command("list")
def list_evaluations(ctx: typer.Context,
                     model: Annotated[str | None, typer.Option(
                         "--model", "-m", help="only this model: NAME or NAME:VERSION")] = None,
                     version: Annotated[int | None, typer.Option(
                         help="only this version (with --model)")] = None,
                     dataset: Annotated[str | None, typer.Option(
                         "--dataset", help="only on this dataset id")] = None,
                     limit: Annotated[int, typer.Option()] = 20,
                     as_json: JsonOption = False) -> None:
    """Evaluations this key may see, newest first."""
    if model and ":" in model:
        if version is not None:
            raise UsageError("give the version once: -m NAME:VERSION or --version")
        model, version = split_ref(model)
    body = ctx.obj.evaluations.page(model=model or None, version=version,
                                    dataset_id=dataset or None, limit=limit or None)
    if as_json:
        typer.echo(json.dumps(body))
        return
    out.print(evaluations_table(body["evaluations"]))


@app.command("show")
def show_evaluation(ctx: typer.Context,
                    evaluation_id: Annotated[str, typer.Argument(metavar="ID")],
                    as_json: JsonOption = False) -> None:
    """One stored evaluation: its figures, per class and the confusion matrix."""
    show(ctx.obj.evaluations.get(evaluation_id), as_json)


def evaluations_table(evaluations: list[dict[str, Any]]) -> Table:
    table = Table("model", "dataset", "n", "accuracy", "macro-F1", "ECE", "ROC-AUC", "created")
    table.add_column("id", no_wrap=True)
    for ev in evaluations:
        table.add_row(esc(f"{ev['model']}:{ev['version']}"),
                      esc(f"{ev['dataset_name']} ({ev['dataset_id']})"), fmt(ev["n"]),
                      fmt(ev["accuracy"]), fmt(ev["macro_f1"]), fmt(ev["ece"]),
                      fmt(ev.get("roc_auc")), short_time(ev["created_at"]), esc(ev["id"]))
    return table


def is_binary(ev: dict[str, Any]) -> bool:
    return not ev["multi_label"] and len(ev["labels"]) == 2


def evaluation_report(ev: dict[str, Any]) -> list[str | Table]:
    """A heading line, the summary (with the majority-class floor), per class, and the
    confusion matrix (single-label only)."""
    rows = ", ".join(part for part in (
        f"{ev['n']} labeled rows scored",
        ev["skipped_unlabeled"] and f"{ev['skipped_unlabeled']} unlabeled skipped",
        ev["truncated"] and f"{ev['truncated']} truncated") if part)
    heading = (f"evaluation [bold]{esc(ev['id'])}[/bold]: {esc(ev['model'])}:{ev['version']} "
               f"({esc(ev['ref'])}) on {esc(ev['dataset_name'])} ({esc(ev['dataset_id'])}); "
               f"{rows}")
    summary = Table("", "score", "majority class")
    floor = ev.get("majority") or {}
    summary.add_row("accuracy", fmt(ev["accuracy"]), fmt(floor.get("accuracy")))
    summary.add_row("macro-F1", fmt(ev["macro_f1"]), fmt(floor.get("macro_f1")))
    if ev["multi_label"]:
        summary.add_row("micro-F1", fmt(ev.get("micro_f1")), "")
    summary.add_row("ECE (lower is better)", fmt(ev["ece"]), "")
    if is_binary(ev):
        summary.add_row(f"ROC-AUC ({esc(ev['labels'][0])})", fmt(ev.get("roc_auc")), "")
    per_class = Table("label", "precision", "recall", "F1", "support", title="per class",
                      title_justify="left")
    for label, scores in ev["per_class"].items():
        per_class.add_row(esc(label), fmt(scores["precision"]), fmt(scores["recall"]),
                          fmt(scores["f1"]), fmt(scores["support"]))
    tables: list[str | Table] = [heading, summary, per_class]
    confusion = ev.get("confusion")
    if confusion:
        matrix = Table("gold \\ predicted", *(esc(label) for label in confusion["labels"]),
                       title="confusion matrix", title_justify="left")
        for label, row in zip(confusion["labels"], confusion["matrix"], strict=True):
            matrix.add_row(esc(label), *(fmt(count) for count in row))
        tables.append(matrix)
    return tables
