"""Staging memory: prepared before the first save needs it, and bounded for a state larger than
the budget (streamed through a ring of chunks); every save restores bit for bit either way."""

import os
import threading
import time

import numpy as np
import torch

from colabkit.checkpoint import session, sink, state, stream, writer
from colabkit.checkpoint.checkpointer import Checkpointer


def resident(buffer) -> int:
    """Bytes of a staging buffer whose pages exist (a memfd counts its allocated pages)."""
    return os.fstat(buffer.fd).st_blocks * 512


def weights(seed=0, n=(300_000, 70_001)):
    torch.manual_seed(seed)
    return torch.nn.ParameterList(torch.nn.Parameter(torch.randn(k)) for k in n)


def test_the_staging_buffer_is_sized_and_faulted_in_before_the_first_save_and_again_once_adam_has_state(tmp_path):
    model = weights()
    opt = torch.optim.Adam(model.parameters())
    ck = session.activate(Checkpointer(every="1 steps", to=tmp_path, model=model, opt=opt))  # hooks optimizer steps
    try:
        assert ck.sink.prepared.wait(20)
        prepared = ck.sink._prepared
        model_bytes = sum(p.numel() * 4 for p in model.parameters())
        assert model_bytes <= prepared.size < 2 * model_bytes  # Adam has no state yet
        assert resident(prepared) >= prepared.size  # every page is there before any save
        sum(p.sum() for p in model.parameters()).backward()
        opt.step()  # Adam's moments now exist: twice the weights more to stage
        assert ck.sink.prepared.wait(20)
        prepared = ck.sink._prepared
        assert prepared.size >= 3 * model_bytes and resident(prepared) >= prepared.size
        ck.save(wait=True)
        assert ck.sink._buffer is prepared  # the first save staged into it: no page faulted in on its stall
    finally:
        session.deactivate()
    fresh = weights(seed=1)
    Checkpointer(to=tmp_path, model=fresh).restore()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))


def test_the_first_save_reuses_the_model_encoded_while_preparing_unless_it_changed_since(tmp_path, monkeypatch):
    """The preparing thread also encodes a large state dict (state.Layouts), so the first save of
    a model of many tensors stalls no longer than a later one; what changed since is encoded afresh."""
    for change in (False, True):
        model = weights(n=[1000 + k for k in range(80)])  # more than Layouts.SMALLEST tensors
        ck = Checkpointer(every="1 steps", to=tmp_path / str(change), model=model)
        reused = []
        save = ck.sink.save
        monkeypatch.setattr(ck.sink, "save", lambda captured, *rest: (reused.append(bool(captured.fragments)),
                                                                       save(captured, *rest))[1])
        try:
            assert ck.sink.prepared.wait(20)
            assert all(s.value is None for last in ck._layouts._last.values() for s in last[3])  # no tensor kept
            if change:
                model[7] = torch.nn.Parameter(torch.randn(1007, dtype=torch.float64))
            with torch.no_grad():
                model[3].add_(1)
            ck.save(wait=True)
        finally:
            ck.close()
        assert reused == [not change]
        fresh = weights(seed=1, n=[1000 + k for k in range(80)])
        if change:
            fresh[7] = torch.nn.Parameter(torch.zeros(1007, dtype=torch.float64))
        Checkpointer(to=tmp_path / str(change), model=fresh).restore()
        assert all(a.dtype == b.dtype and torch.equal(a, b) for a, b in zip(model.parameters(), fresh.parameters()))


def test_a_save_that_comes_before_the_prefault_is_done_is_still_exact(tmp_path, monkeypatch):
    """The prefault writes zeros into the buffer it prepares: a save that takes that buffer midway
    must stop it for good before staging, or the zeros would land in the checkpoint."""
    touching, outcome = threading.Event(), []
    original = writer.StagingBuffer.prefault

    class SlowLock:  # each piece of the prefault takes a while, so the save comes in the middle
        def __init__(self, lock):
            self.lock = lock

        def __enter__(self):
            touching.set()
            time.sleep(0.005)
            self.lock.acquire()

        def __exit__(self, *exc):
            self.lock.release()

    monkeypatch.setattr(writer, "PREFAULT_PIECE", 16 * 4096)
    monkeypatch.setattr(writer.StagingBuffer, "prefault",
                        lambda self, stop, lock: outcome.append(original(self, stop, SlowLock(lock))))
    model = weights(n=(2_000_000,))
    ck = Checkpointer(every="1 steps", to=tmp_path, model=model)
    try:
        assert touching.wait(20)
        ck.save()
        time.sleep(0.2)  # a prefault that went on would write its zeros now, while the writer reads
        ck.wait()
        assert ck.sink.prepared.wait(20) and outcome == [False]  # stopped midway, for good
    finally:
        ck.close()
    fresh = weights(seed=1, n=(2_000_000,))
    Checkpointer(to=tmp_path, model=fresh).restore()
    assert torch.equal(model[0], fresh[0])


def state_of_many_shapes(seed):
    """Tensors that straddle chunks, smaller ones between them, odd byte counts, a bfloat16, a
    non-contiguous tensor, NumPy arrays and an empty one."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    return {"big": torch.randn(900_001), "small": [torch.randn(n) for n in (1, 3, 1000, 70_000)],
            "half": torch.randn(300_007).to(torch.bfloat16), "strided": torch.randn(700, 900).t(),
            "array": rng.integers(0, 255, size=2_500_003, dtype=np.uint8), "int16": rng.integers(
                -9, 9, size=(333, 777), dtype=np.int16), "empty": torch.empty(0)}


def same(a, b):
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def test_a_state_larger_than_the_staging_budget_streams_through_a_ring_and_restores_exactly(tmp_path, monkeypatch,
                                                                                            capsys):
    monkeypatch.setattr(sink, "RAM_HEADROOM", 1e-9)  # the budget: nothing, so a ring of SLOT_MIN chunks
    values = state_of_many_shapes(0)
    ck = Checkpointer(to=tmp_path, state=values)
    try:
        ck.step = 1
        ck.save(wait=True)
        size = sink.staging_size(state.capture({"state": values}).sources)
        assert ck.sink._buffer.size == stream.SLOTS * stream.SLOT_MIN < size  # memory bounded by the ring
        assert ck.last["ok"] and ck.last["streamed"] and ck.last["pause"] > 0
        said = capsys.readouterr().err
        assert "larger than the staging memory" in said and "training paused" in said
        assert "streamed, training paused" in ck.status()
        # A second save: the big tensor changes, the others are unchanged and only referenced.
        with torch.no_grad():
            values["big"].add_(1)
        ck.step = 2
        ck.save(wait=True)
        assert ck.last["ok"] and ck.last["streamed"]
    finally:
        ck.close()
    for step in ("step-1", "step-2"):
        loader = Checkpointer(to=tmp_path, state=None)
        loader.restore(step)
        expected = state_of_many_shapes(0)
        if step == "step-2":
            expected["big"].add_(1)
        assert same(loader.objects["state"], expected), step


def test_in_a_container_the_staging_budget_is_what_its_memory_limit_leaves(tmp_path, monkeypatch):
    """Kaggle, SageMaker and Docker limit a container's memory below the host's, and psutil reports
    the host's: a state staged whole by the host's figure went past the limit (the kernel killed
    for memory). The budget is the container's free memory when that is less, so such a state
    streams through the ring."""
    from colabkit.telemetry import CgroupMemory

    group = tmp_path / "cg"
    group.mkdir()
    (group / "memory.max").write_text(f"{2 << 30}\n")
    (group / "memory.current").write_text(f"{(2 << 30) - (4 << 20)}\n")  # 4 MiB left under the limit
    (group / "memory.stat").write_text("inactive_file 0\n")
    monkeypatch.setattr(sink, "_container_memory", lambda: CgroupMemory(str(group), str(tmp_path / "none")))
    assert sink.budget() == int(sink.RAM_HEADROOM * (4 << 20))
    values = {"big": torch.arange(4 << 20, dtype=torch.float32)}  # 16 MiB
    ck = Checkpointer(to=tmp_path / "store", state=values)
    ck.save(wait=True)
    ck.close()
    assert ck.last["ok"] and ck.last["streamed"]
    (group / "memory.max").write_text("max\n")
    assert sink.budget() > 4 << 20  # no limit: the host's free memory
