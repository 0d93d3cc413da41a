"""The `tailor` command: global connection options, sub-commands, and one error handler."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from tailor_cli import jobs
from tailor_cli.classify import classify_batches, jsonl_line, read_texts, scores_table
from tailor_cli.client import Api, CliError, Connection
from tailor_cli.models import datasets, models
from tailor_cli.render import err, out

app = typer.Typer(name="tailor", no_args_is_help=True, add_completion=False,
                  help="Distil small classifiers out of LLMs with a Tailor server.")
app.add_typer(datasets, name="datasets")
app.add_typer(jobs.app, name="jobs")
app.add_typer(models, name="models")


@app.callback()
def connect(ctx: typer.Context,
            url: Annotated[str | None, typer.Option(
                envvar="TAILOR_URL", help="API base URL [default: http://127.0.0.1:8000]")]
            = None,
            api_key: Annotated[str | None, typer.Option(
                envvar="TAILOR_API_KEY", help="API key (sent as a Bearer token)")] = None,
            config: Annotated[str | None, typer.Option(
                envvar="TAILOR_CONFIG",
                help="TOML file with url and api_key [default: ~/.config/tailor/config.toml]")]
            = None) -> None:
    """Connection settings: flags, then TAILOR_URL / TAILOR_API_KEY, then the config file."""
    ctx.obj = Api(Connection.resolve(url, api_key, config))


@app.command()
def serve(host: Annotated[str | None, typer.Option()] = None,
          port: Annotated[int | None, typer.Option()] = None,
          no_worker: Annotated[bool, typer.Option("--no-worker", help="API only")] = False
          ) -> None:
    """Run Tailor here: migrations, one local worker and the API (TAILOR_* settings apply)."""
    from app.serve import main as serve_main

    argv = [*(["--host", host] if host else []), *(["--port", str(port)] if port else []),
            *(["--no-worker"] if no_worker else [])]
    raise typer.Exit(serve_main(argv))


@app.command()
def worker(concurrency: Annotated[int, typer.Option(help="jobs at once")] = 1) -> None:
    """Run a distillation worker on the `distill` queue (one per GPU)."""
    from app.serve import worker_command

    command = worker_command(concurrency)
    os.execv(command[0], command)


@app.command()
def classify(ctx: typer.Context,
             model: Annotated[str, typer.Option(
                 "--model", "-m", help="name, name:version or name@alias")],
             texts: Annotated[list[str] | None, typer.Argument(help="texts to classify")] = None,
             file: Annotated[str | None, typer.Option(
                 "--file", "-f", help="JSONL/CSV/text file, or - for stdin; JSONL out")] = None,
             output: Annotated[Path | None, typer.Option(
                 "--output", "-o", help="write JSON lines here instead of stdout")] = None,
             threshold: Annotated[float | None, typer.Option()] = None,
             top_k: Annotated[int | None, typer.Option()] = None,
             batch: Annotated[int, typer.Option(help="texts per request")] = 64,
             jsonl: Annotated[bool, typer.Option("--jsonl", help="JSON lines for TEXT too")]
             = False) -> None:
    """Classify TEXT... (a table) or --file (one JSON line per text, in order)."""
    if bool(texts) == bool(file):
        raise CliError("give either TEXT arguments or --file")
    inputs = read_texts(file) if file else list(texts or [])
    options = {k: v for k, v in {"threshold": threshold, "top_k": top_k}.items()
               if v is not None}
    results = classify_batches(ctx.obj, model, inputs, max(1, batch), options)
    if file or jsonl or output:
        sink = output.open("w", encoding="utf-8") if output else sys.stdout
        try:
            for text, result, version in results:
                sink.write(jsonl_line(model, text, result, version) + "\n")
        finally:
            if output:
                sink.close()
        return
    out.print(scores_table(model, list(results)))


def run() -> None:
    """Entry point of the `tailor` script: server errors become one line and exit status 1."""
    try:
        status = app(standalone_mode=False)  # returns the exit code of typer.Exit
    except CliError as exc:
        err.print(f"[red]error:[/red] {exc.message}" + (f" ({exc.code})" if exc.code else ""))
        sys.exit(1)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and the like
        from click.exceptions import ClickException

        if isinstance(exc, ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(status if isinstance(status, int) else 0)


if __name__ == "__main__":
    run()
