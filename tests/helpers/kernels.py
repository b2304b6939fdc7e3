"""A notebook run in a real kernel (nbclient), and killed with SIGKILL mid-training as Colab kills a
runtime: the kill comes when the notebook's training has written `kill_after` lines to its
progress file."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat.v4 import new_code_cell, new_notebook


def execute(cells: list[str], cwd: Path, kill_after: int | None = None, progress: Path | None = None, timeout=300):
    """Run `cells` in a fresh kernel in `cwd`; with `kill_after`, SIGKILL it once `progress` has that
    many lines. Returns the executed notebook (cells after the kill have no outputs)."""
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    if kill_after is None:
        client.execute()
        return nb
    killed = []

    def killer():
        while client.km is None or not client.km.has_kernel:
            time.sleep(0.05)
        pid = client.km.provisioner.process.pid
        while not progress.exists() or len(progress.read_text().splitlines()) < kill_after:
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    threading.Thread(target=killer, daemon=True).start()
    with pytest.raises(DeadKernelError):
        client.execute()
    assert killed
    return nb


def output(nb, index: int) -> str:
    """What cell `index` showed: its streams (stdout and stderr) and any error."""
    parts = []
    for out in nb.cells[index].outputs:
        parts.append(out.get("text", ""))
        if out["output_type"] == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
        if out["output_type"] in ("display_data", "execute_result"):
            parts.append(out["data"].get("text/plain", ""))
    return "\n".join(parts)


def lines(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]
