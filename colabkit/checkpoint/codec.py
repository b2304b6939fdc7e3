"""The checkpoint format, all of it: file names, the safetensors header, state.json, the manifest.

A committed checkpoint is a folder `step-<N>` (N in ASCII digits) holding:

    tensors.safetensors  every tensor and array under a dotted key (huggingface/safetensors: 8 bytes
                         little-endian header length, a JSON header {key: {dtype, shape,
                         data_offsets}} padded with spaces to 8 bytes, then the data with no holes);
                         loaded through the safetensors library, so nothing in it can run code
    state.json           {"structure": what state.capture described: "objects" (each tracked name:
                          its kind, e.g. state_dict, value, jax, sklearn, keras.Model,
                          transformers.Trainer, lightning.Trainer, and its state with tensors
                          referenced by key), "skipped" (names that could not be saved, and why),
                          "rng" (the random states), "extra" (the loop's data position and, for a
                          save inside an iteration, where in it);
                          "step" (optimizer steps), "position" (loop iterations done), "pace"
                          (seconds per iteration)}
    objects.pkl          other picklable values, loaded only when the user trusts the checkpoint
    manifest.json        written last: {"format", "step", "time", the writer's meta (colabkit
                         version, platform, notebook, position, pace, total, libraries), "files":
                         {name: {size, sha256}}}

Writing goes through `durable` (hashed from the bytes written, fsync'd); committing is the store's.
"""

from __future__ import annotations

import json
import pickle
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..errors import ColabkitError
from . import durable

FORMAT_VERSION = 2  # 2: framework adapters, steps are optimizer steps, data positions
TENSORS = "tensors.safetensors"
STATE = "state.json"
OBJECTS = "objects.pkl"
MANIFEST = "manifest.json"
_STEP_FOLDER = re.compile(r"step-([0-9]+)")  # ASCII digits only: "step-٩٩" is not step 99


class CheckpointDamaged(ColabkitError):
    """A checkpoint that can't be used: files that don't match its manifest, or can't be decoded."""


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


# -- writing -------------------------------------------------------------------------------------

def header_bytes(entries: list[tuple[str, str, tuple[int, ...], int, int]], metadata: dict | None = None) -> bytes:
    """The safetensors length prefix and header for entries (key, dtype code, shape, begin, end)."""
    header: dict = {key: {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}
                    for key, dtype, shape, begin, end in entries}
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return len(raw).to_bytes(8, "little") + raw


@dataclass(frozen=True)
class Payload:
    """One checkpoint's files but the tensor data itself, which is staged or streamed separately."""

    step: int
    header: bytes  # the safetensors header for the data
    data_size: int  # bytes of tensor data after the header
    state: bytes  # state.json
    objects: bytes | None  # objects.pkl
    meta: dict  # what the manifest records beside the files


def encode(captured, step: int, position: int, pace: float | None, meta: dict) -> Payload:
    """A captured state (state.Capture, its sources laid out already) as the files to write."""
    entries = [(s.key, s.dtype, s.shape, s.begin, s.begin + s.nbytes) for s in captured.sources]
    document = {"structure": captured.structure, "step": step, "position": position, "pace": pace}
    objects = pickle.dumps(captured.objects, protocol=pickle.HIGHEST_PROTOCOL) if captured.objects else None
    return Payload(step, header_bytes(entries, {"format": "pt"}), captured.nbytes,
                   json.dumps(document, allow_nan=True).encode(), objects, meta)


def write_payload(folder: Path, payload: Payload, data: Iterable) -> dict[str, durable.FileRecord]:
    """Write the payload files into `folder`; `data` yields the tensor data section's bytes in order."""
    files = {
        TENSORS: durable.write(folder / TENSORS, _chain([payload.header], data),
                               len(payload.header) + payload.data_size),
        STATE: durable.write(folder / STATE, [payload.state], len(payload.state)),
    }
    if payload.objects is not None:
        files[OBJECTS] = durable.write(folder / OBJECTS, [payload.objects], len(payload.objects))
    return files


def _chain(first, rest):
    yield from first
    yield from rest


def manifest(step: int, meta: dict, files: dict[str, durable.FileRecord]) -> dict:
    return {"format": FORMAT_VERSION, "step": step, "time": time.time(), **meta,
            "files": {name: {"size": r.size, "sha256": r.sha256} for name, r in sorted(files.items())}}


def write_manifest(folder: Path, document: dict) -> None:
    raw = json.dumps(document, indent=1).encode()
    durable.write(folder / MANIFEST, [raw], len(raw))


# -- reading -------------------------------------------------------------------------------------

def read_manifest(folder: Path) -> dict:
    """The manifest of a checkpoint folder, checked for this format; CheckpointDamaged otherwise."""
    try:
        document = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        raise CheckpointDamaged(f"{folder.name} has no {MANIFEST}.") from None
    except (OSError, ValueError) as exc:
        raise CheckpointDamaged(f"{folder.name}: {MANIFEST} cannot be read ({exc}).") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_VERSION:
        found = document.get("format") if isinstance(document, dict) else None
        raise CheckpointDamaged(
            f"{folder.name} was written in checkpoint format {found!r}; this colabkit reads format "
            f"{FORMAT_VERSION}. Install the colabkit version that wrote it.")
    if not isinstance(document.get("files"), dict) or not isinstance(document.get("step"), int):
        raise CheckpointDamaged(f"{folder.name}: {MANIFEST} lacks its step or its list of files.")
    return document


@dataclass(frozen=True)
class Loaded:
    structure: dict
    step: int
    position: int
    pace: float | None
    tensors: dict  # key -> tensor or array
    objects: dict | None  # unpickled objects.pkl, only when trusted


def read(folder: Path, trust: bool) -> Loaded:
    """Decode a verified checkpoint folder. objects.pkl is unpickled only when `trust`."""
    try:
        document = json.loads((folder / STATE).read_text())
        structure = document["structure"]
        step, position, pace = document["step"], document["position"], document.get("pace")
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CheckpointDamaged(f"{folder.name}: {STATE} cannot be decoded ({type(exc).__name__}: {exc}).") from None
    from .state import needs_torch

    tensors = _load_tensors(folder / TENSORS, needs_torch(structure))
    objects = None
    if trust and (folder / OBJECTS).exists():
        with open(folder / OBJECTS, "rb") as f:
            objects = pickle.load(f)  # verified against the manifest, and trusted by the user
    return Loaded(structure, step, position, pace, tensors, objects)


def _load_tensors(path: Path, torch: bool) -> dict:
    """Tensors through safetensors: nothing in the file can run code."""
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
