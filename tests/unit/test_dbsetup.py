"""`python -m app.dbsetup`: the SQL for TAILOR_DATABASE_URL's role and database, or a clear
refusal (run against real PostgreSQL in tests/integration/test_distributed_readme.py)."""

from __future__ import annotations

import pytest

from app import dbsetup
from app.core.config import get_settings


@pytest.mark.parametrize("url, says", [
    ("", "not set: embedded mode"),
    ("sqlite:///var/tailor.db", "is sqlite, not postgresql"),
    ("postgresql+psycopg://localhost:5432/tailor", "must name a role and a database"),
    ("postgresql+psycopg://tailor:pw@localhost:5432", "must name a role and a database"),
    ("not a url", "not a database URL"),
])
def test_urls_it_cannot_set_up_exit_2_saying_why(monkeypatch, capsys, url, says):
    monkeypatch.setenv("TAILOR_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        assert dbsetup.main([]) == 2
    finally:
        get_settings.cache_clear()
    out = capsys.readouterr()
    assert out.out == "" and says in out.err


def test_names_and_password_are_quoted_not_spliced():
    url = dbsetup.postgres_url("postgresql+psycopg://we%27ird:p%27w%24%24@h:5432/db%22x")
    sql = dbsetup.setup_sql(url)
    assert "PASSWORD 'p''w$$';" in sql
    assert 'ALTER DATABASE "db""x" OWNER TO "we\'ird";' in sql
    assert "WHERE rolname = 'we''ird')\\gexec" in sql


def test_a_url_without_password_creates_a_login_role_without_one():
    sql = dbsetup.setup_sql(dbsetup.postgres_url("postgresql://tailor@/tailor"))
    assert 'ALTER ROLE "tailor" WITH LOGIN;' in sql and "PASSWORD" not in sql
