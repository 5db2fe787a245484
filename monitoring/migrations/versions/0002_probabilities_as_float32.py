"""Probabilities as ten little-endian float32 (40 bytes, no JSON); no index on the model
version (each index cost every logged prediction an update). The store of a08c526.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROWS_AT_A_TIME = 5_000


def upgrade() -> None:
    op.drop_index("ix_predictions_model_version", table_name="predictions")
    op.add_column("predictions", sa.Column("probabilities_f32", sa.LargeBinary(40)))
    connection = op.get_bind()
    table = sa.table("predictions", sa.column("id"), sa.column("probabilities"),
                     sa.column("probabilities_f32"))  # fmt: skip
    while rows := connection.execute(
        sa.select(table.c.id, table.c.probabilities)
        .where(table.c.probabilities_f32.is_(None))
        .limit(ROWS_AT_A_TIME)
    ).all():
        connection.execute(
            table.update().where(table.c.id == sa.bindparam("row_id")),
            [{"row_id": row.id, "probabilities_f32": _float32(row.probabilities)} for row in rows],
        )
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("probabilities")
        batch.alter_column("probabilities_f32", new_column_name="probabilities",
                           existing_type=sa.LargeBinary(40), nullable=False)  # fmt: skip


def _float32(probabilities: object) -> bytes:
    values = json.loads(probabilities) if isinstance(probabilities, str) else probabilities
    return np.asarray(values, "<f4").tobytes()


def downgrade() -> None:
    raise NotImplementedError("the first schema's JSON probabilities are not written back")
