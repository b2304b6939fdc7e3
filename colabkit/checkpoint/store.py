"""The checkpoint store: folders committed by one atomic rename, verified by their manifest on load.

Layout under the store's root (`<storage>/checkpoints`):

    step-<N>/                 a committed checkpoint: payload files and manifest.json, written last
    LATEST                    a hint naming the newest commit (readers don't need it)
    .tmp-step-<N>-<id>/       a commit in progress; never read, removed on the next start

A commit writes every file into a temporary folder in the same directory (never the system temp
dir: a rename across file systems is a copy), fsyncs each file and the manifest, fsyncs the folder,
renames it to `step-<N>` (the commit point) and fsyncs the parent. A crash at any moment leaves
either the old set of checkpoints or the new one. Retention runs only after the commit.

The store knows nothing of tensors, IPython or processes: `commit()` takes a function that writes
the payload files and returns their sizes and hashes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import ColabkitError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
LATEST = "LATEST"
_COMMITTED = re.compile(r"^step-(\d+)$")
_REPLACED = re.compile(r"^\.replaced-step-(\d+)-[0-9a-f]+$")
HASH_CHUNK = 8 << 20


def newest_first(names) -> list[str]:
    """The committed checkpoint names (step-N) among `names`, newest step first."""
    found = [(int(m.group(1)), name) for name in names if (m := _COMMITTED.match(name))]
    return [name for _, name in sorted(found, reverse=True)]


@dataclass(frozen=True)
class FileRecord:
    size: int
    sha256: str


@dataclass(frozen=True)
class Checkpoint:
    """A committed checkpoint as its manifest describes it."""

    path: Path
    step: int
    time: float
    manifest: dict

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def size(self) -> int:
        return sum(f["size"] for f in self.manifest["files"].values())


class CheckpointDamaged(ColabkitError):
    """A checkpoint whose files don't match its manifest."""


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a folder's entry list is only durable once the folder is synced)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> FileRecord:
    """Write, fsync and hash a small file in one go."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return FileRecord(len(data), hashlib.sha256(data).hexdigest())


def hash_file(path: Path) -> FileRecord:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return FileRecord(size, digest.hexdigest())


class CheckpointStore:
    def __init__(self, root: str | os.PathLike, keep: int = 3):
        if keep < 1:
            raise ColabkitError(f"--keep must be at least 1 (got {keep}): a store that keeps no "
                                "checkpoint would delete each one as soon as it is written.")
        self.root = Path(root)
        self.keep = keep

    # -- writing ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the root and clear what an interrupted commit or deletion left behind."""
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in self.root.iterdir():
            if entry.name.startswith(".tmp-"):
                shutil.rmtree(entry, ignore_errors=True)
            elif (match := _REPLACED.match(entry.name)) is not None:
                original = self.root / f"step-{match.group(1)}"
                if original.exists():
                    shutil.rmtree(entry, ignore_errors=True)
                else:  # the crash came between the two renames of a replacement: undo the first
                    os.rename(entry, original)

    def commit(
        self,
        step: int,
        write_payload: Callable[[Path], dict[str, FileRecord]],
        meta: dict,
        phase: Callable[[str], None] | None = None,
    ) -> Checkpoint:
        """Write a checkpoint for `step` and make it visible atomically.

        `write_payload(folder)` writes the payload files (fsync'd) and returns their records.
        `phase(name)` is called after each phase: "payload", "manifest", "synced", "renamed",
        "committed", "retained" (tests kill the writer there).
        """
        mark = phase or (lambda name: None)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-step-{step}-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        try:
            files = write_payload(tmp)
            mark("payload")
            manifest = {
                "format": FORMAT_VERSION,
                "step": step,
                "time": time.time(),
                **meta,
                "files": {name: {"size": r.size, "sha256": r.sha256} for name, r in sorted(files.items())},
            }
            write_file(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
            mark("manifest")
            fsync_path(tmp)
            mark("synced")
            final = self.root / f"step-{step}"
            replaced = None
            if final.exists():  # the same step saved again (`%checkpoint now` twice): swap it
                replaced = self.root / f".replaced-step-{step}-{uuid.uuid4().hex[:12]}"
                os.rename(final, replaced)
            os.rename(tmp, final)
            fsync_path(self.root)
            mark("renamed")
            if replaced is not None:
                shutil.rmtree(replaced, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._write_latest(final.name)
        mark("committed")
        self.apply_retention()
        mark("retained")
        return Checkpoint(final, step, manifest["time"], manifest)

    def _write_latest(self, name: str) -> None:
        tmp = self.root / f".tmp-{LATEST}-{uuid.uuid4().hex[:12]}"
        write_file(tmp, (name + "\n").encode())
        os.rename(tmp, self.root / LATEST)
        fsync_path(self.root)

    def apply_retention(self) -> list[Path]:
        """Delete all but the newest `keep` committed checkpoints; returns what was deleted."""
        deleted = []
        for old in self._committed_folders()[self.keep:]:
            # Renamed out of the committed namespace first, so a half-deleted folder is never read.
            doomed = self.root / f".tmp-delete-{old.name}-{uuid.uuid4().hex[:12]}"
            os.rename(old, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            deleted.append(old)
        return deleted

    # -- reading ---------------------------------------------------------------------------
    def _committed_folders(self) -> list[Path]:
        """Committed folders, newest step first."""
        if not self.root.is_dir():
            return []
        return [self.root / name for name in newest_first(p.name for p in self.root.iterdir())]

    def read_manifest(self, folder: Path) -> dict:
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except FileNotFoundError:
            raise CheckpointDamaged(f"{folder.name} has no manifest.json.") from None
        except (OSError, ValueError) as exc:
            raise CheckpointDamaged(f"{folder.name}: manifest.json cannot be read ({exc}).") from None
        if manifest.get("format") != FORMAT_VERSION:
            raise CheckpointDamaged(
                f"{folder.name} was written in checkpoint format {manifest.get('format')!r}; this "
                f"colabkit reads format {FORMAT_VERSION}. Install the colabkit version that wrote it.")
        return manifest

    def list(self) -> list[Checkpoint]:
        """Committed checkpoints with a readable manifest, newest first (files not yet verified)."""
        found = []
        for folder in self._committed_folders():
            try:
                manifest = self.read_manifest(folder)
            except CheckpointDamaged:
                continue
            found.append(Checkpoint(folder, manifest["step"], manifest["time"], manifest))
        return found

    def verify(self, checkpoint: Checkpoint) -> None:
        """Raise CheckpointDamaged unless every file matches the manifest's size and sha256."""
        for name, expected in checkpoint.manifest["files"].items():
            path = checkpoint.path / name
            if not path.is_file():
                raise CheckpointDamaged(f"{checkpoint.id}: {name} is missing.")
            if path.stat().st_size != expected["size"]:
                raise CheckpointDamaged(
                    f"{checkpoint.id}: {name} is {path.stat().st_size} bytes, the manifest says "
                    f"{expected['size']} (cut short or edited).")
            if hash_file(path).sha256 != expected["sha256"]:
                raise CheckpointDamaged(f"{checkpoint.id}: {name} does not match its sha256 (damaged or edited).")

    def get(self, checkpoint_id: str) -> Checkpoint:
        folder = self.root / checkpoint_id
        if not _COMMITTED.match(checkpoint_id) or not folder.is_dir():
            have = ", ".join(c.id for c in self.list()) or "none"
            raise ColabkitError(f"There is no checkpoint {checkpoint_id!r} in {self.root} (there are: {have}).")
        manifest = self.read_manifest(folder)
        return Checkpoint(folder, manifest["step"], manifest["time"], manifest)

    def latest_valid(self, verify: bool = True) -> tuple[Checkpoint | None, list[str]]:
        """The newest checkpoint that verifies, and why each newer one was passed over."""
        skipped = []
        for folder in self._committed_folders():
            try:
                manifest = self.read_manifest(folder)
                checkpoint = Checkpoint(folder, manifest["step"], manifest["time"], manifest)
                if verify:
                    self.verify(checkpoint)
                return checkpoint, skipped
            except CheckpointDamaged as exc:
                skipped.append(str(exc))
        return None, skipped
