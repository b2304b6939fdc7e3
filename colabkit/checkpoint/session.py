"""The notebook's active Checkpointer, and the consistent points it gets from the notebook:

- the end of every cell (IPython's post_run_cell) that ran to its end,
- torch's optimizer steps (adapters/torch_steps), in a long cell and inside resumable() alike,
- the step ends of a framework's own training loop: Hugging Face `Trainer.train()`, Lightning
  `Trainer.fit()`, Keras `model.fit()` (adapters/), which also resume through the framework's path,
- the session-deadline alert of the kernel's watch forces a save at the next of those.

A framework is hooked when the notebook has imported it, or as it imports it (even in the cell
that trains); colabkit never imports one itself. The kernel's Runtime holds the session;
`%checkpoint off` and `%unload_ext` close it and undo every hook.
"""

from __future__ import annotations

import sys

from ..errors import ColabkitError
from . import adapters
from .checkpointer import Checkpointer


class CheckpointSession:
    def __init__(self, checkpointer: Checkpointer, runtime):
        self.checkpointer = checkpointer
        self.shell = runtime.shell
        self._undo = [runtime.events.on_alert(self._on_alert), runtime.events.add_status(checkpointer.status),
                      runtime.events.add_status(checkpointer.drive_warning)]
        if self.shell is not None:
            self.shell.events.register("post_run_cell", self._at_cell_end)
            self._undo.append(lambda: self.shell.events.unregister("post_run_cell", self._at_cell_end))
        self._undo.append(adapters.hook(self))

    def _on_alert(self, alert) -> None:
        if alert.kind == "session":
            self.checkpointer.request()

    def _at_cell_end(self, result=None) -> None:
        try:
            self.checkpointer.at_cell_end(failed=result is not None and not result.success)
        except ColabkitError as exc:  # a hook can't raise into the user's cell cleanly: say it instead
            print(f"colabkit: {exc}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Unhook and close the Checkpointer (waiting for its save in flight)."""
        while self._undo:
            self._undo.pop()()
        self.checkpointer.close()


def activate(checkpointer: Checkpointer, runtime=None) -> Checkpointer:
    """Make `checkpointer` the notebook's, hooked to cell ends, optimizer steps and alerts,
    replacing (and closing) the one before."""
    from .. import runtime as runtimes

    runtime = runtime or runtimes.current()
    with runtime.lock:
        previous, runtime.checkpoints = runtime.checkpoints, None
        if previous is not None:
            previous.close()
        runtime.checkpoints = CheckpointSession(checkpointer, runtime)
    return checkpointer


def deactivate(runtime=None) -> bool:
    """Close the notebook's Checkpointer; True when there was one."""
    from .. import runtime as runtimes

    runtime = runtime or runtimes.current()
    with runtime.lock:
        session, runtime.checkpoints = runtime.checkpoints, None
    if session is None:
        return False
    session.close()
    return True


def active(runtime=None) -> Checkpointer | None:
    from .. import runtime as runtimes

    session = (runtime or runtimes.current()).checkpoints
    return session.checkpointer if session is not None else None


def resumable(iterable, total: int | None = None):
    """`for epoch in resumable(range(50))`: restores the latest checkpoint, skips done iterations,
    saves at iteration boundaries when due. Needs %checkpoint (or Checkpointer(...) activated)."""
    checkpointer = active()
    if checkpointer is None:
        raise ColabkitError(
            "resumable() needs to know what to save: run %checkpoint every 15m model optimizer first "
            "(or use colabkit.Checkpointer(every='15m', model=model, optimizer=opt).loop(...)).")
    return checkpointer.loop(iterable, total)
