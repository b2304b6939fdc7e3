"""Faults a long session meets, injected one at a time: a writer killed mid-save, two kernels on one
store, checkpoints that verify but can't be decoded, odd folder names and links, a read-only store."""

import os
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
