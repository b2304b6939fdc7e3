"""Hugging Face `transformers.Trainer`: `%checkpoint every 500 steps model` (or `trainer`) saves the
whole run inside `trainer.train()`, and the same `trainer.train()` resumes it in a fresh kernel.

Saving: a callback's `on_step_end` is the consistent point (the scheduler has stepped, the global
step is counted, the gradients are zeroed; measured). What the Trainer's own resume needs is
captured there through colabkit's staging and store: the model's weights, the optimizer, the
scheduler, the gradient scaler, the TrainerState (global step, epoch, logs, stateful callbacks),
and the random states (colabkit's own). While `train()` runs, torch's step hooks stand down: they
fire inside it with the scheduler not yet stepped.

Resuming: `Trainer.train` is wrapped. With no `resume_from_checkpoint` of the user's and a
checkpoint of this run, the Trainer's own files are written from it into a temporary folder
(model.safetensors, written by every rank, optimizer.pt, scheduler.pt, scaler.pt, rng_state.pth,
trainer_state.json) and `train(resume_from_checkpoint=folder)` runs: the Trainer skips the
batches already trained (as indices, through accelerate) and restores its random states where
it does, exactly as resuming from its own checkpoint-N folder (measured: bit-identical weights,
optimizer, scheduler, step and random stream). A checkpoint that covers the whole run (the save at
its end) does not go back to `train()`, which would train one step more (measured): it is
restored and said. `resume_from_checkpoint=False` starts afresh.

Limit (the Trainer's, measured with its own checkpoints too): a dataset whose `__getitem__` draws
random numbers is not resumed exactly, since the Trainer fetches the first resumed batch before
it restores the random states.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import safetensors.torch
import torch
from transformers import Trainer, TrainerCallback, TrainerState
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import TrainOutput

from ...errors import say
from ..state import RandomStates
from . import Restoration, Run, replace_method

KIND = "transformers.Trainer"


class TrainerRun(Run):
    def __init__(self, trainer):
        self.trainer = trainer

    def owns(self, value) -> bool:
        return value is self.trainer or value is self.trainer.model

    def step(self) -> int:
        return self.trainer.state.global_step


def claims(value) -> bool:
    return isinstance(value, (TrainerRun, Trainer))


def _trainer_state(trainer) -> dict:
    """The TrainerState as its trainer_state.json, with the stateful callbacks' state as now (what
    the Trainer's own _save_checkpoint writes)."""
    document = dataclasses.asdict(trainer.state)
    by_class: dict[str, list] = {}
    for callback in trainer.callback_handler.callbacks + [trainer.control]:
        if isinstance(callback, ExportableState):
            by_class.setdefault(type(callback).__name__, []).append(callback.state())
    document["stateful_callbacks"] = {k: v[0] if len(v) == 1 else v for k, v in by_class.items()}
    return document


def capture(value, encoder, name: str) -> dict:
    trainer = value.trainer if isinstance(value, TrainerRun) else value
    state = {"model": encoder.encode(trainer.model.state_dict(), f"{name}.model"),
             "trainer_state": encoder.encode(_trainer_state(trainer), f"{name}.trainer_state")}
    if trainer.optimizer is not None:
        state["optimizer"] = encoder.encode(trainer.optimizer.state_dict(), f"{name}.optimizer")
    if trainer.lr_scheduler is not None:
        state["scheduler"] = encoder.encode(trainer.lr_scheduler.state_dict(), f"{name}.scheduler")
    scaler = getattr(trainer.accelerator, "scaler", None)
    if scaler is not None:
        state["scaler"] = encoder.encode(scaler.state_dict(), f"{name}.scaler")
    return state


def restore(target, state: dict, name: str) -> Restoration:
    """The weights go into the live model now; the rest waits for the next train()."""
    if isinstance(target, TrainerRun):
        target = target.trainer
    model = target.model if isinstance(target, Trainer) else target
    if not isinstance(model, torch.nn.Module):
        return Restoration(problem=f"it is a Trainer's run, and there is no live {name} to restore it into; create "
                                   "the model and the Trainer first (as the notebook does), then restore")
    model.load_state_dict(state["model"])
    return Restoration(resume=state)


def _covers_the_run(saved: dict, args) -> bool:
    """Whether the checkpoint finished the run the live Trainer asks for: its last step reached,
    and no more steps or epochs asked now (a run extended after it finished, max_steps=8 then 16,
    was said to have nothing left, and trained nothing; HF's own resume trains the rest)."""
    document = saved["trainer_state"]
    if document.get("max_steps", 0) <= 0 or document["global_step"] < document["max_steps"]:
        return False
    if args.max_steps > 0:
        return args.max_steps <= document["max_steps"]
    return args.num_train_epochs <= document.get("num_train_epochs", args.num_train_epochs)


def _write_folder(trainer, saved: dict, random: RandomStates, folder: str) -> None:
    """The Trainer's own checkpoint files, as its resume_from_checkpoint reads them. Every rank
    writes its own (Trainer.save_model writes on the main process only, and each host has its own
    disk; save_pretrained too, once torch.distributed is up): the live model's weights, restored
    already, as the model.safetensors the Trainer loads non-strictly (tied weights written once)."""
    model = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
    safetensors.torch.save_model(model, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    torch.save(saved["optimizer"], os.path.join(folder, "optimizer.pt"))
    torch.save(saved["scheduler"], os.path.join(folder, "scheduler.pt"))
    if "scaler" in saved:
        torch.save(saved["scaler"], os.path.join(folder, "scaler.pt"))
    rng = {"python": random.python, "numpy": random.numpy, "cpu": random.torch}
    if torch.cuda.is_available() and random.cuda:
        rng["cuda"] = random.cuda[torch.cuda.current_device()]
    torch.save(rng, os.path.join(folder, "rng_state.pth"))
    with open(os.path.join(folder, "trainer_state.json"), "w") as f:
        json.dump(saved["trainer_state"], f)


class _StepEnd(TrainerCallback):
    def __init__(self, checkpointer):
        self.checkpointer = checkpointer

    def on_step_end(self, args, state, control, **kwargs):
        self.checkpointer.at_step(state.global_step)


def _finished(trainer, saved: dict, checkpoint_id: str) -> TrainOutput:
    document = saved["trainer_state"]
    trainer.state = TrainerState(**document)
    ends = [entry for entry in document.get("log_history", []) if "train_loss" in entry]
    metrics = dict(ends[-1]) if ends else {}
    say(f"Trainer.train(): {checkpoint_id} covers the whole run ({document['global_step']} of "
        f"{document['max_steps']} steps), so there is nothing left to train; the model has its final weights.")
    return TrainOutput(document["global_step"], metrics.get("train_loss", 0.0), metrics)


def patch(session, module):
    def make(original):
        def train(self, resume_from_checkpoint=None, *args, **kwargs):
            checkpointer = session.checkpointer
            name = checkpointer.run_name("Trainer.train()", self, self.model)
            if name is None:
                with checkpointer.running(None, None, "", ""):
                    return original(self, resume_from_checkpoint, *args, **kwargs)
            folder = None
            if resume_from_checkpoint is None:
                found = checkpointer.resume_run(name, "Trainer.train()")
                if found is not None:
                    saved, restored = found
                    if _covers_the_run(saved, self.args):
                        return _finished(self, saved, restored.checkpoint.id)
                    folder = tempfile.mkdtemp(prefix="colabkit-trainer-resume-")
                    _write_folder(self, saved, RandomStates.capture(), folder)
                    resume_from_checkpoint = folder
                    print(f"colabkit: Trainer.train() resumes from {restored.checkpoint.id} (global step "
                          f"{saved['trainer_state']['global_step']})"
                          + "".join(f"\n  note: {n}" for n in restored.notes), flush=True)
            callback = _StepEnd(checkpointer)
            self.add_callback(callback)
            try:
                with checkpointer.running(name, TrainerRun(self), "Trainer.train()",
                                          "starting a new run from step 0 with the live weights, as "
                                          "Trainer.train() does without a checkpoint"):
                    return original(self, resume_from_checkpoint, *args, **kwargs)
            finally:
                self.remove_callback(callback)
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)

        return train

    return replace_method(module.Trainer, "train", make)
