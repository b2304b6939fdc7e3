"""The stall per save inside Hugging Face `Trainer.train()` and Lightning `Trainer.fit()`: what a
colabkit save at a step end costs the training thread (capture and staging; the writer process
does the rest), against the framework's own synchronous save at a step end of the same run
(`Trainer._save_checkpoint`, what `save_strategy="steps"` does; `trainer.save_checkpoint`, what
`ModelCheckpoint(every_n_train_steps=...)` does), into the same folder's disk.

Both are timed at alternate step ends of one training run, the writer idle before each (it is
waited for outside the timed part), and the medians after each side's first save compared. Models are built from configs (no downloads):
a BERT of --hidden units and --layers, and a Lightning MLP of about the same size; with Adam's two
moments a checkpoint is about three times the weights.

    .test-env/venv/bin/python benchmarks/bench_framework_saves.py [--hidden 384 --layers 6]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")


def activate(store: Path, names: dict):
    from colabkit.checkpoint import session
    from colabkit.checkpoint.checkpointer import Checkpointer

    return session.activate(Checkpointer(every="1h", to=store, **names))  # saves only when asked


def timed_stalls(checkpointer, saves: list):
    """Time each save colabkit takes at a step end (capture and staging), without the writer's work."""
    at_step = checkpointer.at_step

    def timed(step, final=False):
        before = checkpointer._saving_step
        start = time.perf_counter()
        at_step(step, final)
        if checkpointer._saving_step != before or final:
            saves.append(time.perf_counter() - start)

    checkpointer.at_step = timed


def bench_trainer(hidden: int, layers: int, folder: Path, rounds: int) -> tuple[list, list, int]:
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=8000, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden, max_position_embeddings=64, num_labels=2))
    data = [{"input_ids": torch.randint(0, 8000, (32,)), "labels": torch.tensor(i % 2)} for i in range(64)]
    ours, theirs = [], []
    checkpointer = activate(folder / "colabkit", {"model": model})
    timed_stalls(checkpointer, ours)

    class Saves(TrainerCallback):
        """Odd steps: colabkit's save; even steps: the Trainer's own. The writer idle before each."""

        def __init__(self, trainer_ref):
            self.trainer_ref = trainer_ref

        def on_step_end(self, args, state, control, **kwargs):
            checkpointer.wait()
            if state.global_step % 2:
                checkpointer.request()  # taken by colabkit's own step-end callback, after this one
            else:
                start = time.perf_counter()
                self.trainer_ref[0]._save_checkpoint(kwargs["model"], trial=None)
                theirs.append(time.perf_counter() - start)

    ref = []
    args = TrainingArguments(output_dir=str(folder / "hf"), max_steps=2 * rounds, per_device_train_batch_size=4,
                             save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
                             logging_steps=1000, save_total_limit=2)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[Saves(ref)])
    ref.append(trainer)
    trainer.train()
    checkpointer.wait()
    size = checkpointer.last.get("bytes", 0)
    from colabkit.checkpoint import session

    session.deactivate()
    return ours[:rounds], theirs, size


def bench_fit(hidden: int, layers: int, folder: Path, rounds: int) -> tuple[list, list, int]:
    import lightning as L

    class Wide(L.LightningModule):
        def __init__(self):
            super().__init__()
            width = 4 * hidden
            blocks = [torch.nn.Linear(width, width) for _ in range(layers)]
            self.net = torch.nn.Sequential(*blocks)

        def training_step(self, batch, index):
            return self.net(batch[0]).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-4)

    torch.manual_seed(0)
    module = Wide()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 4 * hidden)), batch_size=4)
    ours, theirs = [], []
    checkpointer = activate(folder / "colabkit-fit", {"module": module})
    timed_stalls(checkpointer, ours)

    class Saves(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, index):
            checkpointer.wait()
            if trainer.global_step % 2:
                checkpointer.request()
            else:
                start = time.perf_counter()
                trainer.save_checkpoint(folder / "lightning" / f"step-{trainer.global_step}.ckpt")
                theirs.append(time.perf_counter() - start)

    trainer = L.Trainer(max_steps=2 * rounds, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", devices=1, callbacks=[Saves()])
    trainer.fit(module, loader)
    checkpointer.wait()
    size = checkpointer.last.get("bytes", 0)
    from colabkit.checkpoint import session

    session.deactivate()
    return ours[:rounds], theirs, size


def report(name: str, ours: list, theirs: list, size: int) -> None:
    """Medians after each side's first save (colabkit's allocates its staging buffer, once a session)."""
    a, b = statistics.median(ours[1:]), statistics.median(theirs[1:])
    print(f"{name}: checkpoint {size / 2**20:.0f} MiB; colabkit stall per save {a * 1e3:.0f} ms (median of "
          f"{len(ours) - 1}; the first, which allocates the staging buffer: {ours[0] * 1e3:.0f} ms), the "
          f"framework's own save {b * 1e3:.0f} ms (median of {len(theirs) - 1}; first {theirs[0] * 1e3:.0f} ms): "
          f"{b / a:.1f}x less stall")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    from colabkit import runtime

    runtime.current()
    with tempfile.TemporaryDirectory(dir=os.getcwd(), prefix=".bench-framework-") as tmp:
        folder = Path(tmp)
        report("Trainer.train()", *bench_trainer(args.hidden, args.layers, folder, args.rounds))
        report("Trainer.fit()", *bench_fit(args.hidden, args.layers, folder, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
