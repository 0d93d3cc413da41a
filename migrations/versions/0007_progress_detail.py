"""progress_detail on jobs: done of total texts or steps, rate and ETA while a stage runs

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: rows from before this revision are not running a counted stage.
    # recreate='never' as in 0005: SQLite adds and drops the column in place; a batch
    # rebuild would cascade-delete job events.
    with op.batch_alter_table('jobs', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('progress_detail', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('progress_detail')
