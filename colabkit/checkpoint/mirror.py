"""A copy of the newest checkpoint on slow storage (Google Drive), made in the background.

Drive writes land in a local cache and upload later (colabtools#2607: 30 min for 3 GB; #2869:
the last checkpoint lost at session end), and a commit there is slow. So on Colab checkpoints
are committed to local disk, and this mirror, a thread of the writer process, copies each new one
to Drive through the same atomic commit (the packs Drive's pool lacks, the payload, then the
manifest, then the rename): only the tensors that changed travel. Only the newest
waiting checkpoint is copied: a mirror that falls behind skips to the latest. Its progress is in
MIRROR.json beside the local store, for the panel and the cell: `pending` (the checkpoint waiting or
being copied), `mirrored` and `mirrored_at` (the last copy that is on Drive), `above` (Drive's
committed checkpoints with a higher step than `mirrored`, from an earlier run that counted further:
a restore after the runtime ends loads the highest, not this run), `error` (the last copy's failure,
None once one lands), `unswept` (why Drive's packs no kept checkpoint needs were not deleted after
the last copy, which landed), `remote` and `updated`. `DriveSpace` reads Drive's free space for the panel's
warning that the next checkpoint would not fit.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from . import codec, durable, pool
from .store import CheckpointStore

STATUS = "MIRROR.json"
SPACE_EVERY = 30.0  # seconds a reading of Drive's free space is kept


def copy_checkpoint(source: Path, store: CheckpointStore) -> bool:
    """Copy a committed checkpoint (its folder, and the packs `store`'s pool lacks) into `store`
    through its atomic commit; False if it is there."""
    manifest = codec.read_manifest(source)
    if manifest["format"] < 3:
        raise codec.CheckpointDamaged(
            f"{source.name} was written by an older colabkit (checkpoint format {manifest['format']}): it restores "
            "here, but is not copied. Restore it and save once (%checkpoint now) to write it in this format.")
    existing = store.root / source.name
    try:
        found = codec.read_manifest(existing)
        if (found["files"], found.get("packs")) == (manifest["files"], manifest["packs"]):
            return False
    except codec.CheckpointDamaged:  # not there, or not whole: copy it
        pass
    # Keeps its time, and its format: the files are copied as they are (format 3's under a format-4
    # manifest verified, and did not load).
    meta = {k: v for k, v in manifest.items() if k not in ("step", "files", "packs", "hash")}

    def write_payload(folder: Path) -> codec.Written:
        for name, record in manifest["packs"].items():
            pool.copy_pack(codec.pack_path(source.parent, name), store.root, name, record)
        records = {name: durable.copy(source / name, folder / name) for name in manifest["files"]}
        for name, record in records.items():
            if record.hash != manifest["files"][name]["hash"]:
                raise OSError(f"{name} changed while it was being copied")
        packs = {name: durable.FileRecord(r["size"], r["hash"]) for name, r in manifest["packs"].items()}
        return codec.Written(records, packs)

    store.commit(manifest["step"], write_payload, meta)
    return True


class Mirror:
    def __init__(self, local_root: Path, remote_root: Path, keep: int):
        self.local_root = Path(local_root)
        self.remote = CheckpointStore(remote_root, keep)
        self._pending: Path | None = None
        self._source: Path | None = None  # the one being copied
        self._stopped: str | None = None  # why the thread ended (it should not)
        self._status: dict = {}  # the fields this mirror recorded, written again with each write
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="colabkit-mirror", daemon=True)
        self._thread.start()

    def push(self, checkpoint: Path) -> None:
        """Copy this committed checkpoint next (replacing one still waiting); raises if the thread
        that copies has ended, so the writer says it instead of Drive falling behind unnoticed."""
        with self._cond:
            if self._stopped is not None:
                raise RuntimeError(f"the thread that copies checkpoints there stopped ({self._stopped})")
            self._pending = checkpoint
            self._record(pending=checkpoint.name)
            self._cond.notify()

    def reading(self) -> set[str]:
        """The local checkpoints this mirror is copying or about to: what retention must spare
        until the copy is done (with --keep 1, or saves faster than Drive, it deleted them
        mid-copy and every copy failed)."""
        with self._cond:
            if self._stopped is not None:  # nothing will copy them
                return set()
            return {source.name for source in (self._pending, self._source) if source is not None}

    def close(self) -> None:
        """Copy what is waiting, then end the thread (the writer's last act before it exits)."""
        self.drain()
        with self._cond:
            if self._stopped is None:
                self._stopped = "closed"
            self._cond.notify_all()
        self._thread.join()

    def drain(self, timeout: float | None = None) -> None:
        """Wait until nothing is waiting or being copied, or the thread has ended (the writer's last
        act before it exits: it waited forever on a thread that had died)."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._stopped is not None or (self._pending is None and self._source is None), timeout)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._pending is not None or self._stopped is not None)
                    if self._stopped is not None:  # closed
                        return
                    source = self._source = self._pending
                    self._pending = None
                fields = self._copy(source)
                with self._cond:
                    self._source = None
                    self._record(**fields, pending=self._pending.name if self._pending else None)
                    self._cond.notify_all()
        except BaseException as exc:
            with self._cond:
                self._stopped = f"{type(exc).__name__}: {exc}"
                self._cond.notify_all()
            raise

    def _copy(self, source: Path) -> dict:
        """Copy `source` to Drive; the status fields that say how it went. A copy that Drive's
        retention deleted at once (higher steps there) failed: it is not on Drive."""
        try:
            copy_checkpoint(source, self.remote)
            step = codec.step_of(source.name)
            above = [kept.id for kept in self.remote.list() if kept.step > step]  # what a restore could load
            if not (self.remote.root / source.name).is_dir():
                return {"error": (
                    f"Drive's retention deleted the copy at once: it keeps the {self.remote.keep} highest steps, and "
                    f"{', '.join(above)} there, from an earlier run that counted further, are above this run's, so "
                    f"Drive does not hold this run. Delete those from {self.remote.root}, or save this run elsewhere "
                    "(%checkpoint every ... --to PATH)")}
        except Exception as exc:  # Drive unmounted, quota, ...: shown in the panel, retried next time
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {"mirrored": source.name, "error": None, "above": above, "unswept": self.remote.unswept}

    def _record(self, **fields) -> None:
        """Put `fields` in MIRROR.json. A write that fails (the local disk full for a moment) must not
        stop the copies (it killed the thread): what it carried is written with the next."""
        now = time.time()
        self._status.update({k: v for k, v in fields.items() if v is not None or k in ("error", "pending", "unswept")},
                            remote=str(self.remote.root), updated=now)
        if fields.get("mirrored"):
            self._status["mirrored_at"] = now
        try:
            self._write_status(**self._status)
        except OSError:
            pass

    def _write_status(self, **fields) -> None:
        path = self.local_root / STATUS
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            status = {}
        status.update(fields)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status))
        os.replace(tmp, path)


def read_status(local_root: Path) -> dict | None:
    try:
        return json.loads((Path(local_root) / STATUS).read_text())
    except (OSError, ValueError):
        return None


def free_bytes(path: Path) -> int:
    """The bytes a user may still write at `path` (its nearest existing folder): statvfs's f_bavail
    blocks of f_frsize. On Colab, Drive's FUSE mount at /content/drive reports the account's quota."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    found = os.statvfs(path)
    return found.f_bavail * found.f_frsize


class DriveSpace:
    """Drive's free space for the panel, read on a thread of its own (a FUSE mount whose
    connection is gone can hang a statvfs; the panel must not), at most every SPACE_EVERY s."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._free: int | None = None
        self._read_at = float("-inf")
        self._reading: threading.Thread | None = None
        self._lock = threading.Lock()

    def free(self) -> int | None:
        """The last reading (None before the first); starts a new one when it is old and none is
        under way. Never waits."""
        with self._lock:
            if time.monotonic() - self._read_at >= SPACE_EVERY and self._reading is None:
                self._reading = threading.Thread(target=self._read, name="colabkit-drive-space", daemon=True)
                self._reading.start()
            return self._free

    def _read(self) -> None:
        try:
            free = free_bytes(self.root)
        except OSError:  # Drive unmounted: the mirror's own error says so
            free = None
        with self._lock:
            self._free, self._read_at, self._reading = free, time.monotonic(), None
