"""evaluations: stored scores of a registered version on a labeled dataset

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ADMIN_OWNER = 'admin'  # app.models.owned.ADMIN_OWNER; migrations do not import the models


def upgrade() -> None:
    op.create_table(
        'evaluations',
        sa.Column('id', sa.String(length=40), nullable=False),
        sa.Column('model_name', sa.String(length=64), nullable=False),
        sa.Column('model_version', sa.Integer(), nullable=False),
        sa.Column('model_ref', sa.String(length=140), nullable=False),
        sa.Column('dataset_id', sa.String(length=40), nullable=False),
        sa.Column('dataset_name', sa.String(length=200), nullable=False),
        sa.Column('dataset_sha256', sa.String(length=64), nullable=False),
        sa.Column('labels', sa.JSON(), nullable=False),
        sa.Column('multi_label', sa.Boolean(), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('skipped_unlabeled', sa.Integer(), nullable=False),
        sa.Column('truncated', sa.Integer(), nullable=False),
        sa.Column('accuracy', sa.Float(), nullable=False),
        sa.Column('macro_f1', sa.Float(), nullable=False),
        sa.Column('micro_f1', sa.Float(), nullable=True),
        sa.Column('roc_auc', sa.Float(), nullable=True),
        sa.Column('ece', sa.Float(), nullable=False),
        sa.Column('report', sa.JSON(), nullable=False),
        sa.Column('seconds', sa.Float(), nullable=False),
        sa.Column('idempotency_key', sa.String(length=200), nullable=True),
        sa.Column('request_hash', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('owner', sa.String(length=40), nullable=False, server_default=ADMIN_OWNER),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluations')),
        sa.UniqueConstraint('owner', 'idempotency_key',
                            name='uq_evaluations_owner_idempotency_key'),
    )
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluations_created_at'), ['created_at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_evaluations_dataset_id'), ['dataset_id'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_evaluations_model_name'), ['model_name'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_evaluations_owner'), ['owner'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        for column in ('owner', 'model_name', 'dataset_id', 'created_at'):
            batch_op.drop_index(batch_op.f(f'ix_evaluations_{column}'))
    op.drop_table('evaluations')
