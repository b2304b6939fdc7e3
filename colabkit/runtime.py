"""One kernel's colabkit: its notebook, storage, live watch, checkpoints and events, in one owner.

`%load_ext colabkit` creates it (the Python API does on first use) and `%unload_ext` closes it,
stopping every thread, server and process it started. Magics, the terminal and the Python API
all ask it; no other module keeps per-kernel state.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from . import notebook as notebooks
from . import platform as platforms
from . import storage
from .errors import say
from .events import Events


class Runtime:
    def __init__(self, shell=None, notebook: notebooks.Notebook | None = None):
        """`notebook` when it is known already (`colabkit export NOTEBOOK.ipynb`); else found on first use."""
        self.shell = shell
        self.events = Events()
        self.storage: Path | None = None  # chosen by mount(); None until then
        self.watch = None  # monitor.Monitor, while %gpuwatch runs
        self.checkpoints = None  # checkpoint.session.CheckpointSession, while %checkpoint is on
        self._notebook = notebook
        self.lock = threading.RLock()  # starting or stopping a watch or checkpoints
        # execution count -> the exception a cell raised: an export leaves those cells out. A cell
        # stopped by an interrupt is not among them: its training is what the person moves to a job.
        self.failed_cells: dict[int, str] = {}
        if shell is not None:
            shell.events.register("post_run_cell", self._after_cell)

    def _after_cell(self, result) -> None:
        error = result.error_in_exec or result.error_before_exec
        if error is not None and not isinstance(error, KeyboardInterrupt) and result.execution_count is not None:
            self.failed_cells[result.execution_count] = type(error).__name__

    @property
    def notebook(self) -> notebooks.Notebook:
        """Which notebook this is, found on first use (COLABKIT_NOTEBOOK may be set after %load_ext)."""
        if self._notebook is None:
            self._notebook = notebooks.identify(self.shell)
        return self._notebook

    def platform(self, tier: str | None = None, idle: str | float | None = None) -> platforms.Platform:
        return platforms.detect(shell=self.shell, tier=tier, idle_timeout=idle)

    # -- storage ---------------------------------------------------------------------------
    def mount(self, to: str | os.PathLike | None = None) -> Path:
        """Choose, create and remember this notebook's storage folder (`%mount`)."""
        name = platforms.detect_name()
        to = self._in_job(to)
        self.storage = storage.mount(self.notebook, to, name)
        # A name shared by unnamed notebooks matters only where storage is kept by name.
        by_name = to is None and name not in (platforms.KAGGLE, platforms.SAGEMAKER_JOB)
        note = notebooks.unnamed_note(self.notebook, self.storage) if by_name else None
        if note:
            say(note)
        return self.storage

    def storage_root(self, mount: bool = True) -> Path:
        """The storage folder: the one chosen, else the default, which is mounted (on Colab: Drive,
        with its consent prompt) only when `mount`; reading never needs to mount."""
        if self.storage is not None:
            return self.storage
        if mount:
            return self.mount()
        return storage.default_root(platforms.detect_name(), self.notebook)

    def checkpoint_places(self, to: str | os.PathLike | None = None, mount: bool = True) -> storage.Places:
        to = self._in_job(to)
        if to is not None:
            return storage.checkpoint_places(Path(to), to)
        return storage.checkpoint_places(self.storage_root(mount))

    @staticmethod
    def _in_job(to):
        """In a SageMaker job the notebook's own folder choice is set aside: only /opt/ml/checkpoints
        is synced with S3, so only there do checkpoints resume the run and come back."""
        if to is None or platforms.detect_name() != platforms.SAGEMAKER_JOB:
            return to
        say(f"in this SageMaker job, storage is {storage.default_root(platforms.SAGEMAKER_JOB, None)} (synced "
            f"with S3), not {to}: that is where the run resumes from and what comes back to the notebook.")
        return None

    def disk_paths(self) -> dict[str, str]:
        """The disks the panel shows: the working folder, and the storage once it is chosen."""
        paths = {"working folder": os.getcwd()}
        if self.storage is not None:
            paths["storage"] = str(self.storage)
        return paths

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the watch (its thread and server) and the checkpoints (their save in flight is finished)."""
        if self.shell is not None and self._after_cell in self.shell.events.callbacks["post_run_cell"]:
            self.shell.events.unregister("post_run_cell", self._after_cell)
        with self.lock:
            watch, self.watch = self.watch, None
            checkpoints, self.checkpoints = self.checkpoints, None
        try:
            if watch is not None:
                watch.stop()
        finally:
            if checkpoints is not None:
                checkpoints.close()


_lock = threading.Lock()
_current: Runtime | None = None


def current(shell=None) -> Runtime:
    """This kernel's Runtime, created on first use with the running IPython shell (if any)."""
    global _current
    with _lock:
        if _current is None:
            _current = Runtime(shell if shell is not None else platforms.current_shell())
        return _current


def close() -> None:
    """Close this kernel's Runtime, if there is one (`%unload_ext colabkit`)."""
    global _current
    with _lock:
        runtime, _current = _current, None
    if runtime is not None:
        runtime.close()


def mount(to: str | os.PathLike | None = None) -> Path:
    """Choose, create and remember this notebook's storage folder; returns it (`%mount`).

    Colab: Google Drive, MyDrive/colabkit/<notebook> (asks for consent). Kaggle: /kaggle/working.
    A SageMaker job: /opt/ml/checkpoints. Elsewhere: colabkit-storage/<notebook> beside the notebook.
    """
    return current().mount(to)
