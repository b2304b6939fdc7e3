"""Where colabkit keeps what must outlive the runtime: Drive on Colab, the platform's persistent folder elsewhere.

`mount()` picks the place, makes sure it is writable, remembers it for the rest of colabkit
(`current()`) and never lets an error from inside google.colab reach the cell: a failed Drive
mount falls back to a local folder with a warning that says what that costs.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from . import platform as platforms
from .errors import ColabkitError, warn

DRIVE_MOUNTPOINT = "/content/drive"
MOUNTS_FILE = "/proc/mounts"
LOCAL_FOLDER = "colabkit-storage"
KAGGLE_WORKING = "/kaggle/working"

_current: Path | None = None


def current() -> Path | None:
    """The storage folder chosen by the last `mount()`, or None before any."""
    return _current


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


def local_twin(path: Path) -> Path:
    """A local-disk folder standing for `path` on Drive: checkpoints commit here, then are mirrored."""
    return Path.cwd() / ".colabkit-local" / Path(path).name


def notebook_name(platform_name: str | None = None) -> str:
    """A folder-safe name for this notebook, so each notebook keeps its own storage."""
    name = None
    if platform_name == platforms.COLAB:
        name = _colab_notebook_name()
    name = name or os.environ.get("JPY_SESSION_NAME") or os.environ.get("COLABKIT_NOTEBOOK")
    stem = Path(name).stem if name else "notebook"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "notebook"


def _colab_notebook_name() -> str | None:
    try:
        from google.colab import _message

        reply = _message.blocking_request("get_ipynb", request="", timeout_sec=5)
        return reply["ipynb"]["metadata"]["colab"]["name"]
    except Exception:  # no answer from the frontend, or an older notebook without the name
        return None


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


def _mount_drive(name: str) -> Path:
    """Mount Drive in the foreground (it asks the browser for consent) unless it already is."""
    if not drive_is_mounted(DRIVE_MOUNTPOINT):
        from google.colab import drive

        drive.mount(DRIVE_MOUNTPOINT)
        if not Path(DRIVE_MOUNTPOINT, "MyDrive").is_dir():
            raise ValueError(f"mount reported success but {DRIVE_MOUNTPOINT}/MyDrive is missing")
    return Path(DRIVE_MOUNTPOINT, "MyDrive", "colabkit", name)


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


def mount(to: str | os.PathLike | None = None, platform=None) -> Path:
    """Choose, create and remember the storage folder; returns it.

    Colab: Drive at /content/drive, folder MyDrive/colabkit/<notebook>. Kaggle: /kaggle/working.
    A SageMaker training job: /opt/ml/checkpoints (synced to S3 by SageMaker). Elsewhere:
    ./colabkit-storage. `to` overrides all of these.
    """
    global _current
    if to is not None:
        _current = ensure_writable(Path(to).expanduser().resolve())
        return _current
    platform = platform or platforms.detect()
    name = platform.name
    if name == platforms.COLAB:
        try:
            folder = _mount_drive(notebook_name(name))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # anything from inside google.colab becomes a fallback, not a traceback
            folder = Path.cwd() / LOCAL_FOLDER
            warn(f"{_drive_failure(exc)} colabkit keeps your files in {folder} for now: "
                 "that folder is deleted when the runtime ends.")
    elif name == platforms.KAGGLE:
        folder = Path(KAGGLE_WORKING)
    elif name == platforms.SAGEMAKER_JOB:
        folder = Path(os.environ.get("SAGEMAKER_BASE_DIR", "/opt/ml"), "checkpoints")
    else:
        folder = Path.cwd() / LOCAL_FOLDER
    _current = ensure_writable(folder)
    return _current
