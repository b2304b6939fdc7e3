"""Python's cyclic garbage collector, paused while a checkpoint's per-tensor objects are made.

Capturing, writing or loading 20,000 tensors makes hundreds of thousands of small objects; every
few hundred of them start a collection, and the full ones walk the whole heap (a notebook's
kernel holds millions of objects) and find nothing: 0.26 s of a 0.6 s commit of 20,000 tensors
was the collector (measured with cProfile, benchmarks/bench_checkpoint_cost.py's case). Nothing
these make refers to itself, so reference counting frees it all the same; the collector runs again
as soon as the work is done, and is never turned on where it was off.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager


@contextmanager
def paused():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
