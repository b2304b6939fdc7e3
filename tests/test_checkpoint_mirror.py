"""On Colab: commit to local disk, mirror to Drive in the background, resume from Drive on a new VM."""

import os
import shutil
import time
from pathlib import Path

import torch

from colabkit import runtime, storage
from colabkit.checkpoint.mirror import read_status
from colabkit.checkpoint.checkpointer import Checkpointer


def until(condition, timeout=20):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def test_checkpoints_commit_locally_and_reach_drive_and_a_new_vm_resumes_from_drive(fake_colab, monkeypatch):
    drive_folder = runtime.mount()
    assert storage.on_drive(drive_folder)
    torch.manual_seed(0)
    model = torch.nn.Linear(32, 8)
    ck = Checkpointer(every="1 steps", model=model)
    assert ck.mirror_store.root == drive_folder / "checkpoints"
    assert not storage.on_drive(ck.store.root) and ck.store.root.name == "checkpoints"
    ck.step = 3
    ck.save(wait=True)
    drive_copy = drive_folder / "checkpoints" / "step-3"
    until(lambda: (read_status(ck.store.root) or {}).get("mirrored") == "step-3")
    assert sorted(f.name for f in drive_copy.iterdir()) == ["manifest.json", "state.json", "tensors.json"]
    packs = ck.store.get("step-3").manifest["packs"]
    for name in packs:
        assert (drive_folder / "checkpoints" / "pool" / name).read_bytes() == (ck.store.root / "pool" / name).read_bytes()
    assert "Drive copy: step-3" in ck.status()
    # Only what changed travels: the bias alone changes, so one small pack goes to Drive.
    sent = {name: (drive_folder / "checkpoints" / "pool" / name).stat().st_mtime_ns for name in packs}
    with torch.no_grad():
        model.bias.add_(1)
    ck.step = 4
    ck.save(wait=True)
    until(lambda: (read_status(ck.store.root) or {}).get("mirrored") == "step-4")
    new = set(ck.store.get("step-4").manifest["packs"]) - set(packs)
    assert len(new) == 1 and (drive_folder / "checkpoints" / "pool" / new.pop()).stat().st_size == model.bias.nbytes
    assert set(packs) <= set(ck.mirror_store.get("step-4").manifest["packs"])
    assert sent == {name: (drive_folder / "checkpoints" / "pool" / name).stat().st_mtime_ns for name in packs}
    ck.close()

    # A new VM: the local disk is gone, Drive is still there; a half-copied newer folder is ignored.
    shutil.rmtree(ck.store.root.parent)
    (drive_folder / "checkpoints" / "step-9").mkdir()
    (drive_folder / "checkpoints" / "step-9" / "tensors.json").write_bytes(b"partial")
    leftover = drive_folder / "checkpoints" / ".tmp-step-8-0123456789ab"  # a copy cut short by a killed writer
    leftover.mkdir()
    (leftover / "tensors.json").write_bytes(b"partial")
    fresh = torch.nn.Linear(32, 8)
    ck2 = Checkpointer(every="1 steps", model=fresh)
    assert not leftover.exists()  # Drive is swept too
    restored = ck2.restore()
    assert restored.checkpoint.path == drive_folder / "checkpoints" / "step-4" and ck2.step == 4
    assert any("step-9 has no manifest.json" in note for note in restored.notes)
    assert torch.equal(fresh.weight, model.weight) and torch.equal(fresh.bias, model.bias)
    ck2.close()


def test_the_writer_finishes_the_drive_copy_before_it_exits(fake_colab, monkeypatch):
    drive_folder = runtime.mount()
    ck = Checkpointer(every="1 steps", big=torch.zeros(32 << 20, dtype=torch.uint8))
    ck.step = 1
    ck.save()
    ck.close()  # the kernel going away: closes the writer's pipe at once
    copy = drive_folder / "checkpoints" / "step-1"
    assert (copy / "manifest.json").is_file()
    store = ck.mirror_store
    assert store.latest_valid()[0].id == "step-1"


def test_listing_on_colab_never_opens_drives_consent_prompt(fake_colab, shell):
    from google.colab import drive

    from conftest import run

    _, out = run(shell, "%checkpoint list")
    assert drive.CALLS == []  # no mount, no prompt
    assert "Google Drive is not mounted, so checkpoints kept there are not listed: %mount first" in out.stdout


def test_the_panel_warns_before_the_next_checkpoint_would_not_fit_in_drives_free_space(fake_colab, monkeypatch):
    """Drive's free space comes from statvfs of the mount (Colab's FUSE mount reports the quota):
    faked here by a statvfs_result of the real call's shape with f_bavail set, for paths in Drive."""
    import os

    from colabkit.checkpoint import mirror, session

    drive_folder = runtime.mount()
    free = {"bytes": 1 << 40}
    real = os.statvfs

    def statvfs(path):
        found = real(path)
        if not str(path).startswith(str(fake_colab / "drive")):
            return found
        fields = list(found)
        fields[4] = free["bytes"] // found.f_frsize  # f_bavail: what a user may still write
        return os.statvfs_result(fields)

    monkeypatch.setattr(os, "statvfs", statvfs)
    monkeypatch.setattr(mirror, "SPACE_EVERY", 0.0)
    model = torch.nn.Linear(512, 512)  # 1 MiB of weights
    ck = session.activate(Checkpointer(every="1 steps", model=model, keep=3))
    try:
        lines = lambda: runtime.current().events.status_lines()  # noqa: E731  what the panel shows
        ck.sink.prepared.wait(20)
        for _ in range(20):  # readings come in the background: plenty of room, no warning
            assert not any("Drive:" in line for line in lines())
            time.sleep(0.02)
        free["bytes"] = 512 << 10  # half a MiB left in Drive: the next copy (the whole state) won't fit
        until(lambda: any(line.startswith("⚠ Drive: the next checkpoint") for line in lines()))
        warning = next(line for line in lines() if line.startswith("⚠ Drive"))
        assert "free in your Google Drive" in warning and "--keep 2" in warning and "--to PATH" in warning
        assert str(drive_folder / "checkpoints") in warning
        free["bytes"] = 1 << 40  # space freed: the warning goes
        until(lambda: not any("Drive:" in line for line in lines()))
    finally:
        session.deactivate()


def test_a_drive_copy_that_fails_is_said_in_the_cell_not_only_in_the_panel(fake_colab, capsys):
    """Drive's pool folder is a file (anything that makes the copy fail): the local checkpoint is
    committed, and the next save's result says the copy failed, once for that failure."""
    drive_folder = runtime.mount()
    ck = Checkpointer(every="1 steps", w=torch.zeros(8))
    pool = drive_folder / "checkpoints" / "pool"
    shutil.rmtree(pool, ignore_errors=True)
    pool.write_bytes(b"not a folder")
    ck.step = 1
    ck.save(wait=True)
    until(lambda: (read_status(ck.store.root) or {}).get("error"))
    assert "Drive copy failed" in ck.status()
    for step in (2, 3):
        ck.step = step
        ck.save(wait=True)
        until(lambda: (read_status(ck.store.root) or {}).get("pending") is None)
    ck.close()
    said = capsys.readouterr().err
    assert ck.last["ok"] and said.count(f"the copy of a checkpoint to {drive_folder / 'checkpoints'} failed") >= 1
    assert "the local checkpoints are intact" in said


SLOW_DRIVE = """
import json, sys, time
from pathlib import Path
from colabkit.checkpoint import codec, pool
from colabkit.checkpoint.mirror import Mirror
from colabkit.checkpoint.pool import Pool
from colabkit.checkpoint.store import CheckpointStore
from helpers.commit_loop import payload, staged

root = Path(sys.argv[1])
local, store = root / "local", CheckpointStore(root / "local", keep=1)
packs, real_copy = Pool(local), pool.copy_pack

def slow_copy(*args, **kwargs):  # Drive is slower than the saves
    time.sleep(0.4)
    return real_copy(*args, **kwargs)

pool.copy_pack = slow_copy
mirror = Mirror(local, root / "drive", keep=1)
errors = []
for step in range(1, 6):
    encoded, data = staged(step, ["t0"], [payload(step, 1)])
    checkpoint = store.commit(step, lambda folder: codec.write_payload(folder, packs, encoded, data), encoded.meta,
                              spare=mirror.reading())
    mirror.push(checkpoint.path)
    time.sleep(0.25)
    errors.append(json.loads((local / "MIRROR.json").read_text()).get("error"))
mirror.drain()
print(json.dumps({"errors": errors, "kept": len(store.committed_folders())}))
"""


def test_retention_spares_the_checkpoint_the_drive_copy_reads_so_a_slow_copy_still_lands(tmp_path):
    """--keep 1 and saves faster than Drive takes them: retention kept deleting the checkpoint
    being copied, and every copy failed (FileNotFoundError) until training stopped. The writer
    now spares what the mirror reads (Mirror.reading) until its copy is done; each copy lands,
    and the spared folder goes at a save after it. (In a process of its own, as the writer's
    mirror is: its thread lives as long as the process.)"""
    import json
    import subprocess
    import sys

    from colabkit.checkpoint.store import CheckpointStore

    done = subprocess.run([sys.executable, "-c", SLOW_DRIVE, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["errors"] == [None] * 5 and read_status(tmp_path / "local")["mirrored"] == "step-5"
    assert CheckpointStore(tmp_path / "drive").latest_valid()[0].id == "step-5"
    assert result["kept"] <= 3  # keep 1, and those a copy reads or is about to


SLOW_DRIVE_COPY = """
import time
from colabkit.checkpoint import pool

def stuck_copy(*args, **kwargs):  # Drive takes far longer than closing waits
    time.sleep(600)

pool.copy_pack = stuck_copy
"""


def test_closing_while_the_drive_copy_runs_says_what_it_waits_for_and_what_is_not_on_drive(
        fake_colab, monkeypatch, tmp_path, capsys):
    """%checkpoint off (or a second %checkpoint every) while the writer still copies a large
    checkpoint to a slow Drive: the cell said nothing while it waited, and the writer was killed
    after 60 s with the checkpoint only on the VM's disk, unsaid. Now the wait is said, and so is
    the copy that did not finish; turning checkpointing on again and saving copies it."""
    import colabkit.checkpoint.writer as writer

    drive_folder = runtime.mount()
    site = tmp_path / "site"  # the writer process's Drive copy never ends (sitecustomize patches it at start)
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_DRIVE_COPY)
    python_path = os.environ.get("PYTHONPATH", "")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), python_path])))
    monkeypatch.setattr(writer, "CLOSE_WAIT", 4.0)
    monkeypatch.setattr(writer, "CLOSE_NOTICE", 0.5)
    weights = torch.arange(1000.0)
    ck = Checkpointer(every="1 steps", w=weights)
    ck.step = 1
    ck.save(wait=True)
    until(lambda: (read_status(ck.store.root) or {}).get("pending") == "step-1")
    started = time.monotonic()
    ck.close()
    assert time.monotonic() - started < 15
    said = capsys.readouterr().err
    drive = drive_folder / "checkpoints"
    assert f"finishing the copy of step-1 to {drive} before checkpointing stops (at most 4 s)" in said
    assert f"the copy of step-1 to {drive} did not finish" in said
    assert f"step-1 is only on this VM's disk, in {ck.store.root}; Drive's newest checkpoint is none" in said
    assert ck.sink._writer is None and not (drive / "step-1").exists()

    monkeypatch.setenv("PYTHONPATH", python_path)  # Drive as fast as it is
    again = Checkpointer(every="1 steps", w=weights)
    again.restore()
    again.save(force=True, wait=True)
    again.close()
    said = capsys.readouterr().err
    assert "did not finish" not in said and "finishing the copy" not in said
    assert again.mirror_store.latest_valid()[0].id == "step-1"


def test_a_drive_copy_that_drives_retention_deletes_at_once_is_a_failure_said_in_the_cell(tmp_path, capsys):
    """Drive holds higher steps from an earlier run, as many as it keeps; a new run counting from 0
    saves step-10: its copy commits on Drive and Drive's retention deletes it at once. MIRROR.json
    said it was mirrored and the panel "Drive copy: step-10", with Drive not holding this run."""
    import numpy as np

    from colabkit.storage import Places

    drive = tmp_path / "drive"
    earlier = Checkpointer(places=Places(tmp_path / "runtime-1", drive), keep=2, w=np.full(4, 1.0))
    for step in (500, 600):
        earlier.step = step
        earlier.save(wait=True)
    earlier.close()
    ck = Checkpointer(places=Places(tmp_path / "runtime-2", drive), keep=2, w=np.full(4, 2.0))
    ck.step = 10
    ck.save(wait=True)
    until(lambda: (read_status(ck.store.root) or {}).get("error"))
    status = read_status(ck.store.root)
    assert "mirrored" not in status and not (drive / "step-10").exists()
    assert "Drive's retention deleted the copy at once: it keeps the 2 highest steps, and step-600, step-500" \
        in status["error"] and f"Delete those from {drive}, or save this run elsewhere" in status["error"]
    assert "Drive copy: none yet · Drive copy failed: Drive's retention deleted the copy" in ck.status()
    ck.step = 11
    ck.save(wait=True)
    ck.close()
    said = capsys.readouterr().err
    assert said.count(f"the copy of a checkpoint to {drive} failed (Drive's retention deleted the copy") == 1


def commit_steps(root, steps, keep=3):
    """Commit checkpoints of `steps` (1 MiB each) into the store at `root`, in this process."""
    from colabkit.checkpoint import codec
    from colabkit.checkpoint.pool import Pool
    from colabkit.checkpoint.store import CheckpointStore
    from helpers.commit_loop import payload, staged

    store, packs = CheckpointStore(root, keep), Pool(root)
    for step in steps:
        encoded, data = staged(step, ["t0"], [payload(step, 1)])
        store.commit(step, lambda folder: codec.write_payload(folder, packs, encoded, data), encoded.meta)


def test_the_drive_status_names_the_higher_steps_an_earlier_run_left_on_drive(tmp_path):
    """A copy Drive keeps can still be below an earlier run's steps there, and a restore after the
    runtime ends loads the highest: MIRROR.json's `above` names them (empty when there are none)."""
    from colabkit.checkpoint.mirror import Mirror

    local, drive = tmp_path / "local", tmp_path / "drive"
    commit_steps(drive, [500, 600])
    commit_steps(local, [10, 700])
    mirror = Mirror(local, drive, keep=3)
    mirror.push(local / "step-10")
    mirror.drain()
    status = read_status(local)
    assert status["mirrored"] == "step-10" and status["error"] is None and status["above"] == ["step-600", "step-500"]
    mirror.push(local / "step-700")
    mirror.close()  # its thread ends: later tests count colabkit's threads
    status = read_status(local)
    assert status["mirrored"] == "step-700" and status["above"] == []


def test_a_failed_write_of_the_mirror_status_does_not_stop_the_copies_to_drive(tmp_path, monkeypatch):
    """MIRROR.json could not be written once (the local disk full for a moment; here its temporary
    file's name is taken by a folder) after a copy: the thread died, Drive silently got no later
    checkpoint, and the writer's last drain() waited forever. The next copy lands and is recorded."""
    from colabkit.checkpoint import mirror as mirror_module
    from colabkit.checkpoint.mirror import Mirror
    from colabkit.checkpoint.store import CheckpointStore

    local, drive = tmp_path / "local", tmp_path / "drive"
    commit_steps(local, [1, 2])
    blocker = local / "MIRROR.tmp"
    real_copy = mirror_module.copy_checkpoint

    def copy_then_fill_the_disk(source, store):
        copied = real_copy(source, store)
        if source.name == "step-1":
            blocker.mkdir()
        return copied

    monkeypatch.setattr(mirror_module, "copy_checkpoint", copy_then_fill_the_disk)
    mirror = Mirror(local, drive, keep=3)
    mirror.push(local / "step-1")
    until(lambda: blocker.exists() and not mirror.reading())  # the status write after the copy failed
    assert read_status(local)["pending"] == "step-1"
    blocker.rmdir()
    mirror.push(local / "step-2")
    mirror.drain(timeout=20)
    assert mirror._thread.is_alive() and CheckpointStore(drive).latest_valid()[0].id == "step-2"
    mirror.close()
    assert not mirror._thread.is_alive()
    status = read_status(local)
    assert status["mirrored"] == "step-2" and status["pending"] is None and status["error"] is None


def test_the_writers_last_drain_returns_when_the_mirror_thread_has_ended(tmp_path, monkeypatch):
    """Whatever ends the copying thread, drain() (no timeout: the writer's last act) returns
    instead of waiting forever, retention need not spare what it will never copy, and the next
    push raises, so the writer says the copy did not start."""
    import threading

    import pytest

    from colabkit.checkpoint import mirror as mirror_module
    from colabkit.checkpoint.mirror import Mirror

    local = tmp_path / "local"
    commit_steps(local, [1, 2])

    def ends_the_thread(source, store):
        raise SystemExit("gone")

    monkeypatch.setattr(mirror_module, "copy_checkpoint", ends_the_thread)
    mirror = Mirror(local, tmp_path / "drive", keep=3)
    mirror.push(local / "step-1")
    mirror._thread.join(10)
    draining = threading.Thread(target=mirror.drain, daemon=True)
    draining.start()
    draining.join(10)
    assert not draining.is_alive() and mirror.reading() == set()
    with pytest.raises(RuntimeError, match=r"the thread that copies checkpoints there stopped \(SystemExit: gone\)"):
        mirror.push(local / "step-2")


def test_a_format_3_checkpoint_is_copied_in_format_3_and_its_copy_restores(tmp_path):
    """copy_checkpoint (the Drive mirror's, and the SageMaker local run's) committed a format-3
    checkpoint under a format-4 manifest: the copy verified, and did not load (tensors.json is
    format 3's rows). It keeps its format, and restores as the original does."""
    from colabkit.checkpoint.mirror import copy_checkpoint
    from colabkit.checkpoint.store import CheckpointStore

    original = tmp_path / "original"
    shutil.copytree(Path(__file__).parent / "fixtures" / "checkpoint-format-3" / "store", original)
    source, _ = CheckpointStore(original).latest_valid()
    assert source.manifest["format"] == 3
    assert copy_checkpoint(source.path, CheckpointStore(tmp_path / "copy"))
    copy, skipped = CheckpointStore(tmp_path / "copy").latest_valid()
    assert copy.id == source.id and copy.manifest["format"] == 3 and not skipped

    def restored(root):
        model = torch.nn.Sequential(*(torch.nn.Linear(3, 3) for _ in range(35)))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        namespace = {}
        ck = Checkpointer(to=root, model=model, optimizer=optimizer)
        assert ck.restore(namespace=namespace).notes == []
        ck.close()
        return model.state_dict(), optimizer.state_dict()["state"], namespace["extra"]["note"]

    (weights, momenta, note), (weights_copy, momenta_copy, note_copy) = restored(original), restored(tmp_path / "copy")
    assert weights.keys() == weights_copy.keys() and all(torch.equal(weights[k], weights_copy[k]) for k in weights)
    assert len(momenta) == 70 and all(torch.equal(momenta[i]["momentum_buffer"], momenta_copy[i]["momentum_buffer"])
                                      for i in momenta)
    assert note == note_copy == "format 3"


def test_a_drive_copy_kept_below_an_earlier_runs_steps_is_said_in_the_cell(tmp_path, capsys):
    """A new VM: the local store is empty, Drive holds step-500 and step-600 of an earlier run and
    keeps 5. This run's step-10 is kept on Drive, but after the runtime ends a restore loads
    step-600: the local store has nothing above it, so only Drive's status knew."""
    import numpy as np

    from colabkit.storage import Places

    drive = tmp_path / "drive"
    commit_steps(drive, [500, 600])
    ck = Checkpointer(places=Places(tmp_path / "runtime", drive), keep=5, w=np.zeros(4))
    for step in (10, 11):
        ck.step = step
        ck.save(wait=True)
        until(lambda: (read_status(ck.store.root) or {}).get("mirrored") == f"step-{step}")
    ck.close()
    said = capsys.readouterr().err
    assert said.count(f"is saved, but {drive} also holds step-600, step-500, higher steps from before") == 1, said
    assert "loads the highest, step-600, not this run" in said


def test_a_drive_copy_that_lands_while_drives_old_packs_cant_be_deleted_is_a_copy_not_a_failure(tmp_path, capsys):
    """A folder on Drive without a manifest (a half-synced copy) stops the deletion of Drive's old
    packs; the copy committed before that, yet the mirror reported it failed ("Drive copy: none
    yet"), at every save. The copy is said landed, and the packs left are said once."""
    import numpy as np

    from colabkit.storage import Places

    drive = tmp_path / "drive"
    (drive / "step-900").mkdir(parents=True)
    (drive / "step-900" / "state.json").write_text("{}")
    ck = Checkpointer(places=Places(tmp_path / "runtime", drive), keep=1, w=np.zeros(4))
    for step in (1, 2, 3):
        ck.objects["w"] = np.full(4, float(step))
        ck.step = step
        ck.save(wait=True)
        until(lambda: (read_status(ck.store.root) or {}).get("mirrored") == f"step-{step}")
    ck.close()
    status = read_status(ck.store.root)
    assert status["error"] is None and "step-900 has no manifest.json" in status["unswept"]
    said = capsys.readouterr().err
    assert said.count(f"the copies on Drive landed, but the packs no kept checkpoint needs in {drive}") == 1, said
    assert "failed" not in said and "also holds" not in said  # step-900 is no checkpoint a restore loads


def test_interrupting_the_wait_for_the_drive_copy_stops_it_and_says_what_it_leaves(
        fake_colab, monkeypatch, tmp_path, capsys):
    """An interrupt while closing waits for a slow Drive copy left the writer running and the
    staging memory held, with a second close doing nothing; now the writer is stopped, the memory
    freed, and the unfinished copy said."""
    import pytest

    drive_folder = runtime.mount()
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_DRIVE_COPY)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH", "")])))
    monkeypatch.setattr(Checkpointer, "_say_drive_wait", lambda self: (_ for _ in ()).throw(KeyboardInterrupt))
    ck = Checkpointer(every="1 steps", w=torch.arange(1000.0))
    ck.save(wait=True)
    until(lambda: (read_status(ck.store.root) or {}).get("pending") == "step-0")
    writer = ck.sink._writer.process
    with pytest.raises(KeyboardInterrupt):
        ck.close()
    assert writer.poll() is not None and ck.sink._writer is None and ck.sink._buffer is None
    assert f"the copy of step-0 to {drive_folder / 'checkpoints'} did not finish (you interrupted the wait for it)" \
        in capsys.readouterr().err
