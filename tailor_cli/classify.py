"""`tailor classify`: texts from arguments (a table) or a file (JSON lines out)."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from tailor_cli.client import Api, CliError


def read_texts(path: str) -> list[str]:
    """Texts from JSONL (`text` field, or bare strings), CSV (`text` column) or plain lines;
    `-` reads standard input."""
    raw = _decode(sys.stdin.buffer.read() if path == "-" else _read(Path(path)), path)
    if path.lower().endswith(".csv"):
        # newline='': the csv module itself finds records (\n, \r\n, \r; quoted newlines)
        reader = csv.DictReader(io.StringIO(raw, newline=""))
        try:
            if "text" not in (reader.fieldnames or []):
                raise CliError(f"{path}: a CSV file needs a 'text' column")
            return [row["text"] for row in reader]
        except csv.Error as exc:
            raise CliError(f"{path} line {reader.line_num}: {exc}") from exc
    texts = []
    for lineno, line in enumerate(split_lines(raw), start=1):
        if not line.strip():
            continue
        if path.lower().endswith((".jsonl", ".ndjson")):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CliError(f"{path} line {lineno}: not valid JSON ({exc.msg})") from exc
            text = obj.get("text") if isinstance(obj, dict) else obj
            if not isinstance(text, str):
                raise CliError(f"{path} line {lineno}: expected a 'text' string")
            texts.append(text)
        else:
            texts.append(line)
    return texts


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
        raise CliError(f"cannot read {path}: {exc.strerror}") from exc


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise CliError(f"{path} line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x}); "
                       "save the file as UTF-8") from exc


def classify_batches(api: Api, model: str, texts: list[str], batch: int,
                     options: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], int]]:
    """Yield (text, result, version) in input order, `batch` texts per request."""
    for start in range(0, len(texts), batch):
        chunk = texts[start:start + batch]
        body = api.post("/classify", json={"model": model, "texts": chunk, **options})
        for text, result in zip(chunk, body["results"], strict=True):
            yield text, result, body["version"]


def scores_table(model: str, rows: list[tuple[str, dict[str, Any], int]]) -> Table:
    version = rows[0][2] if rows else "?"
    table = Table("text", "label", "scores", title=f"{model} (version {version})")
    for text, result, _ in rows:
        label = result["label"]
        label = ", ".join(label) if isinstance(label, list) else label
        scores = sorted(result["scores"].items(), key=lambda kv: -kv[1])
        table.add_row(text if len(text) <= 60 else text[:59] + "…", f"[bold]{label}[/bold]",
                      "  ".join(f"{name} {p:.3f}" for name, p in scores))
    return table


def jsonl_line(model: str, text: str, result: dict[str, Any], version: int) -> str:
    return json.dumps({"text": text, "model": model, "version": version, **result},
                      ensure_ascii=False)
