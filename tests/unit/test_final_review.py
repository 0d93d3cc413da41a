"""Gaps a last hostile pass found: integers in URLs past the database's range, and multipart
fields sent twice or as files. Each answer is a 422 naming the parameter or field."""

from __future__ import annotations

import pytest

from app.core.params import MAX_LIST_LIMIT
from app.models.base import MAX_INT

HUGE = "99999999999999999999"  # past SQLite's (and PostgreSQL's) 64-bit integers


@pytest.mark.parametrize(("path", "field"), [
    (f"/ui/parts/jobs?offset={HUGE}", "query.offset"),  # the review's example: a 500 before
    (f"/ui/parts/models/crisis?version={HUGE}", "query.version"),
    (f"/ui/parts/models/crisis?version={MAX_INT + 1}", "query.version"),
    (f"/ui?offset={HUGE}", "query.offset"),
    (f"/ui/models/crisis?version={HUGE}", "query.version"),
    (f"/jobs?offset={HUGE}", "query.offset"),
    (f"/datasets?limit={MAX_LIST_LIMIT + 1}", "query.limit"),
    (f"/models/crisis/versions/{HUGE}", "path.version"),
])
def test_integers_in_urls_past_the_database_range_are_422(client, path, field):
    resp = client.get(path)
    assert resp.status_code == 422, (path, resp.text)
    assert resp.json()["error"]["message"].startswith(f"{field}:"), resp.json()


def test_a_page_offset_inside_the_range_still_renders(client):
    resp = client.get("/ui/parts/jobs?offset=1000000")
    assert resp.status_code == 200 and "<h1>Jobs</h1>" in resp.text


CSV = ("a.csv", b"text\nflood\n")


@pytest.mark.parametrize(("parts", "field"), [
    ([("name", (None, "a")), ("name", (None, "b"))], "name"),  # was: silently "b"
    ([("text_column", (None, "text")), ("text_column", (None, "body"))], "text_column"),
    ([("label_column", (None, "x")), ("label_column", (None, "y"))], "label_column"),
])
def test_a_multipart_field_sent_twice_is_refused_naming_it(client, parts, field):
    resp = client.post("/datasets", files=[*parts, ("file", CSV)])
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["details"] == {"field": field}
    assert client.get("/datasets").json()["datasets"] == []


@pytest.mark.parametrize(("parts", "field"), [
    ([("name", ("n.txt", b"evil"))], "name"),  # was: 400 "too many files", naming nothing
    ([("text_column", ("c.txt", b"text"))], "text_column"),
    ([("file", ("b.csv", b"text\nx\n"))], "file"),  # a second file
])
def test_a_multipart_file_in_the_wrong_part_is_refused_naming_it(client, parts, field):
    resp = client.post("/datasets", files=[*parts, ("file", CSV)])
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["details"] == {"field": field}


def test_one_of_each_multipart_field_is_still_accepted(client):
    resp = client.post("/datasets", files=[("name", (None, "feed")), ("file", CSV)])
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "feed" and resp.json()["rows"] == 1
