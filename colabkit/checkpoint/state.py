"""What a checkpoint holds, and how training state becomes tensors plus JSON and comes back.

- A framework's objects (a JAX pytree or Flax module, a scikit-learn estimator, a Keras model, a
  Hugging Face or Lightning trainer in the middle of its run) are captured by that framework's
  adapter (checkpoint/adapters/): arrays as tensors, the rest as JSON, restored into the live object.
- Objects with state_dict()/load_state_dict() (modules, optimizers, schedulers, GradScaler) are
  saved as their state dict, never pickled whole (a class defined in a notebook can't be unpickled
  in a fresh kernel), and restored in place; a state dict holding what the format can't (a sparse
  tensor, an enum) is pickled, said, and still loaded in place. A torch.Generator as its state.
- Every tensor and NumPy array (bfloat16 and float8 too) goes to the pool under a dotted key
  ("model.fc.weight", "optimizer.state.0.exp_avg"); see codec.
- Everything else that is plain data (numbers, strings, lists, dicts) goes to state.json, which
  also holds the structure of each state dict, each tensor's device, and the random states.
- Other picklable values go to objects.pkl, loaded only when the user says they trust it.
  Values that can't be saved at all (generators, open files, locks, tensors on the meta device)
  are named and skipped.

A restore says which objects it could not restore: resuming a loop or a framework's run past
iterations it did not restore would silently train the wrong thing.

torch is never imported here: a tensor can only exist if the user's code imported torch already.
"""

from __future__ import annotations

import collections
import ctypes
import json
import math
import pickle
import random
import sys
from dataclasses import dataclass, field
from secrets import token_hex

import numpy as np

from ..errors import ColabkitError
from . import adapters, parallel_copy

# safetensors dtype codes.
NUMPY_CODES = {
    "float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
    "int16": "I16", "int8": "I8", "uint8": "U8", "uint16": "U16", "uint32": "U32", "uint64": "U64",
    "bool": "BOOL", "bfloat16": "BF16", "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2",  # ml_dtypes (JAX)
}
TORCH_CODES = {
    "torch.float64": "F64", "torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16",
    "torch.int64": "I64", "torch.int32": "I32", "torch.int16": "I16", "torch.int8": "I8",
    "torch.uint8": "U8", "torch.uint16": "U16", "torch.uint32": "U32", "torch.uint64": "U64",
    "torch.bool": "BOOL", "torch.float8_e4m3fn": "F8_E4M3", "torch.float8_e5m2": "F8_E5M2",
}
RNG_KEY = "__rng__"
EXTRA_KEY = "__loop__"


def _torch():
    return sys.modules.get("torch")


def is_tensor(value) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def _is_generator(value) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Generator)


@dataclass
class RandomStates:
    """Python's, NumPy's and PyTorch's (CPU and every CUDA device) global random states at one moment."""

    python: tuple
    numpy: tuple
    torch: object = None  # a uint8 tensor
    cuda: list | None = None

    @classmethod
    def capture(cls) -> "RandomStates":
        torch, cuda, torch_state = _torch(), None, None
        if torch is not None:
            torch_state = torch.get_rng_state()
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                cuda = torch.cuda.get_rng_state_all()
        return cls(random.getstate(), np.random.get_state(), torch_state, cuda)

    def restore(self) -> None:
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch = _torch()
        if torch is not None and self.torch is not None:
            torch.set_rng_state(self.torch.cpu() if is_tensor(self.torch) else torch.from_numpy(np.asarray(self.torch)))
            if self.cuda and torch.cuda.is_available() and len(self.cuda) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all([s.cpu() for s in self.cuda])


@dataclass(slots=True)
class Source:
    """One tensor or array to stage: not copied yet, so capture costs nothing."""

    key: str
    value: object  # torch.Tensor or np.ndarray
    dtype: str  # safetensors code
    shape: tuple[int, ...]
    nbytes: int


@dataclass
class Capture:
    sources: list[Source] = field(default_factory=list)
    structure: dict = field(default_factory=dict)  # JSON-ready
    objects: dict = field(default_factory=dict)  # name -> picklable value
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it was not saved
    pickled_states: dict[str, str] = field(default_factory=dict)  # name -> what made its state dict pickled
    fragments: dict[str, str] = field(default_factory=dict)  # placeholder in structure -> its JSON (Layouts)

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.sources)


class Unsaveable(Exception):
    pass


class Dataless(Unsaveable):
    """A tensor with no data (on the meta device): pickling would save no data either."""


class Layouts:
    """The last save's encoding of each large dict of tensors (a module's state dict), reused
    while its keys and its tensors' dtypes, shapes, devices and requires_grad stay the same: a
    model of 20,000 tensors is then described in a fraction of the time, on the training thread.
    A reused encoding stands in the structure as a placeholder, and its JSON text, made once, as
    a fragment (codec puts it in place in the writer): the training thread neither encodes nor
    sends it again. Only the save path keeps one (a capture elsewhere encodes afresh);
    `release()` after each save lets go of the tensors, so a model the notebook deletes is not
    kept alive here."""

    SMALLEST = 64  # a dict with fewer tensors is encoded afresh: checking costs about as much

    def __init__(self):
        self._last: dict[str, list] = {}  # key -> [dict keys, metas, file keys, sources, encoded, JSON text]
        self._placeholder = f"colabkit-layout-{token_hex(16)}-"  # no saved string can guess it

    def reuse(self, encoder: "Encoder", value: dict, key: str) -> str | None:
        """A placeholder for the encoding of `value` if its layout is the last save's (its
        sources added to the capture, pointing at the tensors now, and its JSON among the
        capture's fragments), else None."""
        last = self._last.get(key)
        if last is None:
            return None
        keys, metas, file_keys, sources, encoded, text = last
        if list(value) != keys:
            return None
        tensors = list(value.values())
        try:
            if [(t.dtype, t.shape, t.device, t.requires_grad) for t in tensors] != metas:
                return None
        except AttributeError:  # not all tensors now
            return None
        if not encoder.claims(file_keys):  # last, so a dict encoded afresh gets its keys as they are
            return None
        for source, tensor in zip(sources, tensors):
            source.value = tensor
        encoder.capture.sources += sources
        if text is None:
            text = last[5] = json.dumps(encoded, allow_nan=True)
        placeholder = self._placeholder + key
        encoder.capture.fragments[placeholder] = text
        return placeholder

    def remember(self, value: dict, key: str, sources: list, encoded: dict) -> None:
        """Keep the encoding of `value` (all of whose values were tensors encoded as `sources`)."""
        tensors = list(value.values())
        if any(t.requires_grad for t in tensors):  # encoded detached: the sources hold other tensors
            return
        self._last[key] = [list(value), [(t.dtype, t.shape, t.device, t.requires_grad) for t in tensors],
                           [s.key for s in sources], sources, encoded, None]

    def release(self) -> None:
        for last in self._last.values():
            for source in last[3]:
                source.value = None

    def encode_texts(self) -> None:
        """Make each remembered encoding's JSON now (on a thread that prepares the first save),
        not at its first reuse."""
        for last in self._last.values():
            if last[5] is None:
                last[5] = json.dumps(last[4], allow_nan=True)


_PLAIN = (bool, int, float, str)  # exactly: a subclass (an IntEnum, np.float64) would come back as its base
# A state_dict() is an OrderedDict, which comes back as a dict in the same order; any other dict
# subclass (a defaultdict, a Counter) would lose what it adds: pickled.
_DICTS = (dict, collections.OrderedDict)


def _json_scalar(dtype: np.dtype) -> bool:
    """Whether a NumPy scalar's .item() is a JSON number, bool or string that its dtype gives back
    exactly (not complex, bytes, datetime64, nor a long double wider than a float)."""
    return dtype.kind in "biuU" or dtype.kind == "f" and dtype.itemsize <= 8


class Encoder:
    """Turns nested state into JSON, pulling tensors and arrays out as Sources. Adapters get it to
    encode the parts of a framework's state under their own keys."""

    def __init__(self, capture: Capture, layouts: Layouts | None = None):
        self.capture = capture
        self.layouts = layouts
        self._keys: set[str] = set()
        torch = _torch()
        self._tensor_type = torch.Tensor if torch is not None else ()  # isinstance(x, ()) is False
        self._strided = torch.strided if torch is not None else None

    def _unique(self, key: str) -> str:
        """Dotted keys can collide ({"a.b": x} beside {"a": {"b": y}}); a file key must not."""
        unique, n = key, 1
        while unique in self._keys:
            unique, n = f"{key}#{n}", n + 1
        self._keys.add(unique)
        return unique

    def claims(self, keys: list[str]) -> bool:
        """Take these file keys as they are, if no other value took any of them already."""
        if not self._keys.isdisjoint(keys):
            return False
        self._keys.update(keys)
        return True

    def encode(self, value, key: str):
        # The commonest first: a state dict of 20,000 tensors comes through here 20,000 times.
        if isinstance(value, self._tensor_type):
            return self._tensor(value, key)
        kind = type(value)
        if kind in _DICTS:
            if self.layouts is not None and len(value) >= Layouts.SMALLEST:
                return self._remembered_dict(value, key)
            return self._dict(value, key)
        if value is None or kind in _PLAIN:
            return value
        if kind is np.ndarray:  # a subclass (a masked array, np.matrix) would lose what it adds: pickled
            return self._array(value, key)
        if kind is list or kind is tuple:  # a subclass (a namedtuple) would come back as its base: pickled
            items = [self.encode(v, f"{key}.{i}") for i, v in enumerate(value)]
            return items if kind is list else {"__tuple__": items}
        if isinstance(value, np.generic) and _json_scalar(value.dtype):
            return {"__numpy_scalar__": value.dtype.str, "value": value.item()}
        if isinstance(value, RandomStates):
            return self._random(value, key)
        raise Unsaveable(f"a value of type {type(value).__name__}")

    def _items(self, value: dict, key: str) -> list:
        """A dict's items, its tensors encoded without the general dispatch (a module's state
        dict is thousands of them: each call saved is a microsecond of the training thread's stall)."""
        tensor_type, tensor, encode = self._tensor_type, self._tensor, self.encode
        return [[k if type(k) is str else self._key(k),
                 tensor(v, f"{key}.{k}") if isinstance(v, tensor_type) else encode(v, f"{key}.{k}")]
                for k, v in value.items()]

    def _dict(self, value: dict, key: str) -> dict:
        """A dict as its items, or, when it holds CPU tensors alone, each under "<key>.<its key>"
        and needing nothing else said (a module's state dict), as the list of its keys: a restore
        of 20,000 tensors then decodes 20,000 strings, not 20,000 pairs and dicts."""
        items = self._items(value, key)
        prefix = key + "."
        if items and [prefix + k if type(k) is str else None for k in value] == \
                [e.get("__tensor__") if type(e) is dict and len(e) == 1 else False for _, e in items]:
            return {"__tensors__": key, "keys": list(value)}
        return {"__dict__": items}

    def _remembered_dict(self, value: dict, key: str) -> dict | str:
        """A large dict's encoding: the last save's, as a placeholder (Layouts), or encoded now and
        remembered when its values are all tensors."""
        encoded = self.layouts.reuse(self, value, key)
        if encoded is None:
            before = len(self.capture.sources)
            encoded = self._dict(value, key)
            added = self.capture.sources[before:]
            if len(added) == len(value) and all(isinstance(v, self._tensor_type) for v in value.values()):
                self.layouts.remember(value, key, added, encoded)
        return encoded

    @staticmethod
    def _key(k):
        if type(k) in _PLAIN or k is None:
            return k
        raise Unsaveable(f"a dict key of type {type(k).__name__}")

    def _tensor(self, tensor, key: str):
        cpu = tensor.is_cpu
        if not cpu and tensor.is_meta:
            raise Dataless(f"{key} on the meta device, with no data to save: its weights are not loaded yet "
                           "(accelerate's init_empty_weights) or offloaded; load them first")
        code = _DTYPE_CODES.get(tensor.dtype) or _torch_code(tensor.dtype)
        if code is None:
            raise Unsaveable(f"a tensor of dtype {tensor.dtype}")
        if tensor.layout is not self._strided or tensor.is_quantized:
            raise Unsaveable("a sparse or quantized tensor")
        key = self._unique(key)
        requires_grad = tensor.requires_grad
        if requires_grad:  # a state dict's tensors are detached already
            tensor = tensor.detach()
        self.capture.sources.append(Source(key, tensor, code, tuple(tensor.shape), tensor.nbytes))
        if cpu and not requires_grad:  # most of them: a restore decodes 20,000 of these
            return {"__tensor__": key}
        entry = {"__tensor__": key} if cpu else {"__tensor__": key, "device": str(tensor.device)}
        if requires_grad:
            entry["requires_grad"] = True
        return entry

    def _array(self, array: np.ndarray, key: str):
        code = NUMPY_CODES.get(array.dtype.name)
        if code is None or array.dtype.byteorder == ">":
            raise Unsaveable(f"an array of dtype {array.dtype}")
        key = self._unique(key)
        self.capture.sources.append(Source(key, array, code, tuple(array.shape), array.nbytes))
        return {"__array__": key, "dtype": array.dtype.name}

    def _random(self, states: RandomStates, key: str):
        name, keys, pos, has_gauss, cached = states.numpy
        entry = {"python": self.encode(states.python, f"{key}.python"),
                 "numpy": {"name": name, "keys": self.encode(keys, f"{key}.numpy.keys"), "pos": int(pos),
                           "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
        if states.torch is not None:
            entry["torch"] = self.encode(states.torch, f"{key}.torch.cpu")
        if states.cuda:
            entry["cuda"] = [self.encode(s, f"{key}.torch.cuda.{i}") for i, s in enumerate(states.cuda)]
        return {"__random__": entry}


_DTYPE_CODES: dict = {}  # torch.dtype -> safetensors code, filled as dtypes are met


def _torch_code(dtype) -> str | None:
    code = _DTYPE_CODES.get(dtype)
    if code is None:
        code = TORCH_CODES.get(str(dtype))
        if code is not None:
            _DTYPE_CODES[dtype] = code
    return code


def has_state_dict(value) -> bool:
    return callable(getattr(value, "state_dict", None)) and callable(getattr(value, "load_state_dict", None))


def capture(objects: dict[str, object], random_states: RandomStates | None = None, extra: dict | None = None,
            secrets: dict[str, str] | None = None, layouts: Layouts | None = None) -> Capture:
    """Describe `objects` (name -> value), the random states (now, or the snapshot given) and
    `extra` (the loop's position and data), without copying tensor data. A value holding one of
    `secrets` (name -> value) is not saved. `layouts`: the last save's encodings to reuse."""
    result = Capture()
    encoder = Encoder(result, layouts)
    entries = {}
    for name, value in objects.items():
        before, adapter = (len(result.sources), len(result.fragments)), None
        try:
            adapter = adapters.claim(value)
            if adapter is not None:
                entries[name] = {"kind": adapter.KIND, "type": type(value).__name__,
                                 "state": adapter.capture(value, encoder, name)}
            elif _is_generator(value):
                entries[name] = {"kind": "generator", "state": encoder.encode(value.get_state(), name)}
            elif has_state_dict(value):
                entries[name] = {"kind": "state_dict", "type": type(value).__name__,
                                 "state": encoder.encode(value.state_dict(), name)}
            else:
                entries[name] = {"kind": "value", "value": encoder.encode(value, name)}
        except Exception as exc:
            _undo(result, before)  # what this value added before the part that can't be saved
            if adapter is not None:  # a framework object: pickling it would save what its adapter refused
                why = exc if isinstance(exc, Unsaveable) else (
                    f"colabkit's {adapter.KIND} adapter failed on this version of it: {type(exc).__name__}: {exc}")
                result.skipped[name] = f"{type(value).__name__}: {why}"
                continue
            if not isinstance(exc, Unsaveable):
                raise
            if isinstance(exc, Dataless):
                result.skipped[name] = f"{type(value).__name__} holds {exc}"
                continue
            # An object with a state dict is restored by loading its state dict, pickled if need be:
            # the object itself, unpickled and bound in its place, would leave the notebook's
            # other references (an optimizer's parameters) on the old one.
            whole = not has_state_dict(value) or _is_generator(value)
            try:
                kept = value if whole else value.state_dict()
                pickle.dumps(kept)
            except Exception as err:  # generators, open files, sockets, locks, DataLoader iterators
                why = f"{type(err).__name__}: {err}"
                result.skipped[name] = f"{type(value).__name__} can't be saved ({why})" if whole else \
                    f"{type(value).__name__}'s state dict holds {exc}, and can't be pickled either ({why})"
                continue
            result.objects[name] = kept
            entries[name] = {"kind": "pickled" if whole else "pickled_state", "type": type(value).__name__}
            if not whole:
                result.pickled_states[name] = str(exc)
        held = _secret_in(entries[name], result.objects.get(name), secrets)
        if held is not None:
            del entries[name]
            _undo(result, before)
            result.objects.pop(name, None)
            result.skipped[name] = (f"it holds the value of the secret {held}, and this job's checkpoints go to S3: "
                                    "read the secret where it is used, into a variable %checkpoint does not track")
    result.structure = {"objects": entries, "skipped": result.skipped,
                        "rng": encoder.encode(random_states or RandomStates.capture(), RNG_KEY),
                        "extra": encoder.encode(extra or {}, EXTRA_KEY)}
    return result


def _undo(result: Capture, before: tuple[int, int]) -> None:
    """Take back what one value added to a capture since it had `before` (sources, fragments):
    its sources, and the placeholders of reused encodings (Layouts) it put in, whose JSON would
    otherwise be looked for in a state.json that no longer holds them."""
    sources, fragments = before
    del result.sources[sources:]
    for placeholder in list(result.fragments)[fragments:]:
        del result.fragments[placeholder]


def _secret_in(entry: dict, pickled, secrets: dict[str, str] | None) -> str | None:
    """The name of a secret whose value a plain value's entry (or the object it pickles) holds.
    Tensors and framework states are not searched: they hold numbers."""
    if not secrets or entry["kind"] not in ("value", "pickled", "pickled_state"):
        return None
    text = json.dumps(entry).encode() + (pickle.dumps(pickled) if pickled is not None else b"")
    return next((name for name, secret in secrets.items() if secret.encode() in text), None)


def stage(placed: list[tuple[Source, int]], buffer) -> None:
    """Copy each source into `buffer` at its offset: the one stall of the training thread.

    Bytes are copied by memmove (contiguous CPU tensors; NumPy for arrays), not by torch's copy_
    (several threads): when other work shares the cores, as a data loader does on a 2-core Colab
    VM, torch's threads wait on each other (measured, 147 MiB on this machine under load: 137-160
    ms against 30-33 ms). Tensors of PARALLEL bytes or more are copied last, shared with a helper
    thread that yields to such work (parallel_copy); the memmove also spares the three views per
    tensor a NumPy copy needs (20,000 small tensors: 0.13 s of them)."""
    torch = _torch()
    tensor_type = torch.Tensor if torch is not None else ()
    flat = np.frombuffer(buffer, dtype=np.uint8)
    base, limit, memmove = flat.ctypes.data, len(flat), ctypes.memmove
    large = []  # (to, from, size) of the large tensors, copied at the end
    for s, begin in placed:
        size = s.nbytes
        if size == 0:
            continue
        if begin < 0 or begin + size > limit:
            raise ValueError(f"{s.key} placed outside the staging buffer")
        value = s.value
        if isinstance(value, tensor_type):
            if value.is_cpu and value.is_contiguous():
                if value.nbytes != size:  # never read past a tensor's memory
                    raise ValueError(f"{s.key} changed size while it was being saved")
                if size >= PARALLEL:
                    large.append((base + begin, value.data_ptr(), size))
                else:
                    memmove(base + begin, value.data_ptr(), size)
                continue
            target = torch.frombuffer(buffer, dtype=value.dtype, count=value.numel(), offset=begin)
            target.copy_(value.reshape(-1))  # from a GPU, or gathered from strides
            continue
        np.copyto(flat[begin:begin + size], host_bytes(value), casting="no")
    parallel_copy.memmove_all(large)


PARALLEL = 1 << 20  # a tensor this large is copied by parallel_copy (a smaller one costs more to hand out than to copy)


def host_bytes(value) -> np.ndarray:
    """A tensor's or array's bytes as a flat uint8 array (a view when it is a contiguous CPU one;
    a GPU tensor is copied to the host)."""
    if is_tensor(value):
        value = value.detach()
        if value.device.type != "cpu" or not value.is_contiguous():
            value = value.cpu().contiguous()
        return value.reshape(-1).view(_torch().uint8).numpy()
    return np.ascontiguousarray(value).reshape(-1).view(np.uint8)


_BYTE_ARRAYS: dict = {}  # size -> the ctypes array type of that many bytes (making one costs more than using it)


def cpu_bytes(tensor):
    """The bytes of a contiguous CPU tensor, in place and writable, without making views (hashing
    or reading into 20,000 of them through host_bytes costs more than the hashing). It doesn't
    keep the tensor alive: hold the tensor while it is used."""
    size = tensor.nbytes
    if not size:
        return bytearray()
    kind = _BYTE_ARRAYS.get(size) or _BYTE_ARRAYS.setdefault(size, ctypes.c_char * size)
    return kind.from_address(tensor.data_ptr())


def cpu_bytes_of(tensors: list, sizes: list) -> list:
    """cpu_bytes of each of `tensors` (contiguous CPU tensors of `sizes` bytes), by a few passes
    in C rather than a Python call per tensor (a restore reads into 20,000 of them)."""
    for size in set(sizes) - _BYTE_ARRAYS.keys():
        _BYTE_ARRAYS[size] = ctypes.c_char * size
    views = list(map(_ARRAY_TYPE.from_address, map(_BYTE_ARRAYS.__getitem__, sizes),
                     map(_torch().Tensor.data_ptr, tensors)))
    if 0 in sizes:  # as cpu_bytes has them
        views = [view if size else bytearray() for view, size in zip(views, sizes)]
    return views


_ARRAY_TYPE = type(ctypes.c_char * 1)  # what from_address is a method of


def empty(code: str, shape, nbytes: int, torch: bool):
    """A new tensor (or array) of safetensors dtype `code` and `shape`, and its bytes as a
    writable byte buffer for the loader to read into. The buffer doesn't keep the tensor alive:
    hold the tensor while it is used."""
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape) \
            or math.prod(shape) * itemsize(code) != nbytes:  # before any allocation
        raise ValueError(f"{code} of shape {shape!r} is not {nbytes} bytes")
    if torch:
        dtype = _torch_dtype(code)
        value = _torch().empty(shape, dtype=dtype)
        return value, cpu_bytes(value)
    value = np.empty(shape, dtype=numpy_dtype(code))
    return value, memoryview(value.reshape(-1).view(np.uint8)).cast("B")


_ITEMSIZES = {code: 1 if code == "BOOL" else int(code.split("_")[0].lstrip("FIUBL")) // 8
              for code in NUMPY_CODES.values()}


def itemsize(code: str) -> int:
    """The bytes of one element of safetensors dtype `code` ("BF16": 2, "F8_E4M3": 1, "BOOL": 1)."""
    try:
        return _ITEMSIZES[code]
    except (KeyError, TypeError):
        raise ValueError(f"{code!r} is not a dtype colabkit writes") from None


_TORCH_NAMES = {code: name.removeprefix("torch.") for name, code in TORCH_CODES.items()}


def _torch_dtype(code: str):
    """The torch dtype of safetensors code `code`, importing torch if the notebook hasn't."""
    torch_module = _torch()
    if torch_module is None:
        try:
            import torch as torch_module
        except ImportError as exc:
            raise ColabkitError(f"This checkpoint holds PyTorch tensors and torch cannot be imported here ({exc}): "
                                "install torch to restore it.") from None
    try:
        return getattr(torch_module, _TORCH_NAMES[code])
    except AttributeError:
        raise ColabkitError(f"This checkpoint holds tensors of dtype {_TORCH_NAMES[code]}, which this torch "
                            f"({torch_module.__version__}) lacks: install a newer torch to restore it.") from None


def numpy_dtype(code: str) -> np.dtype:
    name = {c: n for n, c in NUMPY_CODES.items()}[code]
    if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def needs_torch(structure: dict) -> bool:
    """Torch tensors among the saved objects need torch; torch's random state alone does not
    (a job without torch restores the rest and leaves torch's random stream as it is)."""
    import importlib.util

    if _holds_tensor([structure.get("objects"), structure.get("extra")]):
        return True
    return _holds_tensor(structure.get("rng")) and importlib.util.find_spec("torch") is not None


def _holds_tensor(encoded) -> bool:
    """Whether encoded state holds a torch tensor ({"__tensor__": key}, or a dict of them as
    {"__tensors__": key, "keys": [...]}); stops at the first (a state dict of 20,000 tensors is
    not walked, nor written out as JSON to be searched)."""
    pending = [encoded]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            if "__tensor__" in value or "__tensors__" in value:
                return True
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


# -- restoring ---------------------------------------------------------------------------------

def listed_tensors(entry: dict) -> tuple[list, list]:
    """A dict of CPU tensors saved as its list of keys ({"__tensors__": key, "keys": [...]},
    Encoder._dict): its keys, and the file key of each one's tensor, "<key>.<its key>".
    TypeError for keys that are not a list of strings."""
    keys, prefix = entry["keys"], entry["__tensors__"] + "."
    if type(keys) is not list or not set(map(type, keys)) <= {str}:
        raise TypeError("keys that are not strings")
    return keys, list(map(prefix.__add__, keys))


class Decoder:
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
            return self._tensor(value["__tensor__"], value.get("device", "cpu"), value.get("requires_grad"))
        if "__tensors__" in value:
            keys, file_keys = listed_tensors(value)
            return dict(zip(keys, map(self._tensor, file_keys)))
        if "__array__" in value:
            return as_numpy(self.tensors[value["__array__"]], value.get("dtype"))
        if "__tuple__" in value:
            return tuple(self.decode(v) for v in value["__tuple__"])
        if "__dict__" in value:
            return {k: self.decode(v) for k, v in value["__dict__"]}
        if "__numpy_scalar__" in value:
            return np.dtype(value["__numpy_scalar__"]).type(value["value"])
        if "__random__" in value:
            return self._random(value["__random__"])
        if any(k.startswith("__") for k in value):
            raise ValueError(f"unknown entry in state.json: {sorted(value)}")
        return {k: self.decode(v) for k, v in value.items()}  # an adapter's own JSON object

    def _tensor(self, key: str, device: str = "cpu", requires_grad: bool = False):
        tensor = self.tensors[key]
        if not is_tensor(tensor):
            tensor = _torch().from_numpy(np.ascontiguousarray(tensor))
        if self.to_device and device != "cpu":
            try:
                tensor = tensor.to(device)
            except (RuntimeError, AssertionError):  # no such GPU here: keep it on the CPU, and say so
                self.moved_to_cpu.append(key)
        if requires_grad:
            tensor.requires_grad_(True)
        return tensor

    def _random(self, entry) -> RandomStates:
        cpu = Decoder(self.tensors, to_device=False)
        python = cpu.decode(entry["python"])
        n = entry["numpy"]
        numpy_state = (n["name"], as_numpy(cpu.decode(n["keys"])), n["pos"], n["has_gauss"], n["cached_gaussian"])
        torch_state = cuda = None
        if "torch" in entry and _torch() is not None:
            torch_state = cpu.decode(entry["torch"])
            cuda = [cpu.decode(s) for s in entry.get("cuda", [])] or None
        return RandomStates((python[0], tuple(python[1]), python[2]), numpy_state, torch_state, cuda)


def as_numpy(value, dtype: str | None = None) -> np.ndarray:
    """A loaded tensor as a NumPy array of the dtype it was saved with (bfloat16 and float8 by way
    of ml_dtypes, which JAX brings)."""
    if is_tensor(value):
        if dtype in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
            import ml_dtypes

            bits = value.view(_torch().int16 if value.element_size() == 2 else _torch().uint8).numpy()
            return bits.view(getattr(ml_dtypes, dtype))
        return value.numpy()
    return np.asarray(value)


class Refused(Exception):
    """An object's own load_state_dict refused what was saved for it (the notebook's object is not
    the one saved: another architecture or optimizer set-up), not a checkpoint that can't be read.
    `restored`: the state-dict objects loaded before it (read in place, or by their own
    load_state_dict), which hold the checkpoint's state now."""

    def __init__(self, name: str, error: Exception, restored: list[str]):
        super().__init__(f"{name}: {type(error).__name__}: {error}")
        self.name, self.error, self.restored = name, error, restored


@dataclass
class Outcome:
    """What a restore did: values to bind by name, what it could not restore and why, notes for
    the user, the loop's saved extra, and what each framework's next run resumes from."""

    values: dict = field(default_factory=dict)
    unrestored: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    resume: dict = field(default_factory=dict)  # name -> the adapter's state for the framework's next run
    random: RandomStates | None = None


def restore(structure: dict, tensors: dict, objects: dict[str, object], pickled: dict | None,
            loaded_in_place=()) -> Outcome:
    """Put the saved state back: state-dict objects and framework objects in `objects` are restored
    in place (or rebound, for immutable JAX trees), the random states are set. `loaded_in_place`:
    the names of modules the loader read straight into (inplace), whose load_state_dict would only
    copy their tensors onto themselves."""
    decoder = Decoder(tensors)
    outcome, restored = Outcome(), list(loaded_in_place)
    for name, why in structure.get("skipped", {}).items():
        outcome.unrestored[name] = f"it could not be saved ({why})"
    for name, entry in structure["objects"].items():
        kind, target = entry["kind"], objects.get(name)
        if kind == "state_dict":
            if target is None or not has_state_dict(target):
                outcome.unrestored[name] = ("it was saved as a state dict, but there is no such object to load it "
                                            "into; create it first (same class and shapes), then restore")
                continue
            if name not in loaded_in_place:
                saved = decoder.decode(entry["state"])
                try:
                    target.load_state_dict(saved)
                except Exception as exc:
                    raise Refused(name, exc, restored) from exc
                restored.append(name)
        elif kind == "generator":
            if not _is_generator(target):
                outcome.unrestored[name] = "it is a torch.Generator's state: create the generator first, then restore"
                continue
            target.set_state(decoder.decode(entry["state"]).cpu())
        elif kind == "value":
            outcome.values[name] = decoder.decode(entry["value"])
        elif kind == "pickled":
            if pickled is not None and name in pickled:
                outcome.values[name] = pickled[name]
            else:
                outcome.unrestored[name] = (f"it ({entry['type']}) is in objects.pkl, which is only loaded when you "
                                            "trust it (--trust, or trust=True)")
        elif kind == "pickled_state":
            if target is None or not has_state_dict(target):
                outcome.unrestored[name] = ("its state dict was saved, but there is no such object to load it into; "
                                            "create it first (same class and shapes), then restore")
            elif pickled is None or name not in pickled:
                outcome.unrestored[name] = (f"its state dict ({entry['type']}) is in objects.pkl, which is only loaded "
                                            "when you trust it (--trust, or trust=True)")
            else:
                try:
                    target.load_state_dict(pickled[name])
                except Exception as exc:
                    raise Refused(name, exc, restored) from exc
                restored.append(name)
        else:
            restoration = adapters.restore(kind, target, decoder.decode(entry["state"]), name)
            if restoration.problem is not None:
                outcome.unrestored[name] = restoration.problem
            if restoration.rebind is not adapters.KEEP:
                outcome.values[name] = restoration.rebind
            if restoration.resume is not None:
                outcome.resume[name] = restoration.resume
            outcome.notes += restoration.notes
    outcome.random = decoder.decode(structure["rng"])
    outcome.random.restore()
    outcome.extra = decoder.decode(structure.get("extra", {}))
    if decoder.moved_to_cpu:
        outcome.notes.append(f"{len(decoder.moved_to_cpu)} tensor(s) were on a GPU this machine doesn't have and "
                             f"were restored to the CPU (e.g. {decoder.moved_to_cpu[0]}).")
    return outcome
