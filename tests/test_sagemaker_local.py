"""--local runs the request a submit would send, on this machine: resumes, writes its files, comes back,
and gets only what a job gets."""

import json

import torch

from colabkit import runtime
from colabkit.checkpoint.checkpointer import Checkpointer
from colabkit.notebook import Notebook
from colabkit.sagemaker import export
from colabkit.sagemaker.capture import Captured, Cell

CELLS = [
    "%load_ext colabkit",
    "import os, torch, colabkit\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(4, 1)\n"
    "opt = torch.optim.SGD(model.parameters(), lr=0.1)",
    "%checkpoint every 1 steps model opt",
    "for epoch in colabkit.resumable(range(6)):\n"
    "    opt.zero_grad(); model(torch.ones(2, 4)).sum().backward(); opt.step()\n"
    "    print('epoch', epoch)",
    "torch.save(model.state_dict(), 'model.pt')\n"
    "print('home', os.environ['HOME'], 'token' if 'HF_TOKEN' in os.environ else 'no token')",
]


def kernel_for(tmp_path, name="train"):
    folder = tmp_path / "notebooks"
    folder.mkdir(exist_ok=True)
    return runtime.Runtime(notebook=Notebook(name, folder / f"{name}.ipynb", folder, "file"))


def notebook_trained_three_epochs(kernel):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck = Checkpointer(every="1 steps", places=kernel.checkpoint_places(), model=model, opt=opt)  # the notebook's names
    for _ in ck.loop(range(3)):
        opt.zero_grad()
        model(torch.ones(2, 4)).sum().backward()
        opt.step()
    ck.close()
    return ck.store


def test_the_job_resumes_from_the_notebooks_checkpoint_and_its_results_come_back(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_for_the_job")  # this machine's token must not reach the job
    monkeypatch.setenv("COLABKIT_NOTEBOOK", "train")  # the checkpoints' writer is this notebook
    kernel = kernel_for(tmp_path)
    store = notebook_trained_three_epochs(kernel)
    lines = []
    outcome = export.run(export.Options("ml.m5.large", local=True),
                         Captured(tuple(Cell(i + 1, s) for i, s in enumerate(CELLS)), "test", "train"), kernel,
                         echo=lines.append)
    log = "\n".join(lines)
    ran = outcome.ran
    assert outcome.succeeded and ran.succeeded, log
    assert "the job starts from step-3" in log and "resumed from step-3" in log
    assert [line for line in lines if line.startswith("epoch")] == ["epoch 3", "epoch 4", "epoch 5"]
    assert f"[colabkit] running cell {len(CELLS)} of {len(CELLS)}, 0:0" in log  # where the run is, and since when
    assert (ran.base / "output" / "success").exists()
    assert ran.final_checkpoint == "step-6" and store.latest_valid()[0].id == "step-6"
    # The request a submit sends is what ran: its hyperparameters, JSON-encoded, and its Environment.
    hyperparameters = json.loads((ran.base / "input" / "config" / "hyperparameters.json").read_text())
    assert hyperparameters["sagemaker_program"] == '"entry.py"'
    assert outcome.request["Environment"]["COLABKIT_NOTEBOOK"] == "train"
    # Only what a job has: its own home, none of this machine's tokens.
    assert f"home {ran.base / 'home'} no token" in log
    # model.pt, written in the job's /content, is beside the notebook now.
    assert (tmp_path / "notebooks" / "model.pt").is_file() and ran.placed == (tmp_path / "notebooks" / "model.pt",)
    assert "the job's files are in" in log


def test_a_failing_cell_fails_the_job_like_the_toolkit(tmp_path):
    kernel = kernel_for(tmp_path, "failing")
    outcome = export.run(export.Options("ml.m5.large", local=True),
                         Captured((Cell(1, "x = 1"), Cell(2, "raise RuntimeError('out of data')")), "test", "failing"),
                         kernel, echo=lambda line: None)
    ran = outcome.ran
    assert ran.exit_code == 1 and not ran.succeeded and outcome.succeeded is False
    failure = (ran.base / "output" / "failure").read_text()
    assert failure.startswith("ExecuteUserScriptError:") and "cell 2, line 1 failed with RuntimeError: out of data" \
        in failure


def test_what_the_cells_install_stays_in_the_jobs_environment(tmp_path):
    """`!pip install` runs in the job as on Colab, into the job's own environment, never the kernel's."""
    import importlib.util

    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    package = tmp_path / "pkg"
    (package / "colabkit_probe").mkdir(parents=True)
    (package / "colabkit_probe" / "__init__.py").write_text("VALUE = 42\n")
    (package / "pyproject.toml").write_text('[project]\nname = "colabkit-probe"\nversion = "1.0"\n'
                                            '[build-system]\nrequires = ["setuptools"]\n'
                                            'build-backend = "setuptools.build_meta"\n')
    import subprocess
    import sys

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(wheel_dir), str(package)], check=True)
    cells = (Cell(1, f"!pip install -q --no-index --find-links {wheel_dir} colabkit-probe"),
             Cell(2, "import colabkit_probe\nprint('probe', colabkit_probe.VALUE)"))
    lines = []
    outcome = export.run(export.Options("ml.m5.large", local=True), Captured(cells, "test", "probe"),
                         kernel_for(tmp_path, "probe"), echo=lines.append)
    assert outcome.succeeded, "\n".join(lines)
    assert "probe 42" in lines
    assert importlib.util.find_spec("colabkit_probe") is None  # not in this kernel's environment
    # A second run of the same job reuses its installed requirements.txt (cached by their hash) but
    # starts from a fresh environment: what the first run's cells installed is gone.
    lines.clear()
    cells = (Cell(1, "import importlib.util\nprint('left behind', importlib.util.find_spec('colabkit_probe'))"),)
    outcome = export.run(export.Options("ml.m5.large", local=True), Captured(cells, "test", "probe"),
                         kernel_for(tmp_path, "probe"), echo=lines.append)
    assert outcome.succeeded and "left behind None" in lines, "\n".join(lines)
    assert any(line.startswith("[colabkit] the job's requirements.txt: installed already") for line in lines)


def test_local_gives_the_job_the_same_secrets_the_same_way(tmp_path, monkeypatch):
    """--secret's value reaches the cells as in a submitted job (os.environ and userdata.get), and
    nothing written for the run holds it."""
    value = "local-secret-value-" + "7f3a" * 6
    monkeypatch.setenv("WANDB_API_KEY", value)
    cells = (Cell(1, "import os\nfrom google.colab import userdata"),
             Cell(2, "assert userdata.get('WANDB_API_KEY') == os.environ['WANDB_API_KEY']\n"
                     "print('key length', len(os.environ['WANDB_API_KEY']))"))
    lines = []
    outcome = export.run(export.Options("ml.m5.large", local=True, secrets=("WANDB_API_KEY",)),
                         Captured(cells, "test", "secrets"), kernel_for(tmp_path, "secrets"), echo=lines.append)
    log = "\n".join(lines)
    assert outcome.succeeded, log
    assert f"key length {len(value)}" in log and "secrets given to the job: WANDB_API_KEY" in log
    assert outcome.request["Environment"]["COLABKIT_SECRETS"] == "WANDB_API_KEY" and value not in log
    written = [p for p in outcome.export.folder.rglob("*") if p.is_file() and not p.is_symlink()]
    assert written and not [p for p in written if value.encode() in p.read_bytes()]
