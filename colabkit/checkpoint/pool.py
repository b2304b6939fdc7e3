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

import bisect
import itertools
import operator
import os
import threading
import uuid
from pathlib import Path
from typing import Callable, Iterator

from . import codec, durable

COPY_FORWARD = 0.5  # a pack used less than this share is not pointed into again
_TMP = ".tmp-"


def _nothing() -> None:
    """sealed() when no pack was written."""


class Pool:
    """One store's pool, with an index of where each tensor hash lives (read from the kept
    checkpoints the first time it is needed, then kept up to date by this writer)."""

    def __init__(self, store_root: str | os.PathLike):
        self.root = Path(store_root)
        self.folder = self.root / codec.POOL
        self._blobs: dict[str, tuple[str, int]] | None = None  # hash -> (pack, offset)
        self._packs: dict[str, durable.FileRecord] = {}
        self._held: dict[str, list[str]] = {}  # pack -> the hashes the index placed in it
        self._unindexed: list[tuple[str, dict[str, int]]] = []  # (pack, {hash: offset}) written, not yet indexed

    def _index(self) -> dict[str, tuple[str, int]]:
        """hash -> (pack, offset) of every tensor the pool holds, the packs place() wrote since
        the last call put in first."""
        while self._unindexed:
            self._remember(*self._unindexed.pop(0))
        if self._blobs is None:
            self._blobs = {}
            for name in codec.newest_first(p.name for p in self.root.iterdir()) if self.root.is_dir() else []:
                try:
                    document = codec.read_manifest(self.root / name)
                    if document["format"] < 3:
                        continue
                    index = codec.read_index(self.root / name, document)
                except codec.CheckpointDamaged:
                    continue  # a checkpoint that can't be read lends nothing
                for pack, record in document["packs"].items():
                    self._packs[pack] = durable.FileRecord(record["size"], record["hash"])
                found: dict[str, dict[str, int]] = {}  # pack -> {hash: offset}
                for row, (pack, offset) in enumerate(zip(index.pack, index.offsets)):
                    digest = index.hashes_of(row, row + 1)
                    if digest not in self._blobs:
                        found.setdefault(index.pack_names[pack], {}).setdefault(digest, offset)
                for pack, offsets in found.items():
                    self._remember(pack, offsets)
        return self._blobs

    def _remember(self, pack: str, offsets: dict[str, int]) -> dict[str, tuple[str, int]]:
        """Record in the index that these hashes are in `pack` at these offsets (a later place
        wins); returns hash -> (pack, offset) for them."""
        placed = dict(zip(offsets, zip(itertools.repeat(pack), offsets.values())))
        self._index().update(placed)
        self._held.setdefault(pack, []).extend(offsets)
        return placed

    def forget_deleted(self) -> dict[str, tuple[str, int]]:
        """The index without the packs retention deleted since the last save: a long session's
        writer would otherwise keep every tensor hash it ever wrote. The writer calls it after
        answering a save (forgetting 20,000 hashes takes 10-15 ms, and indexing the pack the save
        wrote 4-5 ms), place() again in case."""
        blobs = self._index()
        for name in [name for name in self._packs if not (self.folder / name).exists()]:
            del self._packs[name]
            for h in self._held.pop(name, ()):
                if blobs.get(h, ("",))[0] == name:
                    del blobs[h]
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

    def place(self, sizes: list[int], places: list, staged: memoryview
              ) -> tuple[list[str], list[str], list[int], dict[str, durable.FileRecord], Callable[[], None]]:
        """Where each tensor's bytes are: in a pack already, or written now into a new one.
        `places[i]` is a staged tensor's offset in `staged` (the staged bytes) or an unchanged
        tensor's hash. Staged tensors are hashed and, those the pool lacks, written a megabyte at a
        time (their bytes read once from memory, the write finding them in the CPU's cache).
        Returns every tensor's hash, pack and offset in it, the records of every pack pointed
        into, and `sealed()`: wait until the new pack is durable in place (_new_pack). The new
        pack goes into the index at its next use (after the writer has answered)."""
        blobs = self.forget_deleted()
        unchanged = [i for i, place in enumerate(places) if type(place) is str] if str in set(map(type, places)) else []
        held = {places[i]: blobs[places[i]] for i in unchanged if places[i] in blobs}
        present = self._present({pack for pack, _ in held.values()})
        for i in unchanged:  # said before anything is written
            if places[i] not in held or held[places[i]][0] not in present:
                raise FileNotFoundError(f"the pool no longer holds the bytes of {places[i]} (a tensor unchanged since "
                                        "an earlier checkpoint): its pack was deleted")
        hashes = list(places)
        fresh: dict[str, int] = {}  # hash -> offset in the new pack
        known = list(unchanged)  # tensors the pool holds: referenced, or copied forward from a sparse pack
        where: dict[str, tuple[str, int]] = {}
        if staged.format != "B" or staged.ndim != 1:
            staged = staged.cast("B")

        def view(i: int) -> memoryview:
            return staged[places[i]:places[i] + sizes[i]]

        def fill(pack: durable.Appender) -> bool:
            order = [i for i, place in enumerate(places) if type(place) is int] if unchanged else range(len(places))
            found = self._write_new(pack, staged, [places[i] for i in order] if unchanged else places,
                                    [sizes[i] for i in order] if unchanged else sizes, blobs, fresh)
            if unchanged:
                for i, h in zip(order, found):
                    hashes[i] = h
            else:
                hashes[:] = found
            if len(fresh) < len(order):  # some staged tensor's bytes are in the pool already
                for i in order:
                    if hashes[i] not in fresh:
                        known.append(i)
                        held[hashes[i]] = blobs[hashes[i]]
            present.update(self._present({pack for pack, _ in held.values()} - present))
            where.update((h, at) for h, at in held.items() if at[0] in present)
            used: dict[str, int] = {}
            size_of = {hashes[i]: sizes[i] for i in known}
            for h, (pack_name, _) in where.items():
                used[pack_name] = used.get(pack_name, 0) + size_of[h]
            sparse = {name for name, n in used.items() if n < COPY_FORWARD * self._packs[name].size}
            for i in known:
                h = hashes[i]
                if h in fresh or (h in where and where[h][0] not in sparse):
                    continue
                if type(places[i]) is int:  # its pack deleted, or mostly unused
                    fresh[h] = pack.add(view(i))
                elif h in where:  # unchanged, in a pack mostly unused: copied forward from it
                    fresh[h] = pack.size
                    for chunk in self._read_blob(*where[h], sizes[i], h):
                        pack.add(chunk)
                else:
                    raise FileNotFoundError(f"the pool no longer holds the bytes of {h}: its pack was deleted")
            return bool(fresh)

        made = self._new_pack(fill)  # not None whenever `fresh` holds anything
        if made is not None:
            self._unindexed.append((made[0], fresh))
        if fresh and len(fresh) == len(hashes):  # every tensor new (and none twice): the common case
            in_packs, offsets = [made[0]] * len(hashes), list(map(fresh.__getitem__, hashes))
        else:
            at = [(made[0], fresh[h]) if h in fresh else where[h] for h in hashes]
            in_packs, offsets = list(map(operator.itemgetter(0), at)), list(map(operator.itemgetter(1), at))
        packs = {pack: self._packs[pack] for pack in set(in_packs)}
        return hashes, in_packs, offsets, packs, _nothing if made is None else made[2]

    @staticmethod
    def _write_new(pack: durable.Appender, staged: memoryview, starts: list[int], lengths: list[int], blobs: dict,
                   fresh: dict[str, int]) -> list[str]:
        """Hash the tensors at `starts` in `staged` and append those whose bytes neither the pool
        (`blobs`) nor the new pack (`fresh`, hash -> offset, updated) holds; their hashes. Small
        ones go a megabyte's worth at a time, hashed just before their write (which finds them in
        the CPU's cache), and those that lie back to back in `staged` as one piece (20,000 small
        tensors: a few calls per megabyte, not per tensor); a large one is hashed as it is
        written, and taken back out if the pool holds it."""
        digest, found, cut = durable.digest, [], staged.__getitem__
        totals = list(itertools.accumulate(lengths))
        begin, count = 0, len(starts)
        while begin < count:
            before = totals[begin - 1] if begin else 0
            end = min(bisect.bisect_right(totals, before + durable.SMALL, begin), begin + durable.IOV_MAX)
            if end == begin:  # larger than SMALL
                mark = pack.mark()
                offset, h = pack.add_hashed(staged[starts[begin]:starts[begin] + lengths[begin]])
                if h in fresh or h in blobs:
                    pack.undo(mark)
                else:
                    fresh[h] = offset
                found.append(h)
                begin += 1
                continue
            first, last = starts[begin], starts[end - 1] + lengths[end - 1]
            views = list(map(cut, map(slice, starts[begin:end], map(operator.add, starts[begin:end], lengths[begin:end]))))
            hashes = list(map(digest, views))
            if len(set(hashes)) == len(views) and blobs.keys().isdisjoint(hashes) \
                    and fresh.keys().isdisjoint(hashes):  # all new: the common case
                if last - first == totals[end - 1] - before:  # back to back
                    fresh.update(zip(hashes, itertools.accumulate(lengths[begin:end - 1], initial=pack.size)))
                    pack.extend([staged[first:last]])
                else:
                    fresh.update(zip(hashes, pack.extend(views)))
            else:
                for view, h in zip(views, hashes):
                    if h not in fresh and h not in blobs:
                        fresh[h] = pack.extend([view])[0]
            found += hashes
            begin = end
        return found

    def place_stream(self, sizes: list[int], places: list, pieces
                     ) -> tuple[list[str], list[str], list[int], dict, Callable[[], None]]:
        """place() for a streamed save: the staged tensors (places[i] an offset) come as `pieces`
        ((tensor number, bytes), stream.tensor_pieces) and all go into one new pack, each hashed
        as it passes (no second look at bytes that are gone); the unchanged are placed as by
        place(). Returns what place() returns."""
        staged = [i for i, place in enumerate(places) if isinstance(place, int)]
        hashes = list(places)
        digests = {i: durable.hasher() for i in staged}
        offsets, position = {}, 0
        for i in staged:
            offsets[i], position = position, position + sizes[i]

        def fill(pack: durable.Appender) -> bool:
            for i, piece in pieces:
                digests[i].update(piece)
                pack.add(piece)
            if pack.size != position:
                raise OSError(f"a pack came out {pack.size} bytes, not {position}")
            return bool(staged)

        made = self._new_pack(fill)
        in_packs, at, packs = [None] * len(places), [0] * len(places), {}
        if made is not None:
            made[2]()  # in place before place() below looks at what the pool holds
            placed: dict[str, int] = {}
            for i in staged:  # a tensor staged twice points at its first copy
                hashes[i] = digests[i].hexdigest()
                in_packs[i], at[i] = made[0], placed.setdefault(hashes[i], offsets[i])
            self._remember(made[0], placed)
            packs[made[0]] = made[1]
        unchanged = [i for i, place in enumerate(places) if isinstance(place, str)]
        _, held_in, held_at, more, sealed = self.place([sizes[i] for i in unchanged], [places[i] for i in unchanged],
                                                       memoryview(b""))
        for i, pack, offset in zip(unchanged, held_in, held_at):
            in_packs[i], at[i] = pack, offset
        return hashes, in_packs, at, {**more, **packs}, sealed

    def _new_pack(self, fill: Callable[[durable.Appender], bool]
                  ) -> tuple[str, durable.FileRecord, Callable[[], None]] | None:
        """A new pack of what `fill` appends, named by the hash of its content; None (no pack) when
        `fill` says it placed nothing. Its fsync and rename into place run on a thread of their own
        while the caller writes the step folder's files (the disk busy, the CPU free): the third
        value, `sealed()`, waits for them and raises what they raised; no manifest may name the
        pack before it has returned."""
        self.folder.mkdir(exist_ok=True)
        tmp = self.folder / f"{_TMP}{uuid.uuid4().hex[:12]}"
        pack = durable.Appender(tmp)
        try:
            if not fill(pack):
                pack.close()
                tmp.unlink()
                return None
            record = pack.record()
        except BaseException:
            pack.close()
            tmp.unlink(missing_ok=True)
            raise
        name = f"{record.hash}{codec.PACK_SUFFIX}"
        failed: list[BaseException] = []

        def seal() -> None:
            try:
                pack.finish()
                os.replace(tmp, self.folder / name)  # the same content under the same name: either is the pack
                durable.fsync_path(self.folder)
            except BaseException as exc:  # raised by sealed(), in the writer's own thread
                failed.append(exc)
                pack.close()
                tmp.unlink(missing_ok=True)

        sealing = threading.Thread(target=seal, name="colabkit-pack-seal", daemon=True)
        sealing.start()

        def sealed() -> None:
            sealing.join()
            if failed:
                raise failed[0]

        self._packs[name] = record
        return name, record, sealed

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


class CollectBlocked(OSError):
    """A committed folder whose manifest can't be read: nothing is deleted while it is there."""


def collect(store_root: str | os.PathLike) -> list[str]:
    """Delete the packs no committed checkpoint points into (after retention); returns their names.
    If any committed checkpoint's manifest can't be read, nothing is deleted (what it points at
    can't be known) and CollectBlocked says which: the store would otherwise grow unsaid."""
    root = Path(store_root)
    folder = root / codec.POOL
    if not folder.is_dir():
        return []
    needed: set[str] = set()
    for name in codec.newest_first(p.name for p in root.iterdir()):
        try:
            needed |= set(codec.read_manifest(root / name).get("packs", {}))
        except codec.CheckpointDamaged as exc:
            raise CollectBlocked(f"{exc} What {name} points at can't be known, so no pack is deleted while it is "
                                 f"there: delete {root / name} to free the space, if no colabkit can restore "
                                 "it") from None
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
