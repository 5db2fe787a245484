"""A per-deployment secret for the feedback budget's client keys (`secrets`), and the keys
already stored re-keyed with it.

Until this revision a client's key was a plain SHA-256 of its address, which anyone can reverse
by hashing every IPv4 address. Keys are now HMAC-SHA256 of the address with a secret generated
here, kept in the store and nowhere else. A stored key cannot be turned back into its address,
so the old ones become the HMAC of their old value: unreadable without the secret too (their
budgets, at most an hour old, restart).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CLIENT_KEY_SECRET = "client_key"


def upgrade() -> None:
    table = op.create_table(
        "secrets",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("value", sa.String(128), nullable=False),
    )
    secret = secrets.token_hex(32)
    op.bulk_insert(table, [{"name": CLIENT_KEY_SECRET, "value": secret}])
    connection = op.get_bind()
    feedback = sa.table("feedback", sa.column("prediction_id"), sa.column("client_hash"))
    old = connection.execute(sa.select(feedback.c.prediction_id, feedback.c.client_hash)).all()
    if old:
        connection.execute(
            feedback.update().where(feedback.c.prediction_id == sa.bindparam("row_id")),
            [
                {
                    "row_id": row.prediction_id,
                    "client_hash": hmac.new(
                        secret.encode(), row.client_hash.encode(), hashlib.sha256
                    ).hexdigest(),
                }
                for row in old
            ],
        )


def downgrade() -> None:
    op.drop_table("secrets")
