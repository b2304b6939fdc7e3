"""The staging copy shared by the training thread and a helper thread (issue 11: the stall of a
few large tensors): every byte lands where it belongs whoever copies it, and when the copy is
interrupted the helper lets go of the caller's memory before the caller goes on."""

import ctypes
import os
import threading
import time

import numpy as np
import pytest

from colabkit.checkpoint import parallel_copy, state


def addresses(sources, target, offsets):
    return [(target.ctypes.data + offset, source.ctypes.data, source.nbytes) for source, offset in zip(sources, offsets)]


def test_chunks_shared_with_the_helper_land_where_they_belong(monkeypatch):
    monkeypatch.setattr(parallel_copy, "CHUNK", 4096)
    monkeypatch.setattr(parallel_copy, "SHARED", 1)
    monkeypatch.setattr(parallel_copy, "_cpus", lambda: 2)
    rng = np.random.default_rng(5)
    sizes = [1, 4095, 4096, 4097, 3 * 4096 + 17, 200_000, 0, 65_536]
    sources = [rng.integers(0, 256, size, dtype=np.uint8) for size in sizes]
    offsets = np.cumsum([0] + sizes[:-1]).tolist()
    target = np.zeros(sum(sizes), dtype=np.uint8)
    copiers = set()
    memmove = ctypes.memmove

    def counted(*args):
        copiers.add(threading.current_thread().name)
        return memmove(*args)

    monkeypatch.setattr(ctypes, "memmove", counted)
    for _ in range(20):  # the helper wakes at some point in one of them
        target[:] = 0
        parallel_copy.memmove_all(addresses(sources, target, offsets))
        assert bytes(target) == b"".join(s.tobytes() for s in sources)
    assert "colabkit-staging-copy" in copiers and threading.current_thread().name in copiers


def test_an_interrupted_copy_leaves_the_helper_no_chunk_of_it(monkeypatch):
    monkeypatch.setattr(parallel_copy, "CHUNK", 4096)
    monkeypatch.setattr(parallel_copy, "SHARED", 1)
    monkeypatch.setattr(parallel_copy, "_cpus", lambda: 2)
    source = np.arange(1024 * 2000, dtype=np.uint32).view(np.uint8)  # 2,000 chunks
    target = np.zeros_like(source)
    after = []  # chunks copied once the caller was interrupted
    interrupted = threading.Event()
    memmove = ctypes.memmove

    def interrupting(*args):
        if interrupted.is_set():
            after.append(args)
        if threading.current_thread() is threading.main_thread():
            interrupted.set()
            raise KeyboardInterrupt
        time.sleep(0.001)  # the helper slower than the caller: it would still hold chunks
        return memmove(*args)

    monkeypatch.setattr(ctypes, "memmove", interrupting)
    with pytest.raises(KeyboardInterrupt):
        parallel_copy.memmove_all(addresses([source], target, [0]))
    settled = len(after)
    threading.Event().wait(0.2)  # a helper still holding chunks would go on copying meanwhile
    assert len(after) == settled
    monkeypatch.setattr(ctypes, "memmove", memmove)
    parallel_copy.memmove_all(addresses([source], target, [0]))  # and the helper serves the next copy
    assert bytes(target) == bytes(source)


def test_a_stage_of_large_and_small_tensors_copies_each_to_its_offset(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(parallel_copy, "SHARED", 1 << 20)
    monkeypatch.setattr(parallel_copy, "_cpus", lambda: 2)
    values = [torch.randn(n) for n in (300_000, 10, 1 << 19, 5, 700_001)]  # large ones above state.PARALLEL
    sources = [state.Source(f"t{i}", value, "F32", tuple(value.shape), value.nbytes) for i, value in enumerate(values)]
    offsets = np.cumsum([0] + [v.nbytes + 64 for v in values[:-1]]).tolist()
    buffer = bytearray(offsets[-1] + values[-1].nbytes)
    state.stage(list(zip(sources, offsets)), buffer)
    flat = np.frombuffer(buffer, dtype=np.uint8)
    for value, offset in zip(values, offsets):
        assert bytes(flat[offset:offset + value.nbytes]) == value.numpy().tobytes()


def test_a_forked_child_copies_without_the_parents_helper(monkeypatch):
    monkeypatch.setattr(parallel_copy, "SHARED", 1)
    monkeypatch.setattr(parallel_copy, "_cpus", lambda: 2)
    source = np.arange(1 << 20, dtype=np.uint8)
    target = np.zeros_like(source)
    parallel_copy.memmove_all(addresses([source], target, [0]))  # the parent's helper exists
    helper = parallel_copy._helper
    helper._lock.acquire()  # as if fork came while the helper thread held it
    try:
        pid = os.fork()
        if pid == 0:  # the child: its copy must not wait on a lock no thread will release
            target[:] = 0
            parallel_copy.memmove_all(addresses([source], target, [0]))
            os._exit(0 if bytes(target) == bytes(source) and parallel_copy._helper is not helper else 1)
    finally:
        helper._lock.release()
    for _ in range(100):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the parent's helper")
    assert os.waitstatus_to_exitcode(status) == 0
