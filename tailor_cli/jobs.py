"""`tailor jobs ...`: submit (spec file and/or flags), watch, list, cancel."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from tailor_cli.client import Api, CliError, UsageError
from tailor_cli.estimate import estimate_table
from tailor_cli.render import esc, jobs_table, out, show_metrics, state_text
from tailor_cli.watch import follow

app = typer.Typer(help="Submit, watch, list and cancel distillation jobs.", no_args_is_help=True)


_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader read as YAML 1.2 reads a spec, and strict about keys.

    - A key given twice in one mapping is an error: PyYAML (like json) silently keeps the
      last, so `epochs: 3` then `epochs: 30` would train for 30 unseen; the server refuses
      duplicate keys in a JSON body for the same reason.
    - Only true/false are booleans and nothing is a date: YAML 1.1 turns the label names
      `yes`, `no`, `on`, `off` into booleans and `2024-01-01` into a date, which the server
      then refuses as "not a valid string" (or the CLI cannot even send).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *defaults` merges; its keys may be overridden on purpose
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if not isinstance(key, str | int | float | bool):
                continue  # unhashable keys: the base class refuses them itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears more than once in one mapping",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
SpecLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


def load_spec(path: Path) -> dict[str, Any]:
    """A job spec from YAML or JSON (JSON is YAML, so one parser reads both).

    Raises:
        UsageError: the file cannot be read. CliError: it is not UTF-8, not YAML, repeats a
            key, or is not a mapping; the message is one line naming the file's line.
    """
    try:
        spec = yaml.load(path.read_text(encoding="utf-8"), Loader=SpecLoader)  # noqa: S506
    except OSError as exc:
        raise UsageError(f"cannot read spec {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CliError(f"cannot read spec {path}: not valid UTF-8 (byte "
                       f"0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as "
                       "UTF-8") from exc
    except yaml.YAMLError as exc:
        raise CliError(f"cannot read spec {path}: {_yaml_problem(exc)}") from exc
    if not isinstance(spec, dict):
        raise CliError(f"spec {path} must be a mapping with name, task, data, ...")
    return spec


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: where in the file, and what (PyYAML's own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())


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
        if value in (None, [], False):
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
           = False) -> None:
    """Submit a job from a spec file and/or flags (flags override the file)."""
    api: Api = ctx.obj
    spec = load_spec(spec_file) if spec_file else {}
    spec = apply_flags(spec, {"name": name, "dataset": dataset, "eval_dataset": eval_dataset,
                              "labels": label, "instruction": instruction,
                              "multi_label": multi_label, "teacher": teacher, "prompts": prompt,
                              "student": student, "strategy": strategy, "epochs": epochs})
    if dry_run:
        out.print(estimate_table(api.post("/jobs", json=spec, params={"dry_run": "true"})))
        return
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    job = api.post("/jobs", json=spec, headers=headers)
    out.print(f"submitted job [bold]{esc(job['id'])}[/bold] "
              f"({esc(job['name'])}, {esc(job['state'])})")
    if watch:
        raise typer.Exit(report(follow(api, job["id"])))


@app.command("watch")
def watch_job(ctx: typer.Context, job_id: str) -> None:
    """Follow a job live (a bar per phase); exit status is non-zero unless it succeeds."""
    job = follow(ctx.obj, job_id)
    if job["state"] not in ("succeeded", "failed", "cancelled"):
        raise CliError(f"lost the event stream while job {job_id} was {job['state']}")
    raise typer.Exit(report(job))


@app.command("list")
def list_jobs(ctx: typer.Context,
              state: Annotated[str | None, typer.Option(help="only jobs in this state")] = None,
              name: Annotated[str | None, typer.Option()] = None,
              limit: Annotated[int, typer.Option()] = 20,
              as_json: Annotated[bool, typer.Option(
                  "--json", help="one JSON document, as GET /jobs answers")] = False) -> None:
    """List jobs, newest first."""
    params = {k: v for k, v in {"state": state, "name": name, "limit": limit}.items() if v}
    body = ctx.obj.get("/jobs", params=params)
    if as_json:
        typer.echo(json.dumps(body))
        return
    out.print(jobs_table(body["jobs"]))


@app.command()
def cancel(ctx: typer.Context, job_id: str) -> None:
    """Ask a job to stop (it stops at its next step)."""
    job = ctx.obj.post(f"/jobs/{job_id}/cancel")
    note = " (stopping at its next step)" if job["cancel_requested"] and \
        job["state"] != "cancelled" else ""
    out.print(f"job {esc(job_id)} {state_text(job['state'])}{note}")
