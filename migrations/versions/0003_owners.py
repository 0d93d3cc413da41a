"""datasets and jobs record the key that created them; idempotency keys are per owner

Existing rows are backfilled as owned by "admin" (app.models.owned.ADMIN_OWNER): only admin
keys see them. On SQLite the unique constraint change rebuilds both tables (batch mode);
foreign keys are switched off around the rebuild, because dropping the old table with them on
would cascade-delete every dataset record and job event.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADMIN_OWNER = 'admin'  # app.models.owned.ADMIN_OWNER; migrations do not import the models
OWNED = ('datasets', 'jobs')


@contextmanager
def _foreign_keys_off() -> Iterator[None]:
    """On SQLite, suspend foreign keys (PRAGMA only works outside a transaction) and check
    them afterwards; elsewhere, do nothing."""
    bind = op.get_bind()
    if bind.dialect.name != 'sqlite':
        yield
        return
    with op.get_context().autocommit_block():
        op.execute('PRAGMA foreign_keys=OFF')
    try:
        yield
    finally:
        with op.get_context().autocommit_block():
            op.execute('PRAGMA foreign_keys=ON')
    broken = bind.exec_driver_sql('PRAGMA foreign_key_check').fetchall()
    if broken:
        raise RuntimeError(f'foreign keys broken by migration 0003: {broken[:5]}')


def upgrade() -> None:
    with _foreign_keys_off():
        for table in OWNED:
            with op.batch_alter_table(table, schema=None) as batch_op:
                batch_op.add_column(sa.Column('owner', sa.String(length=40), nullable=False,
                                              server_default=ADMIN_OWNER))
                batch_op.drop_constraint(f'uq_{table}_idempotency_key', type_='unique')
                batch_op.create_unique_constraint(f'uq_{table}_owner_idempotency_key',
                                                  ['owner', 'idempotency_key'])
                batch_op.create_index(batch_op.f(f'ix_{table}_owner'), ['owner'], unique=False)


def downgrade() -> None:
    # Two owners may hold the same Idempotency-Key; under the old global constraint one row
    # keeps it and the others forget it (the rows stay; only their replay is lost).
    for table in OWNED:
        op.execute(sa.text(
            f'UPDATE {table} SET idempotency_key = NULL WHERE idempotency_key IS NOT NULL '
            f'AND id NOT IN (SELECT min(id) FROM {table} WHERE idempotency_key IS NOT NULL '
            f'GROUP BY idempotency_key)'))
    with _foreign_keys_off():
        for table in OWNED:
            with op.batch_alter_table(table, schema=None) as batch_op:
                batch_op.drop_index(batch_op.f(f'ix_{table}_owner'))
                batch_op.drop_constraint(f'uq_{table}_owner_idempotency_key', type_='unique')
                batch_op.create_unique_constraint(f'uq_{table}_idempotency_key',
                                                  ['idempotency_key'])
                batch_op.drop_column('owner')
