"""Migrations on PostgreSQL: one head, a full round trip, and no drift from the models."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from app.core.migrate import alembic_config, downgrade, upgrade
from tests.integration.report import record

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_single_head_round_trip_and_no_drift(pg_url: str):
    config = alembic_config(pg_url)
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, heads
    upgrade(pg_url)
    command.check(config)  # raises when the models and the migrations disagree
    full = _tables(pg_url)
    assert {"jobs", "api_keys", "model_versions"} <= full
    downgrade(pg_url, "0001")
    assert "api_keys" not in _tables(pg_url)
    downgrade(pg_url, "base")
    assert _tables(pg_url) <= {"alembic_version"}
    upgrade(pg_url)
    assert _tables(pg_url) == full
    command.check(config)
    record(8, "migrations", "alembic upgrade -> downgrade base -> upgrade on PostgreSQL",
           ["single head", "round trip restores every table", "`alembic check`: no drift"],
           {"head": heads[0], "tables": len(full)})
