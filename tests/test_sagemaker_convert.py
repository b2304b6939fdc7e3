"""The exported source folder and the job's side of it: requirements, cells as the notebook has
them, the colabkit wheel, and the runner running them as Colab would (in a subprocess, as a job)."""

import json
import os
import subprocess
import sys
import zipfile

import pytest
from packaging.requirements import Requirement

from colabkit import __version__
from colabkit.sagemaker import packages, portability
from colabkit.sagemaker.capture import Cell
from colabkit.sagemaker.convert import convert


def test_the_cells_travel_as_they_are_and_requirements_pin_what_they_import_without_installing(tmp_path):
    cells = [Cell(1, "!pip install -q timm==0.9.16 'numpy<2' --index-url https://x/simple  # pinned"),
             Cell(2, "if IN_COLAB:\n    %pip install -U transformers\nimport timm, transformers, safetensors, torch"),
             Cell(3, "import os, json, psutil\nfrom cv2 import imread\nimport google.colab, no_such_module_here")]
    assert packages.pip_installs(cells) == {"timm", "numpy", "transformers"}
    needs = packages.requirements(cells, frozenset({"torch"}), in_kernel=True)
    from importlib import metadata

    assert needs.pins == [f"safetensors=={metadata.version('safetensors')}", f"psutil=={metadata.version('psutil')}"]
    assert [n.split(",")[0] for n in needs.notes] == ["cell 3", "cell 3"]
    assert "imports cv2" in needs.notes[0] and "imports no_such_module_here" in needs.notes[1]
    colab = packages.requirements(cells, frozenset({"torch"}), in_kernel=False)  # a terminal export: Colab's list
    versions = packages.colab_versions()
    assert colab.pins == [f"safetensors=={versions['safetensors']}", f"psutil=={versions['psutil']}",
                          f"opencv-python=={versions['opencv-python']}"]
    assert len(colab.notes) == 1 and "imports no_such_module_here" in colab.notes[0]
    for pin in colab.pins:
        Requirement(pin)  # each line is a requirement pip reads
    out = convert(cells, tmp_path / "source", colab.pins)
    assert [c["source"] for c in json.loads((out.path / "cells.json").read_text())] == [c.source for c in cells]
    lines = (out.path / "requirements.txt").read_text().splitlines()
    assert lines[0] == f"./colabkit-{__version__}-py3-none-any.whl" and lines[1:] == colab.pins
    assert sorted(p.name for p in out.path.iterdir()) == [
        "cells.json", f"colabkit-{__version__}-py3-none-any.whl", "entry.py", "requirements.txt"]


def test_torch_cuda_builds_are_pinned_by_their_public_version():
    assert packages._public("2.11.0+cu128") == "2.11.0"
    needs = packages.requirements([Cell(1, "import torchvision")], frozenset(), in_kernel=False)
    assert needs.pins == ["torchvision==" + packages.colab_versions()["torchvision"].split("+")[0]]


def test_the_wheel_is_this_colabkit_installs_offline_and_is_the_same_bytes_every_time(tmp_path):
    out = convert([Cell(1, "x = 1")], tmp_path / "source", [])
    again = convert([Cell(1, "x = 1")], tmp_path / "again", [])
    wheel = next(out.path.glob("*.whl"))
    assert wheel.read_bytes() == next(again.path.glob("*.whl")).read_bytes()
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "colabkit/checkpoint/store.py" in names and "colabkit/views/served_panel.html" in names
    assert "colabkit/sagemaker/colab-packages.txt" in names
    assert not [n for n in names if "__pycache__" in n]
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                    str(target), str(wheel)], check=True)
    shown = subprocess.run([sys.executable, "-c", "import colabkit, sys; print(colabkit.__version__, colabkit.__file__)"],
                           env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                           check=True, cwd=tmp_path).stdout.split()
    assert shown[0] == __version__ and shown[1].startswith(str(target))


def run_job(tmp_path, sources, env=None):
    """The job's side, as the toolkit starts it: `python entry.py` in the source folder."""
    out = convert([Cell(i + 1, s) for i, s in enumerate(sources)], tmp_path / "source", [])
    content, model = tmp_path / "content", tmp_path / "model"
    environment = {**os.environ, "COLABKIT_CONTENT": str(content), "SM_MODEL_DIR": str(model), **(env or {})}
    done = subprocess.run([sys.executable, "entry.py"], cwd=out.path, capture_output=True, text=True, timeout=120,
                          env=environment, stdin=subprocess.DEVNULL)
    return done, content, model


def test_a_failing_command_fails_its_cell_and_the_job_naming_cell_line_and_command(tmp_path):
    done, _, _ = run_job(tmp_path, ["%load_ext colabkit\nvalues = [1, 2]",
                                    "files = !echo hello\nprint(files[0], sum(values))\n!true",
                                    "print('before')\n!python does_not_exist.py\nprint('after')",
                                    "print('never')"])
    assert done.returncode == 1
    assert "hello 3" in done.stdout and "before" in done.stdout and "after" not in done.stdout
    assert "never" not in done.stdout
    assert "cell 3, line 2 failed with CommandFailed: the command `!python does_not_exist.py` exited with status 2" \
        in done.stderr
    assert "\x1b[" not in done.stdout + done.stderr  # plain text for CloudWatch and output/failure
    going_on, _, _ = run_job(tmp_path / "b", ["!python does_not_exist.py || true", "print('went on')"])
    assert going_on.returncode == 0 and "went on" in going_on.stdout


def test_a_failing_bash_cell_and_an_exception_fail_the_job(tmp_path):
    bash, _, _ = run_job(tmp_path, ["%%bash\necho hi\nexit 3", "print('never')"])
    assert bash.returncode == 1 and "cell 1" in bash.stderr and "CalledProcessError" in bash.stderr
    raised, _, _ = run_job(tmp_path / "b", ["x = 1", "def f():\n    return 1 / 0\n\nf()"])
    assert raised.returncode == 1 and "cell 2, line 4 failed with ZeroDivisionError" in raised.stderr


def test_content_is_the_working_folder_and_what_the_cells_write_comes_back(tmp_path):
    done, content, model = run_job(tmp_path, [
        "%matplotlib inline\nimport os\nprint('cwd', os.getcwd())",
        "open('/content/model.pt', 'w').write('weights')\nos.makedirs('runs/exp', exist_ok=True)\n"
        "open('runs/exp/results.csv', 'w').write('1,2')\nos.makedirs('.cache/hub', exist_ok=True)\n"
        "open('.cache/hub/big.bin', 'w').write('x' * 100)",
        "from google.colab import files\nfiles.download('/content/runs/exp/results.csv')",
    ])
    assert done.returncode == 0, done.stderr
    assert f"cwd {content}" in done.stdout
    kept = sorted(str(p.relative_to(model)) for p in model.rglob("*") if p.is_file())
    assert kept == ["content/model.pt", "content/runs/exp/results.csv", "downloads/results.csv"]  # no cache
    assert "results: 2 file(s)" in done.stdout


def test_colab_calls_work_or_fail_at_once_and_prompts_never_hang(tmp_path):
    drive_files = tmp_path / "channel"
    (drive_files / "MyDrive").mkdir(parents=True)
    (drive_files / "MyDrive" / "data.csv").write_text("a,b")
    done, _, _ = run_job(tmp_path, [
        "from google.colab import drive, userdata, runtime, output\ndrive.mount('/content/drive')\n"
        "print(open('/content/drive/MyDrive/data.csv').read())\noutput.clear()\nruntime.unassign()",
        "print(userdata.get('WANDB_API_KEY'))",
        "name = input('your name? ')",
    ], env={"SM_CHANNEL_DRIVE": str(drive_files), "WANDB_API_KEY": "from-the-job-environment"})
    assert "a,b" in done.stdout and "from-the-job-environment" in done.stdout
    assert done.returncode == 1 and "cell 3, line 1 failed with EOFError: input() waits for someone" in done.stderr
    upload, _, _ = run_job(tmp_path / "u", ["from google.colab import files\nfiles.upload()"])
    assert upload.returncode == 1 and "ColabOnly: files.upload() asks the person at the browser" in upload.stderr
    secret, _, _ = run_job(tmp_path / "s", ["from google.colab import userdata\nuserdata.get('HF_TOKEN')"])
    assert secret.returncode == 1 and "SecretNotFoundError: Secret HF_TOKEN does not exist in this job" in secret.stderr


def test_an_earlier_export_cell_does_not_export_again_inside_the_job(tmp_path):
    done, _, _ = run_job(tmp_path, ["%load_ext colabkit", "%to_sagemaker ml.g5.xlarge --local", "print('on')"],
                         env={"TRAINING_JOB_NAME": "job", "SAGEMAKER_BASE_DIR": str(tmp_path / "opt-ml")})
    assert done.returncode == 0, done.stderr
    assert "the export cell does not run inside the job" in done.stdout and "on" in done.stdout


@pytest.mark.parametrize("source,call,fails", [
    ("from google.colab import files as f\nf.upload()", "f.upload()", True),
    ("import google.colab.drive as gd\ngd.mount('/content/gdrive')", "gd.mount()", False),
    ("from google.colab import auth\nauth.authenticate_user()", "auth.authenticate_user()", True),
    ("from huggingface_hub import notebook_login\nnotebook_login()", "notebook_login()", True),
    ("import wandb\nwandb.login()", "wandb.login()", True),
    ("import wandb\nwandb.login(key=KEY)", None, None),
    ("from getpass import getpass\ntoken = getpass('token: ')", "getpass()", True),
    ("from google.colab import output\noutput.enable_custom_widget_manager()", "output.enable_custom_widget_manager()",
     False),
])
def test_colab_only_and_interactive_calls_are_reported_before_anything_is_sent(source, call, fails):
    found = portability.findings([Cell(4, source)])
    if call is None:
        assert found == []
        return
    [finding] = found
    assert (finding.cell, finding.line, finding.call, finding.fails) == (4, 2, call, fails)


def test_drive_files_are_the_existing_files_the_cells_name(tmp_path):
    from colabkit.sagemaker import drive

    mount = tmp_path / "drive"
    (mount / "MyDrive" / "data").mkdir(parents=True)
    (mount / "MyDrive" / "data" / "a.csv").write_text("1")
    (mount / "MyDrive" / "b.txt").write_text("2")
    cells = [Cell(1, f"df = open('{mount}/MyDrive/data/a.csv')\nopen('{mount}/MyDrive/missing.csv')"),
             Cell(2, f"DATA = '{mount}/MyDrive/data'\n!ls {mount}/MyDrive\nb = '{mount}/MyDrive/b.txt'")]
    assert drive.select(cells, str(mount)).files == (mount / "MyDrive" / "b.txt", mount / "MyDrive" / "data" / "a.csv")


def test_libraries_that_probe_for_colab_find_the_stand_in_as_a_module(tmp_path):
    done, _, _ = run_job(tmp_path, ["import importlib.util\nprint('spec', importlib.util.find_spec('google.colab').name)\n"
                                    "print('drive', importlib.util.find_spec('google.colab.drive') is not None)"])
    assert done.returncode == 0, done.stderr
    assert "spec google.colab" in done.stdout and "drive True" in done.stdout


def test_nvidia_smi_on_an_instance_without_a_gpu_is_said_before_it_fails_the_job():
    cells = [Cell(1, "!nvidia-smi\n!nvidia-smi -L || true")]
    [finding] = portability.findings(cells, gpu=False)
    assert (finding.line, finding.call, finding.fails) == (1, "!nvidia-smi", True)
    assert portability.findings(cells, gpu=True) == []


def test_a_job_whose_last_checkpoint_fails_fails_and_says_it(tmp_path):
    """The notebook's last checkpoint (the last cell's) was still being written when the cells
    ran out, and its failure was dropped at exit: the job ended green and the notebook would
    have brought back an older checkpoint. The runner now waits for it, and its failure fails
    the job, said."""
    store = tmp_path / "store"
    done, _, _ = run_job(tmp_path, [
        "%load_ext colabkit",
        f"import numpy as np\nw = np.ones(3)\n%checkpoint every 1s w --to {store}",
        "import shutil, time\nfrom colabkit.checkpoint import session\nw += 1\n"
        "pool = session.active().store.root / 'pool'  # the job's store: the pool becomes a file\n"
        "shutil.rmtree(pool, ignore_errors=True)\npool.write_text('not a folder')\ntime.sleep(1.2)",
    ])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[colabkit] the job's last checkpoint failed: Checkpoint step-0 was not saved" in done.stderr, done.stderr


def test_a_job_whose_python_checkpointer_loses_its_last_save_fails(tmp_path):
    """A Checkpointer made in Python (never %checkpoint) whose last save was lost, its writer
    killed: the job ended green (the loss said only at exit, if at all)."""
    done, _, _ = run_job(tmp_path, [
        f"import os, signal, numpy as np\nfrom colabkit import Checkpointer\n"
        f"ck = Checkpointer(to={str(tmp_path / 'store')!r}, w=np.ones(3))\nck.save(wait=True)\n"
        "ck.step = 1\nos.kill(ck.sink._writer_process().process.pid, signal.SIGKILL)\nck.save()",
    ])
    assert done.returncode == 1, done.stdout + done.stderr
    assert "[colabkit] the job's last checkpoint failed: checkpoint step-1 is not in" in done.stderr, done.stderr
    assert "the writer process died (killed" in done.stderr
