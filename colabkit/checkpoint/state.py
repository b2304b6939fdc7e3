"""What a checkpoint holds, and how training state becomes files and comes back.

- Objects with state_dict()/load_state_dict() (modules, optimizers, schedulers, GradScaler) are
  saved as their state dict, never pickled (a class defined in a notebook can't be unpickled in a
  fresh kernel), and restored in place.
- Every tensor and NumPy array (in those state dicts, or named directly) goes to the safetensors
  file under a dotted key ("model.fc.weight", "optimizer.state.0.exp_avg").
- Everything else that is plain data (numbers, strings, lists, dicts) goes to state.json, which
  also holds the structure of each state dict, each tensor's device, and the random states.
- Other picklable values go to objects.pkl, loaded only when the user says they trust it.
  Values that can't be saved at all (generators, open files, locks) are named and skipped.

torch is never imported here: a tensor can only exist if the user's code imported torch already.
"""

from __future__ import annotations

import pickle
import random
import sys
from dataclasses import dataclass, field

import numpy as np

# safetensors dtype codes.
NUMPY_CODES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64",
    "bool": "BOOL",
}
TORCH_CODES = {
    "torch.float64": "F64", "torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16",
    "torch.int64": "I64", "torch.int32": "I32", "torch.int16": "I16", "torch.int8": "I8",
    "torch.uint8": "U8", "torch.uint16": "U16", "torch.uint32": "U32", "torch.uint64": "U64",
    "torch.bool": "BOOL", "torch.float8_e4m3fn": "F8_E4M3", "torch.float8_e5m2": "F8_E5M2",
}
RNG_KEY = "__rng__"


def _torch():
    return sys.modules.get("torch")


def is_tensor(value) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


@dataclass
class Source:
    """One tensor or array to stage: not copied yet, so capture costs nothing."""

    key: str
    value: object  # torch.Tensor or np.ndarray
    dtype: str  # safetensors code
    shape: tuple[int, ...]
    nbytes: int
    begin: int = 0  # offset in the data section, set by layout()

    @property
    def itemsize(self) -> int:
        return self.nbytes // max(1, int(np.prod(self.shape, dtype=np.int64)))


@dataclass
class Capture:
    sources: list[Source] = field(default_factory=list)
    structure: dict = field(default_factory=dict)  # JSON-ready
    objects: dict = field(default_factory=dict)  # name -> picklable value
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.sources)


class Unsaveable(Exception):
    pass


class _Encoder:
    """Turns nested state into JSON, pulling tensors and arrays out as Sources."""

    def __init__(self, capture: Capture):
        self.capture = capture
        self._keys: set[str] = set()

    def _unique(self, key: str) -> str:
        """Dotted keys can collide ({"a.b": x} beside {"a": {"b": y}}); a file key must not."""
        unique, n = key, 1
        while unique in self._keys:
            unique, n = f"{key}#{n}", n + 1
        self._keys.add(unique)
        return unique

    def encode(self, value, key: str):
        if is_tensor(value):
            return self._tensor(value, key)
        if isinstance(value, np.ndarray):
            return self._array(value, key)
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, np.generic):
            return {"__numpy_scalar__": value.dtype.str, "value": value.item()}
        if isinstance(value, (list, tuple)):
            items = [self.encode(v, f"{key}.{i}") for i, v in enumerate(value)]
            return items if isinstance(value, list) else {"__tuple__": items}
        if isinstance(value, dict):
            return {"__dict__": [[self._key(k), self.encode(v, f"{key}.{k}")] for k, v in value.items()]}
        raise Unsaveable(type(value).__name__)

    @staticmethod
    def _key(k):
        if isinstance(k, (str, int, float, bool)) or k is None:
            return k
        raise Unsaveable(f"a dict key of type {type(k).__name__}")

    def _tensor(self, tensor, key: str):
        code = TORCH_CODES.get(str(tensor.dtype))
        if code is None:
            raise Unsaveable(f"a tensor of dtype {tensor.dtype}")
        if tensor.is_sparse or getattr(tensor, "is_quantized", False):
            raise Unsaveable("a sparse or quantized tensor")
        key = self._unique(key)
        self.capture.sources.append(
            Source(key, tensor.detach(), code, tuple(tensor.shape), tensor.numel() * tensor.element_size()))
        return {"__tensor__": key, "device": str(tensor.device), "requires_grad": bool(tensor.requires_grad)}

    def _array(self, array: np.ndarray, key: str):
        code = NUMPY_CODES.get(array.dtype.name)
        if code is None or array.dtype.byteorder == ">":
            raise Unsaveable(f"an array of dtype {array.dtype}")
        key = self._unique(key)
        self.capture.sources.append(Source(key, array, code, tuple(array.shape), array.nbytes))
        return {"__array__": key}


def _has_state_dict(value) -> bool:
    return callable(getattr(value, "state_dict", None)) and callable(getattr(value, "load_state_dict", None))


def capture(objects: dict[str, object]) -> Capture:
    """Describe `objects` (name -> value) and the random states, without copying tensor data."""
    result = Capture()
    encoder = _Encoder(result)
    entries = {}
    for name, value in objects.items():
        before = len(result.sources)
        try:
            if _has_state_dict(value):
                entries[name] = {"kind": "state_dict", "type": type(value).__name__,
                                 "state": encoder.encode(value.state_dict(), name)}
            else:
                entries[name] = {"kind": "value", "value": encoder.encode(value, name)}
        except Unsaveable:
            del result.sources[before:]  # what this value added before the part that can't be saved
            try:
                pickle.dumps(value)
            except Exception as exc:  # generators, open files, sockets, locks, DataLoader iterators
                result.skipped[name] = f"{type(value).__name__} can't be saved ({type(exc).__name__}: {exc})"
                continue
            result.objects[name] = value
            entries[name] = {"kind": "pickled", "type": type(value).__name__}
    result.structure = {"objects": entries, "rng": _capture_rng(encoder)}
    return result


def _capture_rng(encoder: _Encoder) -> dict:
    """Python's, NumPy's and PyTorch's (CPU and every CUDA device) random states."""
    rng = {"python": encoder.encode(random.getstate(), f"{RNG_KEY}.python")}
    name, keys, pos, has_gauss, cached = np.random.get_state()
    rng["numpy"] = {"name": name, "keys": encoder.encode(keys, f"{RNG_KEY}.numpy.keys"),
                    "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    torch = _torch()
    if torch is not None:
        rng["torch"] = encoder.encode(torch.get_rng_state(), f"{RNG_KEY}.torch.cpu")
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["cuda"] = [encoder.encode(s, f"{RNG_KEY}.torch.cuda.{i}")
                           for i, s in enumerate(torch.cuda.get_rng_state_all())]
    return rng


def layout(sources: list[Source]) -> int:
    """Give each source its offset in the data section; returns the section's size.

    Wider elements first, so every tensor starts aligned to its element size without padding
    (safetensors allows no holes between tensors).
    """
    offset = 0
    for source in sorted(sources, key=lambda s: (-s.itemsize, s.key)):
        source.begin = offset
        offset += source.nbytes
    sources.sort(key=lambda s: s.begin)
    return offset


def stage(sources: list[Source], buffer) -> None:
    """Copy every source into `buffer` at its offset: the one stall of the training thread."""
    torch = _torch()
    for s in sources:
        if s.nbytes == 0:
            continue
        if is_tensor(s.value):
            numel = s.value.numel()
            target = torch.frombuffer(buffer, dtype=s.value.dtype, count=numel, offset=s.begin)
            target.copy_(s.value.reshape(-1))
        else:
            view = np.frombuffer(buffer, dtype=s.value.dtype, count=s.value.size, offset=s.begin)
            np.copyto(view.reshape(s.value.shape), s.value, casting="no")


def chunks(sources: list[Source]):
    """The data section's bytes straight from the live tensors and arrays, one source at a time
    (the inline path, when there is no memory to stage a copy): a GPU tensor is copied to the
    host one at a time."""
    for source in sources:
        value = source.value
        if is_tensor(value):
            value = value.detach().cpu().contiguous().reshape(-1).view(_torch().uint8).numpy()
        yield memoryview(np.ascontiguousarray(value)).cast("B")


def needs_torch(structure: dict) -> bool:
    """Torch tensors among the saved objects need torch; torch's random state alone does not
    (a job without torch restores the rest and leaves torch's random stream as it is)."""
    import importlib.util
    import json

    if '"__tensor__"' in json.dumps(structure.get("objects")):
        return True
    return "torch" in structure.get("rng", {}) and importlib.util.find_spec("torch") is not None


# -- restoring ---------------------------------------------------------------------------------

class _Decoder:
    def __init__(self, tensors: dict, to_device: bool = True):
        self.tensors = tensors
        self.to_device = to_device
        self.moved_to_cpu: list[str] = []

    def decode(self, value):
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "__tensor__" in value:
            return self._tensor(value)
        if "__array__" in value:
            return _as_numpy(self.tensors[value["__array__"]])
        if "__tuple__" in value:
            return tuple(self.decode(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {k: self.decode(v) for k, v in value["__dict__"]}
        if "__numpy_scalar__" in value:
            return np.dtype(value["__numpy_scalar__"]).type(value["value"])
        raise ValueError(f"unknown entry in state.json: {sorted(value)}")

    def _tensor(self, entry):
        torch = _torch()
        tensor = self.tensors[entry["__tensor__"]]
        if not is_tensor(tensor):
            tensor = torch.from_numpy(np.ascontiguousarray(tensor))
        device = entry.get("device", "cpu")
        if self.to_device and device != "cpu":
            try:
                tensor = tensor.to(device)
            except (RuntimeError, AssertionError):  # no such GPU here: keep it on the CPU, and say so
                self.moved_to_cpu.append(entry["__tensor__"])
        if entry.get("requires_grad"):
            tensor.requires_grad_(True)
        return tensor


def _as_numpy(value) -> np.ndarray:
    return value.numpy() if is_tensor(value) else np.asarray(value)


def restore(structure: dict, tensors: dict, objects: dict[str, object], pickled: dict | None) -> tuple[dict, list[str]]:
    """Put the saved state back. State-dict objects in `objects` are restored in place.

    Returns the values to bind by name (arrays, tensors, plain values, trusted pickled objects)
    and notes for the user (tensors kept on the CPU, pickled values left out).
    """
    decoder = _Decoder(tensors)
    rebind, notes = {}, []
    for name, entry in structure["objects"].items():
        if entry["kind"] == "state_dict":
            target = objects.get(name)
            if target is None or not _has_state_dict(target):
                notes.append(f"{name}: saved as a state dict, but there is no such object to load it "
                             "into; create it first (same class and shapes), then restore.")
                continue
            target.load_state_dict(decoder.decode(entry["state"]))
        elif entry["kind"] == "value":
            rebind[name] = decoder.decode(entry["value"])
        elif pickled is not None and name in pickled:
            rebind[name] = pickled[name]
        else:
            notes.append(f"{name} ({entry['type']}) is in objects.pkl, which is only loaded when you "
                         "trust it: %checkpoint restore --trust (or trust=True).")
    _restore_rng(structure.get("rng", {}), decoder)
    if decoder.moved_to_cpu:
        notes.append(f"{len(decoder.moved_to_cpu)} tensor(s) were on a GPU this machine doesn't have and "
                     f"were restored to the CPU (e.g. {decoder.moved_to_cpu[0]}).")
    return rebind, notes


def _restore_rng(rng: dict, decoder: _Decoder) -> None:
    if "python" in rng:
        state = decoder.decode(rng["python"])
        random.setstate((state[0], tuple(state[1]), state[2]))
    if "numpy" in rng:
        n = rng["numpy"]
        np.random.set_state((n["name"], _as_numpy(decoder.decode(n["keys"])), n["pos"], n["has_gauss"],
                             n["cached_gaussian"]))
    torch = _torch()
    if torch is not None and "torch" in rng:
        cpu = _Decoder(decoder.tensors, to_device=False)
        torch.set_rng_state(cpu.decode(rng["torch"]))
        if "cuda" in rng and torch.cuda.is_available():
            states = [cpu.decode(s) for s in rng["cuda"]]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
