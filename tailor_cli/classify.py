"""`tailor classify`: texts from arguments (a table) or a file (JSON lines out)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from app.core.visible import has_visible_text
from tailor import Client, TailorError
from tailor_cli.client import CliError, UsageError
from tailor_cli.render import esc


def read_texts(path: str) -> list[str]:
    """Texts from JSONL (`text` field, or bare strings), CSV (`text` column) or plain lines;
    `-` reads standard input."""
    return [text for _, text in read_rows(path)]


def read_rows(path: str) -> list[tuple[str, str]]:
    """(where, text) per input row, in file order; `where` names the file and its line (and
    the CSV data row) for messages, e.g. "in.csv line 71 (row 70)"."""
    raw = _decode(sys.stdin.buffer.read() if path == "-" else _read(Path(path)), path)
    name = "stdin" if path == "-" else path
    if path.lower().endswith(".csv"):
        # newline='': the csv module itself finds records (\n, \r\n, \r; quoted newlines)
        reader = csv.DictReader(io.StringIO(raw, newline=""))
        try:
            if "text" not in (reader.fieldnames or []):
                raise CliError(f"{path}: a CSV file needs a 'text' column")
            rows, start = [], reader.line_num + 1
            for n, row in enumerate(reader, start=1):
                rows.append((f"{name} line {start} (row {n})", row["text"] or ""))
                start = reader.line_num + 1  # a quoted cell may span several lines
        except csv.Error as exc:
            raise CliError(f"{path} line {reader.line_num}: {exc}") from exc
        return rows
    found: list[tuple[str, str]] = []
    for lineno, line in enumerate(split_lines(raw), start=1):
        if not line.strip():
            continue
        where = f"{name} line {lineno}"
        if path.lower().endswith((".jsonl", ".ndjson")):
            try:
                obj = json.loads(line, object_pairs_hook=unique_keys)
            except json.JSONDecodeError as exc:
                raise CliError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from exc
            except DuplicateKey as exc:  # the server refuses these too: never a silent pick
                raise CliError(f"{path} line {lineno}: key {exc.key!r} appears more than once "
                               "in one object") from exc
            text = obj.get("text") if isinstance(obj, dict) else obj
            if not isinstance(text, str):
                raise CliError(f"{path} line {lineno}: expected a 'text' string")
            found.append((where, text))
        else:
            found.append((where, line))
    return found


class DuplicateKey(ValueError):
    """The same key twice in one JSON object (json would silently keep the last)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object_pairs_hook: the object, or DuplicateKey naming the repeated key."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise DuplicateKey(key)
        obj[key] = value
    return obj


def split_lines(text: str) -> list[str]:
    """Lines ended by \n or \r\n only. Unlike str.splitlines(), a vertical tab, form feed,
    U+001C..U+001E, U+0085, U+2028 or U+2029 stays inside its line: feeds carry them in texts.
    A final line break does not start another (empty) line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()  # bytes: text mode would turn a lone \r into a line break
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CliError(f"{path} line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
                       "save the file as UTF-8") from exc


# Messages name at most this many bad rows; the count says how many there are in all.
SHOWN_BAD_ROWS = 5


def check_rows(rows: list[tuple[str, str]]) -> None:
    """Refuse, before anything is sent, texts the server would refuse: empty ones, ones with
    no visible character, ones that are not valid Unicode (a lone surrogate from a JSON
    escape). Raises CliError naming every bad row (the first SHOWN_BAD_ROWS of them)."""
    if not rows:
        raise CliError("no texts to classify")
    bad = [f"{where}: {problem}" for where, text in rows
           if (problem := text_problem(text)) is not None]
    if bad:
        more = f"; and {len(bad) - SHOWN_BAD_ROWS} more" if len(bad) > SHOWN_BAD_ROWS else ""
        raise CliError(f"{len(bad)} of {len(rows)} texts cannot be classified, nothing was "
                       f"sent: {'; '.join(bad[:SHOWN_BAD_ROWS])}{more}")


def text_problem(text: str) -> str | None:
    """Why a text cannot be classified, or None when it can."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"not valid Unicode (lone surrogate at character {exc.start + 1})"
    if "\x00" in text:
        return f"NUL character at position {text.index(chr(0))} is not allowed"
    if not has_visible_text(text):  # the server's own rule, so both refuse the same texts
        return "the text is empty or has no visible character"
    return None


def classify_batches(client: Client, model: str, rows: list[tuple[str, str]], batch: int,
                     options: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], int]]:
    """Yield (text, result, version) in input order, `batch` texts per request.

    Args:
        rows: (where, text) pairs from read_rows; a server error about one text is reported
            with that row's `where` before the server's own message.
    """
    texts = [text for _, text in rows]
    try:
        body = client.classify(model, texts, batch_size=batch, **options)
    except TailorError as exc:
        index = exc.details.get("index") if isinstance(exc.details, dict) else None
        if not isinstance(index, int) or not 0 <= index < len(rows):
            raise
        raise CliError(f"{rows[index][0]}: {exc.message}", code=exc.code,
                       status=exc.status) from exc
    for text, result in zip(texts, body["results"], strict=True):
        yield text, result, body["version"]


def scores_table(model: str, rows: list[tuple[str, dict[str, Any], int]]) -> Table:
    version = rows[0][2] if rows else "?"
    table = Table("text", "label", "scores", title=esc(f"{model} (version {version})"))
    for text, result, _ in rows:
        label = result["label"]
        label = ", ".join(label) if isinstance(label, list) else label
        scores = sorted(result["scores"].items(), key=lambda kv: -kv[1])
        table.add_row(esc(text if len(text) <= 60 else text[:59] + "…"),
                      f"[bold]{esc(label)}[/bold]",
                      esc("  ".join(f"{name} {p:.3f}" for name, p in scores)))
    return table


def jsonl_line(model: str, text: str, result: dict[str, Any], version: int) -> str:
    return json.dumps({"text": text, "model": model, "version": version, **result},
                      ensure_ascii=False)


def write_atomically(path: Path, lines: Iterator[str]) -> int:
    """Write `lines` to a temporary file beside `path` and rename it over `path` only when
    every line is written: on any error `path` is left as it was. Returns the line count."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"cannot write {path}: no directory {directory}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc
    count = 0
    try:
        os.chmod(tmp, _file_mode(path))  # mkstemp makes 0600; keep what a plain open gives
        with os.fdopen(fd, "w", encoding="utf-8") as sink:
            for line in lines:
                sink.write(line + "\n")
                count += 1
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _file_mode(path: Path) -> int:
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask
