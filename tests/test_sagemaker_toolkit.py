"""The exported job really runs in SageMaker's container toolkit (sagemaker-training's `train`),
from what was submitted to moto: it downloads the source, installs requirements.txt offline (the
colabkit wheel), runs the cells, resumes from the uploaded checkpoint and writes the model, and
the notebook fetches the results back.

The toolkit installs requirements into its own interpreter, so it lives in a throwaway venv
named by COLABKIT_TOOLKIT_VENV (.ci/run makes it: sagemaker-training plus colabkit's dependencies,
never colabkit itself).
"""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch  # noqa: F401  the notebook process has torch: its checkpoint holds torch's random state,
from conftest import run  # which the job's interpreter (no torch) must be able to skip

import colabkit

TOOLKIT = os.environ.get("COLABKIT_TOOLKIT_VENV")
pytestmark = pytest.mark.skipif(not TOOLKIT, reason="COLABKIT_TOOLKIT_VENV is not set (.ci/run makes the venv)")

NOTEBOOK = [
    "%load_ext colabkit",
    "import os, time, numpy as np, colabkit\nw = np.zeros(4)\nruns_in_job = 'TRAINING_JOB_NAME' in os.environ",
    "%checkpoint every 1 steps w",
    # The notebook's runtime "dies" after 3 of 8 steps (each step slower than its save: step-3 is
    # committed); the job must do the other 5.
    "for i in colabkit.resumable(range(8)):\n"
    "    if i == 3 and not runs_in_job:\n"
    "        break\n"
    "    w += 1\n"
    "    print('step', i)\n"
    "    time.sleep(0.3 if not runs_in_job else 0)",
    "%gpuwatch --once",
    "np.save(os.path.join(os.environ.get('SM_MODEL_DIR', '.'), 'w.npy'), w)",
]


@pytest.fixture
def toolkit():
    venv = Path(TOOLKIT)
    # colabkit must come from the job's own wheel, as in a fresh container.
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", "colabkit"],
                   capture_output=True, check=False)
    return venv


def submit(shell, cells, line="%to_sagemaker ml.m5.xlarge"):
    for source in cells:
        result = shell.run_cell(source, store_history=True)
        assert result.success, result.error_in_exec or result.error_before_exec
    result = shell.run_cell(line, store_history=True)  # in In[], as a notebook's calling cell is
    assert result.success, result.error_in_exec
    return result.result


def test_the_toolkit_runs_the_export_and_it_resumes_from_the_notebooks_checkpoint(shell, aws, toolkit, tmp_path):
    job = submit(shell, NOTEBOOK)
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=job.name)
    sent = __import__("json").loads((job.folder / "request.json").read_text())
    done = aws.run_in_container(described, sent, tmp_path / "opt-ml", toolkit, os.environ["AWS_ENDPOINT_URL"])
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert (tmp_path / "opt-ml" / "output" / "success").exists()
    assert "resumed from step-3" in log
    assert [line for line in log.splitlines() if line.startswith("step ")] == [f"step {i}" for i in range(3, 8)]
    assert "CPU" in log and "RAM" in log  # %gpuwatch's text line in the job log
    # Installed from the wheel in the job's source folder (the PyPI name is an unrelated package).
    assert f"Processing ./colabkit-{colabkit.__version__}-py3-none-any.whl" in log
    from colabkit.sagemaker.export import follow

    follow(job, poll=0, echo=lambda line: None, in_notebook=False)
    assert np.load(job.folder / "model" / "w.npy").tolist() == [8.0] * 4
    assert job.store.latest_valid()[0].id == "step-8"
    result, out = run(shell, "%checkpoint restore")
    assert result.success and shell.user_ns["w"].tolist() == [8.0] * 4


def test_a_failing_cell_fails_the_container_job(shell, aws, toolkit, tmp_path):
    job = submit(shell, ["import os", "if 'TRAINING_JOB_NAME' in os.environ:\n    raise RuntimeError('out of data')"])
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=job.name)
    done = aws.run_in_container(described, {}, tmp_path / "opt-ml", toolkit, os.environ["AWS_ENDPOINT_URL"])
    assert done.returncode != 0
    failure = (tmp_path / "opt-ml" / "output" / "failure").read_text()
    assert failure.startswith("ExecuteUserScriptError:")
    assert "cell 2 failed with RuntimeError: out of data" in done.stdout + done.stderr


def test_drive_files_the_cells_read_travel_as_a_channel(fake_colab, aws, toolkit, tmp_path):
    from colabkit import runtime
    from colabkit.sagemaker import capture, export

    runtime.mount()  # Drive, through the fake google.colab
    data = fake_colab / "drive" / "MyDrive" / "data"
    data.mkdir(parents=True)
    (data / "train.csv").write_text("1,2\n3,4\n")
    cells = [capture.Cell(1, "from google.colab import drive\ndrive.mount('/content/drive')"),
             capture.Cell(2, f"rows = open('{data / 'train.csv'}').read().split()\nprint('rows', len(rows))")]
    job = export.run(export.Options("ml.m5.xlarge"), capture.Captured(tuple(cells), "colab", "drive-nb"),
                     echo=lambda line: None).job
    sent = __import__("json").loads((job.folder / "request.json").read_text())
    assert sent["InputDataConfig"][0]["ChannelName"] == "drive"
    assert sent["Environment"] == {"COLABKIT_NOTEBOOK": "drive-nb", "COLABKIT_DRIVE_MOUNT": str(fake_colab / "drive")}
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=job.name)
    shutil.rmtree(fake_colab / "drive")  # a fresh container has no Drive
    done = aws.run_in_container(described, sent, tmp_path / "opt-ml", toolkit, os.environ["AWS_ENDPOINT_URL"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rows 2" in done.stdout
    assert (fake_colab / "drive").is_symlink()  # the notebook's path leads to the channel
