"""A worker freezes what its first model load leaves (MLflow, ONNX Runtime: about 300,000
objects), so that full garbage collections do not scan them: left unfrozen they made each full
collection 20-100 ms under load, the whole of the p99 latency at c=32."""

from __future__ import annotations

import asyncio
import gc
import threading
from types import SimpleNamespace

from serving import workers


def tracked(thing: object) -> bool:
    """Whether the collector still scans `thing` (a frozen object is in no generation)."""
    return any(other is thing for other in gc.get_objects())


def test_what_the_first_model_load_leaves_is_frozen() -> None:
    store = SimpleNamespace(checked=threading.Event())
    app = SimpleNamespace(state=SimpleNamespace(service=SimpleNamespace(store=store)))

    async def start_then_load() -> tuple[bool, bool]:
        workers._started(app)
        loaded = [[number] for number in range(1000)]  # what a model load leaves
        before = tracked(loaded[0]) and tracked(loaded[-1])
        store.checked.set()
        for _ in range(100):
            await asyncio.sleep(0.02)
            if not tracked(loaded[-1]):
                break
        return before, tracked(loaded[0]) or tracked(loaded[-1])

    try:
        scanned_before_load, scanned_after_load = asyncio.run(start_then_load())
    finally:
        gc.unfreeze()
    assert scanned_before_load and not scanned_after_load
