"""Keras 3 `model.fit()`: `%checkpoint every 500 steps model` saves inside `fit()`, and the same
`fit()` resumes in a fresh kernel, mid-epoch, exactly (measured on the torch backend).

Keras 3 has its own optimizers, so torch's step hooks never fire inside `fit()` (measured): a
callback gives the consistent points instead, at each batch's end. What is saved: every model
variable (weights, BatchNorm statistics, the seeded Dropout's SeedGenerator state), every
optimizer variable (its iteration count and moments), the metrics' running totals, the epoch,
the batch within it, and the random states when the epoch's shuffle was drawn; as tensors, never
pickled. After an epoch's last batch the save waits for the epoch's end: Keras draws once more
from the random state there (measured).

Resuming, Keras's backup-and-restore way but exact (its BackupAndRestore restarts the epoch and
saves no random state, measured): `fit` is wrapped to add the callback, which restores every
variable when training begins, starts at the saved epoch, draws that epoch's shuffle again from
the saved random state, lets the batches already trained go by untrained (Keras still slices
them: cheap for arrays, not free for a PyDataset; other callbacks see them pass with empty logs),
and puts the checkpoint's random state back before the first batch it trains. On the JAX and TensorFlow backends (not tested here) saves wait
for the epoch's end, since the skip above relies on the torch backend's train_function, and the
next epoch's shuffle is not replayed: said once when fit() starts.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np

from ...errors import ColabkitError
from ..state import RandomStates
from . import Restoration, Run, replace_method

KIND = "keras.Model"


class FitRun(Run):
    def __init__(self, model):
        self.model = model
        self.epoch = 0
        self.batch = 0  # batches trained in the epoch
        self.epoch_random: RandomStates | None = None  # when the epoch's shuffle was drawn

    def owns(self, value) -> bool:
        return value is self.model

    def step(self) -> int:
        optimizer = getattr(self.model, "optimizer", None)
        return int(optimizer.iterations) if optimizer is not None else 0


def claims(value) -> bool:
    return isinstance(value, (FitRun, keras.Model))


def _tensor(variable):
    value = variable.value
    if keras.backend.backend() == "torch":
        return value.detach()
    return np.asarray(keras.ops.convert_to_numpy(value))


def _variables(variables, encoder, name: str) -> list:
    return [[v.path, encoder.encode(_tensor(v), f"{name}/{v.path}")] for v in variables]


def capture(value, encoder, name: str) -> dict:
    run = value if isinstance(value, FitRun) else FitRun(value)
    model, optimizer = run.model, getattr(run.model, "optimizer", None)
    state = {"variables": _variables(model.variables, encoder, name),
             "metrics": _variables(model.metrics_variables, encoder, name),
             "epoch": run.epoch, "batch": run.batch,
             "epoch_random": encoder.encode(run.epoch_random, f"{name}.epoch_random")}
    if optimizer is not None and optimizer.built:
        state["optimizer"] = _variables(optimizer.variables, encoder, name)
    return state


def _assign(variables, saved: list, what: str) -> str | None:
    """Assign saved values to live variables, in order; why not, if their paths or shapes differ."""
    variables = list(variables)
    if [path for path, _ in saved] != [v.path for v in variables]:
        return f"its {what} changed since the save (the layers or their order differ)"
    for variable, (path, value) in zip(variables, saved):
        if tuple(variable.shape) != tuple(value.shape):
            return f"{path} is {list(value.shape)} in the checkpoint but {list(variable.shape)} here"
    for variable, (_, value) in zip(variables, saved):
        variable.assign(value)
    return None


def restore(target, state: dict, name: str) -> Restoration:
    """The model's variables go back now; the optimizer, metrics and position with the next fit()."""
    model = target.model if isinstance(target, FitRun) else target
    if not isinstance(model, keras.Model):
        return Restoration(problem=f"it is a Keras model, and there is no live {name} to restore it into; create "
                                   "and compile it first (as the notebook does), then restore")
    problem = _assign(model.variables, state["variables"], "model")
    return Restoration(problem=problem, resume=state if problem is None else None)


class _Checkpoints(keras.callbacks.Callback):
    def __init__(self, checkpointer, run: FitRun, saved: dict | None, random: RandomStates | None):
        super().__init__()
        self.checkpointer, self.run, self.saved, self.random = checkpointer, run, saved, random
        self.epoch_end_save = False

    def on_train_begin(self, logs=None):
        saved, model = self.saved, self.model
        if saved is None:
            return
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        for variables, key in ((model.variables, "variables"), (model.optimizer.variables, "optimizer")):
            problem = _assign(variables, saved.get(key, []), key)
            if problem is not None:
                raise ColabkitError(f"model.fit() did not resume: {problem}. Build and compile the model as "
                                    "before, then run this again.")
        model._initial_epoch = saved["epoch"]  # read by fit() right after this hook
        if saved["batch"] > 0:
            self._skip(saved["batch"])

    def _skip(self, batches: int) -> None:
        """The batches the checkpoint trained go by untrained; then the checkpoint's random state."""
        model, original, left, random = self.model, self.model.train_function, [batches], self.random

        def train_function(data):
            left[0] -= 1
            if left[0] == 0:
                model.train_function = original
                random.restore()
            return {}

        model.train_function = train_function

    def on_epoch_begin(self, epoch, logs=None):
        saved, self.saved = self.saved, None
        self.run.epoch, self.run.batch = epoch, 0
        if saved is None or saved["batch"] == 0:
            if saved is not None:
                self.random.restore()  # as it was at the end of the epoch before
                self.model._initial_epoch = None
            self.run.epoch_random = RandomStates.capture()  # the epoch's shuffle is drawn from this next
            return
        self.model._initial_epoch = None
        saved["epoch_random"].restore()  # the same shuffle as the interrupted epoch's
        _assign(self.model.metrics_variables, saved["metrics"], "metrics")  # fit() has just reset them
        self.run.batch, self.run.epoch_random = saved["batch"], saved["epoch_random"]

    def on_train_batch_end(self, batch, logs=None):
        if logs == {}:  # a batch the checkpoint had trained
            return
        self.run.batch = batch + 1
        if self.run.batch >= self.params["steps"] or keras.backend.backend() != "torch":
            self.epoch_end_save = True  # Keras draws from the random state once more before the epoch ends
            return
        self.checkpointer.at_step(self.run.step())

    def on_epoch_end(self, epoch, logs=None):
        self.run.epoch, self.run.batch, self.run.epoch_random = epoch + 1, 0, None
        if self.epoch_end_save:
            self.epoch_end_save = False
            self.checkpointer.at_step(self.run.step())

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None


def patch(session, module):
    def make(original):
        signature = inspect.signature(original)

        def fit(self, *args, **kwargs):
            checkpointer = session.checkpointer
            name = checkpointer.run_name("model.fit()", self)
            if name is None:
                return original(self, *args, **kwargs)
            bound = signature.bind(self, *args, **kwargs)
            saved, random = None, None
            found = checkpointer.resume_run(name, "model.fit()")
            if found is not None:
                saved, restored = found
                random = RandomStates.capture()  # the checkpoint's
                print(f"colabkit: model.fit() resumes from {restored.checkpoint.id} (epoch {saved['epoch'] + 1}, "
                      f"{saved['batch']} batch(es) into it)" + "".join(f"\n  note: {n}" for n in restored.notes),
                      flush=True)
            if keras.backend.backend() != "torch":
                checkpointer.say_once("keras-backend", f"model.fit() on Keras's {keras.backend.backend()} backend: "
                                      "checkpoints are taken at epoch ends only, and a resumed run's shuffle order "
                                      "is not replayed (a mid-epoch, exact resume needs the torch backend).")
            run = FitRun(self)
            callbacks = list(bound.arguments.get("callbacks") or [])
            bound.arguments["callbacks"] = callbacks + [_Checkpoints(checkpointer, run, saved, random)]
            with checkpointer.running(name, run, "model.fit()", "starting fit() again from its first epoch with the "
                                      "live weights, as model.fit() does by default"):
                return original(*bound.args, **bound.kwargs)

        return fit

    return replace_method(module.Model, "fit", make)
