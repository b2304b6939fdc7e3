"""Run the exported job on this machine, from the same request a submit sends: what fails here
fails in the job, and the other way round.

No Docker and no AWS: a folder stands in for /opt/ml (the job's colabkit finds it through
SAGEMAKER_BASE_DIR, as the training toolkit does), laid out from the request: hyperparameters,
resource config, input channels, and checkpoints/ holding the notebook's latest checkpoint. Like
the toolkit, it installs the job's requirements.txt before any cell (once per content: kept, by
hash, for later runs) on top of this kernel's packages (which stand in for the image's), and the
cells run in a fresh environment on top of that, so nothing the cells install stays behind. The
cells get only what a job gets: SageMaker's variables and the request's Environment (none of this
machine's tokens), no standard input, and a folder of their own as /content and as their home.
The final checkpoint and the files the cells wrote come back as from a real job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from .. import storage
from ..checkpoint.mirror import copy_checkpoint
from ..checkpoint.store import CheckpointStore
from ..errors import ColabkitError
from . import results
from .convert import SourceFolder

HOST = "algo-1"
COMPLETE = "colabkit-complete"  # in a requirements layer once pip succeeded: holds its site folder
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class LocalRun:
    job_name: str
    base: Path  # the /opt/ml stand-in
    exit_code: int
    final_checkpoint: str | None  # the checkpoint brought back into the notebook's store
    model_files: tuple[str, ...]  # what the job left in its model folder
    placed: tuple[Path, ...] = ()  # the cells' files, put beside the notebook

    @property
    def succeeded(self) -> bool:
        return self.exit_code == 0


def _decoded(value: str):
    return json.loads(value)  # hyperparameter values are JSON-encoded strings


def _layout(base: Path, source: SourceFolder, request: dict, channels: dict[str, Path]) -> Path:
    config = base / "input" / "config"
    config.mkdir(parents=True)
    code = base / "code"
    shutil.copytree(source.path, code)
    hyperparameters = {**request["HyperParameters"], "sagemaker_submit_directory": json.dumps(str(code))}
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": HOST, "hosts": [HOST], "network_interface_name": "eth0"}))
    wanted = [c["ChannelName"] for c in request.get("InputDataConfig", [])]
    (config / "inputdataconfig.json").write_text(json.dumps(
        {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
         for name in wanted}))
    for name in wanted:
        shutil.copytree(channels[name], base / "input" / "data" / name)
    for folder in ("model", "output/data", "checkpoints", "content", "home", "tmp"):
        (base / folder).mkdir(parents=True, exist_ok=True)
    return code


def _environment(base: Path, env_dir: Path, request: dict) -> dict[str, str]:
    """What a SageMaker job's process has, and nothing of this machine's own settings."""
    channels = [c["ChannelName"] for c in request.get("InputDataConfig", [])]
    hyperparameters = {k: _decoded(v) for k, v in request["HyperParameters"].items()}
    env = {
        "PATH": os.pathsep.join([str(env_dir / "bin"), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(base / "home"), "TMPDIR": str(base / "tmp"), "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1",
        "SAGEMAKER_BASE_DIR": str(base), "TRAINING_JOB_NAME": request["TrainingJobName"],
        "SM_CURRENT_HOST": HOST, "SM_HOSTS": json.dumps([HOST]), "SM_MODEL_DIR": str(base / "model"),
        "SM_OUTPUT_DIR": str(base / "output"), "SM_OUTPUT_DATA_DIR": str(base / "output" / "data"),
        "SM_INPUT_DIR": str(base / "input"), "SM_INPUT_CONFIG_DIR": str(base / "input" / "config"),
        "SM_CHANNELS": json.dumps(sorted(channels)), "SM_NUM_CPUS": str(os.cpu_count() or 1), "SM_NUM_GPUS": "0",
        "SM_HPS": json.dumps({k: v for k, v in hyperparameters.items() if not k.startswith("sagemaker_")}),
        "COLABKIT_CONTENT": str(base / "content"),  # /content in the cells leads to the job's own folder
    }
    env.update({f"SM_CHANNEL_{name.upper()}": str(base / "input" / "data" / name) for name in channels})
    env.update(request.get("Environment", {}))
    return env


def _fresh_environment(env_dir: Path, below: tuple[str, ...] = ()) -> tuple[Path, str]:
    """A new environment on top of `below` (site folders) and this kernel's packages, with pip in
    it: what is installed with it goes here, not into the kernel. Returns its python and site folder."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = env_dir / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    layers = dict.fromkeys([*below, sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *sys.path[1:]])
    kept = [p for p in layers if p and Path(p).is_dir() and ("site-packages" in p or "dist-packages" in p)]
    (Path(site) / "colabkit-kernel-packages.pth").write_text("\n".join(kept) + "\n")
    for name in ("pip", "pip3"):  # `!pip install` in a cell must install here, as the image's pip would
        shim = env_dir / "bin" / name
        shim.write_text(f'#!/bin/sh\nexec "{python}" -m pip "$@"\n')
        shim.chmod(0o755)
    return python, site


def _requirements_layer(code: Path, cache: Path, base: Path, request: dict, echo, tail: list[str]) -> tuple[str, int]:
    """The job's requirements.txt, installed once per content and reused: an environment on top of
    this kernel's packages holding what they add (colabkit's wheel, pins the kernel lacks), named by
    the hash of requirements.txt, the local files it names and this Python. Each run still gets a
    fresh environment on top of it, so what the cells install never stays. Returns the layer's
    site folder and pip's exit code."""
    requirements = (code / "requirements.txt").read_text()
    key = hashlib.sha256(f"{sys.version}\n{requirements}".encode())
    for line in requirements.splitlines():
        named = code / line.split("#")[0].strip()
        if line.startswith("./") and named.is_file():
            key.update(named.read_bytes())
    layer = Path(cache) / key.hexdigest()[:16]
    if (layer / COMPLETE).exists():
        echo(f"[colabkit] the job's requirements.txt: installed already, for an earlier run ({layer})")
        return (layer / COMPLETE).read_text(), 0
    shutil.rmtree(layer, ignore_errors=True)  # a build cut short
    python, site = _fresh_environment(layer)
    echo("[colabkit] installing the job's requirements.txt (kept for later runs with the same requirements)")
    exit_code = _stream([str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", "-r",
                         "requirements.txt"], code, _environment(base, layer, request), echo, tail)
    if exit_code == 0:
        (layer / COMPLETE).write_text(site)
    return site, exit_code


def _stream(command: list[str], cwd: Path, env: dict[str, str], echo, tail: list[str]) -> int:
    process = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace")
    for line in process.stdout:
        line = ANSI.sub("", line.rstrip("\n"))
        echo(line)
        tail[:] = (tail + [line])[-20:]
    return process.wait()


def run(request: dict, source: SourceFolder, checkpoints: CheckpointStore, base: Path, environments: Path,
        channels: dict[str, Path] | None = None, notebook_folder: Path | None = None, secrets: dict | None = None,
        echo=print) -> LocalRun:
    """Run the job of `request` with `base` as its /opt/ml; `checkpoints` is the notebook's store (read,
    then updated), `environments` where installed requirements are kept for later runs, and
    `notebook_folder` where the files the cells wrote land. `secrets` (--secret's
    values) reach the cells' process only, where the job's colabkit finds them at its start as a
    submitted job's finds them in Secrets Manager; nothing writes them to disk."""
    base = Path(base)
    job_name = request["TrainingJobName"]
    if base.exists():
        raise ColabkitError(f"{base} exists already: choose another job name or remove it.")
    code = _layout(base, source, request, channels or {})
    # Where the job's colabkit keeps its checkpoints: its storage is the /opt/ml/checkpoints stand-in.
    job_store = CheckpointStore(storage.checkpoint_places(base / "checkpoints").root)
    latest, _ = checkpoints.latest_valid()
    if latest is not None:
        copy_checkpoint(latest.path, job_store)
        echo(f"[colabkit] the job starts from {latest.id}")
    started = time.monotonic()
    tail: list[str] = []
    layer, exit_code = _requirements_layer(code, environments, base, request, echo, tail)
    if exit_code == 0:
        env_dir = base / "env"
        python, _ = _fresh_environment(env_dir, below=(layer,))
        env = _environment(base, env_dir, request)
        exit_code = _stream([str(python), "entry.py"], code, {**env, **(secrets or {})}, echo, tail)
    outcome = base / "output" / ("success" if exit_code == 0 else "failure")
    outcome.write_text("" if exit_code == 0 else "ExecuteUserScriptError:\n" + "\n".join(tail) + "\n")
    echo(f"[colabkit] job {job_name} {'completed' if exit_code == 0 else 'failed'} in "
         f"{time.monotonic() - started:.1f} s (exit code {exit_code})")
    final, _ = job_store.latest_valid()
    brought = final.id if final is not None and copy_checkpoint(final.path, checkpoints) else None
    models = tuple(sorted(str(p.relative_to(base / "model")) for p in (base / "model").rglob("*") if p.is_file()))
    placed: list[Path] = []
    if notebook_folder is not None:
        placed, kept_apart = results.place(base / "model", notebook_folder)
        for line in results.describe_placed(placed, kept_apart, notebook_folder):
            echo(line)
    return LocalRun(job_name, base, exit_code, brought, models, tuple(placed))
