"""JSON routes read the body StrictJsonMiddleware already parsed: one parse per request."""

from __future__ import annotations

import pytest
from starlette.requests import Request


def test_routes_reuse_the_middleware_parse(client, monkeypatch: pytest.MonkeyPatch):
    async def second_parse(self: Request) -> None:
        raise AssertionError("the body was parsed a second time")

    monkeypatch.setattr(Request, "json", second_parse)
    missing = client.post("/classify", json={"model": "nope", "texts": ["a"]})
    assert missing.status_code == 404, missing.text  # the route ran on the parsed body
    alias = client.put("/models/m/aliases/prod", json={"version": 1})
    assert alias.status_code == 404, alias.text
    bad = client.post("/classify", json={"model": "nope", "texts": "not a list"})
    assert bad.status_code == 422 and "texts" in bad.json()["error"]["message"]
