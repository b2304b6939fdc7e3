"""Run an exported job on this machine, laid out as SageMaker lays out a training container.

No Docker and no AWS: a folder stands in for /opt/ml (the job's colabkit finds it through
SAGEMAKER_BASE_DIR, as the training toolkit does), with the input config files, the channels,
model/, output/ and checkpoints/ holding the notebook's latest checkpoint, so `resumable()`
continues where the notebook stopped. The job runs with this Python; its output streams into
the notebook; the final checkpoint and the model files come back to the notebook's storage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import storage
from ..checkpoint.mirror import copy_checkpoint
from ..checkpoint.store import CheckpointStore
from ..errors import ColabkitError
from .convert import SourceFolder

HOST = "algo-1"


@dataclass(frozen=True)
class LocalRun:
    job_name: str
    base: Path  # the /opt/ml stand-in
    exit_code: int
    final_checkpoint: str | None  # the checkpoint brought back into the notebook's store
    model_files: tuple[str, ...]

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


def _layout(base: Path, source: SourceFolder, job_name: str, channels: dict[str, Path]) -> Path:
    config = base / "input" / "config"
    config.mkdir(parents=True)
    code = base / "code"
    shutil.copytree(source.path, code)
    # Each hyperparameter value is a JSON-encoded string: the training toolkit json.loads each one.
    hyperparameters = {"sagemaker_program": "entry.py", "sagemaker_submit_directory": str(code),
                       "sagemaker_job_name": job_name, "sagemaker_region": "local"}
    (config / "hyperparameters.json").write_text(json.dumps({k: json.dumps(v) for k, v in hyperparameters.items()}))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": HOST, "hosts": [HOST], "network_interface_name": "eth0"}))
    (config / "inputdataconfig.json").write_text(json.dumps(
        {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
         for name in channels}))
    for name, folder in channels.items():
        shutil.copytree(folder, base / "input" / "data" / name)
    for folder in ("model", "output/data", "checkpoints"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    return code


def _environment(base: Path, job_name: str, channels: dict[str, Path], extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLAB_", "KAGGLE_", "JPY_"))}
    env.update({
        "SAGEMAKER_BASE_DIR": str(base), "TRAINING_JOB_NAME": job_name, "SM_CURRENT_HOST": HOST,
        "SM_HOSTS": json.dumps([HOST]), "SM_MODEL_DIR": str(base / "model"),
        "SM_OUTPUT_DATA_DIR": str(base / "output" / "data"), "SM_CHANNELS": json.dumps(sorted(channels)),
        "SM_NUM_CPUS": str(os.cpu_count() or 1), "SM_NUM_GPUS": "0", "PYTHONUNBUFFERED": "1",
    })
    env.update({f"SM_CHANNEL_{name.upper()}": str(base / "input" / "data" / name) for name in channels})
    env.update(extra)  # the request's Environment
    return env


def run(source: SourceFolder, checkpoints: CheckpointStore | None, base: Path, job_name: str,
        channels: dict[str, Path] | None = None, environment: dict[str, str] | None = None,
        echo=print) -> LocalRun:
    """Run the job with `base` as its /opt/ml; `checkpoints` is the notebook's store (read, then updated)."""
    channels = channels or {}
    base = Path(base)
    if base.exists():
        raise ColabkitError(f"{base} exists already: choose another job name or remove it.")
    code = _layout(base, source, job_name, channels)
    # Where the job's colabkit keeps its checkpoints: its storage is the /opt/ml/checkpoints stand-in.
    job_store = CheckpointStore(storage.checkpoint_places(base / "checkpoints").root)
    latest, _ = checkpoints.latest_valid() if checkpoints is not None else (None, [])
    if latest is not None:
        shutil.copytree(latest.path, job_store.root / latest.id)
        echo(f"[colabkit] the job starts from {latest.id}")
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "entry.py"], cwd=code,
                               env=_environment(base, job_name, channels, environment or {}),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    for line in process.stdout:
        echo(line.rstrip("\n"))
        tail = (tail + [line])[-20:]
    exit_code = process.wait()
    outcome = base / "output" / ("success" if exit_code == 0 else "failure")
    outcome.write_text("" if exit_code == 0 else "ExecuteUserScriptError:\n" + "".join(tail))
    echo(f"[colabkit] job {job_name} {'completed' if exit_code == 0 else 'failed'} in "
         f"{time.monotonic() - started:.1f} s (exit code {exit_code})")
    final, _ = job_store.latest_valid()
    brought = None
    if final is not None and checkpoints is not None and copy_checkpoint(final.path, checkpoints):
        brought = final.id
    models = tuple(sorted(str(p.relative_to(base / "model")) for p in (base / "model").rglob("*") if p.is_file()))
    return LocalRun(job_name, base, exit_code, brought, models)
