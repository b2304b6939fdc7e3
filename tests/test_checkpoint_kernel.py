"""A training run killed mid-loop (SIGKILL of the kernel, as Colab does) resumes exactly."""

from pathlib import Path

import pytest
import torch
from helpers.kernels import execute

pytestmark = pytest.mark.kernel

EPOCHS = 12


def training_cells(store: Path, progress: Path, final: Path, pause: float) -> list[str]:
    return [
        "%load_ext colabkit",
        "import time, torch, colabkit\n"
        "torch.manual_seed(0)\n"
        "model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))\n"
        "opt = torch.optim.Adam(model.parameters(), lr=1e-3)\n"
        "data, target = torch.randn(256, 16), torch.randn(256, 1)",
        f"%checkpoint every 1 steps model opt --to {store}",
        f"for epoch in colabkit.resumable(range({EPOCHS})):\n"
        "    idx = torch.randperm(256)[:64]  # the random stream matters\n"
        "    loss = torch.nn.functional.mse_loss(model(data[idx]), target[idx])\n"
        "    opt.zero_grad(); loss.backward(); opt.step()\n"
        f"    open({str(progress)!r}, 'a').write(f'{{epoch}}\\n')\n"
        f"    time.sleep({pause})",
        f"torch.save({{'model': model.state_dict(), 'opt': opt.state_dict(), 'next': torch.rand(5)}}, {str(final)!r})",
    ]


def test_a_killed_run_resumes_with_identical_weights_optimizer_and_random_stream(tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    execute(training_cells(reference / "store", reference / "progress", reference / "final.pt", 0.0), reference)

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    progress = resumed / "progress"
    execute(training_cells(resumed / "store", progress, resumed / "final.pt", 0.3), resumed, kill_after=6,
            progress=progress)
    done_before_kill = len(progress.read_text().splitlines())
    assert 6 <= done_before_kill < EPOCHS and not (resumed / "final.pt").exists()

    nb = execute(training_cells(resumed / "store", progress, resumed / "final.pt", 0.0), resumed)
    loop_output = "".join(o.get("text", "") for o in nb.cells[3].outputs)
    assert "resumed from step-" in loop_output
    epochs_run = [int(line) for line in progress.read_text().splitlines()]
    resumed_at = epochs_run[done_before_kill]
    assert 1 <= resumed_at <= done_before_kill  # it skipped what the checkpoint covered
    assert epochs_run[done_before_kill:] == list(range(resumed_at, EPOCHS))

    want = torch.load(reference / "final.pt", weights_only=True)
    got = torch.load(resumed / "final.pt", weights_only=True)
    for name, tensor in want["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
    for index, moments in want["opt"]["state"].items():
        for key, value in moments.items():
            assert torch.equal(value, got["opt"]["state"][index][key]), (index, key)
    assert torch.equal(want["next"], got["next"])
