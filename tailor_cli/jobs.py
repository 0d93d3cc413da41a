"""`tailor jobs ...`: submit (spec file and/or flags), watch, list, cancel, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tailor import Client, TailorError, specs
from tailor_cli.client import CliError, UsageError
from tailor_cli.confirm import confirm_delete, report_deleted
from tailor_cli.estimate import estimate_table
from tailor_cli.render import esc, jobs_table, out, show_metrics, state_text
from tailor_cli.watch import follow

app = typer.Typer(help="Submit, watch, list, cancel and delete distillation jobs.",
                  no_args_is_help=True)


def load_spec(path: Path) -> dict[str, Any]:
    """A job spec from YAML or JSON, read by the client's strict loader (tailor.specs).

    Raises:
        UsageError: the file cannot be read. CliError: it is not UTF-8, not YAML, repeats a
            key, or is not a mapping; the message is one line naming the file's line.
    """
    try:
        return specs.load_spec(path)
    except TailorError as exc:
        error = UsageError if exc.code == "spec_unreadable" else CliError
        raise error(exc.message) from exc


def parse_label(text: str) -> dict[str, str]:
    """`name` or `name:description` -> a task label."""
    name, _, description = text.partition(":")
    return {"name": name.strip(), "description": description.strip()}


def apply_flags(spec: dict[str, Any], flags: dict[str, Any]) -> dict[str, Any]:
    """Lay command-line flags over a spec; a flag wins over the file."""
    placements = {"name": ("name",), "dataset": ("data", "dataset_id"),
                  "eval_dataset": ("data", "eval_dataset_id"), "labels": ("task", "labels"),
                  "instruction": ("task", "instruction"), "multi_label": ("task", "multi_label"),
                  "teacher": ("teacher", "model"), "prompts": ("teacher", "prompts"),
                  "student": ("student", "model"), "strategy": ("distillation", "strategy"),
                  "epochs": ("distillation", "epochs")}
    for flag, path in placements.items():
        value = flags.get(flag)
        if value is None or value in ([], False):
            continue
        if flag == "labels":
            value = [parse_label(v) for v in value]
        node = spec
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return spec


def report(job: dict[str, Any]) -> int:
    """Print a finished job's outcome; the exit status is 0 only for `succeeded`."""
    out.print(f"job {esc(job['id'])} {state_text(job['state'])}")
    if job.get("error"):
        error = job["error"]
        out.print(f"[red]{esc(error['code'])}: {esc(error['message'])}[/red]", soft_wrap=True)
    if job.get("model"):
        model = job["model"]
        out.print(f"model [bold]{esc(model['name'])}:{model['version']}[/bold] registered")
    if job.get("metrics") or job.get("warnings"):
        show_metrics(job.get("metrics") or {}, job.get("warnings"))
    return 0 if job["state"] == "succeeded" else 1


@app.command()
def submit(ctx: typer.Context,
           spec_file: Annotated[Path | None, typer.Argument(help="YAML or JSON job spec")] = None,
           name: Annotated[str | None, typer.Option(help="model name to register")] = None,
           dataset: Annotated[str | None, typer.Option(help="corpus dataset id")] = None,
           eval_dataset: Annotated[str | None, typer.Option(help="labeled eval dataset id")]
           = None,
           label: Annotated[list[str] | None, typer.Option(
               help="a label as name or name:description (repeat)")] = None,
           instruction: Annotated[str | None, typer.Option()] = None,
           multi_label: Annotated[bool, typer.Option("--multi-label")] = False,
           teacher: Annotated[str | None, typer.Option(help="teacher model URI")] = None,
           prompt: Annotated[list[str] | None, typer.Option(
               help="a teacher prompt template with {text} (repeat)")] = None,
           student: Annotated[str | None, typer.Option(help="student base model URI")] = None,
           strategy: Annotated[str | None, typer.Option()] = None,
           epochs: Annotated[int | None, typer.Option()] = None,
           idempotency_key: Annotated[str | None, typer.Option()] = None,
           watch: Annotated[bool, typer.Option("--watch", help="follow it until it ends")]
           = False,
           dry_run: Annotated[bool, typer.Option(
               "--dry-run", help="check the spec and print an estimate; create nothing")]
           = False,
           as_json: Annotated[bool, typer.Option(
               "--json", help="print the API's answer (the job, or the dry run's estimate)")]
           = False) -> None:
    """Submit a job from a spec file and/or flags (flags override the file)."""
    client: Client = ctx.obj
    spec = load_spec(spec_file) if spec_file else {}
    spec = apply_flags(spec, {"name": name, "dataset": dataset, "eval_dataset": eval_dataset,
                              "labels": label, "instruction": instruction,
                              "multi_label": multi_label, "teacher": teacher, "prompts": prompt,
                              "student": student, "strategy": strategy, "epochs": epochs})
    if watch and (dry_run or as_json):
        raise UsageError("--watch follows a submitted job: not with --dry-run or --json")
    if dry_run:  # the key too: one already spent on another body is refused, as for real
        answer = client.jobs.create(spec, idempotency_key=idempotency_key, dry_run=True)
        if as_json:
            typer.echo(json.dumps(answer))
        else:
            out.print(estimate_table(answer))
        return
    job = client.jobs.create(spec, idempotency_key=idempotency_key)
    if as_json:
        typer.echo(json.dumps(job))
        return
    out.print(f"submitted job [bold]{esc(job['id'])}[/bold] "
              f"({esc(job['name'])}, {esc(job['state'])})")
    if watch:
        raise typer.Exit(report(follow(client, job["id"])))


@app.command("watch")
def watch_job(ctx: typer.Context, job_id: str) -> None:
    """Follow a job live (a bar per phase); exit status is non-zero unless it succeeds."""
    raise typer.Exit(report(follow(ctx.obj, job_id)))


@app.command("list")
def list_jobs(ctx: typer.Context,
              state: Annotated[str | None, typer.Option(help="only jobs in this state")] = None,
              name: Annotated[str | None, typer.Option()] = None,
              limit: Annotated[int, typer.Option()] = 20,
              as_json: Annotated[bool, typer.Option(
                  "--json", help="one JSON document, as GET /jobs answers")] = False) -> None:
    """List jobs, newest first."""
    body = ctx.obj.jobs.page(state=state or None, name=name or None, limit=limit or None)
    if as_json:
        typer.echo(json.dumps(body))
        return
    out.print(jobs_table(body["jobs"]))


@app.command()
def cancel(ctx: typer.Context, job_id: str) -> None:
    """Ask a job to stop (it stops at its next step)."""
    job = ctx.obj.jobs.cancel(job_id)
    note = " (stopping at its next step)" if job["cancel_requested"] and \
        job["state"] != "cancelled" else ""
    out.print(f"job {esc(job_id)} {state_text(job['state'])}{note}")


@app.command()
def delete(ctx: typer.Context, job_id: str,
           yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]
           = False,
           as_json: Annotated[bool, typer.Option(
               "--json", help='print {"deleted": true, "job": ...} with the job as it was')]
           = False) -> None:
    """Delete a final job, its events and work files (a registered version's files stay)."""
    client: Client = ctx.obj
    job = client.jobs.get(job_id)
    confirm_delete(f"job {job['id']} {job['name']!r} ({job['state']}) and its work files", yes)
    client.jobs.delete(job_id)
    report_deleted("job", job["id"], job, as_json)
