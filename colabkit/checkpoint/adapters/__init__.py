"""Framework adapters: how each framework's objects are saved and restored, and how its training
API (`Trainer.train()`, `Trainer.fit()`, `model.fit()`, torch's optimizers and DataLoaders) gives
colabkit consistent points and resumes through its own path.

One module per framework. An adapter module is imported only once the notebook has imported its
framework (found in sys.modules, or by the import hook below as the import happens): colabkit
never imports a framework itself. A module defines

    KIND                            the entry kind it writes in state.json
    claims(value) -> bool           whether a tracked value is its framework's
    capture(value, encoder, name)   the value's state as JSON, tensors pulled out by the encoder
    restore(target, state, name)    -> Restoration, into the live `target` (None in a fresh kernel)

and, where the framework's training API needs hooking, patch(session, module) -> undo, called once
the framework's `module` named in PATCHES is imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from dataclasses import dataclass, field

KEEP = object()  # Restoration.rebind: nothing to bind by name (restored in place, or not at all)

# adapter module -> the modules that define the values it claims: none of them can exist before
VALUES = {
    "hf_trainer": ("transformers.trainer",),
    "lightning_trainer": ("lightning.pytorch.trainer.trainer", "pytorch_lightning.trainer.trainer"),
    "keras_fit": ("keras.src.models.model",),
    "jax_trees": ("jax",),
    "sklearn_estimators": ("sklearn.base",),
}
KINDS = {"transformers.Trainer": "hf_trainer", "lightning.Trainer": "lightning_trainer", "keras.Model": "keras_fit",
         "jax": "jax_trees", "sklearn": "sklearn_estimators"}
# module whose import makes a patch possible -> the adapter module that patches it
PATCHES = {
    "torch": "torch_steps",
    "torch.utils.data": "torch_data",  # the package, complete: its __init__ imports dataloader midway
    "transformers.trainer": "hf_trainer",
    "lightning.pytorch.trainer.trainer": "lightning_trainer",
    "pytorch_lightning.trainer.trainer": "lightning_trainer",
    "keras.src.models.model": "keras_fit",
}


@dataclass
class Restoration:
    rebind: object = KEEP  # a new value to bind the name to (JAX arrays are immutable)
    problem: str | None = None  # why the object was not (fully) restored: it then counts as not restored
    resume: object = None  # what the framework's next train()/fit() resumes from
    notes: list[str] = field(default_factory=list)


class Run:
    """A framework's training run of a tracked object (a trainer and what it trains): captured in
    the tracked object's place while it runs and after, so its optimizer and schedule are saved too."""

    def owns(self, value) -> bool:
        """Whether `value` (a tracked object) is what this run trains or runs."""
        raise NotImplementedError

    def step(self) -> int:
        """The framework's optimizer step count."""
        raise NotImplementedError


def _module(name: str):
    return importlib.import_module(f"{__name__}.{name}")


def claim(value):
    """The adapter module for `value`, if a framework the notebook imported owns it."""
    for name, frameworks in VALUES.items():
        if any(f in sys.modules for f in frameworks):
            adapter = _module(name)
            if adapter.claims(value):
                return adapter
    return None


def restore(kind: str, target, state, name: str) -> Restoration:
    adapter = KINDS.get(kind)
    if adapter is None:
        return Restoration(problem=f"it was saved as {kind!r}, which this colabkit doesn't know: install the "
                                   "colabkit version that wrote it")
    try:
        module = _module(adapter)
    except ImportError as exc:
        return Restoration(problem=f"restoring it needs {exc.name}, which is not installed here")
    return module.restore(target, state, name)


_FILE_LOADERS = (importlib.machinery.SourceFileLoader, importlib.machinery.SourcelessFileLoader,
                 importlib.machinery.ExtensionFileLoader)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Calls back right after one of `names` is imported: a framework imported after %checkpoint
    (even in the cell that trains) is hooked before its training API can run."""

    def __init__(self, names, callback):
        self.names, self.callback = set(names), callback
        self._finding = threading.local()

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.names or getattr(self._finding, "name", None) == fullname:
            return None
        self._finding.name = fullname
        try:
            spec = importlib.util.find_spec(fullname)  # the other finders' answer
        finally:
            self._finding.name = None
        loader = spec.loader if spec is not None else None
        if not isinstance(loader, _FILE_LOADERS):  # made for this one module, so it can be wrapped
            return None
        original, callback = loader.exec_module, self.callback

        def exec_module(module):
            original(module)
            callback(fullname)

        loader.exec_module = exec_module
        return spec


def hook(session):
    """Apply every patch whose framework is imported, now or as it is imported; returns the undo."""
    undo, done, lock = [], set(), threading.Lock()

    def apply(module_name: str) -> None:
        with lock:
            if module_name in done or module_name not in sys.modules:
                return
            done.add(module_name)
        undo.append(_module(PATCHES[module_name]).patch(session, sys.modules[module_name]))

    watcher = _AfterImport(PATCHES, apply)
    sys.meta_path.insert(0, watcher)
    for module_name in PATCHES:
        apply(module_name)

    def unhook() -> None:
        if watcher in sys.meta_path:
            sys.meta_path.remove(watcher)
        while undo:
            undo.pop()()

    return unhook


def replace_method(owner, name: str, make):
    """Set owner.name to make(original) (an inherited one too); the undo puts things back as they
    were if ours is still there."""
    own = owner.__dict__.get(name)
    wrapper = make(getattr(owner, name))
    setattr(owner, name, wrapper)

    def undo():
        if owner.__dict__.get(name) is wrapper:
            if own is None:
                delattr(owner, name)
            else:
                setattr(owner, name, own)

    return undo
