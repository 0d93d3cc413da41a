"""Shared fixtures: tiny models, an in-process embedded API, service URLs from scripts/test.sh."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests import support
from tests.fixtures.tiny import build_student, build_teacher

REQUIRE_SERVICES = os.environ.get("TAILOR_TEST_REQUIRE_SERVICES") == "1"


@pytest.fixture(scope="session", autouse=True)
def _test_model_sources(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Let every Tailor the tests run name models under pytest's temporary root (the tiny
    models live there); tests of the allow-list itself set TAILOR_MODEL_SOURCES explicitly."""
    support.TEST_MODEL_SOURCES = str(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    root = tmp_path_factory.mktemp("tiny-models")
    return str(build_teacher(root / "teacher")), str(build_student(root / "student"))


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh embedded home, migrated to head."""
    with support.embedded_home(tmp_path, monkeypatch) as home:
        yield home


@pytest.fixture
def client(embedded: Path) -> Iterator[TestClient]:
    from app.main import create_app

    with TestClient(create_app()) as test_client:
        yield test_client


def service_url(name: str) -> str:
    """A URL exported by scripts/test.sh; fail (not skip) when `make test` promised it."""
    url = os.environ.get(name)
    if url:
        return url
    if REQUIRE_SERVICES:
        pytest.fail(f"{name} is not set although scripts/test.sh should have started it")
    pytest.skip(f"{name} not set: run through `make test` to start PostgreSQL and Redis")
