"""`python -m app.dbsetup`: print the SQL that creates TAILOR_DATABASE_URL's role and database.

The distributed setup's first step, once per PostgreSQL server, run by its superuser:

    .venv/bin/python -m app.dbsetup | sudo -u postgres psql -v ON_ERROR_STOP=1 -q

It creates the role (LOGIN, with the URL's password) and a database it owns, so that the
role can create Tailor's tables (`alembic upgrade head`, the next step). Running it again
changes nothing but the role's password and the database's owner, which it sets to what the
URL says. The statements use psql's `\\gexec` (PostgreSQL cannot `CREATE ... IF NOT EXISTS`
a role or a database), so pipe them into psql, not another client. The output holds the
password: pipe it, do not save it. docker-compose.yml does the same through the postgres
image's POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB.
"""

from __future__ import annotations

import argparse
import sys

from psycopg import sql
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from app.core.config import get_settings


class SetupError(ValueError):
    """TAILOR_DATABASE_URL cannot be set up by this command (not PostgreSQL, no role, ...)."""


def _text(statement: sql.Composable) -> str:
    return statement.as_string(None)


def postgres_url(raw: str) -> URL:
    """Parse TAILOR_DATABASE_URL; raise SetupError unless it names a PostgreSQL role and
    database."""
    if not raw:
        raise SetupError("TAILOR_DATABASE_URL is not set: embedded mode keeps its SQLite "
                         "database in TAILOR_HOME and needs no setup")
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise SetupError(f"TAILOR_DATABASE_URL is not a database URL: {exc}") from None
    if url.get_backend_name() != "postgresql":
        raise SetupError(f"TAILOR_DATABASE_URL is {url.get_backend_name()}, not postgresql: "
                         "only PostgreSQL is set up by this command")
    if not url.username or not url.database:
        raise SetupError("TAILOR_DATABASE_URL must name a role and a database, e.g. "
                         "postgresql+psycopg://tailor:PASSWORD@HOST:5432/tailor")
    return url


def setup_sql(url: URL) -> str:
    """psql input that creates (or updates) `url`'s role and the database it owns."""
    role, database = url.username or "", url.database or ""
    role_id, db_id = sql.Identifier(role), sql.Identifier(database)
    login = (sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {};").format(role_id,
                                                                     sql.Literal(url.password))
             if url.password else sql.SQL("ALTER ROLE {} WITH LOGIN;").format(role_id))
    lines = [
        f"-- Tailor: role {role!r} and database {database!r} of TAILOR_DATABASE_URL "
        "(safe to run again)",
        _text(sql.SQL("SELECT format('CREATE ROLE %I', {0}) "
                      "WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {0})")
              .format(sql.Literal(role))) + r"\gexec",
        _text(login),
        _text(sql.SQL("SELECT format('CREATE DATABASE %I OWNER %I', {0}, {1}) "
                      "WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = {0})")
              .format(sql.Literal(database), sql.Literal(role))) + r"\gexec",
        _text(sql.SQL("ALTER DATABASE {} OWNER TO {};").format(db_id, role_id)),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the SQL for TAILOR_DATABASE_URL; exit 2 with a message when it cannot."""
    argparse.ArgumentParser(description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter
                            ).parse_args(argv)
    try:
        url = postgres_url(get_settings().database_url)
    except SetupError as exc:
        print(f"app.dbsetup: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(setup_sql(url))
    return 0


if __name__ == "__main__":
    sys.exit(main())
