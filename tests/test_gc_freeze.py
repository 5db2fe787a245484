"""A worker freezes what its first model load leaves (MLflow, ONNX Runtime: about 300,000
objects), so that full garbage collections do not scan them: left unfrozen they made each full
collection 20-100 ms under load, the whole of the p99 latency at c=32."""

from __future__ import annotations

import asyncio
import gc
import threading
from types import SimpleNamespace

from serving import workers


def test_what_the_first_model_load_leaves_is_frozen() -> None:
    store = SimpleNamespace(checked=threading.Event())
    app = SimpleNamespace(state=SimpleNamespace(service=SimpleNamespace(store=store)))

    async def start_then_load() -> tuple[int, int, list[list[int]]]:
        workers._started(app)
        started = gc.get_freeze_count()
        loaded = [[i] for i in range(10_000)]  # what a model load leaves: objects the GC tracks
        store.checked.set()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if gc.get_freeze_count() > started:
                break
        return started, gc.get_freeze_count(), loaded

    try:
        started, after_load, _ = asyncio.run(start_then_load())
    finally:
        gc.unfreeze()
    assert after_load >= started + 10_000
