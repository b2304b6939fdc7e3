"""Faults a long session meets, injected one at a time: a writer killed mid-save, two kernels on one
store, checkpoints that verify but can't be decoded, odd folder names and links, a read-only store."""

import os
import subprocess
import sys
import signal
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from colabkit.checkpoint import codec
from colabkit.checkpoint.store import CheckpointStore
from helpers.kernels import execute, output


def writer_of(kernel_pid: int) -> psutil.Process | None:
    for child in psutil.Process(kernel_pid).children(recursive=True):
        try:
            if "colabkit.checkpoint.writer" in " ".join(child.cmdline()):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


@pytest.mark.kernel
def test_a_writer_killed_mid_save_loses_that_save_only_and_training_goes_on(tmp_path):
    store = tmp_path / "store"
    steps = 30
    cells = [
        "%load_ext colabkit",
        "import time, numpy as np, colabkit\nw = np.zeros(8 << 20)",  # 64 MiB: a save takes a while
        f"%checkpoint every 1 steps w --to {store}",
        f"for i in colabkit.resumable(range({steps})):\n    w += 1\n    time.sleep(0.1)",
        "print('finished', int(w[0]))",
    ]
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    killed = []

    def killer():  # SIGKILL the writer alone, twice, each time while a commit is in progress
        while client.km is None or not client.km.has_kernel:
            time.sleep(0.05)
        kernel = client.km.provisioner.process.pid
        deadline = time.monotonic() + 120
        while len(killed) < 2 and time.monotonic() < deadline:
            writer = writer_of(kernel)
            if writer is not None and store.is_dir() and any(p.name.startswith(".tmp-step") for p in store.iterdir()):
                writer.send_signal(signal.SIGKILL)
                killed.append(writer.pid)
                time.sleep(1.0)
            time.sleep(0.002)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    client.execute()
    thread.join()
    assert len(killed) == 2
    said = output(nb, 3)
    assert "Error" not in said, said
    assert said.count("was lost: the writer process died") >= 1, said
    assert f"finished {steps}" in output(nb, 4)
    latest, skipped = CheckpointStore(store).latest_valid()
    assert latest.step == steps and skipped == []
    loaded = codec.read(latest.path, trust=False)
    assert loaded.position == steps
    assert [p.name for p in store.iterdir() if p.name.startswith(".tmp")] == []  # the dead writers' leftovers went


HOLDER = """
import sys, numpy as np
from pathlib import Path
from colabkit.checkpoint.checkpointer import Checkpointer
from colabkit.storage import Places
ck = Checkpointer(places=Places(Path(sys.argv[1])), w=np.zeros(1 << 20))
step = 0
while True:
    step += 1
    ck.step = step
    ck.objects["w"] = ck.objects["w"] + 1
    try:
        ck.save(force=True, wait=True)
        print("saved", step, flush=True)
    except Exception as exc:
        print("FAILED", step, exc, flush=True)
    if step >= 3 and Path(sys.argv[2]).exists():
        break
ck.close()
"""


def test_a_second_kernel_on_a_store_gets_a_read_only_view_and_sweeps_nothing_of_the_writers(tmp_path, capsys):
    from colabkit.checkpoint.checkpointer import Checkpointer
    from colabkit.errors import ColabkitError
    from colabkit.storage import Places

    root, stop = tmp_path / "store", tmp_path / "stop"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), str(stop)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().startswith("saved 1")
        in_flight = root / ".tmp-step-99-0123456789ab"  # as the writer's commit in progress looks
        in_flight.mkdir()
        for _ in range(10):  # a second kernel starts %checkpoint again and again while the first commits
            second = Checkpointer(places=Places(root), w=np.ones(4))
            said = capsys.readouterr().err
            assert f"in use by another kernel (process {holder.pid})" in said and "--to" in said, said
            with pytest.raises(ColabkitError, match="read-only.*--to ANOTHER-FOLDER"):
                second.save()
            restored = second.restore()  # reading works
            assert restored is not None and restored.step >= 1
            second.close()
            assert in_flight.is_dir()
        stop.touch()
        lines = holder.stdout.read().splitlines()
    finally:
        holder.kill()
        holder.wait()
    assert lines and not [line for line in lines if line.startswith("FAILED")], lines
    last = int(lines[-1].split()[1])
    assert CheckpointStore(root).latest_valid()[0].step == last  # the writer's reported-OK saves are there

    (root / ".tmp-LATEST-0820a3eb702a").write_text("step-3")  # a leftover file, not a folder
    third = Checkpointer(places=Places(root), w=np.ones(4))  # the first kernel is gone: this one writes
    assert "in use" not in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".tmp")) == []
    third.step = last + 1
    third.save(wait=True)
    third.close()
