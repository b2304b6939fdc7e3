"""Restoring a PyTorch module's tensors straight into the module's own memory.

Otherwise a restore reads each tensor into new memory and load_state_dict copies it into the
module: for 20,000 tensors that is 20,000 allocations (their pages faulted in as they are read),
a second pass over every byte and load_state_dict's work per key, three times the read itself
(benchmarks/bench_checkpoint_cost.py). When a module is plain (nn.Module's own state_dict and
load_state_dict all the way down: no subclass that overrides how it saves or loads, no state-dict
hooks, no extra state; BatchNorm's override counts as nn.Module's own, `_loads_as_module`) and
what was saved matches it exactly (the same keys, none missing or extra;
each tensor's dtype and shape; every live one a plain contiguous CPU tensor), load_state_dict would
do nothing but copy each saved tensor's bytes into its parameter or buffer. So the loader reads
them there, verifying each as it is read, and load_state_dict is not called (the version counters
it would bump are bumped). Anything else, the optimizer's state among it, is loaded by its own
load_state_dict as before.

The price: damage is found as the bytes are read, after the tensors before it went into the
module. The restore then says so and goes back to an older checkpoint, which loads the whole
module again; when none does, it says the module holds a mix (checkpointer.restore).
"""

from __future__ import annotations

import collections
import sys
from itertools import repeat
from operator import attrgetter, is_not, itemgetter, methodcaller

from .state import _torch_dtype as torch_dtype  # one table of dtype codes, state's
from .state import listed_tensors

_HOOKS = ("_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")
_OWN = ("state_dict", "load_state_dict", "_save_to_state_dict", "_load_from_state_dict", "get_extra_state")


class Plan:
    """Which saved tensors go straight into which live ones; filled by `place`, which codec.read
    calls once it has read what the checkpoint holds."""

    def __init__(self, targets: dict):
        self.targets = targets
        self.objects: dict[str, list] = {}  # name -> its live tensors, all loaded in place

    def place(self, structure: dict, index) -> list | None:
        """`index`: the checkpoint's tensors (codec.IndexColumns: each one's key, dtype code and
        shape). The live tensor each of its rows is read into (None for a row read into new
        memory); None when none is."""
        torch = sys.modules.get("torch")
        if torch is None or getattr(torch.__future__, "get_swap_module_params_on_conversion", bool)():
            return None  # load_state_dict would swap the tensors, not copy into them (torch 2.3 on can)
        into = None
        objects = structure.get("objects") if isinstance(structure, dict) else None
        for name, entry in objects.items() if isinstance(objects, dict) else ():
            target = self.targets.get(name)
            if not isinstance(entry, dict) or entry.get("kind") != "state_dict" \
                    or not isinstance(target, torch.nn.Module):
                continue
            live = _live_tensors(target, torch)
            matched = live is not None and _matched(entry.get("state"), live, index, torch)
            if matched:
                rows, tensors = matched
                if into is None:
                    into = [None] * len(index.keys)
                elif any(map(is_not, index.pick(into, rows), repeat(None))):
                    continue  # rows another module took (an edited state.json): left to load_state_dict
                if isinstance(rows, slice):
                    into[rows] = tensors
                else:
                    collections.deque(map(into.__setitem__, rows, tensors), 0)
                self.objects[name] = tensors
        return into


def bump_versions(tensors: list) -> None:
    """What load_state_dict's copies would have left beside the bytes read into `tensors` in
    place: each one's version counter bumped (autograd then refuses a graph that used the values
    from before the restore)."""
    increment = sys.modules["torch"].autograd.graph.increment_version
    try:
        increment(tensors)
    except TypeError:  # torch before 2.5 takes one tensor at a time
        for tensor in tensors:
            increment(tensor)


def _live_tensors(module, torch) -> dict | None:
    """What module.state_dict() would hold (key -> the parameter or buffer itself, undetached),
    when the module is plain all the way down; None otherwise."""
    base, found = torch.nn.Module, {}
    stack = [(module, "")]
    while stack:
        m, prefix = stack.pop()
        cls = type(m)
        own = [name for name in _OWN if getattr(cls, name, None) is not getattr(base, name)]
        if own and not (own == ["_load_from_state_dict"] and _loads_as_module(m, torch)) \
                or any(getattr(m, hooks, True) for hooks in _HOOKS) or not vars(m).keys().isdisjoint(_OWN):
            return None  # (the last: a loader set on the instance, as some libraries patch them)
        for name, tensor in m._parameters.items():
            if tensor is not None:
                found[prefix + name] = tensor
        for name, tensor in m._buffers.items():
            if tensor is not None and name not in m._non_persistent_buffers_set:
                found[prefix + name] = tensor
        stack.extend(reversed([(child, f"{prefix}{name}.") for name, child in m._modules.items() if child is not None]))
    return found  # in state_dict's order: each module's own, then its children's, depth first


def _loads_as_module(module, torch) -> bool:
    """Whether a module's own _load_from_state_dict does just what nn.Module's does with a state
    dict of exactly the module's keys (what _matched asks for). _NormBase's (BatchNorm1d/2d/3d,
    SyncBatchNorm; not InstanceNorm, which has its own) only adds num_batches_tracked to a state
    dict that lacks it, and one of the module's keys has it whenever the module has the buffer. A
    module tracking running stats without the buffer (set to None) would have load_state_dict
    refuse the key added: left to load_state_dict, to say so."""
    norm = getattr(getattr(torch.nn.modules, "batchnorm", None), "_NormBase", None)
    return norm is not None and type(module)._load_from_state_dict is norm._load_from_state_dict \
        and (not module.track_running_stats or module.num_batches_tracked is not None)


def _matched(state, live: dict, index, torch) -> tuple[slice | list, list] | None:
    """The index rows of a saved state dict's tensors and the live tensor for each, when it is
    exactly the live one's keys with tensors of the same dtype and shape, each live one a plain
    contiguous CPU tensor load_state_dict would copy into; None otherwise. (Column by column,
    each check one pass in C: 20,000 tensors.)"""
    try:
        keys, file_keys = _saved_keys(state)
        in_order = keys == list(live)  # as the same module saves them: no set needed
        if not in_order and (len(keys) != len(live) or set(keys) != live.keys()):  # every live key, once
            return None
        rows = index.rows_of(file_keys)
        codes = index.pick(index.codes, rows)
        shapes = list(map(tuple, index.pick(index.shapes, rows)))  # as torch.Size compares
        dtypes = {code: torch_dtype(code) for code in set(codes)}
    except (TypeError, KeyError, ValueError, AttributeError):  # not tensors alone, or a dtype this torch lacks
        return None
    tensors, tensor = list(live.values()) if in_order else list(map(live.__getitem__, keys)), torch.Tensor
    if not set(map(type, tensors)) <= {tensor, torch.nn.Parameter} \
            or not all(map(attrgetter("is_cpu"), tensors)) \
            or not set(map(attrgetter("layout"), tensors)) <= {torch.strided} \
            or not (set(map(attrgetter("dtype"), tensors)) <= set(dtypes.values()) if len(dtypes) == 1 else
                    list(map(attrgetter("dtype"), tensors)) == list(map(dtypes.__getitem__, codes))) \
            or list(map(attrgetter("shape"), tensors)) != shapes \
            or not all(map(tensor.is_contiguous, tensors)) or any(map(tensor.is_inference, tensors)) \
            or any(map(tensor.is_neg, tensors)):
        return None  # (a complex tensor, whose conjugate bit this doesn't check, has no code: never saved)
    if not isinstance(rows, slice) and len(set(rows)) != len(rows):
        return None  # a file key twice
    if not _ties_agree(tensors, rows, index):
        return None
    return rows, tensors


def _ties_agree(tensors: list, rows, index) -> bool:
    """Whether a live tensor under two keys (tied weights: one Parameter in two modules) was saved
    with the same bytes under both. Saved untied, both rows would be read into its memory, one
    over the other while the first is being hashed; load_state_dict keeps the last key's. (By
    identity, 1 ms for 20,000 tensors; their memory addresses would take 6. Distinct tensors over
    the same memory are not looked for.)"""
    identities = list(map(id, tensors))
    if len(set(identities)) == len(identities):
        return True
    hashes: dict = {}
    for identity, row in zip(identities, range(rows.start, rows.stop) if isinstance(rows, slice) else rows):
        saved = index.hashes_of(row, row + 1)
        if hashes.setdefault(identity, saved) != saved:
            return False
    return True


def _saved_keys(state) -> tuple[list, list]:
    """A saved state dict's keys and the file key of each one's tensor: {"__tensors__": key,
    "keys": [...]} (state.listed_tensors), or {"__dict__": [[key, {"__tensor__": file key}], ...]}
    with no device but the CPU (format 3 writes every state dict so, format 4 one with any other
    value); TypeError or KeyError for anything else."""
    if "__tensors__" in state:
        return listed_tensors(state)
    pairs = state["__dict__"]
    if not set(map(len, pairs)) <= {2}:
        raise TypeError("items that are not pairs")
    entries = list(map(itemgetter(1), pairs))
    if not set(map(methodcaller("get", "device", "cpu"), entries)) <= {"cpu"}:
        raise TypeError("a tensor saved off the CPU")
    return list(map(itemgetter(0), pairs)), list(map(itemgetter("__tensor__"), entries))
