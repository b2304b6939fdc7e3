"""The store's commit point, proven by killing the writer (SIGKILL) at random moments and after each phase."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from colabkit.checkpoint import codec, durable
from colabkit.checkpoint.store import CheckpointDamaged, CheckpointStore
from colabkit.errors import ColabkitError

HELPER = Path(__file__).parent / "helpers" / "commit_loop.py"
sys.path.insert(0, str(HELPER.parent))
from commit_loop import frozen, payload, staged  # noqa: E402

PHASES = ["payload", "manifest", "synced", "renamed", "retained"]


def small_commit(store, step, text=b"x"):
    return store.commit(step, lambda folder: {"a.bin": durable.write(folder / "a.bin", [text * step])},
                        {"platform": "t"})


def test_commit_list_latest_and_retention(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    for step in (1, 2, 3):
        small_commit(store, step)
    assert [c.id for c in store.list()] == ["step-3", "step-2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2", "step-3"]  # nothing else, no LATEST hint
    latest, skipped = store.latest_valid()
    assert latest.step == 3 and skipped == []
    manifest = json.loads((tmp_path / "step-3" / "manifest.json").read_text())
    assert manifest["format"] == codec.FORMAT_VERSION and manifest["files"]["a.bin"]["size"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_an_edited_or_cut_checkpoint_is_refused_and_the_one_before_is_used(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    small_commit(store, 1)
    small_commit(store, 2)
    (tmp_path / "step-2" / "a.bin").write_bytes(b"yy")  # same size, other bytes
    latest, skipped = store.latest_valid()
    assert latest.step == 1 and "step-2: a.bin does not match its xxh3_128" in skipped[0]
    with pytest.raises(CheckpointDamaged, match="does not match"):
        store.verify(store.get("step-2"))
    (tmp_path / "step-1" / "a.bin").write_bytes(b"")
    assert store.latest_valid()[0] is None
    with pytest.raises(ColabkitError, match="There is no checkpoint 'step-9'"):
        store.get("step-9")
    with pytest.raises(ColabkitError, match="at least 1"):
        CheckpointStore(tmp_path, keep=0)


def test_a_long_sessions_writer_forgets_the_tensors_of_deleted_packs(tmp_path):
    """The writer's pool index holds what kept checkpoints point at, not every hash it ever wrote
    (a save every few minutes of 20,000 changing tensors, for hours)."""
    from colabkit.checkpoint.pool import Pool

    store, pool, base = CheckpointStore(tmp_path, keep=2), Pool(tmp_path), frozen(1)
    for step in range(1, 9):
        arrays = [np.full(64, step, dtype=np.int32), np.full(64, -step, dtype=np.int32), base]
        encoded, data = staged(step, ["x", "y", "base"], arrays)
        store.commit(step, lambda folder: codec.write_payload(folder, pool, encoded, data), encoded.meta)
    index = pool.forget_deleted()
    on_disk = {path.name for path in (tmp_path / codec.POOL).iterdir()}
    assert {pack for pack, _ in index.values()} <= on_disk  # nothing of the packs retention deleted
    assert len(index) <= 2 * 2 * len(on_disk) + 1  # not the 17 hashes 8 saves wrote


def test_saving_the_same_step_again_replaces_it_and_recovers_a_crash_between_renames(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    small_commit(store, 5, b"a")
    small_commit(store, 5, b"b")
    assert (tmp_path / "step-5" / "a.bin").read_bytes() == b"bbbbb"
    # A crash after the old one was moved aside and before the new one was renamed in:
    os.rename(tmp_path / "step-5", tmp_path / ".replaced-step-5-0123456789ab")
    (tmp_path / ".tmp-step-5-feedfeedfeed").mkdir()
    store.prepare()
    assert (tmp_path / "step-5" / "a.bin").read_bytes() == b"bbbbb"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def check_store(root: Path, megabytes: int):
    """After a kill: every committed checkpoint is whole and exactly its step's payload, the frozen
    tensor they share included (retention never took a pack a kept one needs); nothing else is read."""
    store = CheckpointStore(root, keep=2)
    store.prepare()
    latest, skipped = store.latest_valid()
    assert skipped == [], skipped  # a torn checkpoint must never be visible as committed
    if latest is None:
        return None
    for checkpoint in store.list():
        tensors = codec.read(checkpoint.path, trust=False).tensors
        assert np.array_equal(tensors["x"], payload(checkpoint.step, megabytes)), f"{checkpoint.id} is not its step's"
        assert np.array_equal(tensors["base"], frozen(megabytes)), f"{checkpoint.id} lost its shared tensor"
    packs = {p.name for p in (root / codec.POOL).iterdir() if p.name.endswith(codec.PACK_SUFFIX)}
    needed = {name for c in store.list() for name in c.manifest["packs"]}
    assert needed <= packs
    return latest.step


@pytest.fixture
def writers(tmp_path):
    """A warm parent that forks writers to kill (helpers/commit_loop.py)."""
    megabytes = 4
    parent = subprocess.Popen([sys.executable, str(HELPER), str(tmp_path), str(megabytes)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline().strip() == "ready"

    def ask(line):
        parent.stdin.write(line + "\n")
        parent.stdin.flush()
        return int(parent.stdout.readline())

    yield megabytes, ask
    parent.stdin.close()
    parent.wait(30)


@pytest.mark.parametrize("phase", PHASES)
def test_killed_right_after_each_phase_leaves_old_or_new(tmp_path, writers, phase):
    megabytes, ask = writers
    for _ in range(3):
        before = check_store(tmp_path, megabytes)
        step = (before or 0) + 1
        pid = ask(f"start {step} {phase}")
        assert ask(f"reap {pid}") == signal.SIGKILL
        after = check_store(tmp_path, megabytes)
        expected_new = phase in ("renamed", "retained")
        assert after == (step if expected_new else before), (phase, before, after)


def test_killed_at_random_moments_leaves_old_or_new(tmp_path, writers):
    megabytes, ask = writers
    rng = random.Random(20261123)
    seen_steps = set()
    for _ in range(40):
        before = check_store(tmp_path, megabytes)
        pid = ask(f"start {(before or 0) + 1}")
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        assert ask(f"reap {pid}") == signal.SIGKILL
        after = check_store(tmp_path, megabytes)
        if before is not None:  # a kill never loses what was committed before it
            assert after is not None and after >= before, (before, after)
        seen_steps.add(after)
    assert len(seen_steps) > 5, "the kills should land at many different points"


def streamed_state(step):
    return {"x": payload(step, 6), "base": frozen(3)}


@pytest.mark.parametrize("after_chunks", [0, 2, 7])
def test_a_writer_killed_in_the_middle_of_a_stream_loses_that_save_only(tmp_path, monkeypatch, capsys, after_chunks):
    """A state larger than the staging budget goes through a ring of 1 MiB chunks (stream.py);
    SIGKILL the writer after some of them: that save is lost and said, the checkpoint before it
    stays whole, a new writer sweeps the half-written pack and takes the next save."""
    from colabkit.checkpoint import sink, writer
    from colabkit.checkpoint.checkpointer import Checkpointer

    monkeypatch.setattr(sink, "RAM_HEADROOM", 1e-9)
    values = streamed_state(1)
    ck = Checkpointer(to=tmp_path, keep=2, state=values)
    ck.step = 1
    ck.save(wait=True)
    assert ck.last["streamed"]
    sent, original = [], writer.WriterProcess.send_chunk

    def send_then_kill(self, slot, length):
        if len(sent) == after_chunks:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
        sent.append(slot)
        original(self, slot, length)

    monkeypatch.setattr(writer.WriterProcess, "send_chunk", send_then_kill)
    values["x"] = payload(2, 6)
    ck.step = 2
    ck.save()  # returns: a dead writer ends the stream, it doesn't hang the training thread
    ck.wait()
    assert ck.last.get("lost") and "step-2 was lost: the writer process died (killed by SIGKILL: the system's " \
        "out-of-memory killer, or a kill -9) while writing it" in capsys.readouterr().err
    monkeypatch.setattr(writer.WriterProcess, "send_chunk", original)
    values["x"] = payload(3, 6)
    ck.step = 3
    ck.save(wait=True)
    assert ck.last["ok"] and ck.last["streamed"]
    ck.close()
    assert [c.step for c in CheckpointStore(tmp_path).list()] == [3, 1]
    assert not [p for p in (tmp_path / codec.POOL).iterdir() if p.name.startswith(".tmp")]  # swept
    for step in (1, 3):
        loader = Checkpointer(to=tmp_path, state=None)
        loader.restore(f"step-{step}")
        assert np.array_equal(loader.objects["state"]["x"], payload(step, 6))
        assert np.array_equal(loader.objects["state"]["base"], frozen(3))


def test_an_interrupt_in_the_middle_of_a_stream_fails_that_save_loudly_and_keeps_the_one_before(tmp_path, monkeypatch,
                                                                                                capsys):
    """Said as the person's own interrupt, not raised as a store's fault with "choose another
    folder" (which the next save raised even after a later checkpoint was committed)."""
    from colabkit.checkpoint import sink, stream
    from colabkit.checkpoint.checkpointer import Checkpointer

    monkeypatch.setattr(sink, "RAM_HEADROOM", 1e-9)
    values = streamed_state(1)
    ck = Checkpointer(to=tmp_path, keep=2, state=values)
    ck.step = 1
    ck.save(wait=True)
    copies, original = [], stream.copy_range

    def interrupted(*args):
        copies.append(args)
        if len(copies) == 3:
            raise KeyboardInterrupt
        original(*args)

    monkeypatch.setattr(stream, "copy_range", interrupted)
    values["x"] = payload(2, 6)
    ck.step = 2
    with pytest.raises(KeyboardInterrupt):
        ck.save()
    ck.wait()  # the writer dropped the stream instead of waiting for it forever
    said = capsys.readouterr().err
    assert "checkpoint step-2 was not saved: it was interrupted while training waited for its copy" in said, said
    assert "The checkpoints before it are intact" in said and "--to" not in said
    monkeypatch.setattr(stream, "copy_range", original)
    ck.step = 3
    ck.save(wait=True)
    ck.close()
    assert [c.step for c in CheckpointStore(tmp_path).list()] == [3, 1]
    assert not [p for p in (tmp_path / codec.POOL).iterdir() if p.name.startswith(".tmp")]


def test_a_reused_encoding_goes_to_the_writer_once_and_state_json_is_whole(tmp_path):
    """The JSON of a model's reused encoding is sent to the writer once; later jobs name it by its
    placeholder, also after a save that failed; state.json is always the whole document."""
    import json

    from colabkit.checkpoint.writer import StagingBuffer, WriterProcess

    writer, buffer = WriterProcess(), StagingBuffer(1)
    fragment = json.dumps([["weight", {"__tensor__": "model.weight"}]])

    def save(step, state):
        payload = codec.Payload(step, [], [], [], [], [], 0, {"structure": state, "step": step, "position": 0},
                                None, {"platform": "test"}, {"PLACEHOLDER": fragment})
        writer.submit({"root": str(tmp_path), "keep": 5, "payload": payload, "mirror": None}, buffer)
        return writer.wait()

    try:
        for step, state in enumerate([{"model": "PLACEHOLDER"}, {"model": "PLACEHOLDER"}, {"model": "elsewhere"},
                                      {"model": "PLACEHOLDER"}], start=1):
            result = save(step, state)
            if step == 3:  # the placeholder is not in the document: refused
                assert not result["ok"] and "placeholder" in result["error"]
                continue
            assert result["ok"], result
            written = json.loads((tmp_path / f"step-{step}" / codec.STATE).read_text())
            assert written["structure"] == {"model": [["weight", {"__tensor__": "model.weight"}]]}
    finally:
        writer.close()
        buffer.close()


def test_a_value_whose_reused_encoding_is_then_pickled_leaves_no_placeholder_behind(tmp_path):
    """A tracked value that holds a state dict's copy (64 tensors or more: its encoding is reused
    from the last save) beside a set, which JSON can't hold: the value is pickled, and the
    placeholder its dict had put in the capture goes with its encoding. Every save is written and
    the last restores (the placeholder left behind failed every save after the first)."""
    import torch

    from colabkit.checkpoint.checkpointer import Checkpointer

    model = torch.nn.Sequential(*(torch.nn.Linear(4, 4) for _ in range(40)))  # 80 tensors
    best = {"weights": {k: v.clone() for k, v in model.state_dict().items()}, "epochs": {1, 2}}
    ck = Checkpointer(to=tmp_path, keep=3, model=model, best=best)
    for step in (1, 2, 3):
        ck.step = step
        ck.save(wait=True)
        assert ck.last["ok"] and ck.last["id"] == f"step-{step}", ck.last
    ck.close()
    namespace = {}
    Checkpointer(to=tmp_path, model=torch.nn.Sequential(*(torch.nn.Linear(4, 4) for _ in range(40))),
                 best=None).restore(trust=True, namespace=namespace)
    assert namespace["best"]["epochs"] == {1, 2} and torch.equal(namespace["best"]["weights"]["0.weight"],
                                                                 best["weights"]["0.weight"])


def test_a_save_that_retention_deletes_at_once_is_said_not_kept(tmp_path, capsys):
    """A store keeping 2 holds step-500 and step-600 of an earlier run; this run counts from 0
    again: its step-10 is written and deleted at once. Said in the cell, and the panel's line
    says it failed, not "checkpoint step-10"."""
    from colabkit.checkpoint.checkpointer import Checkpointer

    for step in (500, 600):
        ck = Checkpointer(to=tmp_path, keep=2, w=np.full(4, step))
        ck.step = step
        ck.save(wait=True)
        ck.close()
    ck = Checkpointer(to=tmp_path, keep=2, w=np.zeros(4))
    ck.step = 10
    ck.save(wait=True)
    assert not ck.last["ok"] and ck.status().startswith("checkpoint step-10 FAILED")
    assert "checkpoint step-10 was not kept" in capsys.readouterr().err
    ck.step = 700
    ck.save(wait=True)  # above them: kept, and said as usual
    ck.close()
    assert ck.last["ok"] and ck.status().startswith("checkpoint step-700 (")
    assert [c.step for c in CheckpointStore(tmp_path).list()] == [700, 600]


def test_a_save_kept_below_higher_steps_says_a_restore_would_load_them(tmp_path, capsys):
    """Steps 10, 20, 30 saved (keep 3); 20 and 30 went wrong, so the notebook restores step-10 and
    trains on: steps 11 and 12 are kept, but step-30 and step-20 stay above them, and a restore
    after a restart (and resumable()) loads step-30, the run that was abandoned. Was said nowhere;
    now the first such save says it, once, with the ways on."""
    from colabkit.checkpoint.checkpointer import Checkpointer

    ck = Checkpointer(to=tmp_path, keep=3, w=np.zeros(4))
    for step in (10, 20, 30):
        ck.step = step
        ck.save(wait=True)
    ck.restore("step-10")
    capsys.readouterr()
    for step in (11, 12):
        ck.step = step
        ck.save(wait=True)
        assert ck.last["ok"]
    assert "· below step-30 in the store: a restore loads that" in ck.status()
    ck.close()
    said = capsys.readouterr().err
    assert said.count("checkpoint step-11 is saved, but") == 1 and "step-12 is saved" not in said, said
    assert "also holds step-30, step-20, higher steps" in said and "loads the highest, step-30, not this run" in said
    assert CheckpointStore(tmp_path).latest_valid()[0].id == "step-30"


@pytest.mark.parametrize("keep", ["3", 2.5, True])
def test_a_keep_that_is_not_a_whole_number_is_refused_before_anything_is_saved(tmp_path, keep):
    """keep="3" raised a bare TypeError at the first save; keep=2.5 committed each save and then
    failed retention, reported as "not saved" while it was, and nothing was ever deleted."""
    from colabkit.checkpoint.checkpointer import Checkpointer

    with pytest.raises(ColabkitError, match=r"--keep must be a whole number of checkpoints \(got "):
        Checkpointer(to=tmp_path, keep=keep, w=np.zeros(4))


@pytest.mark.parametrize("step", [-1, 3.0, "7"])
def test_a_step_no_checkpoint_name_can_hold_is_refused_not_saved_where_nothing_finds_it(tmp_path, step):
    """ck.step = -1 or 3.0 committed step--1 / step-3.0, reported saved, which list, retention and
    restore never see (and whose packs were then collected); a NumPy integer is taken as an int."""
    from colabkit.checkpoint.checkpointer import Checkpointer

    ck = Checkpointer(to=tmp_path, w=np.zeros(4))
    ck.step = step
    with pytest.raises(ColabkitError, match=r"(?s)Checkpoint not saved: its step is .*a whole number, 0 or more"):
        ck.save(wait=True)
    ck.step = np.int64(4)
    ck.save(wait=True)
    ck.close()
    assert ck.last["ok"] and [c.id for c in CheckpointStore(tmp_path).list()] == ["step-4"]


class OnlyInTheTests:
    """A class the writer process can't import (this module is not on its path)."""


def test_a_writer_that_dies_of_an_error_of_its_own_is_said_as_that_not_as_killed(tmp_path, monkeypatch, capsys):
    """A job the writer can't read (a class only the notebook has) made it die with a traceback
    in the kernel's log, and the cell said it was killed, perhaps for memory, at every save."""
    from colabkit.checkpoint.checkpointer import Checkpointer

    ck = Checkpointer(to=tmp_path, w=np.zeros(4))
    monkeypatch.setattr(Checkpointer, "_meta", lambda self: {"odd": OnlyInTheTests()})
    ck.save(wait=True)
    monkeypatch.undo()
    assert ck.last.get("lost")
    said = capsys.readouterr().err
    assert "step-0 was lost: the writer process died (stopped by an error of its own, exit code 1: its " \
           "traceback is in the kernel's log) while writing it" in said, said
    ck.save(wait=True)  # a new writer takes the next save
    ck.close()
    assert ck.last["ok"]


def test_two_checkpointers_of_one_kernel_never_both_save_into_one_store(tmp_path, capsys):
    """A generator's and a discriminator's Checkpointer on one folder (or a cell that makes a
    Checkpointer run again) shared the store's lock: at the same step the second save replaced the
    first's checkpoint, both reported saved. The first save of the second closes the first, whose
    next save says why it can't; a Checkpointer made only to restore takes nothing over."""
    from colabkit.checkpoint.checkpointer import Checkpointer

    generator = Checkpointer(to=tmp_path, g=np.zeros(4))
    generator.step = 1
    generator.save(wait=True)
    reader = Checkpointer(to=tmp_path, g=np.ones(4))
    reader.restore()  # restores only: the generator's Checkpointer still saves
    generator.step = 2
    generator.save(wait=True)
    discriminator = Checkpointer(to=tmp_path, d=np.ones(4))
    discriminator.step = -1
    with pytest.raises(ColabkitError, match="whole number"):
        discriminator.save()  # refused before anything is saved: the generator's still saves
    generator.save(wait=True)
    discriminator.step = 2
    discriminator.save(wait=True)
    generator.step = 3
    with pytest.raises(ColabkitError, match=r"(?s)step 3 not saved: a newer Checkpointer of this notebook saves into "
                                            r".*Save everything from one Checkpointer"):
        generator.save(wait=True)
    generator.close()  # closed already: nothing more to do
    discriminator.step = 3
    discriminator.save(wait=True)
    discriminator.close()
    with pytest.raises(ColabkitError, match="this Checkpointer was closed"):
        discriminator.save()
    reader.close()
    assert [c.step for c in CheckpointStore(tmp_path).list()] == [3, 2, 1]
    kept = Checkpointer(to=tmp_path, d=None, g=None)
    restored = kept.restore()
    kept.close()
    assert restored.checkpoint.id == "step-3" and "d" in restored.values and "g" in restored.unrestored


def test_a_checkpointer_made_in_python_that_saves_into_the_sessions_store_unhooks_the_session(shell, tmp_path,
                                                                                              capsys):
    """%checkpoint every saves into a folder, then a Checkpointer made in Python saves into the
    same one: the session's Checkpointer was closed but left hooked, so its next due optimizer step
    raised inside opt.step() and the panel showed it on. The session is turned off, said."""
    from colabkit.checkpoint import session
    from colabkit.checkpoint.checkpointer import Checkpointer

    shell.user_ns["w"] = np.zeros(4)
    shell.run_line_magic("checkpoint", f"every 1 steps w --to {tmp_path}")
    active = session.active()
    active.save(wait=True)
    mine = Checkpointer(to=tmp_path, v=np.ones(4))
    mine.step = 1
    mine.save(wait=True)
    mine.close()
    assert session.active() is None and active._closed
    assert "%checkpoint every stopped: a Checkpointer made in Python saves into" in capsys.readouterr().err
