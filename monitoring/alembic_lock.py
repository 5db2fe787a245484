"""One Alembic migration at a time in a process.

Alembic's `op` and `context` are process-wide: two migrations on two threads run each other's
operations (seen in the API: MLflow migrating a fresh SQLite registry on the model store's thread
while the writer upgraded the prediction store, then a segmentation fault in SQLite). Whatever
may migrate holds this lock: `monitoring.migrate.upgrade`, and the API's MLflow client while it
opens a database registry (`serving.model_store`).
"""

from __future__ import annotations

import threading

ALEMBIC = threading.Lock()
