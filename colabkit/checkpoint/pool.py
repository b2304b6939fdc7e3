"""The pool of tensor bytes that step folders point into (its format is codec's): a tensor that
did not change since a kept checkpoint is referenced, never written again.

A save writes the tensors the pool lacks into one new pack, fsync'd and renamed into place
before the step folder that points at it is committed, so a committed checkpoint never points at a
pack that isn't whole. Packs no committed checkpoint points at are deleted after retention
(`collect`); a pack a kept checkpoint needs is never deleted, whatever moment a kill comes.

A pack that kept checkpoints use less than half of (a tensor that never changes keeping a whole
early save alive) has the bytes still used copied forward into the new pack, so the pool stays
within about twice what the kept checkpoints hold.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Callable, Iterator

from . import codec, durable

COPY_FORWARD = 0.5  # a pack used less than this share is not pointed into again
_TMP = ".tmp-"


class Pool:
    """One store's pool, with an index of where each tensor hash lives (read from the kept
    checkpoints the first time it is needed, then kept up to date by this writer)."""

    def __init__(self, store_root: str | os.PathLike):
        self.root = Path(store_root)
        self.folder = self.root / codec.POOL
        self._blobs: dict[str, tuple[str, int]] | None = None  # hash -> (pack, offset)
        self._packs: dict[str, durable.FileRecord] = {}

    def _index(self) -> dict[str, tuple[str, int]]:
        if self._blobs is None:
            self._blobs = {}
            for name in codec.newest_first(p.name for p in self.root.iterdir()) if self.root.is_dir() else []:
                try:
                    document = codec.read_manifest(self.root / name)
                    if document["format"] < 3:
                        continue
                    index = json.loads(codec._verified(self.root / name, document, codec.TENSORS))
                except (codec.CheckpointDamaged, ValueError):
                    continue  # a checkpoint that can't be read lends nothing
                for pack, record in document["packs"].items():
                    self._packs[pack] = durable.FileRecord(record["size"], record["hash"])
                for _, _, _, pack, offset, _, digest in index["tensors"]:
                    self._blobs.setdefault(digest, (index["packs"][pack], offset))
        return self._blobs

    def _forget_deleted(self) -> dict[str, tuple[str, int]]:
        """The index without the packs retention deleted since the last save: a long session's
        writer would otherwise keep every tensor hash it ever wrote."""
        blobs = self._index()
        gone = {name for name in self._packs if not (self.folder / name).exists()}
        if gone:
            for name in gone:
                del self._packs[name]
            self._blobs = blobs = {h: where for h, where in blobs.items() if where[0] not in gone}
        return blobs

    def _present(self, packs: set[str]) -> set[str]:
        """The packs of `packs` that are still on disk at their size (retention may have taken others)."""
        present = set()
        for name in packs:
            try:
                if (self.folder / name).stat().st_size == self._packs[name].size:
                    present.add(name)
            except (FileNotFoundError, KeyError):
                pass
        return present

    def place(self, hashes: list[str], sizes: list[int], places: list,
              staged: Callable[[int], memoryview]) -> tuple[dict[str, tuple[str, int]], dict[str, durable.FileRecord]]:
        """Where each tensor's bytes are: in a pack already, or written now into a new one. Returns
        hash -> (pack, offset) for every hash, and the records of every pack pointed into."""
        blobs = self._forget_deleted()
        present = self._present({blobs[h][0] for h in hashes if h in blobs})
        where = {h: blobs[h] for h in hashes if h in blobs and blobs[h][0] in present}
        used: dict[str, int] = {}
        size_of = dict(zip(hashes, sizes))
        for h, (pack, _) in where.items():
            used[pack] = used.get(pack, 0) + size_of[h]
        sparse = {pack for pack, n in used.items() if n < COPY_FORWARD * self._packs[pack].size}
        pieces, first = [], {}
        for i, h in enumerate(hashes):
            if h in first or (h in where and where[h][0] not in sparse):
                continue
            if isinstance(places[i], int):
                first[h] = i
                pieces.append((h, sizes[i], lambda i=i: iter([staged(i)])))
            elif h in where:  # unchanged, in a pack mostly unused: copied forward from it
                first[h] = i
                pack, offset = where[h]
                pieces.append((h, sizes[i], lambda pack=pack, offset=offset, size=sizes[i], h=h:
                               self._read_blob(pack, offset, size, h)))
            else:
                raise FileNotFoundError(f"the pool no longer holds the bytes of {h} (a tensor unchanged since an "
                                        f"earlier checkpoint): its pack was deleted")
        if pieces:
            name, record, offsets = self._write_pack(pieces)
            for h, offset in offsets.items():
                where[h] = (name, offset)
        blobs.update(where)
        return where, {pack: self._packs[pack] for pack, _ in where.values()}

    def place_stream(self, sizes: list[int], places: list, pieces) -> tuple[list[str], dict, dict]:
        """place() for a streamed save: the staged tensors (places[i] an offset) come as `pieces`
        ((tensor number, bytes), stream.tensor_pieces) and all go into one new pack, each hashed
        as it passes (no second look at bytes that are gone); the unchanged are placed as by
        place(). Returns every tensor's hash, hash -> (pack, offset), and the packs' records."""
        staged = [i for i, place in enumerate(places) if isinstance(place, int)]
        hashes = list(places)
        digests = {i: durable.hasher() for i in staged}
        offsets, position = {}, 0
        for i in staged:
            offsets[i], position = position, position + sizes[i]

        def hashed():
            for i, piece in pieces:
                digests[i].update(piece)
                yield piece

        name, record = self._new_pack(hashed(), position)
        where = {}
        for i in staged:
            hashes[i] = digests[i].hexdigest()
            where.setdefault(hashes[i], (name, offsets[i]))
        self._index().update(where)
        unchanged = [i for i, place in enumerate(places) if isinstance(place, str)]
        found, packs = self.place([hashes[i] for i in unchanged], [sizes[i] for i in unchanged],
                                  [places[i] for i in unchanged], lambda i: None)
        return hashes, {**found, **where}, {**packs, name: record}

    def _new_pack(self, chunks, size: int) -> tuple[str, durable.FileRecord]:
        """Write `chunks` into a new pack of `size` bytes, fsync'd, renamed to the hash of its content."""
        self.folder.mkdir(exist_ok=True)
        tmp = self.folder / f"{_TMP}{uuid.uuid4().hex[:12]}"
        try:
            record = durable.write(tmp, chunks, size)
            if record.size != size:
                raise OSError(f"a pack came out {record.size} bytes, not {size}")
            name = f"{record.hash}{codec.PACK_SUFFIX}"
            os.replace(tmp, self.folder / name)  # the same content under the same name: either is the pack
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        durable.fsync_path(self.folder)
        self._packs[name] = record
        return name, record

    def _read_blob(self, pack: str, offset: int, size: int, expected: str) -> Iterator[memoryview]:
        """An earlier tensor's bytes from its pack, checked against its hash as they are read."""
        digest = durable.hasher()
        with open(self.folder / pack, "rb", buffering=0) as f:
            f.seek(offset)
            left = size
            while left:
                chunk = f.read(min(left, durable.CHUNK))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
                yield memoryview(chunk)
        if left or digest.hexdigest() != expected:
            raise OSError(f"{codec.POOL}/{pack} no longer holds the bytes of {expected} (damaged)")

    def _write_pack(self, pieces) -> tuple[str, durable.FileRecord, dict[str, int]]:
        """Write the pieces (hash, size, bytes) one after another into a new pack; returns its
        name, record and each hash's offset."""
        offsets, position = {}, 0
        for h, size, _ in pieces:
            offsets[h], position = position, position + size

        def chunks():
            for _, size, data in pieces:
                yield from data()

        name, record = self._new_pack(chunks(), position)
        return name, record, offsets


def copy_pack(source: Path, store_root: str | os.PathLike, name: str, record: dict) -> bool:
    """Bring the pack `name` (a file of another store's pool) into this store's pool, checked
    against its record and fsync'd before it is renamed into place; False when it is there already
    (a pack's name is its content's hash: only new packs travel)."""
    folder = Path(store_root) / codec.POOL
    target = codec.pack_path(Path(store_root), name)
    try:
        if target.stat().st_size == record["size"]:
            return False
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{_TMP}{uuid.uuid4().hex[:12]}"
    try:
        copied = durable.copy(source, tmp)
        if copied.size != record["size"] or copied.hash != record["hash"]:
            raise OSError(f"{codec.POOL}/{name} changed while it was being copied, or is damaged")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    durable.fsync_path(folder)
    return True


def collect(store_root: str | os.PathLike) -> list[str]:
    """Delete the packs no committed checkpoint points into (after retention); returns their names.
    If any committed checkpoint's manifest can't be read, nothing is deleted: what it points at
    can't be known."""
    root = Path(store_root)
    folder = root / codec.POOL
    if not folder.is_dir():
        return []
    needed: set[str] = set()
    for name in codec.newest_first(p.name for p in root.iterdir()):
        try:
            needed |= set(codec.read_manifest(root / name).get("packs", {}))
        except codec.CheckpointDamaged:
            return []
    deleted = []
    for path in folder.iterdir():
        if path.name.endswith(codec.PACK_SUFFIX) and path.name not in needed:
            path.unlink(missing_ok=True)
            deleted.append(path.name)
    return deleted


def sweep(store_root: str | os.PathLike) -> None:
    """Remove packs an interrupted save left half written (at start, before any writer runs)."""
    folder = Path(store_root) / codec.POOL
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(_TMP):
                path.unlink(missing_ok=True)
