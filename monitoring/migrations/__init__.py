"""The prediction store's Alembic migrations (`python -m monitoring.migrate`)."""
