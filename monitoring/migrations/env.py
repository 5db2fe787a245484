"""Alembic's environment for the prediction store: migrations run on the connection that
`monitoring.migrate.upgrade` hands over (there is no alembic.ini)."""

from __future__ import annotations

from alembic import context

context.configure(
    connection=context.config.attributes["connection"],
    # SQLite alters a column by copying its table: batch mode does that on every backend.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
