"""The challenger's answers beside production's (`shadow_answers`): one row per prediction the
API also scored with the `challenger` version off the request path, keyed by the prediction's
id. No foreign key: the answer is written by the same writer as the prediction but may outlive
a prediction that was never written (its batch failed), and the store's reads join the two.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadow_answers",
        sa.Column("prediction_id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("challenger_version", sa.String(80), nullable=False),
        sa.Column("digit", sa.SmallInteger, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("uncertain", sa.Boolean, nullable=False),
    )
    op.create_index("ix_shadow_answers_created_at", "shadow_answers", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_shadow_answers_created_at", table_name="shadow_answers")
    op.drop_table("shadow_answers")
