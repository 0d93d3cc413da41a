"""The `tailor` command: global connection options, sub-commands, and one error handler."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from tailor import TailorError
from tailor_cli import evaluations, jobs
from tailor_cli.classify import (
    check_rows,
    classify_batches,
    jsonl_line,
    read_rows,
    scores_table,
    write_atomically,
)
from tailor_cli.client import UsageError, client_for
from tailor_cli.models import datasets, models
from tailor_cli.render import err, esc, out

app = typer.Typer(name="tailor", no_args_is_help=True, add_completion=False,
                  help="Distil small classifiers out of LLMs with a Tailor server.")
app.add_typer(datasets, name="datasets")
app.add_typer(jobs.app, name="jobs")
app.add_typer(models, name="models")
app.add_typer(evaluations.app, name="evaluations")
app.command("evaluate")(evaluations.evaluate)


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
    ctx.obj = client_for(url, api_key, config)


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
def worker(concurrency: Annotated[int, typer.Option(help="jobs at once")] = 1,
           name: Annotated[str | None, typer.Option(
               help="Celery node name [default: tailor-<pid>@<host>, unique per worker]")]
           = None) -> None:
    """Run a worker on the `distill` and `notify` (webhook) queues, one per GPU; logs at INFO."""
    command = [sys.executable, "-m", "worker", "-c", str(concurrency),
               *(["-n", name] if name else [])]
    os.execv(command[0], command)  # same pid: the default node name names this process


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
    """Classify TEXT... (a table) or --file (one JSON line per text, in order).

    Every text is checked before the first is sent, and output appears only when all are
    classified: --output is written to a temporary file renamed into place at the end.
    """
    if bool(texts) == bool(file):
        raise UsageError("give either TEXT arguments or --file")
    rows = read_rows(file) if file else [(f"argument {i}", t)
                                         for i, t in enumerate(texts or [], start=1)]
    check_rows(rows)
    options = {k: v for k, v in {"threshold": threshold, "top_k": top_k}.items()
               if v is not None}
    results = classify_batches(ctx.obj, model, rows, max(1, batch), options)
    if output:
        write_atomically(output, (jsonl_line(model, text, result, version)
                                  for text, result, version in results))
    elif file or jsonl:
        lines = [jsonl_line(model, *row) for row in results]  # all or nothing on stdout too
        sys.stdout.write("".join(line + "\n" for line in lines))
    else:
        out.print(scores_table(model, list(results)))


def run() -> None:
    """Entry point of the `tailor` script. Every failure is one line on stderr, never a
    traceback: usage errors exit 2, server and input errors 1 (server messages verbatim)."""
    try:
        status = app(standalone_mode=False)  # returns the exit code of typer.Exit
    except TailorError as exc:  # the server's errors, and the command line's own
        fail(exc.message + (f" ({exc.code})" if exc.code else ""),
             getattr(exc, "exit_code", 1))
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        sys.exit(130)
    except typer.TyperException as exc:  # the parser's usage errors (exit code 2)
        message = exc.format_message()
        if not message:  # no arguments: the help was printed already
            sys.exit(exc.exit_code)
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        fail(message + hint, exc.exit_code)
    except Exception as exc:  # a bug or an unexpected answer: still one line
        if os.environ.get("TAILOR_DEBUG"):
            raise
        fail(f"unexpected {type(exc).__name__}: {exc} (set TAILOR_DEBUG=1 for details)", 1)
    sys.exit(status if isinstance(status, int) else 0)


def fail(message: str, code: int) -> None:
    """Print `error: message` on one line (the message verbatim, never read as markup)."""
    err.print(f"[red]error:[/red] {esc(message)}")
    sys.exit(code)


if __name__ == "__main__":
    run()
