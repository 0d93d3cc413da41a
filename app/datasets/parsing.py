"""Uploads into rows: a JSON body, or a JSONL / CSV file read as a stream.

Every reader is synchronous and meant for a worker thread (the router runs it off the event
loop). Files are read line by line from a binary stream and the reader stops at the first bad
row or at the row limit, so neither a huge file nor a hostile one costs more than the rows it
takes to refuse it. Every text goes through `app.core.texts.validate_text`, every JSON line
through `app.core.strict_json.strict_loads`; each error names its row.

Choices where the contract was silent (README, "Datasets"):
- JSONL lines end at `\\n` (a `\\r` before it is dropped); nothing else ends a line.
- CSV follows the csv module with newline='' semantics: `\\n`, `\\r\\n` and a lone `\\r` all
  end a record, and quoted fields may hold any of them. The delimiter is `,`, or `;` / tab
  when that is what splits the header into a text column.
- Headers match case-insensitively, ignoring surrounding spaces; `text_column` and
  `label_column` rename them; other columns are ignored and listed in `warnings`.
- Integer labels (JSON `1`) become strings (`"1"`); booleans and fractions are refused.
"""

from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, BinaryIO, Literal, overload

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from app.core.config import get_settings
from app.core.errors import AppError, Invalid, InvalidText, PayloadTooLarge, field_path
from app.core.strict_json import strict_loads
from app.core.texts import (
    check_name,
    check_utf8_head,
    decode_utf8,
    lone_surrogate,
    refuse_nul,
    validate_text,
)

MULTI_LABEL_SEP = "|"  # CSV cells hold several labels as "floods|storm"
MAX_NAME_CHARS = 200
MAX_LABEL_CHARS = 200
# A JSONL line holds one text of at most max_text_chars code points; written as JSON escapes
# an astral character takes 12 bytes (`\\ud83d\\ude00`), plus room for the label and keys.
LINE_BYTES_PER_CHAR = 12
LINE_OVERHEAD_BYTES = 64 * 1024
# The csv module refuses fields over its limit (default 131,072 characters). Ours is well
# above the text limit, so an overlong cell gets the ordinary "too long" error from
# validate_text naming its row, yet bounded, so a runaway quote stops early.
CSV_FIELD_FACTOR = 16
CSV_DELIMITERS = (",", ";", "\t")
READ_CHUNK = 64 * 1024
# What the readers take: an open binary file (an upload's spool) or a raw stream (a
# request body, app.core.streams.RequestBodyFile).
ByteStream = BinaryIO | io.RawIOBase


@dataclass
class Row:
    """One record, checked: `text` passed validate_text, `label` is None, a str or a list."""

    text: str
    label: str | list[str] | None
    where: str = ""


@dataclass(frozen=True)
class Columns:
    """Which field / column holds the text and which the label (names as normalized)."""

    text: str = "text"
    label: str = "label"


@dataclass
class Parsed:
    rows: list[Row]
    warnings: list[dict[str, Any]] = field(default_factory=list)


# The one definition of a dataset name: the JSON field, the multipart field and the query
# parameter are all checked with it.
DatasetName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS),
                        AfterValidator(check_name)]
ColumnName = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS),
                       AfterValidator(check_name)]
_NAME = TypeAdapter(DatasetName, config=ConfigDict(strict=True))
_COLUMN = TypeAdapter(ColumnName, config=ConfigDict(strict=True))


def _adapt(adapter: TypeAdapter[str], value: Any, where: str) -> str:
    if isinstance(value, str):
        refuse_nul(value, where)  # as a JSON body's strings are refused: same error everywhere
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise Invalid(where, exc.errors()[0]["msg"].removeprefix("Value error, ")) from exc


def validate_name(value: Any, where: str = "name") -> str:
    """Return `value` if it is a valid dataset name; 422 naming `where` otherwise."""
    return _adapt(_NAME, value, where)


def columns_from(text_column: Any = None, label_column: Any = None) -> Columns:
    """Columns named by the client (None keeps the default), normalized; 422 if invalid."""
    text = _adapt(_COLUMN, text_column, "text_column") if text_column is not None else "text"
    label = _adapt(_COLUMN, label_column, "label_column") if label_column is not None else "label"
    columns = Columns(_norm(text), _norm(label))
    if columns.text == columns.label:
        raise Invalid("label_column", "the text and label columns must differ")
    return columns


def _norm(name: str) -> str:
    return name.strip().lower()


class DatasetHead(BaseModel):
    """The JSON body around the records; records are checked one by one afterwards."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: DatasetName
    records: list[Any] = Field(description="At least one record.")
    text_column: ColumnName | None = Field(
        None, description="The record field holding the text (default `text`).")
    label_column: ColumnName | None = Field(
        None, description="The record field holding the label (default `label`).")


def rows_from_json(payload: Any) -> tuple[str, Parsed]:
    """(name, rows) from a parsed JSON body {"name", "records", "text_column"?,
    "label_column"?}; unknown record fields are refused (422), as the schema says."""
    if not isinstance(payload, dict):
        raise Invalid("body", "must be a JSON object with 'name' and 'records'")
    try:
        head = DatasetHead.model_validate(payload)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise Invalid(field_path(err["loc"]),
                      err["msg"].removeprefix("Value error, ")) from exc
    columns = columns_from(head.text_column, head.label_column)
    _check_count(len(head.records))
    rows = []
    for i, record in enumerate(head.records):
        where = f"records[{i}]"
        if not isinstance(record, dict):
            raise Invalid(where, "each record must be an object with a 'text' field")
        unknown = [k for k in record if _norm(k) not in (columns.text, columns.label)]
        if unknown:
            raise Invalid(f"{where}.{unknown[0]}", "unknown field; records hold "
                          f"{columns.text!r} and {columns.label!r} (rename with text_column / "
                          "label_column)")
        rows.append(_row_from_object(record, where, columns))
    return head.name, Parsed(rows)


def read_jsonl(stream: ByteStream, columns: Columns = Columns()) -> Parsed:
    """Rows from JSON lines (one object per line), read as a stream; blank lines skipped."""
    settings = get_settings()
    max_line = LINE_BYTES_PER_CHAR * settings.max_text_chars + LINE_OVERHEAD_BYTES
    rows: list[Row] = []
    ignored: dict[str, None] = {}
    # Our own buffer: readline(limit) on a temporary file (a multipart upload's spool) held
    # the GIL for half a second at a time in tests, stalling the event loop.
    buffered = _buffered(stream)
    for lineno in itertools.count(1):
        raw = buffered.readline(max_line + 1)
        if not raw:
            break
        where = f"line {lineno}"
        if len(raw) > max_line and not raw.endswith(b"\n"):
            raise Invalid(where, f"longer than {max_line} bytes (one text holds at most "
                                 f"{settings.max_text_chars} characters)", code="line_too_long")
        if not raw.strip():
            continue
        _check_count(len(rows) + 1)
        obj = _json_line(decode_utf8(raw, where), where)
        if not isinstance(obj, dict):
            raise Invalid(where, f"each line must be a JSON object with a {columns.text!r} field")
        ignored.update((k, None) for k in obj if _norm(k) not in (columns.text, columns.label))
        rows.append(_row_from_object(obj, where, columns))
    return Parsed(rows, _ignored_warning(list(ignored), "fields"))


def _json_line(text: str, where: str) -> Any:
    try:
        return strict_loads(text, where=where)
    except AppError as exc:
        if exc.status_code == 400:  # malformed: the request is fine, its line is not
            raise Invalid(where, exc.message.removeprefix(f"{where}: "),
                          code="malformed_json") from exc
        raise


def _row_from_object(obj: dict[str, Any], where: str, columns: Columns) -> Row:
    fields = {_norm(k): v for k, v in obj.items()}
    if columns.text not in fields:
        raise Invalid(f"{where}.{columns.text}", f"missing (the record has fields "
                                                 f"{sorted(obj)!r}; name another with "
                                                 "text_column)")
    text = validate_text(fields[columns.text], f"{where}.{columns.text}")
    return Row(text, normalize_label(fields.get(columns.label), f"{where}.{columns.label}"), where)


def normalize_label(value: Any, where: str) -> str | list[str] | None:
    """None (unlabeled), a label, or a list of distinct labels; integers become their decimal
    string. An empty list is a labeled row to which no label applies: an answer in a
    multi-label task, refused when a single-label job names the set (POST /jobs)."""
    if value is None:
        return None
    if isinstance(value, list):
        labels = [_one_label(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return list(dict.fromkeys(labels))
    return _one_label(value, where)


def _one_label(value: Any, where: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise Invalid(where, "a label must be a string or an integer (or a list of them), "
                             f"not {type(value).__name__}")
    return validate_text(value, where, max_chars=MAX_LABEL_CHARS)


def read_csv(stream: ByteStream, columns: Columns = Columns()) -> Parsed:
    """Rows from CSV with a header row, read as a stream (see the module doc for dialects)."""
    settings = get_settings()
    buffered = _buffered(stream)
    check_utf8_head(buffered.peek(512)[:512], "line 1")
    # Invalid bytes become U+DC80..U+DCFF (surrogateescape), so the row holding them is
    # named exactly, instead of the 8 KiB decoding chunk that held them.
    lines = io.TextIOWrapper(buffered, encoding="utf-8-sig", errors="surrogateescape",
                             newline="")
    field_limit = max(CSV_FIELD_FACTOR * settings.max_text_chars, 131_072)
    csv.field_size_limit(field_limit)  # process-wide, and the same value in every thread
    header_line = lines.readline()
    delimiter = _delimiter(header_line, columns)
    # strict: an unclosed quote at the end of the file, or text after a closing quote, is an
    # error rather than a silently merged field.
    reader = csv.reader(itertools.chain([header_line], lines), delimiter=delimiter, strict=True)
    records = _records(reader, field_limit)
    try:
        _, header = next(records, (1, []))
    except _CsvProblem as exc:
        raise Invalid(f"header (line {exc.line})", exc.message, code="csv_error") from exc
    if not header:
        return Parsed([])  # an empty file: "the dataset has no rows"
    names = [_norm(h) for h in header]
    _check_cells(header, "line 1")
    text_at = _column_index(names, columns.text, "text_column", required=True)
    label_at = _column_index(names, columns.label, "label_column",
                             required=columns.label != Columns.label)
    ignored = [h.strip() or f"(unnamed column {i + 1})" for i, h in enumerate(header)
               if i not in (text_at, label_at)]
    layout = _Layout(len(header), text_at, label_at, columns, delimiter)
    rows: list[Row] = []
    try:
        for line, cells in records:
            _csv_row(rows, line, cells, layout)
    except _CsvProblem as exc:
        raise Invalid(f"row {len(rows) + 1} (line {exc.line})", exc.message,
                      code="csv_error") from exc
    return Parsed(rows, _ignored_warning(ignored, "columns"))


@dataclass(frozen=True)
class _Layout:
    """Where a CSV file keeps its text and label, and how wide its header is."""

    width: int
    text_at: int
    label_at: int | None
    columns: Columns
    delimiter: str


def _csv_row(rows: list[Row], line: int, cells: list[str], layout: _Layout) -> None:
    """Check one CSV record and append its Row (blank records are skipped)."""
    if not any(c.strip() for c in cells):
        return  # a blank line, or a spreadsheet's row of empty cells
    where = f"row {len(rows) + 1} (line {line})"
    _check_count(len(rows) + 1)
    _check_cells(cells, where)
    if len(cells) > layout.width or layout.text_at >= len(cells):
        raise Invalid(where, f"{len(cells)} fields but the header has {layout.width}; quote "
                             f"fields that contain {layout.delimiter!r}", code="csv_error")
    text = validate_text(cells[layout.text_at], f"{where}.{layout.columns.text}")
    at = layout.label_at
    cell = cells[at].strip() if at is not None and at < len(cells) else ""
    label: Any = None
    if MULTI_LABEL_SEP in cell:
        label = [part.strip() for part in cell.split(MULTI_LABEL_SEP) if part.strip()] or None
    elif cell:
        label = cell
    rows.append(Row(text, normalize_label(label, f"{where}.{layout.columns.label}"), where))


class _CsvProblem(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line, self.message = line, message


def _records(reader: Any, field_limit: int) -> Iterator[tuple[int, list[str]]]:
    """(first line, cells) per CSV record; a csv.Error becomes _CsvProblem at its line."""
    line = 0
    while True:
        start = line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            message = str(exc)
            if "field larger than field limit" in message:
                message = (f"a field is longer than {field_limit} characters (an unclosed "
                           "quote?)")
            elif "unexpected end of data" in message:
                message = "the file ends inside a quoted field (an unclosed quote?)"
            raise _CsvProblem(start, message) from exc
        line = reader.line_num
        yield start, cells


def _delimiter(header_line: str, columns: Columns) -> str:
    for delimiter in CSV_DELIMITERS:
        try:
            cells = next(csv.reader([header_line], delimiter=delimiter), [])
        except csv.Error:
            continue
        if columns.text in (_norm(c) for c in cells):
            return delimiter
    return ","


@overload
def _column_index(names: list[str], name: str, option: str, *,
                  required: Literal[True]) -> int: ...
@overload
def _column_index(names: list[str], name: str, option: str, *,
                  required: bool) -> int | None: ...
def _column_index(names: list[str], name: str, option: str, *, required: bool) -> int | None:
    hits = [i for i, n in enumerate(names) if n == name]
    if len(hits) > 1:
        raise Invalid("header", f"column {name!r} appears {len(hits)} times")
    if hits:
        return hits[0]
    if required:
        raise Invalid("header", f"no {name!r} column (the header has {names!r}); name the "
                                f"column with {option}", code="missing_column")
    return None


def _check_cells(cells: list[str], where: str) -> None:
    for cell in cells:
        bad = lone_surrogate(cell)
        if bad is not None:
            byte = ord(cell[bad]) - 0xDC00
            raise InvalidText(where, f"not valid UTF-8: byte 0x{byte:02x} (Latin-1 or another "
                                     "legacy encoding?); save the file as UTF-8",
                              reason="encoding")


def _ignored_warning(names: list[str], what: str) -> list[dict[str, Any]]:
    if not names:
        return []
    shown = ", ".join(repr(n) for n in names[:20]) + (" ..." if len(names) > 20 else "")
    return [{"code": "ignored_columns",
             "message": f"{what} ignored: {shown}; only the text and label {what} are read "
                        "(name them with text_column / label_column)",
             "columns": names[:100]}]


def _check_count(rows: int) -> None:
    limit = get_settings().max_dataset_rows
    if rows > limit:
        raise PayloadTooLarge(f"more than {limit} rows (TAILOR_MAX_DATASET_ROWS); split the "
                              "upload", code="too_many_rows", details={"limit_rows": limit})


def validate_rows(rows: list[Row]) -> None:
    """Refuse an empty dataset (422) or one over the row limit (413)."""
    if not rows:
        raise Invalid("records", "the dataset has no rows", code="empty_dataset")
    _check_count(len(rows))


class _Raw(io.RawIOBase):
    """Any object with read() as a raw stream, so io.BufferedReader can peek and buffer it."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def _buffered(stream: ByteStream) -> io.BufferedReader:
    return io.BufferedReader(stream if isinstance(stream, io.RawIOBase) else _Raw(stream),
                             READ_CHUNK)
