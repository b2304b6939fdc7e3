"""Where colabkit keeps what must outlive the runtime, per notebook: Drive on Colab, the platform's
persistent folder elsewhere, and where checkpoints commit inside that.

Decisions only: the kernel's Runtime remembers what was chosen. `mount()` picks the place, makes
sure it is writable and never lets an error from inside google.colab reach the cell: a failed
Drive mount falls back to a local folder with a warning that says what that costs.
`checkpoint_places()` is the one place that decides where a checkpoint store lives.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import platform as platforms
from .errors import ColabkitError, warn
from .notebook import Notebook

DRIVE_MOUNTPOINT = "/content/drive"
MOUNTS_FILE = "/proc/mounts"
LOCAL_FOLDER = "colabkit-storage"
LOCAL_TWIN = ".colabkit-local"  # on Colab: checkpoints commit here, then are mirrored to Drive
KAGGLE_WORKING = "/kaggle/working"
CHECKPOINTS = "checkpoints"


def drive_is_mounted(mountpoint: str = DRIVE_MOUNTPOINT, mounts_file: str | None = None) -> bool:
    """Whether Google Drive (a fuse.drive file system) is mounted at `mountpoint`.

    Colab's own check looks for "<mountpoint>/My Drive", but Drive is mounted with
    virtual_folders_omit_spaces, so the folder is "MyDrive"; the mount table is the reliable source.
    """
    try:
        table = Path(mounts_file or MOUNTS_FILE).read_text()
    except OSError:
        return False
    target = os.path.normpath(mountpoint)
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "fuse.drive":
            if os.path.normpath(fields[1].replace("\\040", " ")) == target:
                return True
    return False


def on_drive(path: Path) -> bool:
    """Whether `path` lies on the mounted Google Drive (slow to commit to, uploads later)."""
    mountpoint = Path(DRIVE_MOUNTPOINT)
    return drive_is_mounted(str(mountpoint)) and Path(path).resolve().is_relative_to(mountpoint.resolve())


def ensure_writable(folder: Path) -> Path:
    """Create `folder` and prove it takes a file; a clear error otherwise."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".colabkit-probe-"):
            pass
    except OSError as exc:
        raise ColabkitError(
            f"colabkit cannot write to {folder} ({exc.strerror or exc}). Choose a folder you can "
            "write to with %mount --to PATH or %checkpoint --to PATH (or to=PATH in Python)."
        ) from None
    return folder


def _mount_drive() -> None:
    """Mount Drive in the foreground (it asks the browser for consent) unless it already is."""
    if not drive_is_mounted(DRIVE_MOUNTPOINT):
        from google.colab import drive

        drive.mount(DRIVE_MOUNTPOINT)
        if not Path(DRIVE_MOUNTPOINT, "MyDrive").is_dir():
            raise ValueError(f"mount reported success but {DRIVE_MOUNTPOINT}/MyDrive is missing")


def _drive_failure(exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, NotImplementedError):
        return ("Google Drive cannot be mounted in this runtime (Colab Enterprise and custom "
                "runtimes don't support drive.mount).")
    if "timeout" in text or "timed out" in text:
        return ("Google Drive did not answer in time (drive.mount timed out); this happens with "
                "very large Drives. Try %mount again, or unmount and remount in a fresh runtime.")
    if "already contain files" in text:
        return (f"{DRIVE_MOUNTPOINT} already holds files written before Drive was mounted. Move "
                f"them away (!mv {DRIVE_MOUNTPOINT} /content/drive-old) and run %mount again.")
    if "credential" in text or "denied" in text.lower():
        return "Drive access was not granted in the browser; run %mount again and allow it."
    return f"Google Drive could not be mounted ({type(exc).__name__}: {text})."


def default_root(platform_name: str, notebook: Notebook, drive_mounted: bool | None = None) -> Path:
    """Where this notebook's storage goes when nothing was chosen, without mounting anything.

    Colab: MyDrive/colabkit/<notebook> when Drive is mounted, else /content/colabkit-storage/<notebook>.
    Kaggle: /kaggle/working (each notebook has its own). A SageMaker training job: /opt/ml/checkpoints
    (synced to S3 by SageMaker). Elsewhere: colabkit-storage/<notebook> beside the notebook.
    """
    if platform_name == platforms.COLAB:
        if drive_is_mounted(DRIVE_MOUNTPOINT) if drive_mounted is None else drive_mounted:
            return Path(DRIVE_MOUNTPOINT, "MyDrive", "colabkit", notebook.name)
        return Path.cwd() / LOCAL_FOLDER / notebook.name
    if platform_name == platforms.KAGGLE:
        return Path(KAGGLE_WORKING)
    if platform_name == platforms.SAGEMAKER_JOB:
        return Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"), "checkpoints")
    return notebook.folder / LOCAL_FOLDER / notebook.name


def mount(notebook: Notebook, to: str | os.PathLike | None = None, platform_name: str | None = None) -> Path:
    """Choose and create the storage folder (on Colab, mounting Drive: it asks the browser for consent)."""
    if to is not None:
        return ensure_writable(Path(to).expanduser().resolve())
    name = platform_name or platforms.detect_name()
    if name == platforms.COLAB:
        try:
            _mount_drive()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # anything from inside google.colab becomes a fallback, not a traceback
            folder = default_root(name, notebook, drive_mounted=False)
            warn(f"{_drive_failure(exc)} colabkit keeps your files in {folder} for now: "
                 "that folder is deleted when the runtime ends.")
            return ensure_writable(folder)
    return ensure_writable(default_root(name, notebook))


@dataclass(frozen=True)
class Places:
    """Where a checkpoint store commits, and the slow storage it is mirrored to (Drive), if any."""

    root: Path
    mirror: Path | None = None


def checkpoint_places(storage: Path, to: str | os.PathLike | None = None) -> Places:
    """The one decision of where checkpoints live. `to` (the user's folder) is used as it is. On
    Drive a commit is slow and uploads later (colabtools#2607, #2869), so checkpoints commit to local
    disk and are mirrored to `<storage>/checkpoints` on Drive; elsewhere they commit there directly."""
    if to is not None:
        return Places(Path(to).expanduser().resolve())
    root = Path(storage) / CHECKPOINTS
    if on_drive(storage):
        return Places(Path.cwd() / LOCAL_TWIN / Path(storage).name / CHECKPOINTS, root)
    return Places(root)
