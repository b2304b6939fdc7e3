"""How the job's Python starts: one process, or one per GPU under the container's torchrun.

torchrun starts the notebook once per GPU (and machine). Training that knows it is one of several
processes (a Hugging Face Trainer, Lightning, accelerate, torch.distributed) then splits the work;
a plain loop on `cuda` would instead train the same thing N times, all on GPU 0. So several
processes are started only for training that is distributed-aware, found in the cells' code;
otherwise the job runs one process and says that the other GPUs will idle.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from ..errors import ColabkitError
from . import hardware, pricing

# What in a notebook's code makes its training distributed-aware, by the name it is used under.
AWARE_CALLS = {
    "Trainer": "a Hugging Face or Lightning Trainer", "Seq2SeqTrainer": "a Hugging Face Trainer",
    "SFTTrainer": "TRL's SFTTrainer", "Accelerator": "accelerate", "notebook_launcher": "accelerate",
    "init_process_group": "torch.distributed", "DistributedDataParallel": "torch.distributed",
}
AWARE_MODULES = ("accelerate", "torch.distributed", "lightning", "pytorch_lightning", "deepspeed")


def distributed_aware(cells) -> str | None:
    """What makes these cells' training distributed-aware (e.g. "a Hugging Face or Lightning
    Trainer"), or None for a plain loop."""
    for cell in cells:
        for node in ast.walk(cell.tree) if cell.tree is not None else ():
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if name in AWARE_CALLS:
                    return AWARE_CALLS[name]
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                imported = [a.name for a in node.names]
                for name in imported:
                    if name in AWARE_CALLS:  # from transformers import Trainer
                        return AWARE_CALLS[name]
                modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else imported
                for module in modules:
                    if module.startswith(AWARE_MODULES):
                        return module.split(".")[0] if module != "torch.distributed" else module
    return None


@dataclass(frozen=True)
class Launch:
    gpus: int  # per instance
    distributed: bool  # one process per GPU and machine, under torchrun
    note: str | None = None  # what the person should know about it


def decide(instance_type: str, instances: int, cells, gpus_given: int | None = None) -> Launch:
    gpus = hardware.gpus(instance_type, gpus_given)
    if instances == 1 and gpus <= 1:
        return Launch(gpus, False)
    aware = distributed_aware(cells)
    if aware is not None:
        return Launch(gpus, True, f"{instances * max(gpus, 1)} training processes under torchrun "
                                  f"({instances} x {instance_type}): the notebook trains with {aware}")
    if instances > 1:
        raise ColabkitError(
            f"--instances {instances} would run this notebook on {instances} machines, but its training is not "
            "distributed-aware (no Trainer, Lightning, accelerate or torch.distributed in its cells): each machine "
            "would train the same thing alone, and you would pay for all of them. Use one instance, or train with "
            "one of those.")
    single = pricing.one_gpu_type_like(instance_type)
    instead = f" {single.describe()} has one GPU like these" if single else ""
    if single is not None and single.name in pricing.PRICES:
        instead += f", for ${pricing.PRICES[single.name]:.2f}/h"
    return Launch(gpus, False, f"one training process: the notebook's training is not distributed-aware (no Trainer, "
                               f"Lightning, accelerate or torch.distributed), so {gpus - 1} of the {gpus} GPUs of "
                               f"{instance_type} will idle.{instead}.")
