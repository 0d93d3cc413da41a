"""warnings on jobs and model versions (degenerate results are never silent)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ('jobs', 'model_versions')


def upgrade() -> None:
    # Rows from before this revision carry no warnings: they were never checked, and an
    # empty list keeps their aliases movable exactly as before.
    # recreate='never' (here and below): SQLite adds and drops a column in place (>= 3.35).
    # A batch rebuild would drop the old table, and with foreign keys on that cascade-deletes
    # dataset records and job events.
    for table in TABLES:
        with op.batch_alter_table(table, schema=None, recreate='never') as batch_op:
            batch_op.add_column(sa.Column('warnings', sa.JSON(), nullable=False,
                                          server_default=sa.text("'[]'")))


def downgrade() -> None:
    for table in reversed(TABLES):
        with op.batch_alter_table(table, schema=None, recreate='never') as batch_op:
            batch_op.drop_column('warnings')
