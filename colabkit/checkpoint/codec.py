"""The checkpoint format, all of it: file names, the tensor index, state.json, the manifest, the pool.

A store (`<storage>/checkpoints`) holds committed checkpoints `step-<N>` (N in ASCII digits) and
the pool their tensors live in:

    pool/<hash>.pack     tensor bytes, one tensor after another with no header, named by the
                         XXH3-128 of the whole file. A pack holds the tensors a save found changed
                         (not already in the pool); any number of checkpoints point into it.
    step-<N>/
      tensors.json       the tensor index, one list per column, tensor i at position i of each:
                         {"packs": [pack names], "keys": [key], "dtypes": [dtype code (safetensors':
                         F32, BF16, ...)], "shapes": [shape], "pack": [pack number], "offsets":
                         [offset in its pack], "sizes": [bytes], "hashes": one string, each tensor's
                         XXH3-128 as 32 hex digits one after another}; the hash also identifies the
                         tensor in the pool (a tensor unchanged since an earlier save points at
                         the same bytes)
      state.json         {"structure": what state.capture described: "objects" (each tracked name:
                          its kind, e.g. state_dict, value, jax, sklearn, keras.Model,
                          transformers.Trainer, lightning.Trainer, and its state with each tensor
                          as {"__tensor__": key}, plus "device" when it was not on the CPU and
                          "requires_grad": true when it required grad; a dict of CPU tensors alone
                          (a module's state dict) as {"__tensors__": its key, "keys": [its keys]},
                          the tensor of key k being "<its key>.<k>"), "skipped" (names that
                          could not be saved, and why),
                          "rng" (the random states), "extra" (the loop's data position and, for a
                          save inside an iteration, where in it);
                          "step" (optimizer steps), "position" (loop iterations done), "pace"
                          (seconds per iteration)}
      objects.pkl        other picklable values, loaded only when the user trusts the checkpoint
      manifest.json      written last: {"format": 4, "step", "time", the writer's meta (colabkit
                         version, platform, notebook, position, pace, total, libraries), "hash":
                         "xxh3_128", "files": {name: {size, hash}}, "packs": {name: {size, hash}}
                         (every pack its tensors point into)}

A checkpoint is whole when its folder, its manifest and every pack the manifest names are there.
Loading reads each tensor's bytes once, straight into the tensor's memory, hashing them as they
come, and refuses a checkpoint whose tensor, file or pack doesn't match (damaged, or cut short).
Nothing in a checkpoint runs code but objects.pkl, which is loaded only when trusted.

Format 3 (still read) is format 4 with tensors.json as rows ({"packs": [...], "tensors": [[key,
dtype code, shape, pack number, offset, size, hash], ...]}) and every tensor in state.json as
{"__tensor__": key}. For 20,000 tensors, decoding and sorting those took about 25 ms of a 100 ms
restore; the columns and a state dict as its list of keys take about 7 ms.

Format 2 (colabkit before the pool, still read): step folders with `tensors.safetensors` (every
tensor in one safetensors file) and a manifest of {size, sha256} per file and no packs.

Writing goes through `durable` (hashed from the bytes written, fsync'd) and `pool` (the packs);
committing is the store's.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import threading
import time
from bisect import bisect_left
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from itertools import accumulate, compress, islice, repeat
from operator import add, attrgetter, gt, is_, itemgetter, le, mul, ne, or_
from pathlib import Path
from typing import Callable, Iterable

from ..errors import ColabkitError
from . import collector, durable

FORMAT_VERSION = 4  # 4: the index as columns; 3: the pool of packs, XXH3-128; 2: one safetensors file per step
READS = (2, 3, 4)
TENSORS = "tensors.json"
LEGACY_TENSORS = "tensors.safetensors"  # format 2
STATE = "state.json"
OBJECTS = "objects.pkl"
MANIFEST = "manifest.json"
POOL = "pool"
PACK_SUFFIX = ".pack"
_STEP_FOLDER = re.compile(r"step-([0-9]+)")  # ASCII digits only: "step-٩٩" is not step 99
_PACK = re.compile(r"[0-9a-f]{32}\.pack")


class CheckpointDamaged(ColabkitError):
    """A checkpoint that can't be used: files that don't match its manifest, or can't be decoded."""

    overwritten: tuple = ()  # the live objects it was being read straight into when that was found (inplace)


def folder_name(step: int) -> str:
    return f"step-{step}"


def step_of(name: str) -> int | None:
    """The step a committed folder's name stands for; None for any other name."""
    match = _STEP_FOLDER.fullmatch(name)
    return int(match.group(1)) if match else None


def newest_first(names: Iterable[str]) -> list[str]:
    """The committed checkpoint names among `names`, newest step first."""
    found = [(step, name) for name in names if (step := step_of(name)) is not None]
    return [name for _, name in sorted(found, reverse=True)]


def pack_path(store_root: Path, name: str) -> Path:
    """Where the pack `name` of a manifest lives; CheckpointDamaged for a name that is not a pack's."""
    if not _PACK.fullmatch(name):
        raise CheckpointDamaged(f"the manifest names a pack {name!r}, which is not a pack's name.")
    return Path(store_root) / POOL / name


# -- writing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Payload:
    """One checkpoint as the writer needs it. The tensors' bytes are staged (or streamed) apart:
    `places[i]` is tensor i's offset in the staged data, or, for a tensor unchanged since the save
    that stored it, its hash (the pool has its bytes)."""

    step: int
    keys: list[str]
    dtypes: list[str]  # safetensors codes
    shapes: list[tuple[int, ...]]
    sizes: list[int]
    places: list  # int offset in the staged data, or str hash
    data_size: int  # bytes staged
    state: dict  # state.json's document, made JSON by the writer (off the training thread)
    objects: bytes | None  # objects.pkl
    meta: dict  # what the manifest records beside the files
    fragments: dict = field(default_factory=dict)  # placeholder string in state -> the JSON text it stands for


def encode(captured, places: list, data_size: int, step: int, position: int, pace: float | None,
           meta: dict) -> Payload:
    """A captured state (state.Capture) as what the writer writes, its tensors placed already."""
    sources = captured.sources
    document = {"structure": captured.structure, "step": step, "position": position, "pace": pace}
    objects = pickle.dumps(captured.objects, protocol=pickle.HIGHEST_PROTOCOL) if captured.objects else None
    return Payload(step, [s.key for s in sources], [s.dtype for s in sources], [s.shape for s in sources],
                   [s.nbytes for s in sources], places, data_size, document, objects, meta, captured.fragments)


@dataclass
class Written:
    """What a payload's writing left: the step folder's files and every pack its tensors point into,
    with the hash of each tensor that was staged (in the payload's order; None for the others)."""

    files: dict[str, durable.FileRecord]
    packs: dict[str, durable.FileRecord] = field(default_factory=dict)
    staged_hashes: list = field(default_factory=list)


class TensorIndex:
    """tensors.json's text. The columns that describe the tensors (keys, dtypes, shapes) are made
    into JSON once and reused while a save's tensors are described as the last one's (a model
    saved again), and those that place them (pack numbers, offsets, sizes) while they also lie
    where they lay (every tensor changed: the same offsets in a new pack); only the hashes are
    new each save. The writer keeps one between saves."""

    def __init__(self):
        self._described: tuple | None = None  # (keys, dtypes, shapes) of the last save
        self._description = ""
        self._placed: tuple | None = None  # (pack numbers, offsets, sizes) of the last save
        self._placement = ""

    def text(self, payload: Payload, packs: list[str], numbers: Iterable[int], offsets: Iterable[int],
             hashes: list[str]) -> bytes:
        """The index of `payload`'s tensors, tensor i at offsets[i] in packs[numbers[i]], with
        hash hashes[i] (32 hex digits)."""
        described = (payload.keys, payload.dtypes, payload.shapes)
        if described != self._described:
            self._description = _columns(keys=payload.keys, dtypes=payload.dtypes, shapes=payload.shapes)
            self._described = described
        placed = (list(numbers), list(offsets), payload.sizes)
        if placed != self._placed:
            self._placement = _columns(pack=placed[0], offsets=placed[1], sizes=placed[2])
            self._placed = placed
        return (f'{{"packs":{json.dumps(packs, separators=(",", ":"))},{self._description},{self._placement},'
                f'"hashes":"{"".join(hashes)}"}}').encode()


def _columns(**columns) -> str:
    """Named columns as the members of a JSON object, without its braces."""
    return json.dumps(columns, separators=(",", ":"))[1:-1]


def write_payload(folder: Path, pool, payload: Payload, staged: memoryview | None = None, streamed=None,
                  index: TensorIndex | None = None) -> Written:
    """Write the payload into `folder` and its new tensors into `pool` (pool.Pool); `staged` is
    the staged bytes (places[i] tensor i's offset in it), or `streamed` gives them as they come
    (stream.tensor_pieces: a state larger than the staging budget). `index`: the writer's, kept
    between saves."""
    with collector.paused():
        return _write_payload(folder, pool, payload, staged, streamed, index or TensorIndex())


def _write_payload(folder: Path, pool, payload: Payload, staged, streamed, index: TensorIndex) -> Written:
    if streamed is not None:
        hashes, in_packs, offsets, packs, sealed = pool.place_stream(payload.sizes, payload.places, streamed)
    else:
        hashes, in_packs, offsets, packs, sealed = pool.place(payload.sizes, payload.places, staged)
    try:  # while the new pack is fsync'd (pool._new_pack)
        names = sorted(packs)
        numbers = [0] * len(in_packs) if len(names) == 1 else \
            list(map({name: n for n, name in enumerate(names)}.__getitem__, in_packs))
        raw_index = index.text(payload, names, numbers, offsets, hashes)
        files = {
            TENSORS: durable.write(folder / TENSORS, [raw_index]),
            STATE: durable.write(folder / STATE, [_state_json(payload)]),
        }
        if payload.objects is not None:
            files[OBJECTS] = durable.write(folder / OBJECTS, [payload.objects])
    finally:
        sealed()  # the pack durable in the pool before any manifest can name it
    staged_hashes = hashes if str not in set(map(type, payload.places)) else [
        None if isinstance(place, str) else h for place, h in zip(payload.places, hashes)]
    return Written(files, packs, staged_hashes)


def _state_json(payload: Payload) -> bytes:
    """state.json: the document, each placeholder a reused encoding left in it (state.Layouts)
    replaced by that encoding's JSON text."""
    text = json.dumps(payload.state, allow_nan=True)
    for placeholder, fragment in payload.fragments.items():
        quoted = json.dumps(placeholder)
        if text.count(quoted) != 1:
            raise ValueError(f"the placeholder of a reused encoding is in state.json {text.count(quoted)} times")
        text = text.replace(quoted, fragment)
    return text.encode()


def manifest(step: int, meta: dict, written: Written | dict[str, durable.FileRecord]) -> dict:
    if not isinstance(written, Written):
        written = Written(written)
    return {"format": FORMAT_VERSION, "step": step, "time": time.time(), **meta, "hash": durable.HASH,
            "files": {name: {"size": r.size, "hash": r.hash} for name, r in sorted(written.files.items())},
            "packs": {name: {"size": r.size, "hash": r.hash} for name, r in sorted(written.packs.items())}}


def write_manifest(folder: Path, document: dict) -> None:
    raw = json.dumps(document, indent=1).encode()
    durable.write(folder / MANIFEST, [raw])


# -- reading -------------------------------------------------------------------------------------

def read_manifest(folder: Path) -> dict:
    """The manifest of a checkpoint folder, checked for a format this colabkit reads; CheckpointDamaged otherwise."""
    try:
        document = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise CheckpointDamaged(f"{folder.name} has no {MANIFEST}.") from None
    except (OSError, ValueError) as exc:
        raise CheckpointDamaged(f"{folder.name}: {MANIFEST} cannot be read ({exc}).") from None
    if not isinstance(document, dict) or document.get("format") not in READS:
        found = document.get("format") if isinstance(document, dict) else None
        raise CheckpointDamaged(
            f"{folder.name} was written in checkpoint format {found!r}; this colabkit reads formats "
            f"{', '.join(map(str, READS))}. Install the colabkit version that wrote it.")
    records = [document.get("files"), document.get("packs", {})]
    if not all(isinstance(part, dict) and all(isinstance(record, dict) for record in part.values()) for part in records) \
            or not isinstance(document.get("step"), int):
        raise CheckpointDamaged(f"{folder.name}: {MANIFEST} lacks its step or its list of files.")
    for name in document.get("packs", {}):
        pack_path(folder.parent, name)  # a name that would lead out of the pool is refused here
    return document


def parts(folder: Path, document: dict) -> list[tuple[str, Path, dict]]:
    """Every file a checkpoint is made of, as (name to show, path, its manifest record {size, hash
    or sha256}): the folder's files, then the packs in the store's pool."""
    found = [(name, folder / name, record) for name, record in document["files"].items()]
    return found + [(f"{POOL}/{name}", pack_path(folder.parent, name), record)
                    for name, record in document.get("packs", {}).items()]


def algorithm(document: dict) -> str:
    return document.get("hash", "sha256")


def expected_hash(document: dict, record: dict) -> str | None:
    value = record.get("hash" if document.get("format", 2) >= 3 else "sha256")
    return value if isinstance(value, str) else None


def check_sizes(folder: Path, document: dict) -> None:
    """Every part there at its recorded size (no bytes read): CheckpointDamaged otherwise. A link
    is not followed: it could lead anywhere on this machine."""
    for name, path, record in parts(folder, document):
        if path.is_symlink():
            raise CheckpointDamaged(f"{folder.name}: {name} is a symbolic link, not followed.")
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CheckpointDamaged(f"{folder.name}: {name} is missing.") from None
        if size != record.get("size"):
            raise CheckpointDamaged(f"{folder.name}: {name} is {size} bytes, the manifest says "
                                    f"{record.get('size')} (cut short or edited).")


@dataclass(frozen=True)
class Loaded:
    structure: dict
    step: int
    position: int
    pace: float | None
    tensors: dict  # key -> tensor or array
    objects: dict | None  # unpickled objects.pkl, only when trusted


def read(folder: Path, trust: bool, document: dict | None = None, place: Callable | None = None) -> Loaded:
    """Decode a checkpoint folder, verifying every byte it reads against the manifest as it reads
    it (one pass). objects.pkl is unpickled only when `trust`. `place(structure, index)`, once
    state.json and the tensor index (IndexColumns) are decoded, names live tensors to read tensors'
    bytes straight into (the live tensor for each row of the index, None for a row read into new
    memory; or None for none: inplace.Plan.place)."""
    document = document or read_manifest(folder)
    check_sizes(folder, document)
    from .state import needs_torch

    raw_state = _verified(folder, document, STATE)
    try:
        state_document = json.loads(raw_state)
        structure = state_document["structure"]
        step, position, pace = state_document["step"], state_document["position"], state_document.get("pace")
        torch = needs_torch(structure)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise CheckpointDamaged(f"{folder.name}: {STATE} cannot be decoded ({type(exc).__name__}: {exc}).") from None
    objects = None
    if trust and OBJECTS in document["files"]:  # before any tensor is read into a live one: its failure changes nothing
        objects = pickle.loads(_verified(folder, document, OBJECTS))  # verified, and trusted by the user
    if document["format"] >= 3:
        tensors = _read_tensors(folder, document, torch, place and (lambda index: place(structure, index)))
    else:
        _verified(folder, document, LEGACY_TENSORS)  # format 2: hashed, then loaded (two reads)
        tensors = _load_safetensors(folder / LEGACY_TENSORS, torch)
    return Loaded(structure, step, position, pace, tensors, objects)


def _verified(folder: Path, document: dict, name: str) -> bytes:
    """A small file of the checkpoint, read once and checked against the manifest."""
    record = document["files"].get(name)
    if record is None:
        raise CheckpointDamaged(f"{folder.name}: its {MANIFEST} does not list {name}.")
    try:
        data = (folder / name).read_bytes()
    except FileNotFoundError:
        raise CheckpointDamaged(f"{folder.name}: {name} is missing.") from None
    digest = durable.hasher(algorithm(document))
    digest.update(data)
    if digest.hexdigest() != expected_hash(document, record):
        raise CheckpointDamaged(f"{folder.name}: {name} does not match its {algorithm(document)} (damaged or edited).")
    return data


@dataclass
class IndexColumns:
    """tensors.json's columns (row i of each is tensor i), sorted pack by pack in file order,
    every tensor checked to lie inside its pack: what the loader reads by, what
    inplace.Plan.place matches live tensors against, and what the pool learns where each hash
    lies from. Columns, not rows: 20,000 tensors are then checked and read by a few passes in C
    each, not by Python work per tensor."""

    packs: list[Path]  # pack number -> its path in the pool
    pack_names: list[str]
    keys: list[str]
    codes: list  # safetensors dtype codes
    shapes: list  # each a list of ints
    pack: list  # each tensor's pack number
    offsets: list
    sizes: list
    hashes: str  # each tensor's hash, HASH_DIGITS hex digits, one after another

    def hashes_of(self, first: int, end: int) -> str:
        """The hashes of rows first..end-1, one after another."""
        return self.hashes[HASH_DIGITS * first:HASH_DIGITS * end]

    def rows_of(self, keys: list) -> slice | list:
        """The rows of `keys` (KeyError for a key it lacks): a slice when they lie one after
        another, as a save writes a state dict's tensors, so a column's values for them are one
        copy (`pick`)."""
        if keys:
            try:
                first = self.keys.index(keys[0])
            except ValueError:
                raise KeyError(keys[0]) from None
            if self.keys[first:first + len(keys)] == keys:
                return slice(first, first + len(keys))
        return list(map(self._rows.__getitem__, keys))

    @staticmethod
    def pick(column: list, rows: slice | list) -> list:
        return column[rows] if isinstance(rows, slice) else list(map(column.__getitem__, rows))

    @cached_property
    def _rows(self) -> dict:
        """key -> its row."""
        return dict(zip(self.keys, range(len(self.keys))))

    @cached_property
    def ends(self) -> list:
        """Where each tensor's bytes end in its pack."""
        return list(map(add, self.offsets, self.sizes))

    @cached_property
    def one_pack(self) -> bool:
        """Whether every tensor lies in the same pack (every tensor changed since the save before)."""
        return not self.pack or self.pack.count(self.pack[0]) == len(self.pack)


HASH_DIGITS = 32  # an XXH3-128 in hex


def read_index(folder: Path, document: dict, raw: bytes | None = None) -> IndexColumns:
    """tensors.json (format 3's rows or format 4's columns; `raw`: its bytes, verified already),
    verified, decoded and checked against the manifest's packs; CheckpointDamaged otherwise."""
    try:
        index = json.loads(raw if raw is not None else _verified(folder, document, TENSORS))
        names = index["packs"]
        paths = [pack_path(folder.parent, name) for name in names]
        # Each pack's size as the manifest records it (and check_sizes found it): no tensor may
        # reach outside its pack, so an edited index can't make the loader allocate more than is there.
        pack_sizes = [document.get("packs", {}).get(name, {}).get("size", -1) for name in names]
        columns = _columns_of(index) if document["format"] >= 4 else _rows_as_columns(index["tensors"])
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise CheckpointDamaged(f"{folder.name}: {TENSORS} cannot be decoded ({type(exc).__name__}: {exc}).") from None
    index = IndexColumns(paths, names, *columns)
    outside = _outside(index, pack_sizes)
    if outside is not None:
        raise CheckpointDamaged(f"{folder.name}: {TENSORS} places {outside} outside the packs its {MANIFEST} lists "
                                "(edited).")
    return _in_file_order(index)


def _columns_of(index: dict) -> list:
    """Format 4's columns, each checked to be a list of one value per tensor."""
    columns = [index[name] for name in ("keys", "dtypes", "shapes", "pack", "offsets", "sizes")]
    hashes = index["hashes"]
    count = len(columns[0])
    if set(map(type, columns)) != {list} or set(map(len, columns)) != {count} or type(hashes) is not str \
            or len(hashes) != HASH_DIGITS * count:
        raise TypeError("its columns are not lists of one value per tensor")
    return [*columns, hashes]


def _rows_as_columns(rows: list) -> list:
    """Format 3's rows, sorted pack by pack in file order, as format 4's columns."""
    if type(rows) is not list or not set(map(type, rows)) <= {list} or not set(map(len, rows)) <= {7}:
        raise TypeError("its tensors are not rows of 7 values")
    rows.sort(key=itemgetter(3, 4))
    columns = [list(column) for column in zip(*rows)] if rows else [[] for _ in range(7)]
    if not set(map(type, columns[6])) <= {str} or not set(map(len, columns[6])) <= {HASH_DIGITS}:
        raise TypeError(f"its hashes are not strings of {HASH_DIGITS} digits")
    return [*columns[:6], "".join(columns[6])]


def _outside(index: IndexColumns, pack_sizes: list) -> str | None:
    """The key of the first tensor that doesn't lie inside its pack (pack, offset and size ints,
    the pack one of the index's, the bytes within its size), None when all do."""
    packs, offsets, sizes = index.pack, index.offsets, index.sizes
    if not packs:
        return None
    if set(map(type, packs)) | set(map(type, offsets)) | set(map(type, sizes)) == {int} \
            and 0 <= min(packs) and max(packs) < len(pack_sizes) and min(offsets) >= 0 and min(sizes) >= 0 \
            and (max(index.ends) <= pack_sizes[packs[0]] if index.one_pack else
                 all(map(le, index.ends, map(pack_sizes.__getitem__, packs)))):
        return None
    for key, pack, offset, size in zip(index.keys, packs, offsets, sizes):  # which one, to say so
        if type(pack) is not int or type(offset) is not int or type(size) is not int or not 0 <= pack < len(pack_sizes) \
                or offset < 0 or size < 0 or offset + size > pack_sizes[pack]:
            return key
    return None


def _in_file_order(index: IndexColumns) -> IndexColumns:
    """The index sorted pack by pack in file order, as the loader reads (a save writes its tensors
    in the state's order: a tensor unchanged since an earlier pack comes between new ones)."""
    at = index.offsets if index.one_pack else \
        list(map(add, map(mul, index.pack, repeat(1 << 48)), index.offsets))  # offsets < 256 TiB
    if not any(map(gt, at, islice(at, 1, None))):
        return index
    order = sorted(range(len(at)), key=at.__getitem__)
    rows = [index.keys, index.codes, index.shapes, index.pack, index.offsets, index.sizes]
    return IndexColumns(index.packs, index.pack_names, *(list(map(column.__getitem__, order)) for column in rows),
                        "".join(map(index.hashes_of, order, map(add, order, repeat(1)))))


def _runs(index: IndexColumns) -> list[tuple[int, int]]:
    """The rows read with one preadv each, as (first, end): tensors that lie one after another in
    one pack, at most _RUN_VIEWS of them and about _RUN_BYTES."""
    packs, offsets, sizes = index.pack, index.offsets, index.sizes
    count = len(offsets)
    apart = map(ne, islice(offsets, 1, None), index.ends)
    if not index.one_pack:
        apart = map(or_, apart, map(ne, islice(packs, 1, None), packs))
    cuts = list(compress(range(1, count), apart))  # where a tensor doesn't follow the one before
    reached = [0, *accumulate(sizes)]  # reached[i]: the bytes of the rows before row i
    runs = []
    for first, end in zip([0, *cuts], [*cuts, count]):
        while first < end:
            last = min(end, first + _RUN_VIEWS, max(first + 1, bisect_left(reached, reached[first] + _RUN_BYTES, first + 1)))
            runs.append((first, last))
            first = last
    return runs


def _read_tensors(folder: Path, document: dict, torch: bool, place: Callable | None = None) -> dict:
    """Every tensor of tensors.json read into memory of its own, or into the live tensor
    `place(index)` names for it, hashed as it is read."""
    whole = [(pack_path(folder.parent, name), 0, record["size"]) for name, record in document.get("packs", {}).items()]
    # The disk reads while the index is decoded and the live tensors matched and made. When the
    # checkpoint names one pack, every tensor in it is this checkpoint's (one a later save
    # changed would lie in a later pack, named too), bar tensors no longer saved: all of it is
    # read ahead once tensors.json's bytes are in (not queued behind the pack), before they are
    # decoded (64 MiB in 20,000 tensors, cold: 0.072 s from 0.080). Otherwise the runs alone,
    # once the index says where they lie.
    raw = _verified(folder, document, TENSORS)
    reading = _read_ahead(whole) if len(whole) == 1 else None
    try:
        index = read_index(folder, document, raw)
        runs = _runs(index)
        if len(whole) != 1:
            reading = _read_ahead(_extents(index, runs))
        return _read_runs(folder, index, runs, torch, place(index) if place else None)
    finally:
        if reading is not None:
            reading.join()


def _read_runs(folder: Path, index: IndexColumns, runs: list, torch: bool, into: list | None) -> dict:
    """Each run's bytes read into the tensor `into` names for each row, or into new ones, and
    checked against their hashes. The copies out of the page cache (a preadv each run, without
    the GIL) go on a thread of their own: run k is copied while this thread makes run k+1's
    buffers and hashes run k-1's bytes (64 MiB in 20,000 tensors from the page cache: 52 ms
    from 59). Read in place, each run's tensors have their version counters bumped once verified
    (inplace.bump_versions; a tensor of the run read into new memory too, harmlessly), in the
    time this thread would wait for the next copy."""
    from . import state
    from .inplace import bump_versions

    keys, sizes = index.keys, index.sizes
    values = into or [None] * len(keys)
    views = [None] * len(keys)
    handles: dict = {}  # pack number -> its open file
    copier = ThreadPoolExecutor(1, thread_name_prefix="colabkit-restore")

    def verified(first: int, end: int, run: list, copy: Future) -> None:
        _check_run(folder, index, first, end, run, copy)
        if into:  # while the next run's copy goes on
            bump_versions(values[first:end])

    try:
        for i in compress(range(len(keys)), map(is_, values, repeat(None))):
            values[i], views[i] = state.empty(index.codes[i], index.shapes[i], sizes[i], torch)
        copying = None
        for first, end in runs:
            if into:  # every value a torch tensor now: their buffers made run by run, while the disk reads ahead
                run = _live_bytes(values[first:end], sizes[first:end], keys[first:end])
            else:
                run = views[first:end]
            pack, begin = index.pack[first], index.offsets[first]
            if pack not in handles:
                handles[pack] = os.open(index.packs[pack], os.O_RDONLY)
            copied = (first, end, run, copier.submit(_read_run, handles[pack], run, begin, index.ends[end - 1] - begin))
            if copying is not None:
                verified(*copying)
                if index.pack[copying[0]] != pack:  # that pack read to its end (the runs come pack by pack)
                    os.close(handles.pop(index.pack[copying[0]]))
            copying = copied
        if copying is not None:
            verified(*copying)
        return dict(zip(keys, values))
    except FileNotFoundError as exc:
        raise CheckpointDamaged(f"{folder.name}: {POOL}/{Path(exc.filename).name} is missing.") from None
    except (ValueError, TypeError, KeyError) as exc:  # a dtype, shape or size that doesn't fit: an edited index
        raise CheckpointDamaged(f"{folder.name}: {TENSORS} describes a tensor that can't be ({exc}).") from None
    finally:
        copier.shutdown(cancel_futures=True)  # waits: no byte goes into a tensor after this returns
        for handle in handles.values():
            os.close(handle)


def _check_run(folder: Path, index: IndexColumns, first: int, end: int, run: list, copy: Future) -> None:
    """Once the copy of rows first..end-1 is done: that it got every byte, and that each
    tensor's bytes match its hash; CheckpointDamaged (naming the first that doesn't) otherwise."""
    pack, begin = index.pack[first], index.offsets[first]
    done = begin + copy.result()
    if done < index.ends[end - 1]:
        key = next(index.keys[i] for i in range(first, end) if index.ends[i] > done)
        raise CheckpointDamaged(f"{folder.name}: {POOL}/{index.pack_names[pack]} ends before {key}'s bytes "
                                "(cut short).")
    if "".join(map(durable.digest, run)) != index.hashes_of(first, end):
        key = next(index.keys[first + i] for i, view in enumerate(run)
                   if durable.digest(view) != index.hashes_of(first + i, first + i + 1))
        raise CheckpointDamaged(f"{folder.name}: the bytes of {key} in {POOL}/{index.pack_names[pack]} do "
                                "not match their hash (damaged or edited).")


def _extents(index: IndexColumns, runs: list) -> list[tuple[Path, int, int]]:
    """The byte ranges the runs read, (pack path, begin, end), runs that touch merged."""
    extents = []
    for first, end in runs:
        pack, begin, stop = index.packs[index.pack[first]], index.offsets[first], index.ends[end - 1]
        if extents and extents[-1][0] == pack and extents[-1][2] == begin:
            extents[-1] = (pack, extents[-1][1], stop)
        else:
            extents.append((pack, begin, stop))
    return extents


def _read_ahead(extents: list[tuple[Path, int, int]]) -> threading.Thread | None:
    """Unless the bytes are in the page cache already (a restore in the session that saved them),
    start a thread that asks the kernel to read `extents` ((path, begin, end)), a piece at a time
    (Linux reads at most its read-ahead window per request): the disk then works while the CPU
    matches and hashes (20,000 tensors, cold: 64 MiB in 0.09 s from 0.105 s, 1 GiB in 0.46 s
    from 0.55 s). A hint only: what it can't do, the reads do. Join it when done."""
    if not hasattr(os, "posix_fadvise") or not extents:
        return None
    if all(_cached(path, at) for path, begin, stop in (extents[0], extents[-1]) for at in (begin, max(begin, stop - 1))):
        return None

    def advise() -> None:
        for path, begin, stop in extents:
            try:
                handle = os.open(path, os.O_RDONLY)
            except OSError:
                continue  # said by the read itself
            try:
                for at in range(begin, stop, _READ_AHEAD):
                    os.posix_fadvise(handle, at, min(_READ_AHEAD, stop - at), os.POSIX_FADV_WILLNEED)
            except OSError:
                pass  # a file system that takes no advice
            finally:
                os.close(handle)

    thread = threading.Thread(target=advise, name="colabkit-read-ahead", daemon=True)
    thread.start()
    return thread


def _cached(path: Path, offset: int) -> bool:
    """Whether the byte at `offset` is in the page cache (a read that may not wait), on Linux;
    False where that can't be asked."""
    if not hasattr(os, "RWF_NOWAIT"):
        return False
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        return os.preadv(handle, [bytearray(1)], offset, os.RWF_NOWAIT) == 1
    except OSError:  # BlockingIOError: not cached; EOPNOTSUPP: a file system that can't say
        return False
    finally:
        os.close(handle)


_READ_AHEAD = 8 << 20


def _live_bytes(tensors: list, sizes: list, keys: list) -> list:
    """The buffers of tensors read into (state.cpu_bytes_of), each checked to be its row's size:
    never read past a tensor's memory."""
    from . import state

    have = list(map(attrgetter("nbytes"), tensors))
    if have != sizes:
        i = next(i for i, nbytes in enumerate(have) if nbytes != sizes[i])
        raise ValueError(f"{keys[i]} is {sizes[i]} bytes, the tensor it is restored into {have[i]}")
    return state.cpu_bytes_of(tensors, sizes)


# A run of tensors read with one preadv: at most the system's limit of buffers per call, and about
# this many bytes, so each tensor is hashed while its bytes are still in the CPU's cache.
_RUN_VIEWS = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
_RUN_BYTES = 8 << 20


def _read_run(fd: int, views: list, offset: int, total: int) -> int:
    """Read the `total` bytes at `offset` into `views`, one after another; the bytes read (fewer
    at the end of the file)."""
    done, pending = 0, views
    while done < total:
        got = os.preadv(fd, pending, offset + done)
        if got == 0:
            break
        done += got
        if done < total:  # a short read: go on from the first view not yet full
            pending, skipped = [], 0
            for view in views:
                view = memoryview(view).cast("B")
                if skipped + len(view) > done:
                    pending.append(view[max(0, done - skipped):])
                skipped += len(view)
    return done


def _load_safetensors(path: Path, torch: bool) -> dict:
    """Format 2's tensors through safetensors: nothing in the file can run code."""
    if torch:
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise ColabkitError(f"This checkpoint holds PyTorch tensors and torch cannot be imported here ({exc}): "
                                "install torch to restore it.") from None
    else:
        from safetensors.numpy import load_file
    try:
        return load_file(str(path))
    except Exception as exc:  # verified by hash already, so this is a format the library rejects
        raise CheckpointDamaged(f"{path.parent.name}: {path.name} cannot be read as safetensors ({exc}).") from None
