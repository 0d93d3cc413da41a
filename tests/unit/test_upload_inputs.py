"""What real feeds send to POST /datasets (and the CLI's readers): odd Unicode, CSV dialects,
line-break look-alikes, strict JSON bodies. Each answer is a 201 with the right rows or a 4xx
naming the item, never a 500, and a refused upload leaves nothing behind."""

from __future__ import annotations

import io
import json
import random

import pytest
from sqlalchemy import func, select

from app.core.db import session_scope
from app.core.errors import InvalidText, PayloadTooLarge
from app.datasets import parsing
from app.datasets.service import read_records
from app.models import Dataset, DatasetRecord, Job
from tests.integration.report import record_input

pytestmark = pytest.mark.reliability

JSON = {"content-type": "application/json"}
# The example: a tweet cut mid-emoji, as JSON sends it.
POISON = '"Flood \\ud83d hits town"'


def _counts() -> tuple[int, ...]:
    with session_scope() as db:
        return tuple(db.scalar(select(func.count()).select_from(t))
                     for t in (Dataset, DatasetRecord, Job))


def _refused(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"code", "message", "details"}
    if code:
        assert err["code"] == code, err
    return err


def _stored(dataset_id: str) -> list[tuple[str, object]]:
    with session_scope() as db:
        return read_records(db=db, dataset_id=dataset_id)


def _file(client, filename: str, data: bytes, **form: str):
    return client.post("/datasets", files={"file": (filename, data)}, data=form)


# --- kind 1: text that is not valid Unicode ---------------------------------------------

@pytest.mark.parametrize("request_kwargs, status, field", [
    ({"content": f'{{"name": "d", "records": [{{"text": "ok"}}, {{"text": {POISON}}}]}}'.encode(),
      "headers": JSON}, 422, "records[1].text"),
    ({"files": {"file": ("x.jsonl", b'{"text": "ok"}\n{"text": ' + POISON.encode() + b"}\n")}},
     422, "line 2.text"),
    ({"files": {"file": ("x.jsonl", b'{"text": "ok", "label": "\\udc00"}\n')}},
     422, "line 1.label"),
    ({"content": b'{"name": "d", "records": [{"text": "a", "label": ["x", "\\ud800y"]}]}',
      "headers": JSON}, 422, "records[0].label[1]"),
    ({"files": {"file": ("x.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": "caf\xe9"}\n')}},
     422, "line 3"),
    ({"files": {"file": ("x.csv", "text,label\nok,a\ncafé,b\n".encode("latin-1"))}},
     422, "row 2 (line 3)"),
    ({"files": {"file": ("x.jsonl", '{"text": "ok"}\n'.encode("utf-16"))}}, 422, "line 1"),
    ({"files": {"file": ("x.csv", "text\nflood\n".encode("utf-16-le"))}}, 422, "line 1"),
    ({"files": {"file": ("x.csv", "text\nflood\n".encode("utf-16"))}}, 422, "line 1"),
    ({"content": b'{"name": "d", "records": [{"text": "caf\xe9"}]}', "headers": JSON},
     400, "body"),
])
def test_text_that_is_not_valid_unicode_is_refused_naming_the_item(client, request_kwargs,
                                                                   status, field):
    before = _counts()
    err = _refused(client.post("/datasets", **request_kwargs), status)
    assert err["message"].startswith(field), err
    assert err["details"]["field"] == field
    assert _counts() == before
    record_input("text that is not valid Unicode",
                 ["POST /datasets JSON", "JSONL upload", "CSV upload"],
                 ['lone surrogate "Flood \\ud83d hits town" (JSON body, JSONL line, label)',
                  "invalid UTF-8 byte mid-file", "Latin-1 CSV", "UTF-16 with and without BOM"],
                 ["422 invalid_text naming the record/line/row (400 for a JSON body that is "
                  "not UTF-8)", "nothing stored"])


@pytest.mark.parametrize("text", ["", "   \t\r\n ", "\u200b\u200b", "\x01\x02\x7f", "\ufeff",
                                  "\u200d\u2060\u00ad", "\u3164\u2800", "\u2028\u2029"])
def test_text_without_visible_content_is_an_empty_text(client, text):
    empty = _refused(client.post("/datasets", json={"name": "d", "records": [{"text": ""}]}),
                     422, "invalid_text")
    err = _refused(client.post("/datasets", json={"name": "d", "records": [{"text": text}]}),
                   422, "invalid_text")
    assert err == empty and err["details"] == {"field": "records[0].text", "reason": "empty"}
    line = json.dumps({"text": text}).encode()
    err = _refused(_file(client, "x.jsonl", b'{"text": "ok"}\n' + line + b"\n"), 422)
    assert err["details"] == {"field": "line 2.text", "reason": "empty"}
    record_input("text with no visible content",
                 ["POST /datasets JSON", "JSONL upload", "CSV upload"],
                 ["empty", "whitespace", "zero-width spaces", "control characters only",
                  "a BOM alone", "joiners and soft hyphens", "Hangul filler, braille blank",
                  "U+2028/U+2029 only"],
                 ["the same 422 invalid_text (reason empty) as an empty text"])


def test_nul_is_refused_in_every_text_path_and_other_controls_are_kept(client):
    cases = [
        (client.post("/datasets", json={"name": "d", "records": [{"text": "a\x00b"}]}),
         "records[0].text"),
        (_file(client, "x.jsonl", b'{"text": "ok"}\n{"text": "a\\u0000b"}\n'), "line 2.text"),
        (_file(client, "x.csv", b"text,label\nflood,x\na\x00b,y\n"), "row 2 (line 3).text"),
        (client.post("/datasets", json={"name": "d", "records": [{"text": "a", "label": "x\x00"}]}),
         "records[0].label"),
    ]
    for resp, field in cases:
        err = _refused(resp, 422, "invalid_text")
        assert err["details"] == {"field": field, "reason": "nul"}, err
    kept = ["tab\there", "bom\ufeffinside", "rtl \u202eevil", "v\x0btab \x1c\x1d\x1e",
            "family 👨\u200d👩\u200d👧", "Z\u0324\u0354\u0367\u0311", "مرحبا بالعالم", "洪水"]
    ds = client.post("/datasets", json={"name": "d", "records": [{"text": t} for t in kept]})
    assert ds.status_code == 201, ds.text
    assert [t for t, _ in _stored(ds.json()["id"])] == kept
    record_input("control characters, NUL, BOM inside text",
                 ["POST /datasets JSON", "JSONL upload", "CSV upload"],
                 ["NUL in a text (JSON, JSONL escape, raw CSV byte) and in a label",
                  "tab, BOM, RLO, VT/FS/GS/RS, ZWJ emoji, combining marks, RTL, CJK"],
                 ["NUL: 422 invalid_text naming the row (reason nul)",
                  "every other character stored exactly as sent"])


# --- kind 2: CSV dialects ------------------------------------------------------------------

@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r", "mixed"])
def test_csv_parses_with_every_newline_convention(client, newline):
    ends = ["\r\n", "\r", "\n", "\r"] if newline == "mixed" else [newline] * 4
    lines = ["text,label", "flood in the city,crisis", '"two\nlines",calm', "fire,crisis"]
    data = "".join(line + end for line, end in zip(lines, ends, strict=True)).encode()
    resp = _file(client, "x.csv", data)
    assert resp.status_code == 201, resp.text
    stored = _stored(resp.json()["id"])
    assert stored == [("flood in the city", "crisis"), ("two\nlines", "calm"),
                      ("fire", "crisis")]
    record_input("CSV dialects", ["CSV upload", "tailor classify --file"],
                 ["LF, CRLF, CR-only and mixed line endings", "a quoted field with a newline"],
                 ["201 with the same rows for every convention"])


@pytest.mark.parametrize("size, status", [(20_000, 201), (20_001, 422), (140_000, 422),
                                          (1_000_000, 422)])
def test_csv_cell_over_the_text_limit_is_422_naming_the_row(client, size, status):
    data = b"text,label\nflood,crisis\n" + b"a" * size + b",calm\nfire,crisis\n"
    before = _counts()
    resp = _file(client, "x.csv", data)
    if status == 201:
        assert resp.status_code == 201 and resp.json()["rows"] == 3
        return
    err = _refused(resp, 422)
    assert err["message"].startswith("row 2 (line 3)"), err
    assert _counts() == before
    record_input("CSV dialects", ["CSV upload"],
                 ["cells of 20,000 (at the limit), 20,001, 140,000 and 1,000,000 characters"],
                 ["at the limit: 201; over: 422 naming the row, never a csv.Error 500"])


def test_csv_headers_columns_and_labels(client):
    resp = _file(client, "x.csv", b"text,category\nflood,crisis\nsun,calm\n")
    assert resp.status_code == 201 and resp.json()["labeled_rows"] == 0
    warning, = resp.json()["warnings"]
    assert warning["code"] == "ignored_columns" and warning["columns"] == ["category"]
    assert "category" in warning["message"]
    named = _file(client, "x.csv", b"text,category\nflood,crisis\nsun,calm\n",
                  label_column="category")
    assert named.json()["labeled_rows"] == 2 and named.json()["warnings"] == []
    for data in (b" Text , LABEL \nflood,crisis\n", b"text;label\nflood;crisis\n",
                 b"id\ttext\tlabel\n7\tflood\tcrisis\n"):
        resp = _file(client, "x.csv", data)
        assert resp.status_code == 201, (data, resp.text)
        assert _stored(resp.json()["id"]) == [("flood", "crisis")]
    numeric = _file(client, "x.csv", b"text,label\nflood,1\nsun,0\nquake,1|2\n")
    assert numeric.json()["labels"] == ["0", "1", "2"]
    assert _stored(numeric.json()["id"])[2] == ("quake", ["1", "2"])
    jsonl = _file(client, "x.jsonl",
                  b'{"text": "flood", "label": 1}\n{"text": "x", "label": [2]}\n')
    assert jsonl.json()["labels"] == ["1", "2"]
    none_apply = _file(client, "x.jsonl", b'{"text": "a", "label": []}\n')  # multi-label "none"
    assert none_apply.status_code == 201 and none_apply.json()["labeled_rows"] == 1
    raw = client.post("/datasets?name=r&text_column=body&label_column=tag",
                      content=b"body,tag,source\r\nflood,crisis,twitter\r\n",
                      headers={"content-type": "text/csv"})
    assert raw.status_code == 201 and raw.json()["labeled_rows"] == 1
    assert raw.json()["warnings"][0]["columns"] == ["source"]
    for resp, field in [
        (_file(client, "x.csv", b"body,label\nflood,crisis\n"), "header"),
        (_file(client, "x.csv", b"text,label\nflood,x\n", label_column="tag"), "header"),
        (_file(client, "x.jsonl", b'{"text": "a", "label": true}\n'), "line 1.label"),
        (_file(client, "x.jsonl", b'{"text": "a", "label": 0.5}\n'), "line 1.label"),
    ]:
        assert _refused(resp, 422)["details"]["field"] == field
    record_input("CSV dialects", ["CSV upload", "JSONL upload", "raw text/csv body"],
                 ["header text,category", "label_column / text_column named",
                  "header with spaces and another case", "; and tab delimiters",
                  "numeric labels", "booleans and fractions as labels", "an empty label list"],
                 ["ignored columns listed in warnings", "numbers become strings",
                  "unusable labels: 422 naming the line",
                  "an empty list is stored as a labeled row (no label applies)"])


@pytest.mark.parametrize("data, line", [
    (b"text,label\nflood,crisis\nFlood, fire in town,crisis\n", "row 2 (line 3)"),
    (b'text,label\nflood,crisis\n"never closed,calm\nfire,crisis\n', "row 2 (line 3)"),
    (b'text,label\n"quoted"tail,calm\n', "row 1 (line 2)"),
])
def test_malformed_csv_rows_are_422_naming_the_row(client, data, line):
    err = _refused(_file(client, "x.csv", data), 422, "csv_error")
    assert err["message"].startswith(line), err
    record_input("CSV dialects", ["CSV upload"],
                 ["an unquoted delimiter (extra field)", "an unclosed quote",
                  "text after a closing quote"],
                 ["422 csv_error naming the row, nothing silently merged"])


# --- kind 3: line splitting ----------------------------------------------------------------

LOOKALIKES = "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def test_jsonl_and_csv_split_lines_on_newline_only(client):
    texts = [f"a{ch}b" for ch in LOOKALIKES]
    jsonl = "\r\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts).encode()
    resp = _file(client, "x.jsonl", jsonl + b"\n")
    assert resp.status_code == 201, resp.text
    assert [t for t, _ in _stored(resp.json()["id"])] == texts
    csv_data = ("text\n" + "\n".join(texts) + "\n").encode()
    resp = _file(client, "x.csv", csv_data)
    assert resp.status_code == 201, resp.text
    assert [t for t, _ in _stored(resp.json()["id"])] == texts
    record_input("characters that some splitters treat as line breaks",
                 ["JSONL upload", "CSV upload", "tailor classify --file (.txt/.jsonl/.csv)"],
                 ["VT, FF, FS, GS, RS, NEL (U+0085), U+2028, U+2029 inside texts; CRLF lines"],
                 ["one row per \\n or \\r\\n line; every other character kept in its text"])


def test_cli_readers_split_lines_on_newline_only(tmp_path):
    from tailor_cli.classify import read_texts

    texts = [f"a{ch}b" for ch in LOOKALIKES] + ["lone\rcarriage return"]
    (tmp_path / "in.txt").write_bytes("\r\n".join(texts).encode() + b"\n")
    assert read_texts(str(tmp_path / "in.txt")) == texts
    (tmp_path / "in.jsonl").write_bytes(
        "\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in texts).encode())
    assert read_texts(str(tmp_path / "in.jsonl")) == texts
    (tmp_path / "in.csv").write_bytes(b'text\r"x\ry"\r' + "é\u2028z".encode() + b"\r")
    assert read_texts(str(tmp_path / "in.csv")) == ["x\ry", "é\u2028z"]


# --- kind 7: strict request bodies ---------------------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000
STRICT_CASES = [
    # duplicate keys
    ("POST", "/datasets", b'{"name": "a", "name": "b", "records": [{"text": "x"}]}', JSON,
     422, "duplicate_key", "'name'"),
    ("POST", "/datasets", b'{"name": "a", "records": [{"text": "x", "text": "y"}]}', JSON,
     422, "duplicate_key", "'text'"),
    ("POST", "/classify", b'{"model": "m", "texts": ["a"], "texts": ["b"]}', JSON,
     422, "duplicate_key", "'texts'"),
    ("PUT", "/models/m/aliases/prod", b'{"version": 1, "version": 2}', JSON,
     422, "duplicate_key", "'version'"),
    # booleans where integers (or numbers) belong
    ("PUT", "/models/m/aliases/prod", b'{"version": true}', JSON, 422, "validation_error",
     "version"),
    ("POST", "/classify", b'{"model": "m", "texts": ["a"], "top_k": true}', JSON,
     422, "validation_error", "top_k"),
    ("POST", "/classify", b'{"model": "m", "texts": ["a"], "threshold": false}', JSON,
     422, "validation_error", "threshold"),
    ("POST", "/classify", b'{"model": "m", "texts": [1]}', JSON, 422, "validation_error",
     "texts[0]"),
    # NaN and Infinity, and numbers no column holds
    ("POST", "/classify", b'{"model": "m", "texts": ["a"], "threshold": NaN}', JSON,
     422, "invalid_number", "NaN"),
    ("POST", "/classify", b'{"model": "m", "texts": ["a"], "threshold": -Infinity}', JSON,
     422, "invalid_number", "Infinity"),
    ("POST", "/classify", b'{"model": "m", "texts": ["a"], "threshold": 1e999}', JSON,
     422, "invalid_number", "1e999"),
    ("PUT", "/models/m/aliases/prod", b'{"version": 123456789012345678901234567890}', JSON,
     422, "invalid_number", "64-bit"),
    # wrong or missing Content-Type
    ("POST", "/classify", b'{"model": "m", "texts": ["a"]}', {"content-type": "text/plain"},
     415, "unsupported_media_type", "application/json"),
    ("POST", "/jobs", b'{"name": "x"}', {}, 415, "unsupported_media_type", "application/json"),
    ("POST", "/keys", b"name=x&scopes=admin",
     {"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type",
     "application/json"),
    ("POST", "/datasets", b"<records/>", {"content-type": "application/xml"}, 415,
     "unsupported_media_type", "multipart/form-data"),
    # nesting
    ("POST", "/classify", DEEP, JSON, 422, "too_deep", "nested deeper"),
    ("POST", "/datasets", b'{"name": "d", "records": [{"text": "a", "label": '
     + b"[" * 70 + b"]" * 70 + b"}]}", JSON, 422, "too_deep", "nested deeper"),
    ("POST", "/datasets", b'{"name": "d", "records": [', JSON, 400, "malformed_json", "line 1"),
]


@pytest.mark.parametrize("method, path, body, headers, status, code, needle", STRICT_CASES)
def test_strict_request_bodies(client, method, path, body, headers, status, code, needle):
    before = _counts()
    err = _refused(client.request(method, path, content=body, headers=headers), status, code)
    assert needle in err["message"], err
    assert _counts() == before
    record_input("strict request bodies",
                 ["POST /datasets", "POST /classify", "POST /jobs", "POST /keys",
                  "PUT /models/{name}/aliases/{alias}"],
                 ["duplicate keys (top level and nested)", "booleans for integers and numbers",
                  "a number for a string", "NaN, -Infinity, 1e999, a 30-digit integer",
                  "text/plain, form-encoded, XML and missing Content-Type",
                  "JSON nested 100,000 and 70 deep", "truncated JSON"],
                 ["422 naming the key/field (duplicate_key, validation_error, invalid_number, "
                  "too_deep)", "415 naming what is accepted", "400 malformed_json",
                  "nothing stored"])


def test_jsonl_line_nested_100000_deep_is_422_naming_the_line(client):
    data = b'{"text": "ok"}\n' + DEEP + b"\n"
    err = _refused(_file(client, "x.jsonl", data), 422, "too_deep")
    assert err["details"]["field"] == "line 2"
    err = _refused(_file(client, "x.jsonl", b'{"text": "ok", "text": "twice"}\n'), 422,
                   "duplicate_key")
    assert err["details"]["field"] == "line 1"
    err = _refused(_file(client, "x.jsonl", b'{"text": "ok", "label": NaN}\n'), 422,
                   "invalid_number")
    assert err["details"]["field"] == "line 1"


def test_depth_limit_is_exact():
    from app.core.errors import Invalid
    from app.core.strict_json import MAX_JSON_DEPTH, strict_loads

    for opener, closer in ((b"[", b"]"), (b'{"a":', b"}")):
        ok = opener * MAX_JSON_DEPTH + b"1" + closer * MAX_JSON_DEPTH
        assert strict_loads(ok) is not None
        with pytest.raises(Invalid, match="nested deeper"):
            strict_loads(opener + ok + closer)
    # brackets inside strings are text, not nesting
    assert strict_loads(json.dumps(["[" * 500]))
    # documents over 1 MiB are measured by walking the parsed value: the same limit
    pad = "x" * (1 << 20)
    for depth, deep in ((MAX_JSON_DEPTH - 1, False), (MAX_JSON_DEPTH, True)):
        doc = json.dumps({"pad": pad, "v": json.loads("[" * depth + "]" * depth)})
        if deep:
            with pytest.raises(Invalid, match="nested deeper"):
                strict_loads(doc)
        else:
            assert strict_loads(doc)["pad"] == pad


# --- issue 10.3: limits, streaming, never a 500 ------------------------------------------

class CountingStream(io.RawIOBase):
    """A body of `rows` tiny JSONL rows, generated as read; counts the bytes handed out."""

    def __init__(self, line: bytes, rows: int, head: bytes = b"") -> None:
        self.line, self.left, self.read_bytes = line, rows, 0
        self.pending = head

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.pending and self.left:
            take = min(self.left, 4096)
            self.pending, self.left = self.line * take, self.left - take
        size = min(len(buffer), len(self.pending))
        buffer[:size] = self.pending[:size]
        self.pending = self.pending[size:]
        self.read_bytes += size
        return size


@pytest.mark.parametrize("reader, head, line", [
    (parsing.read_jsonl, b"", b'{"text": "a"}\n'), (parsing.read_csv, b"text\r\n", b"a\r\n")])
def test_row_limit_stops_reading(embedded, monkeypatch, reader, head, line):
    from app.core.config import get_settings

    monkeypatch.setenv("TAILOR_MAX_DATASET_ROWS", "1000")
    get_settings.cache_clear()
    raw = CountingStream(line, 1_000_000, head)
    with pytest.raises(PayloadTooLarge, match="more than 1000 rows"):
        reader(io.BufferedReader(raw, 64 * 1024))
    assert raw.read_bytes < 256 * 1024 < len(line) * 1_000_000


def test_too_many_rows_over_http_is_413(client, monkeypatch):
    from app.core.config import get_settings

    monkeypatch.setenv("TAILOR_MAX_DATASET_ROWS", "50")
    get_settings.cache_clear()
    body = b'{"text": "a"}\n' * 5000
    err = _refused(client.post("/datasets", content=body,
                               headers={"content-type": "application/x-ndjson"}), 413,
                   "too_many_rows")
    assert err["details"] == {"limit_rows": 50}
    _refused(_file(client, "x.csv", b"text\n" + b"a\n" * 5000), 413, "too_many_rows")


def test_one_enormous_line_is_refused_without_reading_it_all(embedded):
    raw = CountingStream(b"a" * 1024, 10_000)  # 10 MiB, no newline
    with pytest.raises(Exception, match="longer than") as info:
        parsing.read_jsonl(io.BufferedReader(raw))
    assert info.value.code == "line_too_long" and raw.read_bytes < 2 * 1024 * 1024


def test_no_byte_sequence_gets_a_500(client):
    rng = random.Random(11)
    alphabet = b'{}[]",:\\\r\n\t \x00\x85\xe2\x80\xa8\xff\xfe\xc3text label 0123'
    for i in range(40):
        blob = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 300)))
        for kwargs in ({"files": {"file": ("x.jsonl", blob)}},
                       {"files": {"file": ("x.csv", b"text,label\n" + blob)}},
                       {"content": blob, "headers": {"content-type": "text/csv"}},
                       {"content": b'{"name": "d", "records": [' + blob, "headers": JSON},
                       {"content": blob, "headers": JSON}):
            resp = client.post("/datasets", **kwargs)
            assert resp.status_code < 500, (i, kwargs, resp.text)
            if resp.status_code >= 400:
                assert resp.json()["error"]["code"]


@pytest.mark.parametrize("name", ["", " \t", "a\x00b", "line\nbreak", "x" * 201, "\u200b",
                                  "Flood \ud83d"])
def test_dataset_name_is_checked_the_same_way_everywhere(client, name):
    if "\ud83d" in name:
        body = b'{"name": "Flood \\ud83d", "records": [{"text": "a"}]}'
        by_json = client.post("/datasets", content=body, headers=JSON)
        assert _refused(by_json, 422)["details"]["field"] == "name"
        return
    by_json = _refused(client.post("/datasets", json={"name": name, "records": [{"text": "a"}]}),
                       422)
    by_form = _refused(_file(client, "x.jsonl", b'{"text": "a"}\n', name=name), 422)
    by_query = _refused(client.post("/datasets", params={"name": name},
                                    content=b'{"text": "a"}\n',
                                    headers={"content-type": "application/x-ndjson"}), 422)
    assert by_json == by_form and by_json["details"]["field"] == "name"
    # NUL in any query parameter is refused earlier, by the URL guard (query.name)
    assert by_query == by_json or (name == "a\x00b"
                                   and by_query["details"]["field"] == "query.name")


def test_validate_text_contract():
    from app.core.texts import validate_text

    assert validate_text("Flood hits town 🌊", "texts[0]") == "Flood hits town 🌊"
    for text, reason in [("Flood \ud83d hits town", "lone_surrogate"), ("\u200b", "empty"),
                         ("a\x00", "nul"), ("x" * 20_001, "too_long"), (3, "not_a_string")]:
        with pytest.raises(InvalidText) as info:
            validate_text(text, "texts[2]")
        assert info.value.status_code == 422 and info.value.code == "invalid_text"
        assert info.value.details == {"field": "texts[2]", "reason": reason}
        assert info.value.message.startswith("texts[2]: ")


@pytest.mark.parametrize("method, path, body, field", [
    # a list item is named with brackets wherever the error comes from, as invalid_text does
    ("POST", "/classify", {"model": "m", "texts": ["ok", ["nested"]]}, "texts[1]"),
    ("POST", "/datasets", {"name": "d", "records": [{"text": "a"}, {"text": "b", "x": 1}]},
     "records[1].x"),
    ("POST", "/datasets", {"name": "d", "records": [{"text": "a"}, "plain"]}, "records[1]"),
    ("PUT", "/models/m/aliases/prod", {"version": "two"}, "version"),
])
def test_validation_errors_name_list_items_with_brackets(client, method, path, body, field):
    err = _refused(client.request(method, path, content=json.dumps(body), headers=JSON), 422)
    assert err["message"].startswith(f"{field}: "), err
