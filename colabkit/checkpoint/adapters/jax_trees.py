"""JAX arrays and pytrees (Flax linen params, Flax nnx modules and optimizers, optax states).

Saved leaf by leaf as tensors keyed by their tree path (`['opt_state'][1].mu['Dense_0']['kernel']`),
typed PRNG keys as their key data and implementation, Python scalars as JSON; never pickled. A
restore rebuilds the live variable's own tree (its namedtuple types, dtypes, devices) from those
leaves, so the tree structure comes from the notebook's code and no code runs from the file:
create the variable first (as the notebook does before its loop), then restore into it.
"""

from __future__ import annotations

import sys

import jax
import numpy as np

from ..state import Unsaveable
from . import Restoration

KIND = "jax"


def _nnx_node(value) -> bool:
    """A Flax nnx Module, Optimizer or Rngs: mutable, restored in place through nnx.update."""
    nnx = sys.modules.get("flax.nnx")
    base = getattr(nnx, "Pytree", None) or getattr(nnx, "Object", None)
    return base is not None and isinstance(value, base)


def claims(value) -> bool:
    if isinstance(value, (str, bytes, int, float, bool)) or value is None:
        return False
    if _nnx_node(value):
        return True
    try:
        leaves = jax.tree_util.tree_leaves(value)
    except Exception:  # not a tree JAX can walk (a dict with keys it can't sort): not a JAX tree
        return False
    return any(isinstance(leaf, jax.Array) for leaf in leaves)


def _tree(value):
    if _nnx_node(value):
        from flax import nnx

        return nnx.state(value)
    return value


def _is_key(leaf) -> bool:
    return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def capture(value, encoder, name: str) -> dict:
    leaves = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(_tree(value))[0]:
        where = jax.tree_util.keystr(path)
        key = f"{name}{where}"
        if _is_key(leaf):
            entry = {"key_impl": str(jax.random.key_impl(leaf)),
                     "array": encoder.encode(np.asarray(jax.random.key_data(leaf)), key)}
        elif isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            entry = {"array": encoder.encode(np.asarray(leaf), key)}  # a view on the CPU; staged at once
        elif leaf is None or isinstance(leaf, (bool, int, float, str)):
            entry = {"value": leaf}
        else:
            raise Unsaveable(f"its leaf {where} is a {type(leaf).__name__}, which is not an array")
        leaves.append([where, entry])
    return {"leaves": leaves}


class _Mismatch(Exception):
    pass


def _leaf(entry, live, where: str):
    """The saved leaf in the live leaf's form (array type, dtype, device)."""
    if "value" in entry:
        return entry["value"]
    array = np.asarray(entry["array"])
    if "key_impl" in entry:
        if not _is_key(live):
            raise _Mismatch(f"{where} was saved as a PRNG key, but the live leaf is not one")
        key = jax.random.wrap_key_data(array, impl=entry["key_impl"])
        return jax.device_put(key, live.sharding)
    shape, dtype = getattr(live, "shape", None), getattr(live, "dtype", None)
    if shape is not None and (tuple(shape) != array.shape or np.dtype(dtype) != array.dtype):
        raise _Mismatch(f"{where} is {array.dtype}{list(array.shape)} in the checkpoint but "
                        f"{np.dtype(dtype)}{list(shape)} here")
    if isinstance(live, jax.Array):
        return jax.device_put(array, live.sharding)
    if isinstance(live, np.generic):
        return array[()]
    return array


def restore(target, state: dict, name: str) -> Restoration:
    if target is None:
        return Restoration(problem=f"it is a JAX tree, and there is no live {name} to restore it into; create it "
                                   "first (as the notebook does before training), then restore")
    saved = {where: entry for where, entry in state["leaves"]}
    pairs, treedef = jax.tree_util.tree_flatten_with_path(_tree(target))
    leaves = []
    for path, live in pairs:
        where = jax.tree_util.keystr(path)
        if where not in saved:
            return Restoration(problem=f"the live {name} has a leaf {where} that the checkpoint lacks (its "
                                       "structure changed since the save)")
        try:
            leaves.append(_leaf(saved.pop(where), live, where))
        except _Mismatch as exc:
            return Restoration(problem=f"it changed since the save: {exc}")
    if saved:
        return Restoration(problem=f"the checkpoint has leaves the live {name} lacks (e.g. {next(iter(saved))})")
    tree = jax.tree_util.tree_unflatten(treedef, leaves)
    if _nnx_node(target):
        from flax import nnx

        nnx.update(target, tree)
        return Restoration()
    return Restoration(rebind=tree)
