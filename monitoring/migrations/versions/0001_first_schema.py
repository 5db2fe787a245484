"""The first prediction store: probabilities as JSON lists, an index on the model version.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("model_version", sa.String(80), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("pixels", sa.LargeBinary(28 * 28), nullable=False),
        sa.Column("digit", sa.SmallInteger, nullable=False),
        sa.Column("probabilities", sa.JSON, nullable=False),
        sa.Column("uncertain", sa.Boolean, nullable=False),
    )
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index("ix_predictions_model_version", "predictions", ["model_version"])
    op.create_table(
        "feedback",
        sa.Column(
            "prediction_id", sa.String(32), sa.ForeignKey("predictions.id"), primary_key=True
        ),
        sa.Column("label", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("client_hash", sa.String(64), nullable=False),
        sa.Column("input_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_feedback_status", "feedback", ["status"])
    op.create_index("ix_feedback_input_hash", "feedback", ["input_hash"])
    op.create_index("ix_feedback_client_time", "feedback", ["client_hash", "created_at"])
    op.create_table(
        "drift_checks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("window_size", sa.Integer, nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),
        sa.Column("alarms", sa.JSON, nullable=False),
    )
    op.create_index("ix_drift_checks_created_at", "drift_checks", ["created_at"])


def downgrade() -> None:
    op.drop_table("drift_checks")
    op.drop_table("feedback")
    op.drop_table("predictions")
