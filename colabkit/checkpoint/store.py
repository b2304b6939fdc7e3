"""The checkpoint store: folders committed by one atomic rename, verified by their manifest on load.

Layout under the store's root (`<storage>/checkpoints`; what is inside a folder is `codec`'s):

    step-<N>/                 a committed checkpoint: payload files, and the manifest written last
    pool/                     the tensor bytes step folders point into (see pool)
    .tmp-step-<N>-<id>/       a commit in progress; never read, removed on the next start

A commit writes every file into a temporary folder in the same directory (never the system temp
dir: a rename across file systems is a copy), fsyncs each file and the manifest, fsyncs the folder,
renames it to `step-<N>` (the commit point) and fsyncs the parent. A crash at any moment leaves
either the old set of checkpoints or the new one. Retention runs only after the commit, and
deletes the packs no kept checkpoint points into only after the folders that pointed into them.

The store knows nothing of tensors, IPython or processes: `commit()` takes a function that writes
the payload files and returns their records.
"""

from __future__ import annotations

import numbers
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..errors import ColabkitError
from . import codec, durable, pool
from .codec import CheckpointDamaged

_REPLACED = re.compile(r"\.replaced-step-([0-9]+)-[0-9a-f]+")


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
        """Everything it is made of, the packs it shares with other checkpoints included."""
        return sum(record["size"] for _, _, record in codec.parts(self.path, self.manifest))


def load(folder: Path) -> Checkpoint:
    """The checkpoint in `folder` as its manifest describes it (files not yet verified)."""
    if folder.is_symlink():
        raise CheckpointDamaged(f"{folder.name} is a symbolic link, not followed: checkpoints are read only from "
                                "folders in the store itself.")
    manifest = codec.read_manifest(folder)
    named = codec.step_of(folder.name)
    if named is not None and manifest["step"] != named:
        raise CheckpointDamaged(f"{folder.name}: its manifest is of step {manifest['step']} (a folder renamed, or "
                                "copied over another), so which step it holds is unknown.")
    return Checkpoint(folder, manifest["step"], manifest.get("time", 0.0), manifest)


def _remove(entry: Path) -> None:
    """Remove a leftover folder or file (rmtree alone leaves a file, silently)."""
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


class CheckpointStore:
    def __init__(self, root: str | os.PathLike, keep: int = 3):
        if not isinstance(keep, numbers.Integral) or isinstance(keep, bool):
            raise ColabkitError(f"--keep must be a whole number of checkpoints (got {keep!r}), e.g. --keep 3 "
                                "(keep=3 in Python).")
        if keep < 1:
            raise ColabkitError(f"--keep must be at least 1 (got {keep}): a store that keeps no "
                                "checkpoint would delete each one as soon as it is written.")
        self.root = Path(root)
        self.keep = int(keep)
        self.unswept: str | None = None  # why the last commit's collect deleted nothing (apply_retention)

    # -- writing ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the root and clear what an interrupted commit or deletion left behind (only its
        writer may: lock.py)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for entry in self.root.iterdir():
            if entry.name.startswith(".tmp-"):
                _remove(entry)
            elif (match := _REPLACED.fullmatch(entry.name)) is not None:
                original = self.root / codec.folder_name(int(match.group(1)))
                if original.exists():
                    shutil.rmtree(entry, ignore_errors=True)
                else:  # the crash came between the two renames of a replacement: undo the first
                    os.rename(entry, original)
        pool.sweep(self.root)

    def commit(
        self,
        step: int,
        write_payload: Callable[[Path], codec.Written | dict[str, durable.FileRecord]],
        meta: dict,
        phase: Callable[[str], None] | None = None,
        collect: bool = True,
        spare: Iterable[str] = (),
    ) -> Checkpoint:
        """Write a checkpoint for `step` and make it visible atomically.

        `write_payload(folder)` writes the payload files and packs (fsync'd) and returns their records.
        `phase(name)` is called after each phase: "payload", "manifest", "synced", "renamed",
        "retained" (tests kill the writer there). `collect`: delete the packs no kept checkpoint
        points into now; the writer process passes False and calls `collect()` once it has
        answered (deleting a 256 MiB pack takes 30-40 ms that the commit need not wait for).
        `spare`: folders retention keeps beyond `keep` for now (apply_retention).
        """
        mark = phase or (lambda name: None)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{codec.folder_name(step)}-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        try:
            files = write_payload(tmp)
            mark("payload")
            manifest = codec.manifest(step, meta, files)
            codec.write_manifest(tmp, manifest)
            mark("manifest")
            durable.fsync_path(tmp)
            mark("synced")
            final = self.root / codec.folder_name(step)
            replaced = None
            if final.exists():  # the same step saved again (`%checkpoint now` twice): swap it
                replaced = self.root / f".replaced-{final.name}-{uuid.uuid4().hex[:12]}"
                os.rename(final, replaced)
            os.rename(tmp, final)
            durable.fsync_path(self.root)
            mark("renamed")
            if replaced is not None:
                shutil.rmtree(replaced, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.apply_retention(collect, spare)
        mark("retained")
        return Checkpoint(final, step, manifest["time"], manifest)

    def apply_retention(self, collect: bool = True, spare: Iterable[str] = ()) -> list[Path]:
        """Delete all but the newest `keep` committed checkpoints, sparing those named in `spare` (one
        the Drive copy reads), then (`collect`) the packs none of the kept ones points into;
        returns the folders deleted. A folder without a readable manifest is neither counted nor
        deleted (a half-synced copy above every save took a kept place and had each save deleted
        at once); it stops the collect, which says so."""
        deleted = []
        for old in [checkpoint.path for checkpoint in self.list()][self.keep:]:
            if old.name in spare:
                continue
            # Renamed out of the committed namespace first, so a half-deleted folder is never read.
            doomed = self.root / f".tmp-delete-{old.name}-{uuid.uuid4().hex[:12]}"
            os.rename(old, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            deleted.append(old)
        if collect:  # after the rename: a collect that fails leaves the commit done, and says why here
            try:
                self.collect()
                self.unswept = None
            except OSError as exc:
                self.unswept = f"{type(exc).__name__}: {exc}"
        return deleted

    def collect(self) -> list[str]:
        """Delete the packs no committed checkpoint points into (pool.collect): safe at any time
        after a commit, and a kill in the middle leaves only packs the next collect deletes."""
        return pool.collect(self.root)

    # -- reading ---------------------------------------------------------------------------
    def committed_folders(self) -> list[Path]:
        """Committed folders, newest step first."""
        if not self.root.is_dir():
            return []
        return [self.root / name for name in codec.newest_first(p.name for p in self.root.iterdir())]

    def list(self) -> list[Checkpoint]:
        """Committed checkpoints with a readable manifest, newest first (files not yet verified)."""
        found = []
        for folder in self.committed_folders():
            try:
                found.append(load(folder))
            except CheckpointDamaged:
                continue
        return found

    def verify(self, checkpoint: Checkpoint) -> None:
        """Raise CheckpointDamaged unless every file and pack matches the manifest's size and hash
        (a whole read; a restore verifies as it loads instead, see codec.read)."""
        codec.check_sizes(checkpoint.path, checkpoint.manifest)
        algorithm = codec.algorithm(checkpoint.manifest)
        for name, path, expected in codec.parts(checkpoint.path, checkpoint.manifest):
            if durable.hash_file(path, algorithm).hash != codec.expected_hash(checkpoint.manifest, expected):
                raise CheckpointDamaged(f"{checkpoint.id}: {name} does not match its {algorithm} (damaged or edited).")

    def get(self, checkpoint_id: str) -> Checkpoint:
        folder = self.root / checkpoint_id
        if codec.step_of(checkpoint_id) is None or not folder.is_dir():
            have = ", ".join(c.id for c in self.list()) or "none"
            raise ColabkitError(f"There is no checkpoint {checkpoint_id!r} in {self.root} (there are: {have}).")
        return load(folder)

    def latest_valid(self, verify: bool = True) -> tuple[Checkpoint | None, list[str]]:
        """The newest checkpoint that verifies, and why each newer one was passed over."""
        skipped = []
        for folder in self.committed_folders():
            try:
                checkpoint = load(folder)
                if verify:
                    self.verify(checkpoint)
                return checkpoint, skipped
            except CheckpointDamaged as exc:
                skipped.append(str(exc))
        return None, skipped


def stores_at(places, keep: int = 3) -> list[CheckpointStore]:
    """The stores at storage.Places, for reading: the local one first, then its Drive mirror."""
    return [CheckpointStore(places.root, keep)] + ([CheckpointStore(places.mirror, keep)] if places.mirror else [])
