"""Plain PyTorch loops, killed with SIGKILL mid-epoch (or interrupted) and run again: the same
samples in the same order, none loaded only to be skipped, and every leaf as in an uninterrupted
run. Each notebook writes one progress line per optimizer step and notes every sample it loads."""

import os
import signal
import threading
import time

import pytest
import torch
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

from colabkit.checkpoint.checkpointer import Checkpointer
from helpers.kernels import execute, lines, output
from test_checkpoint_frameworks import assert_identical

pytestmark = pytest.mark.kernel


def setup_cell(loaded, loader="torch.utils.data.DataLoader"):
    return (
        "import time, torch, colabkit\n"
        "torch.manual_seed(0)\n"
        "features, targets = torch.randn(96, 8), torch.randn(96, 1)\n"
        "class Samples(torch.utils.data.Dataset):\n"
        "    def __len__(self):\n"
        "        return NUMBER\n"
        "    def __getitem__(self, i):\n"
        f"        open({str(loaded)!r}, 'a').write(f'{{i}}\\n')\n"
        "        return features[i], targets[i]\n"
        "model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))\n"
        "opt = torch.optim.Adam(model.parameters(), lr=1e-2)\n"
        "sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))\n"
        f"train_loader = {loader}(Samples(), batch_size=8, shuffle=True)"
    )


def step_cell(progress, slow, from_step):
    return (
        "loss = torch.nn.functional.mse_loss(model(x), y)\n"
        "opt.zero_grad(); loss.backward(); opt.step(); sched.step()\n"
        "step = sched.last_epoch\n"
        f"open({str(progress)!r}, 'a').write(f'{{step}}\\n')\n"
        f"if step >= {from_step}: time.sleep({slow})"
    )


def final_cell(final):
    return (f"torch.save({{'model': model.state_dict(), 'opt': opt.state_dict(), 'sched': sched.state_dict(),\n"
            f"            'next': torch.rand(4)}}, {str(final)!r})")


def indent(code):
    return "\n".join("        " + line for line in code.splitlines())


def runs(tmp_path, *names):
    folders = {}
    for name in names:
        folder = tmp_path / name
        folder.mkdir()
        folders[name] = {k: folder / k for k in ("store", "progress", "loaded", "final")}
    return folders


@pytest.mark.parametrize("loader", ["torch.utils.data.DataLoader", "torchdata.stateful_dataloader.StatefulDataLoader"])
def test_resumable_over_a_dataloader_killed_mid_epoch_loads_only_the_samples_left(tmp_path, loader):
    def notebook(store, progress, loaded, final, slow):
        return [
            "%load_ext colabkit",
            ("import torchdata.stateful_dataloader\n" if "torchdata" in loader else "")
            + setup_cell(loaded, loader).replace("NUMBER", "96"),  # 12 batches: one epoch
            f"%checkpoint every 5 steps model opt sched --to {store}",
            "for x, y in colabkit.resumable(train_loader):\n"
            + "\n".join("    " + line for line in step_cell(progress, slow, 4).splitlines()),
            final_cell(final),
        ]

    paths = runs(tmp_path, "reference", "resumed")
    reference, resumed = paths["reference"], paths["resumed"]
    execute(notebook(**reference, slow=0.0), tmp_path / "reference")
    execute(notebook(**resumed, slow=0.3), tmp_path / "resumed", kill_after=8, progress=resumed["progress"])
    killed, loaded_before = lines(resumed["progress"]), lines(resumed["loaded"])
    nb = execute(notebook(**resumed, slow=0.0), tmp_path / "resumed")
    loop = output(nb, 3)
    assert "resumed from step-5: 5 iteration(s) done, continuing at 6 of 12" in loop
    assert "✓ done: 12/12" in loop
    # Was: a new shuffle then 5 batches loaded and thrown away (plain); skipped twice, 7 of 12 trained (stateful).
    assert lines(resumed["progress"])[len(killed):] == list(range(6, 13))
    assert lines(resumed["loaded"])[len(loaded_before):] == lines(reference["loaded"])[40:]
    assert_identical(torch.load(reference["final"], weights_only=True), torch.load(resumed["final"], weights_only=True))


def epoch_loop_notebook(store, progress, loaded, final, slow):
    return [
        "%load_ext colabkit",
        setup_cell(loaded).replace("NUMBER", "64"),  # 8 steps an epoch
        f"%checkpoint every 5 steps model opt sched --to {store}",
        "for epoch in colabkit.resumable(range(3)):\n"
        "    for x, y in train_loader:\n" + indent(step_cell(progress, slow, 9)),
        final_cell(final),
        "%checkpoint now",
        "%checkpoint restore",
    ]


def test_every_n_steps_counts_optimizer_steps_inside_an_epoch_loop_and_resumes_mid_epoch(tmp_path):
    paths = runs(tmp_path, "reference", "resumed")
    reference, resumed = paths["reference"], paths["resumed"]
    execute(epoch_loop_notebook(**reference, slow=0.0)[:5], tmp_path / "reference")
    execute(epoch_loop_notebook(**resumed, slow=0.3)[:5], tmp_path / "resumed", kill_after=12,
            progress=resumed["progress"])
    killed, loaded_before = lines(resumed["progress"]), lines(resumed["loaded"])
    # Was: every 5 *epochs*: killed at step 12, nothing saved, nothing said.
    nb = execute(epoch_loop_notebook(**resumed, slow=0.0)[:5], tmp_path / "resumed")
    loop = output(nb, 3)
    assert "resumed from step-10: 1 iteration(s) done, continuing at 2 of 3" in loop
    assert "train_loader skips the 2 batches already trained, without loading them" in loop
    assert lines(resumed["progress"])[len(killed):] == list(range(11, 25))
    assert lines(resumed["loaded"])[len(loaded_before):] == lines(reference["loaded"])[80:]
    assert_identical(torch.load(reference["final"], weights_only=True), torch.load(resumed["final"], weights_only=True))

    # The step-10 checkpoint itself: taken at step 11's pre-hook, after step 10's scheduler step, so the
    # scheduler and the optimizer's learning rate agree on step 10 (was: last_epoch one step behind).
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 5))
    checkpointer = Checkpointer(to=resumed["store"], model=model, opt=opt, sched=sched)
    restored = checkpointer.restore("step-10")
    checkpointer.close()
    assert restored.step == 10 and sched.last_epoch == 10 and opt.state[opt.param_groups[0]["params"][0]]["step"] == 10
    assert opt.param_groups[0]["lr"] == sched.get_last_lr()[0] == 1e-2


def test_an_interrupted_loop_run_again_says_what_happens_and_resumes_exactly_once_chosen(tmp_path):
    paths = runs(tmp_path, "reference", "interrupted")
    reference, interrupted = paths["reference"], paths["interrupted"]
    execute(epoch_loop_notebook(**reference, slow=0.0)[:5], tmp_path / "reference")
    cells = epoch_loop_notebook(**interrupted, slow=0.3)
    loop, now, restore = cells[3], cells[5], cells[6]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells[:3] + [loop, now, loop, restore, loop.replace("0.3", "0.0"),
                                                                    cells[4]]])
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path / "interrupted")}})

    def interrupt():
        while not interrupted["progress"].exists() or len(lines(interrupted["progress"])) < 12:
            time.sleep(0.02)
        os.kill(client.km.provisioner.process.pid, signal.SIGINT)  # the stop button, for a local kernel

    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            if index == 3:
                threading.Thread(target=interrupt, daemon=True).start()
            client.execute_cell(cell, index)
    assert "KeyboardInterrupt" in output(nb, 3)
    refused = output(nb, 4)  # %checkpoint now, during the interrupted iteration
    assert "Not saved: resumable(), in iteration 2 of 3 was interrupted at step 1" in refused
    assert "%checkpoint restore goes back to step-10" in refused and "%checkpoint keep goes on from the live state" in refused
    again = output(nb, 5)  # the loop run again: the same choice, and nothing trained
    assert "ColabkitError: resumable(), in iteration 2 of 3 was interrupted" in again and "colabkit: iteration" not in again
    assert "restored step-10 (step 10)" in output(nb, 6)
    assert "resumed from step-10: 1 iteration(s) done, continuing at 2 of 3" in output(nb, 7)
    assert_identical(torch.load(reference["final"], weights_only=True),
                     torch.load(interrupted["final"], weights_only=True))


def two_phases_notebook(store, progress, loaded, final, slow):
    phase = "for epoch in colabkit.resumable(range(2)):\n    for x, y in train_loader:\n" + indent(
        step_cell(progress, slow, 18))
    return ["%load_ext colabkit", setup_cell(loaded).replace("NUMBER", "64"),  # 8 steps an epoch
            f"%checkpoint every 5 steps model opt sched --to {store}", phase, phase, final_cell(final)]


def test_a_second_resumable_loop_trains_in_one_session_and_resumes_after_a_restart(tmp_path):
    """Two resumable() phases: each loop restored the latest checkpoint and counted its iterations
    from the same count, so in one session the second phase was skipped as done (rolling back what
    ran between), and after a restart the first phase resumed at the second's count. Now the
    second trains on in one session; killed in it, the first is skipped as done and the second
    resumes at its place, every leaf as in an uninterrupted run."""
    paths = runs(tmp_path, "reference", "resumed")
    reference, resumed = paths["reference"], paths["resumed"]
    nb = execute(two_phases_notebook(**reference, slow=0.0), tmp_path / "reference")
    assert lines(reference["progress"]) == list(range(1, 33))  # was: 1-16, the second phase skipped
    assert "a loop already ran to its end with this checkpointing" in output(nb, 4)
    execute(two_phases_notebook(**resumed, slow=0.3), tmp_path / "resumed", kill_after=22,
            progress=resumed["progress"])
    killed = lines(resumed["progress"])
    nb = execute(two_phases_notebook(**resumed, slow=0.0), tmp_path / "resumed")
    assert "this is loop 1 of this checkpointing, and the latest checkpoint was taken in loop 2" in output(nb, 3)
    assert "resumed from step-21: 0 iteration(s) done, continuing at 1 of 2" in output(nb, 4)  # after 16 + 5
    assert lines(resumed["progress"])[len(killed):] == list(range(22, 33))
    assert_identical(torch.load(reference["final"], weights_only=True), torch.load(resumed["final"], weights_only=True))


def test_a_resumable_loop_inside_another_is_refused_saying_how(tmp_path):
    """Both counted their iterations as one loop's: a restart resumed them at each other's count."""
    from nbclient.exceptions import CellExecutionError

    with pytest.raises(CellExecutionError, match=r"resumable\(\) inside another resumable\(\) can't be resumed"):
        execute(["%load_ext colabkit", "import colabkit, numpy as np\nw = np.zeros(2)",
                 f"%checkpoint every 1 steps w --to {tmp_path / 'store'}",
                 "for epoch in colabkit.resumable(range(2)):\n    for i in colabkit.resumable(range(3)):\n        pass"],
                tmp_path)


def test_a_mid_epoch_checkpoint_holds_batchnorm_statistics_as_of_its_step(tmp_path):
    """A save due at step 10 is taken at step 11's pre-hook, after step 11's forward pass had
    updated BatchNorm's running statistics: the resumed run forwarded that batch again and counted
    it twice (running_mean, running_var, num_batches_tracked off an uninterrupted run's). The
    buffers are saved as they were after step 10."""
    def notebook(store, progress, loaded, final, slow):
        cells = epoch_loop_notebook(store, progress, loaded, final, slow)[:5]
        cells[1] = cells[1].replace("torch.nn.Linear(8, 16), torch.nn.ReLU()",
                                    "torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU()")
        return cells

    paths = runs(tmp_path, "reference", "resumed")
    reference, resumed = paths["reference"], paths["resumed"]
    execute(notebook(**reference, slow=0.0), tmp_path / "reference")
    execute(notebook(**resumed, slow=0.3), tmp_path / "resumed", kill_after=12, progress=resumed["progress"])
    nb = execute(notebook(**resumed, slow=0.0), tmp_path / "resumed")
    assert "resumed from step-10: 1 iteration(s) done, continuing at 2 of 3" in output(nb, 3)
    want, got = (torch.load(run["final"], weights_only=True) for run in (reference, resumed))
    assert int(got["model"]["1.num_batches_tracked"]) == 24
    assert_identical(want, got)


def test_an_iteration_resumed_in_its_middle_that_makes_its_model_anew_says_it_is_not_exact(tmp_path):
    """k-fold code makes each fold's model and optimizer inside the resumed iteration: the
    checkpoint was restored into the old ones, the new ones trained only on the batches the skip
    left, and the resume said only that the loader skipped the trained batches."""
    def notebook(store, progress, loaded, final, slow):
        cells = epoch_loop_notebook(store, progress, loaded, final, slow)[:4]
        cells[1] += ("\ndef make():\n    m = torch.nn.Linear(8, 1)\n    return m, torch.optim.SGD(m.parameters(), lr=0.01)\n"
                     "model, opt = make()")
        cells[2] = f"%checkpoint every 5 steps model opt --to {store}"
        cells[3] = ("for fold in colabkit.resumable(range(2)):\n    model, opt = make()\n    for x, y in train_loader:\n"
                    "        opt.zero_grad(); torch.nn.functional.mse_loss(model(x), y).backward(); opt.step()\n"
                    f"        open({str(progress)!r}, 'a').write('1\\n'); time.sleep({slow})")
        return cells

    paths = runs(tmp_path, "resumed")
    resumed = paths["resumed"]
    execute(notebook(**resumed, slow=0.3), tmp_path / "resumed", kill_after=7, progress=resumed["progress"])
    nb = execute(notebook(**resumed, slow=0.0), tmp_path / "resumed")
    said = output(nb, 3)
    assert "resumed from step-5: 0 iteration(s) done, continuing at 1 of 2" in said
    assert "the resumed iteration made model, opt anew, so the checkpoint's state restored into the old ones is " \
           "not what it trained" in said
