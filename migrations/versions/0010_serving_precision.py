"""the precision a version is served with through the ONNX backend, and the int8 agreement

An API process serving a version through its compiled ONNX graph (TAILOR_SERVING_BACKEND
onnx or auto) measures the int8 graph's label agreement with the fp32 graph on the version's
held-out texts and serves int8 only where it holds; the registry records the outcome.
Nullable: versions never compiled have none.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # recreate='never': SQLite adds columns in place (see 0005, 0009).
    with op.batch_alter_table('model_versions', schema=None, recreate='never') as batch_op:
        batch_op.add_column(sa.Column('serving_precision', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('int8_agreement', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('int8_agreement_texts', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('int8_agreement_texts')
        batch_op.drop_column('int8_agreement')
        batch_op.drop_column('serving_precision')
