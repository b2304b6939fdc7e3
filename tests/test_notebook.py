"""The demo and the live widget panel through a real IPython kernel (nbclient)."""

import re
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent
# ipykernel 7 changed how output and messages from threads are routed (ipykernel#1450): the panel
# is checked under both. The second kernel has Colab's versions (IPython 7.34, ipykernel 6.17,
# ipywidgets 7.7); .ci/run makes it from a venv of its own.
KERNELS = ["python3", "colabkit-colab-versions"]


def kernel_or_skip(name):
    try:
        KernelSpecManager().get_kernel_spec(name)
    except NoSuchKernel:
        pytest.skip(f"kernel {name!r} is not installed here (.ci/run installs it)")
    return name


def widget_values(nb):
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return [m["state"]["value"] for m in state.get("state", {}).values()
            if "data-seq" in str(m["state"].get("value", ""))]


def execute(nb, kernel, cwd):
    NotebookClient(nb, timeout=120, kernel_name=kernel, resources={"metadata": {"path": str(cwd)}},
                   record_timing=False).execute()
    return nb


def uninterrupted_loss(demo) -> str:
    """The demo's own training code run for ten epochs without dying, here: what resuming must match."""
    import time

    training = next(c.source for c in demo.cells if c.source.startswith("import numpy as np"))
    scope = {"time": time}
    exec(training, scope)
    for _ in range(10):
        scope["train_one_epoch"](scope["params"])
    return f"trained 10 epochs: loss {scope['loss_of'](scope['params']):.6f}"


def test_demo_runs_end_to_end_and_tells_the_same_story_twice(tmp_path):
    demo = nbformat.read(ROOT / "demo.ipynb", as_version=4)
    expected_loss = uninterrupted_loss(demo)
    for run in (1, 2):
        nb = execute(nbformat.read(ROOT / "demo.ipynb", as_version=4), "python3", tmp_path)
        outputs = {cell.source.splitlines()[0]: cell.outputs for cell in nb.cells if cell.cell_type == "code"}
        assert "platform:      Jupyter" in outputs["%gpuwatch info"][0]["text"]
        panel = outputs["%gpuwatch --interval 0.5s"][0]
        assert "application/vnd.jupyter.widget-view+json" in panel["data"]
        assert "GPU: no NVIDIA GPU" in panel["data"]["text/plain"]  # what renders where widgets don't
        assert "colabkit storage: /" in outputs["import tempfile"][0]["text"]
        assert "rounds in" in outputs["import math"][0]["text"]
        assert "CPU" in outputs["%gpuwatch --once"][0]["text"]
        # The checkpoint part: training "dies" after epoch 5, a fresh runtime resumes from step-4,
        # and ends exactly where an uninterrupted run ends: in the second run too.
        assert "saving params every 2 steps" in outputs["%checkpoint every 2 steps params --keep 2"][0]["text"]
        died = "".join(o.get("text", "") for o in outputs["import colabkit"])
        assert "the runtime dies during epoch 6" in died and "resumed" not in died, (run, died)
        resumed = "".join(o.get("text", "") for o in outputs["params = fresh_runtime(seed=123)"])
        assert "resumed from step-4: 4 iteration(s) done, continuing at 5 of 10" in resumed
        assert expected_loss in resumed, (expected_loss, resumed)
        listing = outputs["%checkpoint list"][0]["text"]
        assert "step-10" in listing and "step-8" in listing and "step-4" not in listing  # --keep 2
        # The export as a request (nothing sent), then run locally as a SageMaker job: it resumes from
        # the notebook's checkpoint, and the dry-run cell above it is not run again inside the job.
        dry = "".join(o.get("text", "") for o in outputs["%to_sagemaker ml.g5.xlarge --dry-run --region us-east-1"])
        assert "  image        763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:" in dry
        assert "  Spot         yes: waits at most" in dry and "cost: 1 x ml.g5.xlarge" in dry
        assert "dry run: nothing was sent" in dry
        job = "".join(o.get("text", "") for o in outputs["%to_sagemaker ml.g5.xlarge --local"])
        assert "the job starts from step-10" in job and "platform:      SageMaker training job" in job
        assert "resumed from step-10: 10 iteration(s) done, nothing left to run" in job
        assert "completed in" in job and "(exit code 0)" in job and "dry run" not in job
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                assert out["output_type"] != "error", out


@pytest.mark.parametrize("kernel", KERNELS)
def test_widget_panel_updates_from_its_thread_while_a_cell_is_busy(kernel, tmp_path):
    kernel_or_skip(kernel)
    nb = new_notebook(cells=[
        new_code_cell("%load_ext colabkit"),
        new_code_cell("%gpuwatch --view widget --interval 0.25s"),
        new_code_cell("from colabkit import monitor\nimport time\nbefore = monitor.active().watcher.latest_seq\n"
                      "time.sleep(3)\nprint(before, monitor.active().watcher.latest_seq)"),
    ])
    execute(nb, kernel, tmp_path)
    before, after = map(int, nb.cells[2].outputs[0]["text"].split())
    assert after - before >= 8
    # The widget state nbclient recorded from the kernel's comm messages: the frontend saw updates
    # sent from the watcher thread during the busy cell, not only the first render.
    seqs = [int(re.search(r'data-seq="(\d+)"', v).group(1)) for v in widget_values(nb)]
    assert seqs and max(seqs) >= after - 1, (seqs, after)


@pytest.mark.parametrize("kernel", KERNELS)
def test_session_deadline_warning_shows_under_the_running_cell(kernel, tmp_path, monkeypatch):
    kernel_or_skip(kernel)
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab-test")
    nb = new_notebook(cells=[
        # This runtime's VM started 11 h 30 min (and 2 s) ago.
        new_code_cell("import time\nfrom colabkit import platform as p\n"
                      "started = time.time() - p.COLAB_FREE_CAP + 1802\np.session_start = lambda name: started"),
        new_code_cell("%load_ext colabkit"),
        new_code_cell("%gpuwatch --interval 0.25s"),
        new_code_cell("time.sleep(5)"),
    ])
    execute(nb, kernel, tmp_path)
    busy = [o for o in nb.cells[3].outputs if o.get("name") == "stderr"]
    assert len(busy) == 1, nb.cells[3].outputs
    assert busy[0]["text"].startswith("colabkit warning: 29m 5")
    assert "left in this Google Colab (free) session" in busy[0]["text"]
    assert not [o for o in nb.cells[2].outputs if o.get("name") == "stderr"]


@pytest.mark.parametrize("kernel", KERNELS)
def test_submit_and_wait_in_a_real_kernel_updates_one_output(kernel, tmp_path, aws):
    """%to_sagemaker --wait through a real kernel, against moto on 127.0.0.1 (the kernel inherits
    the endpoint and dummy credentials): the job's status is one display that is updated in place."""
    kernel_or_skip(kernel)
    nb = new_notebook(cells=[
        new_code_cell("%load_ext colabkit"),
        new_code_cell("import numpy as np, colabkit\nw = np.zeros(4)"),
        new_code_cell("%checkpoint every 1 steps w"),
        new_code_cell("for i in colabkit.resumable(range(3)):\n    w += 1"),
        new_code_cell("%to_sagemaker ml.g5.xlarge --wait --max-run 30m"),
    ])
    execute(nb, kernel, tmp_path)
    outputs = nb.cells[-1].outputs
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "uploaded step-3" in text and "verified: the job resumes from it" in text and "submitted" in text
    [status] = [o for o in outputs if o["output_type"] == "display_data"]
    assert ": Completed" in status["data"]["text/plain"] and "console.aws.amazon.com" in status["data"]["text/html"]
    assert not [o for o in outputs if o["output_type"] == "error"]
