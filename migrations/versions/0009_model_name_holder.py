"""a model name records who holds it, so deleting jobs and versions cannot hand it over

Until now the holder of a name was read from the job that registered the model's first
version. Jobs and versions can now be deleted (DELETE /jobs/{id}, DELETE
/models/{name}/versions/{v}): the holder is written on the model row at its first
registration instead, and existing rows are backfilled from what the old rule answered
(the first version's job owner; "admin" when that job row is gone; no holder without a
version).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADMIN_OWNER = 'admin'  # app.models.owned.ADMIN_OWNER; migrations do not import the models
FIRST_VERSION = ('(SELECT v.{col} FROM model_versions v WHERE v.model_name = '
                 'registered_models.name ORDER BY v.version LIMIT 1)')


def upgrade() -> None:
    # recreate='never': SQLite adds columns in place; a rebuild would drop the table, and
    # with foreign keys on that cascade-deletes versions and aliases (see 0005).
    with op.batch_alter_table('registered_models', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('owner', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('owner_since', sa.DateTime(timezone=True),
                                      nullable=True))
    first_job = FIRST_VERSION.format(col='job_id')
    op.execute(sa.text(
        f'UPDATE registered_models SET owner_since = {FIRST_VERSION.format(col="created_at")}, '
        f"owner = COALESCE((SELECT j.owner FROM jobs j WHERE j.id = {first_job}), "
        f"'{ADMIN_OWNER}') "
        'WHERE EXISTS (SELECT 1 FROM model_versions v WHERE v.model_name = '
        'registered_models.name)'))


def downgrade() -> None:
    with op.batch_alter_table('registered_models', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('owner_since')
        batch_op.drop_column('owner')
