"""How a commit writes (issue 11): the pack in vectored writes hashed as it goes, a tensor the pool
holds taken back out of it, the pack durable before any manifest names it, and the packs no kept
checkpoint needs deleted once the writer has answered."""

import errno
import json
import os
import random
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import xxhash

from colabkit.checkpoint import codec, durable
from colabkit.checkpoint.pool import Pool
from colabkit.checkpoint.store import CheckpointStore
from helpers.tensor_index import index_of, index_text

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from commit_loop import payload, staged  # noqa: E402


def test_an_appender_writes_every_buffer_in_order_and_a_large_one_before_add_returns(tmp_path):
    rng = random.Random(11)
    expected, offsets = bytearray(), []
    with durable.Appender(tmp_path / "f") as out:
        for n in range(3000):
            if n % 1000 == 500:  # larger than SMALL: the caller reuses it as soon as add returns
                big = bytearray(rng.randbytes(2 * durable.SMALL + 5))
                offsets.append((out.add(big), len(expected)))
                expected += big
                big[:] = bytes(len(big))
                continue
            small = rng.randbytes(rng.choice([0, 1, 7, 4096, 70_000]))
            offsets.append((out.add(np.frombuffer(small, dtype=np.uint8) if n % 2 else small), len(expected)))
            expected += small
        record = out.finish()
    assert len(expected) > durable.WRITEBACK  # the writeback hint was given along the way
    assert (tmp_path / "f").read_bytes() == expected
    assert all(got == want for got, want in offsets)
    assert record == durable.FileRecord(len(expected), xxhash.xxh3_128_hexdigest(bytes(expected)))
    if sys.platform.startswith("linux"):
        assert durable._sync_file_range  # found in libc, not silently skipped


def test_a_file_system_that_writes_nothing_and_says_no_error_fails_the_write(tmp_path, monkeypatch):
    """pwritev returning 0 for bytes to write (no error) made the writer loop forever, the save
    never answered."""
    monkeypatch.setattr(durable.os, "pwritev", lambda fd, buffers, offset: 0)
    with durable.Appender(tmp_path / "f") as out:
        with pytest.raises(OSError, match="wrote nothing"):
            out.add(bytes(2 * durable.SMALL))


def test_undo_takes_back_what_was_appended_since_the_mark(tmp_path):
    a, b, c = b"a" * 100, bytes(range(256)) * 10_000, b"c" * 3
    with durable.Appender(tmp_path / "f") as out:
        out.add(a)
        mark = out.mark()
        assert out.add_hashed(memoryview(b)) == (100, xxhash.xxh3_128_hexdigest(b))
        out.undo(mark)
        assert out.add(c) == 100
        record = out.finish()
    assert (tmp_path / "f").read_bytes() == a + c
    assert record.hash == xxhash.xxh3_128_hexdigest(a + c)


def save(store, pool, step, arrays):
    encoded, data = staged(step, [f"t{i}" for i in range(len(arrays))], arrays)
    return store.commit(step, lambda folder: codec.write_payload(folder, pool, encoded, data), encoded.meta)


def test_a_staged_tensor_the_pool_holds_is_not_written_again(tmp_path):
    """Tensors always staged (NumPy arrays) but unchanged, large (hashed as written, then taken
    back out) and small (hashed first), and a large one staged twice in one save."""
    store, pool = CheckpointStore(tmp_path, keep=2), Pool(tmp_path)
    big, small = payload(1, 2), np.arange(50, dtype=np.int32)
    save(store, pool, 1, [big, small])
    new_big, new_small = payload(2, 2), np.arange(60, dtype=np.int32)
    step2 = save(store, pool, 2, [big, new_big, small, new_small, new_big.copy()])
    new_packs = set(step2.manifest["packs"]) - set(store.get("step-1").manifest["packs"])
    assert len(new_packs) == 1
    assert step2.manifest["packs"][new_packs.pop()]["size"] == new_big.nbytes + new_small.nbytes
    store.verify(step2)
    tensors = codec.read(step2.path, trust=False).tensors
    for i, array in enumerate([big, new_big, small, new_small, new_big]):
        assert np.array_equal(tensors[f"t{i}"], array)


def test_a_pack_whose_fsync_fails_is_never_named_by_a_committed_manifest(tmp_path, monkeypatch):
    store, pool = CheckpointStore(tmp_path, keep=2), Pool(tmp_path)
    save(store, pool, 1, [payload(1, 1)])
    finish = durable.Appender.finish

    def full_disk(self):
        if self.path.parent.name == codec.POOL:
            raise OSError(errno.ENOSPC, "No space left on device")
        return finish(self)

    monkeypatch.setattr(durable.Appender, "finish", full_disk)
    with pytest.raises(OSError, match="No space left"):
        save(store, pool, 2, [payload(2, 1)])
    assert [c.step for c in store.list()] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == [codec.POOL, "step-1"]
    assert len(list((tmp_path / codec.POOL).iterdir())) == 1  # no half-written pack left behind
    monkeypatch.setattr(durable.Appender, "finish", finish)
    step3 = save(store, pool, 3, [payload(3, 1)])
    assert np.array_equal(codec.read(step3.path, trust=False).tensors["t0"], payload(3, 1))


def test_the_writer_deletes_the_packs_no_kept_checkpoint_needs_after_answering(tmp_path, capsys):
    """Deleting the pack of a checkpoint retention dropped comes after the writer's answer; a
    failure to delete is said with the next save's result (the save itself is fine)."""
    from colabkit.checkpoint.checkpointer import Checkpointer

    values = {"x": payload(1, 1)}
    ck = Checkpointer(to=tmp_path, keep=1, state=values)
    pools = tmp_path / codec.POOL

    def packs():
        return {p.name for p in pools.iterdir()}

    written = {}
    for step in (1, 2, 3):
        values["x"] = payload(step, 1)
        ck.step = step
        ck.save(wait=True)
        assert ck.last["ok"] and "warning" not in ck.last
        written[step] = set(CheckpointStore(tmp_path).get(f"step-{step}").manifest["packs"])
    assert not written[1] & packs()  # deleted after the answer to step 2, before step 3 was taken
    stuck = pools / ("0" * 32 + codec.PACK_SUFFIX)
    stuck.mkdir()  # a "pack" that can't be unlinked
    for step in (4, 5):
        values["x"] = payload(step, 1)
        ck.step = step
        ck.save(wait=True)
        assert ck.last["ok"]
    assert "could not delete the packs no kept checkpoint needs" in ck.last["warning"]
    assert "could not delete the packs" in capsys.readouterr().err
    stuck.rmdir()
    ck.close()  # the writer deletes what is left before it exits
    assert packs() == set(CheckpointStore(tmp_path).list()[0].manifest["packs"])


def test_many_small_tensors_are_written_in_runs_and_only_once(tmp_path):
    """20,000-tensor models go a megabyte at a time: tensors back to back in the staged bytes as
    one piece, others (an odd size leaves a gap before the next) one by one; a tensor twice in a
    save, or one the pool holds, is written once; a large one among them in pieces of its own."""
    store, pool = CheckpointStore(tmp_path, keep=2), Pool(tmp_path)
    rng = np.random.default_rng(11)
    arrays = [rng.integers(0, 2**31, size=int(rng.choice([2, 3, 64, 838, 5000])), dtype=np.int32)
              for _ in range(3000)]
    arrays[1500] = payload(1, 2)  # 2 MiB: larger than durable.SMALL
    arrays[700] = arrays[10].copy()  # in an earlier megabyte of the same save
    arrays[11] = arrays[12].copy()  # beside it
    step1 = save(store, pool, 1, arrays)
    unique = {a.tobytes() for a in arrays}
    assert [record["size"] for record in step1.manifest["packs"].values()] == [sum(map(len, unique))]
    later = [a if i % 3 else a + 1 for i, a in enumerate(arrays)]  # one in three changed, all staged
    step2 = save(store, pool, 2, later)
    new_pack = (set(step2.manifest["packs"]) - set(step1.manifest["packs"])).pop()
    assert step2.manifest["packs"][new_pack]["size"] == sum(map(len, {a.tobytes() for a in later} - unique))
    for step, saved in ((step1, arrays), (step2, later)):
        store.verify(step)
        tensors = codec.read(step.path, trust=False).tensors
        assert all(np.array_equal(tensors[f"t{i}"], a) for i, a in enumerate(saved))


def test_the_tensor_index_is_what_json_writes_and_follows_a_changed_layout():
    """tensors.json's columns that describe the tensors, and those that place them, are kept
    between saves; a save whose tensors differ (a key, a dtype or a shape) or lie elsewhere (a
    pack number, an offset) gets its own."""
    index = codec.TensorIndex()

    def payload_of(keys, dtypes, shapes):
        return codec.Payload(1, keys, dtypes, shapes, [4 * int(np.prod(s)) for s in shapes], [0] * len(keys), 0,
                             {}, None, {})

    same = payload_of(["a", "b.ü\"\\"], ["F32", "I32"], [(2, 3), ()])
    saves = [(same, [1, 0], [0, 24]),
             (payload_of(["a", "b.ü\"\\"], ["F32", "I32"], [(2, 3), ()]), [1, 0], [0, 24]),  # all reused
             (same, [1, 0], [8, 24]),  # an offset moved
             (same, [0, 0], [8, 24]),  # a pack number changed
             (payload_of(["a", "c"], ["F32", "I32"], [(2, 3), ()]), [0, 0], [8, 24]),
             (payload_of(["a", "c"], ["F32", "F16"], [(2, 3), ()]), [0, 0], [8, 24]),
             (payload_of(["a", "c"], ["F32", "F16"], [(6,), ()]), [0, 0], [8, 24]),
             (payload_of([], [], []), [], [])]
    for n, (each, numbers, offsets) in enumerate(saves):
        hashes = [f"{n}" * 32, "f" * 32][:len(each.keys)]
        text = index.text(each, ["p" * 32, "q" * 32], iter(numbers), iter(offsets), hashes)
        rows = [[key, dtype, list(shape), number, offset, size, h] for key, dtype, shape, number, offset, size, h in
                zip(each.keys, each.dtypes, each.shapes, numbers, offsets, each.sizes, hashes)]
        assert json.loads(text) == json.loads(index_text(["p" * 32, "q" * 32], rows))
        assert text == json.dumps(json.loads(text), separators=(",", ":")).encode()


def drop_cached(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="asks the page cache through preadv2 (Linux)")
def test_a_cold_restore_asks_the_disk_for_every_byte_it_reads_ahead_and_leaves_no_thread(tmp_path, monkeypatch):
    """Read-ahead (codec._read_ahead): cold, the kernel is asked for exactly the bytes the loader
    reads, in pieces no larger than its read-ahead window, by a thread joined before the read
    returns; warm (the session that saved it), nothing is asked."""
    store, pool = CheckpointStore(tmp_path, keep=3), Pool(tmp_path)
    arrays = [np.full(n, i, dtype=np.int32) for i, n in enumerate([5, 7, 3 << 20, 1 << 20, 0, 11])]
    save(store, pool, 1, arrays[:2])
    step2 = save(store, pool, 2, [arrays[0], *arrays[2:]])  # arrays[0] referenced in step-1's pack
    asked = []
    real = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: (
        asked.append((os.readlink(f"/proc/self/fd/{fd}"), offset, length, advice)), real(fd, offset, length, advice)))
    if not codec._cached(codec.pack_path(tmp_path, next(iter(step2.manifest["packs"]))), 0):
        pytest.skip("this file system does not say what is in the page cache")
    codec.read(step2.path, trust=False)
    assert asked == []  # just written: in the page cache
    for pack in step2.manifest["packs"]:
        drop_cached(codec.pack_path(tmp_path, pack))
    asked.clear()
    loaded = codec.read(step2.path, trust=False)
    assert all(np.array_equal(loaded.tensors[f"t{i}"], a) for i, a in enumerate([arrays[0], *arrays[2:]]))
    assert not [t for t in threading.enumerate() if t.name == "colabkit-read-ahead"]
    assert {advice for *_, advice in asked} == {os.POSIX_FADV_WILLNEED}
    assert max(length for _, _, length, _ in asked) <= codec._READ_AHEAD
    packs, rows = index_of(step2.path)
    wanted = [(str(codec.pack_path(tmp_path, packs[n])), offset, size) for _, _, _, n, offset, size, _ in rows]
    assert merged(asked) == merged(wanted)


@pytest.mark.skipif(not hasattr(os, "RWF_NOWAIT"), reason="asks the page cache through preadv2 (Linux)")
def test_a_cold_restore_of_a_checkpoint_in_one_pack_asks_for_all_of_it_before_the_index_is_decoded(
        tmp_path, monkeypatch):
    """One pack holds the checkpoint's tensors alone: the disk starts on all of it while
    tensors.json is still being decoded, and is asked for nothing else."""
    store, pool = CheckpointStore(tmp_path, keep=3), Pool(tmp_path)
    arrays = [np.full(n, i, dtype=np.int32) for i, n in enumerate([5, 3 << 20, 0, 11])]
    step1 = save(store, pool, 1, arrays)
    (pack,) = step1.manifest["packs"]
    path = codec.pack_path(tmp_path, pack)
    drop_cached(path)
    if codec._cached(path, 0):
        pytest.skip("this file system does not say what is in the page cache")
    events, asked, this = [], [], threading.current_thread()  # (a thread an earlier test left may read an index too)
    real_ahead, real_index, real_fadvise = codec._read_ahead, codec.read_index, os.posix_fadvise
    monkeypatch.setattr(codec, "_read_ahead", lambda extents: (
        threading.current_thread() is this and events.append(("read ahead", extents)), real_ahead(extents))[1])
    monkeypatch.setattr(codec, "read_index", lambda *args: (
        threading.current_thread() is this and events.append(("index",)), real_index(*args))[1])
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: (
        asked.append((os.readlink(f"/proc/self/fd/{fd}"), offset, length)), real_fadvise(fd, offset, length, advice)))
    loaded = codec.read(step1.path, trust=False)
    assert all(np.array_equal(loaded.tensors[f"t{i}"], a) for i, a in enumerate(arrays))
    assert events == [("read ahead", [(path, 0, path.stat().st_size)]), ("index",)]
    assert merged([span for span in asked if span[0].startswith(str(tmp_path))]) == [[str(path), 0, path.stat().st_size]]


def merged(spans):
    """(path, offset, length) spans as the byte ranges they cover, per path, touching ones joined."""
    ranges = []
    for path, offset, length, *_ in sorted(spans):
        if length and ranges and ranges[-1][0] == path and ranges[-1][2] >= offset:
            ranges[-1][2] = max(ranges[-1][2], offset + length)
        elif length:
            ranges.append([path, offset, offset + length])
    return ranges


def test_cached_tells_a_dropped_file_from_a_read_one(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes(1 << 20))
    drop_cached(path)
    if not hasattr(os, "RWF_NOWAIT"):
        assert not codec._cached(path, 0)
        return
    assert not codec._cached(path, 4096)
    path.read_bytes()
    if not codec._cached(path, 0):
        pytest.skip("this file system does not say what is in the page cache")
    assert codec._cached(path, 4096) and codec._cached(path, (1 << 20) - 1)


def test_a_damaged_folder_that_stops_pack_deletion_is_named(tmp_path, capsys):
    """A step folder without a readable manifest (a half-synced copy) makes the writer keep every
    pack, as what it points at can't be known: the store grew by a pack a save, unsaid; and it
    took a kept place, so each save was deleted at once. It is now passed over by retention, and
    the next save's result names it and what to do."""
    from colabkit.checkpoint.checkpointer import Checkpointer

    values = {"x": payload(1, 1)}
    ck = Checkpointer(to=tmp_path, keep=1, state=values)
    (tmp_path / "step-900").mkdir()  # above every save: retention keeps it, and it has no manifest
    (tmp_path / "step-900" / "state.json").write_text("{}")
    for step in (1, 2):
        values["x"] = payload(step, 1)
        ck.step = step
        ck.save(wait=True)
    ck.close()
    assert [c.id for c in CheckpointStore(tmp_path).list()] == ["step-2"]
    said = capsys.readouterr().err
    assert "was not kept" not in said and "colabkit: could not delete the packs no kept checkpoint needs" in said
    assert "step-900 has no manifest.json." in said and f"delete {tmp_path / 'step-900'} to free the space, if no colabkit can restore it" in said
    assert said.count("could not delete the packs") == 1  # said once, though each save tries again
