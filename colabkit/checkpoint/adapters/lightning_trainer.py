"""Lightning `Trainer.fit()` (the `lightning` and `pytorch_lightning` packages): `%checkpoint every
500 steps model` (the LightningModule, or the trainer) saves the run inside `fit()`, and the same
`fit()` resumes it in a fresh kernel.

Saving: a callback's `on_train_batch_end` after a batch that stepped the optimizer is the
consistent point (the global step is counted and a step-interval scheduler has stepped; measured).
What `fit(ckpt_path=...)` reads is captured there through colabkit's staging and store: the
trainer's own checkpoint dictionary (weights, optimizers, schedulers, loop progress, callback
states, a StatefulDataLoader's position), minus the hyperparameters, which resuming `fit()`
doesn't read and which may hold anything. Lightning saves no random state and keeps no position
for a plain DataLoader (measured: a mid-epoch resume gets a new shuffle order); colabkit adds both:
its own random states, and the train loader's epoch-start random state and batch count.

Resuming: `Trainer.fit` is wrapped. With no `ckpt_path` of the user's and a checkpoint of this
run, the dictionary is written to a temporary file and `fit(ckpt_path=file)` runs; the plain
train loader's first epoch is replayed to the same order with the trained batches skipped as
indices, and the random states are put back before the first resumed batch trains.

Limit (measured, as with Lightning's own checkpoints): a dataset whose `__getitem__` draws random
numbers is not resumed exactly, since Lightning prefetches the next batch before a step ends.
"""

from __future__ import annotations

import inspect
import os
import shutil
import sys
import tempfile

import torch

from ...errors import say
from ..state import RandomStates, Unsaveable
from . import Restoration, Run, replace_method

KIND = "lightning.Trainer"
_NOT_FOR_FIT = ("hyper_parameters", "datamodule_hyper_parameters", "hparams_name", "datamodule_hparams_name",
                "hparams_type")


def _packages():
    return [sys.modules[name] for name in ("lightning.pytorch", "pytorch_lightning") if name in sys.modules]


def _is_trainer(value) -> bool:
    return any(isinstance(value, package.Trainer) for package in _packages())


class FitRun(Run):
    def __init__(self, trainer, module):
        self.trainer, self.module = trainer, module
        self.batches = 0  # batches trained in the current epoch
        self.epoch_done = False

    def owns(self, value) -> bool:
        return value is self.trainer or value is self.module

    def step(self) -> int:
        return self.trainer.global_step

    def train_loaders(self) -> list:
        combined = self.trainer.fit_loop._combined_loader
        return list(combined.flattened) if combined is not None else []


def claims(value) -> bool:
    return isinstance(value, FitRun) or _is_trainer(value)


def capture(value, encoder, name: str) -> dict:
    run = value if isinstance(value, FitRun) else FitRun(value, value.lightning_module)
    if run.module is None:  # a trainer that hasn't run fit(): nothing of its own yet
        return {"checkpoint": None}
    checkpoint = run.trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
    for key in _NOT_FOR_FIT:
        checkpoint.pop(key, None)
    try:
        state = {"checkpoint": encoder.encode(checkpoint, f"{name}.checkpoint")}
    except Unsaveable as exc:
        raise Unsaveable(f"its Lightning checkpoint holds {exc}, which colabkit can't save without pickling") from None
    torch_data = sys.modules.get("colabkit.checkpoint.adapters.torch_data")
    plain = [loader for loader in run.train_loaders() if torch_data is not None and torch_data.replayable(loader)]
    if plain:
        position = torch_data.position(plain[0], run.batches)
        if position is not None:
            state["loader"] = encoder.encode({**position, "epoch_done": run.epoch_done}, f"{name}.loader")
    return state


def restore(target, state: dict, name: str) -> Restoration:
    """The weights go into the live module now; the rest waits for the next fit()."""
    if isinstance(target, FitRun):
        target = target.module
    if state["checkpoint"] is None:
        return Restoration()
    if _is_trainer(target):
        target = target.lightning_module
    if not isinstance(target, torch.nn.Module):
        return Restoration(problem=f"it is a Lightning run, and there is no live {name} to restore it into; create "
                                   "the LightningModule first (as the notebook does), then restore")
    target.load_state_dict(state["checkpoint"]["state_dict"])
    return Restoration(resume=state)


def _callback_class(package):
    class ColabkitCheckpoints(package.Callback):
        """Consistent points at step ends; the random states back before the first resumed batch."""

        def __init__(self, checkpointer, run, random):
            self.checkpointer, self.run, self.random = checkpointer, run, random

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.random is not None:
                self.random.restore()
                self.random = None

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.run.batches = batch_idx + 1
            self.run.epoch_done = self.run.batches >= trainer.num_training_batches
            if trainer.global_step != self.checkpointer.step:  # this batch stepped the optimizer
                self.checkpointer.at_step(trainer.global_step)

    return ColabkitCheckpoints


def patch(session, module):
    package_name = module.__name__.rsplit(".trainer.trainer", 1)[0]  # lightning.pytorch or pytorch_lightning
    callback_classes = []  # made at the first fit(): the package is still being imported here

    def make(original):
        signature = inspect.signature(original)

        def fit(self, *args, **kwargs):
            checkpointer = session.checkpointer
            bound = signature.bind(self, *args, **kwargs)
            model = bound.arguments.get("model")
            name = checkpointer.run_name("Trainer.fit()", self, model)
            if name is None:
                with checkpointer.running(None, None, "", ""):
                    return original(*bound.args, **bound.kwargs)
            run, folder, random = FitRun(self, model), None, None
            torch_data = sys.modules.get("colabkit.checkpoint.adapters.torch_data")
            if bound.arguments.get("ckpt_path") is None:
                found = checkpointer.resume_run(name, "Trainer.fit()")
                if found is not None and found[0]["checkpoint"] is not None:
                    saved, restored = found
                    random = RandomStates.capture()  # the checkpoint's
                    folder = tempfile.mkdtemp(prefix="colabkit-fit-resume-")
                    bound.arguments["ckpt_path"] = os.path.join(folder, "colabkit.ckpt")
                    torch.save(saved["checkpoint"], bound.arguments["ckpt_path"])
                    loader = saved.get("loader")
                    if loader is not None and torch_data is not None:
                        if loader["epoch_done"]:  # the next epoch starts from the checkpoint's random state
                            torch_data.expect_first({"random": random.torch, "generator": loader["generator_now"]}, 0)
                        else:
                            torch_data.expect_first(loader, loader["batches"], random)
                        random = None
                    print(f"colabkit: Trainer.fit() resumes from {restored.checkpoint.id} (global step "
                          f"{saved['checkpoint']['global_step']})"
                          + "".join(f"\n  note: {n}" for n in restored.notes), flush=True)
            if not callback_classes:
                callback_classes.append(_callback_class(sys.modules[package_name]))
            callback = callback_classes[0](checkpointer, run, random)
            self.callbacks.append(callback)
            try:
                with checkpointer.running(name, run, "Trainer.fit()",
                                          "starting a new fit from step 0 with the live weights, as Trainer.fit() "
                                          "does without ckpt_path"):
                    return original(*bound.args, **bound.kwargs)
            finally:
                self.callbacks.remove(callback)
                if torch_data is not None and torch_data.clear_first():
                    say("Trainer.fit() resumed in the middle of an epoch, but its train DataLoader was never "
                        "iterated: the batches already trained were not skipped, so this run is not exact.")
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)

        return fit

    return replace_method(module.Trainer, "fit", make)
