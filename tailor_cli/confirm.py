"""Deleting from the command line: ask first (unless --yes), then say what went."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from tailor_cli.client import CliError
from tailor_cli.render import err, esc, out


def confirm_delete(what: str, yes: bool) -> None:
    """Ask `Delete <what>? [y/N]` on stderr and read the answer from stdin (a pipe may answer:
    `echo y | tailor ...`); `--yes` skips it. stdout stays clean for --json.

    Raises:
        CliError: the answer was not y/yes, or no answer came (end of input): nothing is
            deleted and the command exits 1. (Ctrl-C exits 130, as anywhere.)
    """
    if yes:
        return
    err.print(f"Delete {esc(what)}? {esc('[y/N]')} ", end="")  # brackets are Rich markup
    answer = sys.stdin.readline()
    if not sys.stdin.isatty():
        err.print()  # a piped answer is not echoed: end the question's line ourselves
    if answer.strip().lower() not in ("y", "yes"):
        raise CliError("not confirmed: nothing deleted (pass --yes to skip the question)")


def report_deleted(kind: str, label: str, obj: dict[str, Any], as_json: bool) -> None:
    """`deleted <kind> <label>`, or with --json one document: `{"deleted": true, "<kind>":
    the object as GET answered just before the delete}`."""
    if as_json:
        typer.echo(json.dumps({"deleted": True, kind: obj}))
    else:
        out.print(f"deleted {kind} {esc(label)}")
