"""%checkpoint as a user types it, and what happens when storage fails under it."""

import re
import subprocess

import pytest
from IPython.core.error import UsageError

from colabkit.checkpoint import session
from colabkit.checkpoint.store import CheckpointStore
from colabkit.errors import ColabkitError
from conftest import run


@pytest.fixture
def shell(shell):
    """The shared shell, with a small model and optimizer to save."""
    run(shell, "import torch, numpy as np, colabkit\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(6, 3)\n"
               "opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)")
    return shell


TRAIN = ("for epoch in colabkit.resumable(range(4)):\n"
         "    opt.zero_grad(); model(torch.randn(5, 6)).pow(2).sum().backward(); opt.step()")


def test_every_now_list_restore_off(shell, tmp_path):
    _, out = run(shell, "%checkpoint every 15m model opt --keep 2")
    where = tmp_path / "colabkit-storage" / "notebook" / "checkpoints"  # an unnamed notebook's (see notebook.py)
    assert "saving model, opt every 15m" in out.stdout and str(where) in out.stdout
    run(shell, TRAIN)
    _, out = run(shell, "%checkpoint now")
    assert "saved step-4" in out.stdout
    _, out = run(shell, "%checkpoint list")
    assert "step-4" in out.stdout and "python" in out.stdout
    run(shell, "saved = model.weight.detach().clone()\ntorch.nn.init.zeros_(model.weight)")
    _, out = run(shell, "%checkpoint restore latest")
    assert "restored step-4" in out.stdout
    assert run(shell, "torch.equal(model.weight, saved)")[0].result
    _, out = run(shell, "%checkpoint off")
    assert "off" in out.stdout and session.active() is None


def test_resumable_rebinds_arrays_and_values_in_the_notebook(shell):
    run(shell, "ema = np.arange(3.0)\nbest = {'loss': 1.5}")
    run(shell, "%checkpoint every 1 steps model opt ema best")
    run(shell, "for epoch in colabkit.resumable(range(2)):\n    ema = ema + 1; best = {'loss': best['loss'] / 2}")
    run(shell, "%checkpoint off")
    run(shell, "ema = None; best = None")  # a fresh runtime has neither
    run(shell, "%checkpoint every 1 steps model opt ema best")
    run(shell, "for epoch in colabkit.resumable(range(2)): pass")
    assert run(shell, "ema.tolist(), best")[0].result == ([2.0, 3.0, 4.0], {"loss": 0.375})


def test_end_of_cell_is_a_consistent_point(shell):
    run(shell, "%checkpoint every 1s model")
    run(shell, "import time; time.sleep(1.1)")
    session.active().wait()
    assert [c.step for c in session.active().store.list()] == [0]


def test_optimizer_steps_are_consistent_points_in_a_long_cell(shell):
    run(shell, "%checkpoint every 3 steps model opt")
    run(shell, "for _ in range(7):\n    opt.zero_grad(); model(torch.randn(2, 6)).sum().backward(); opt.step()\n"
               "    colabkit.checkpoint.session.active().wait()")
    assert [c.step for c in session.active().store.list()] == [6, 3]


@pytest.mark.parametrize("line,says", [
    ("%checkpoint every 15x model", "not a duration"),
    ("%checkpoint every 15m modle", "no variable named 'modle'.*Did you mean 'model'"),
    ("%checkpoint every 15m", "Name what to save"),
    ("%checkpoint every", "every needs a period"),
    ("%checkpoint sometimes model", "Unknown %checkpoint action 'sometimes'"),
    ("%checkpoint now", "Nothing to save yet"),
    ("%checkpoint every 15m model --keep 0", "at least 1"),
    ("%checkpoint restore step-7", "no checkpoint 'step-7'"),
])
def test_bad_input_is_one_clear_usage_error(shell, line, says):
    result, out = run(shell, line)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert __import__("re").search(says, str(result.error_in_exec))
    assert "Traceback" not in out.stdout + out.stderr


def test_resumable_without_checkpoint_says_what_to_do(shell):
    result, out = run(shell, "for i in colabkit.resumable(range(3)): pass")
    assert isinstance(result.error_in_exec, ColabkitError) and "%checkpoint every 15m" in str(result.error_in_exec)
    assert "ColabkitError: resumable() needs to know what to save" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB file system (tmpfs), so a write fails with ENOSPC as on a full disk."""
    mountpoint = tmp_path / "small"
    mountpoint.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def test_a_full_disk_keeps_the_previous_checkpoint_and_says_why(shell, small_disk):
    run(shell, f"%checkpoint every 15m model --to {small_disk}")
    _, out = run(shell, "%checkpoint now")
    assert "saved step-0" in out.stdout
    run(shell, "model.weight = torch.nn.Parameter(torch.zeros(300_000))")  # 1.2 MB: no longer fits
    result, out = run(shell, "%checkpoint now")
    assert isinstance(result.error_in_exec, UsageError)
    message = str(result.error_in_exec)
    assert "the disk is full" in message and "previous checkpoint is intact" in message
    store = CheckpointStore(small_disk)
    latest, skipped = store.latest_valid()
    assert latest.id == "step-0" and skipped == []
    assert not [p for p in small_disk.iterdir() if p.name.startswith(".tmp-step")]


def test_a_read_only_storage_folder_is_refused_up_front(shell, small_disk):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    result, _ = run(shell, f"%checkpoint every 15m model --to {small_disk / 'ck'}")
    assert isinstance(result.error_in_exec, UsageError)
    assert "cannot write to" in str(result.error_in_exec) and "Read-only file system" in str(result.error_in_exec)


def test_the_session_deadline_alert_forces_a_checkpoint(shell, monkeypatch):
    import time

    from colabkit import platform as p

    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-test")
    started = time.time() - p.COLAB_FREE_CAP + 30 * 60 + 1  # this VM has 30 minutes left
    monkeypatch.setattr(p, "session_start", lambda name: started)
    run(shell, "%checkpoint every 1h model opt --to checkpoints")  # not due for an hour
    run(shell, "%gpuwatch --view text --interval 0.2s --every 1h")
    run(shell, "import time; time.sleep(1.5)")  # the 30-minute alert fires while this cell runs
    session.active().wait()
    assert [c.step for c in session.active().store.list()] == [0]
    run(shell, "%gpuwatch stop")


def test_without_free_ram_to_stage_it_streams_through_a_ring_and_says_the_pause(shell, monkeypatch):
    from colabkit.checkpoint import sink

    monkeypatch.setattr(sink, "RAM_HEADROOM", 0.0)
    run(shell, "%checkpoint every 1h model opt")
    said = run(shell, "%checkpoint now")[1].stderr
    assert re.search(r"larger than the staging memory.*streamed.*training paused [0-9.]+ s", said)
    run(shell, "saved = model.weight.detach().clone()\ntorch.nn.init.zeros_(model.weight)")
    run(shell, "%checkpoint restore")
    assert run(shell, "torch.equal(model.weight, saved)")[0].result
