"""An exported notebook run as a SageMaker job on this machine: resumes, writes its model, comes back."""

import torch

from colabkit.checkpoint.checkpointer import Checkpointer
from colabkit.checkpoint.store import CheckpointStore
from colabkit.sagemaker import local
from colabkit.sagemaker.capture import Cell
from colabkit.sagemaker.convert import convert

CELLS = [
    "%load_ext colabkit",
    "import os, torch, colabkit\ntorch.manual_seed(0)\nmodel = torch.nn.Linear(4, 1)\n"
    "opt = torch.optim.SGD(model.parameters(), lr=0.1)",
    "%checkpoint every 1 steps model opt",
    "for epoch in colabkit.resumable(range(6)):\n"
    "    opt.zero_grad(); model(torch.ones(2, 4)).sum().backward(); opt.step()\n"
    "    print('epoch', epoch)",
    "torch.save(model.state_dict(), os.path.join(os.environ['SM_MODEL_DIR'], 'model.pt'))",
]


def notebook_trained_three_epochs(store_root):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck = Checkpointer(every="1 steps", to=store_root, model=model, opt=opt)  # the names the notebook tracks
    for _ in ck.loop(range(3)):
        opt.zero_grad()
        model(torch.ones(2, 4)).sum().backward()
        opt.step()
    ck.close()
    return model


def test_the_job_resumes_from_the_notebooks_checkpoint_and_brings_its_own_back(tmp_path):
    store = CheckpointStore(tmp_path / "storage" / "checkpoints")
    notebook_trained_three_epochs(store.root)
    source = convert([Cell(i + 1, s) for i, s in enumerate(CELLS)], tmp_path / "source")
    lines = []
    result = local.run(source, store, tmp_path / "job", "colabkit-test-job", echo=lines.append)
    log = "\n".join(lines)
    assert result.succeeded, log
    assert "the job starts from step-3" in log and "resumed from step-3" in log
    assert [line for line in lines if line.startswith("epoch")] == ["epoch 3", "epoch 4", "epoch 5"]
    assert (result.base / "output" / "success").exists() and result.model_files == ("model.pt",)
    assert result.final_checkpoint == "step-6" and store.latest_valid()[0].id == "step-6"
    hyperparameters = (result.base / "input" / "config" / "hyperparameters.json").read_text()
    assert '"sagemaker_program": "\\"entry.py\\""' in hyperparameters  # JSON-encoded strings


def test_a_failing_cell_fails_the_job_like_the_toolkit(tmp_path):
    source = convert([Cell(1, "x = 1"), Cell(2, "raise RuntimeError('out of data')")], tmp_path / "source")
    lines = []
    result = local.run(source, None, tmp_path / "job", "colabkit-failing-job", echo=lines.append)
    assert result.exit_code == 1 and not result.succeeded
    failure = (result.base / "output" / "failure").read_text()
    assert failure.startswith("ExecuteUserScriptError:") and "cell 2 failed with RuntimeError: out of data" in failure
