"""Alerts as a visible warning in the notebook, from the watcher thread.

Output printed from a thread lands in the running cell under ipykernel 7 but is dropped under
ipykernel 6 (ipykernel#1450 changed the routing). So a warning is sent explicitly with the parent
of the request the kernel is running now, as ipywidgets does for messages from threads: it shows
under the cell the user is watching. Between cells it goes nowhere; the panel's banner keeps it.
"""

from __future__ import annotations

import sys


def _kernel():
    kernelbase = sys.modules.get("ipykernel.kernelbase")
    if kernelbase is None or not kernelbase.Kernel.initialized():
        return None
    return kernelbase.Kernel.instance()


def warn_in_running_cell(message: str) -> bool:
    """Write `message` as a warning (stderr) under the running cell; False outside a kernel."""
    kernel = _kernel()
    if kernel is None:
        print(f"colabkit warning: {message}", file=sys.stderr, flush=True)
        return False
    kernel.session.send(kernel.iopub_socket, "stream",
                        {"name": "stderr", "text": f"colabkit warning: {message}\n"},
                        parent=kernel.get_parent("shell"))
    return True


def alert(alert) -> None:
    """A watcher alert subscriber."""
    warn_in_running_cell(alert.message)
