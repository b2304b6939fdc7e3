"""The notebook's active Checkpointer, and the consistent points it gets from the notebook.

- the end of every cell (IPython's post_run_cell),
- every optimizer step while no resumable loop runs (torch's global step post-hook: no change
  to the user's code),
- the session-deadline alert of any %gpuwatch watcher forces a save at the next of those.
"""

from __future__ import annotations

import sys

from ..errors import ColabkitError
from .schedule import Checkpointer

_active: Checkpointer | None = None
_undo: list = []  # functions that take the hooks back
_optimizer_hook = None  # torch's RemovableHandle


def active() -> Checkpointer | None:
    return _active


def activate(checkpointer: Checkpointer, shell=None) -> Checkpointer:
    """Make `checkpointer` the notebook's, hooked to cell ends, optimizer steps and alerts."""
    from .. import monitor

    global _active
    deactivate()
    _active = checkpointer
    if shell is not None:
        shell.events.register("post_run_cell", _at_cell_end)
        _undo.append(lambda: shell.events.unregister("post_run_cell", _at_cell_end))
    _hook_optimizer_steps()
    _undo.append(monitor.add_alert_listener(_on_alert))
    _undo.append(monitor.add_status_source(checkpointer.status))
    return checkpointer


def _hook_optimizer_steps() -> None:
    """Register torch's global hook once torch is imported (it may be imported after %checkpoint)."""
    global _optimizer_hook
    if _optimizer_hook is not None or "torch" not in sys.modules:
        return
    from torch.optim.optimizer import register_optimizer_step_post_hook

    _optimizer_hook = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: _at_optimizer_step())


def deactivate() -> None:
    """Unhook and close the active Checkpointer (waiting for its save in flight)."""
    global _active, _optimizer_hook
    while _undo:
        _undo.pop()()
    if _optimizer_hook is not None:
        _optimizer_hook.remove()
        _optimizer_hook = None
    if _active is not None:
        checkpointer, _active = _active, None
        checkpointer.close()


def _on_alert(alert) -> None:
    if alert.kind == "session" and _active is not None:
        _active.request()


def _report(exc: ColabkitError) -> None:
    print(f"colabkit: {exc}", file=sys.stderr, flush=True)


def _at_cell_end(*_args) -> None:
    if _active is None:
        return
    _hook_optimizer_steps()
    try:
        _active.at_consistent_point()
    except ColabkitError as exc:  # a hook can't raise into the user's cell cleanly: say it instead
        _report(exc)


def _at_optimizer_step() -> None:
    if _active is not None:
        _active.after_optimizer_step()


def resumable(iterable, total: int | None = None):
    """`for epoch in resumable(range(50))`: restores the latest checkpoint, skips done iterations,
    saves at iteration boundaries when due. Needs %checkpoint (or Checkpointer(...) activated)."""
    if _active is None:
        raise ColabkitError(
            "resumable() needs to know what to save: run %checkpoint every 15m model optimizer first "
            "(or use colabkit.Checkpointer(every='15m', model=model, optimizer=opt).loop(...)).")
    return _active.loop(iterable, total)
