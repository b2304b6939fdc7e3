"""The notebook's active Checkpointer, and the consistent points it gets from the notebook:

- the end of every cell (IPython's post_run_cell),
- every optimizer step while no resumable loop runs (torch's global step post-hook: no change
  to the user's code),
- the session-deadline alert of the kernel's watch forces a save at the next of those.

The kernel's Runtime holds the session; `%checkpoint off` and `%unload_ext` close it.
"""

from __future__ import annotations

import sys

from ..errors import ColabkitError
from .checkpointer import Checkpointer


class CheckpointSession:
    def __init__(self, checkpointer: Checkpointer, runtime):
        self.checkpointer = checkpointer
        self.shell = runtime.shell
        self._optimizer_hook = None  # torch's RemovableHandle
        self._undo = [runtime.events.on_alert(self._on_alert), runtime.events.add_status(checkpointer.status)]
        if self.shell is not None:
            self.shell.events.register("post_run_cell", self._at_cell_end)
            self._undo.append(lambda: self.shell.events.unregister("post_run_cell", self._at_cell_end))
        self._hook_optimizer_steps()

    def _hook_optimizer_steps(self) -> None:
        """Register torch's global hook once torch is imported (it may be imported after %checkpoint)."""
        if self._optimizer_hook is not None or "torch" not in sys.modules:
            return
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self._optimizer_hook = register_optimizer_step_post_hook(
            lambda optimizer, args, kwargs: self.checkpointer.after_optimizer_step())

    def _on_alert(self, alert) -> None:
        if alert.kind == "session":
            self.checkpointer.request()

    def _at_cell_end(self, *_args) -> None:
        self._hook_optimizer_steps()
        try:
            self.checkpointer.at_consistent_point()
        except ColabkitError as exc:  # a hook can't raise into the user's cell cleanly: say it instead
            print(f"colabkit: {exc}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Unhook and close the Checkpointer (waiting for its save in flight)."""
        while self._undo:
            self._undo.pop()()
        if self._optimizer_hook is not None:
            self._optimizer_hook.remove()
            self._optimizer_hook = None
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
