"""jobs.worker: the Celery node name of the worker that last claimed the job

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Jobs claimed before this revision show no worker (their lease owner names a host and a
    # pid, not a node an operator can find in `celery inspect` or the worker logs).
    # recreate='never': see 0005 (a SQLite batch rebuild would cascade-delete job events).
    with op.batch_alter_table('jobs', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('worker', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('worker')
