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

import numpy as np
import torch  # noqa: F401  the notebook process has torch: its checkpoint holds torch's random state,
from conftest import run  # which the job's interpreter (no torch) must be able to skip

import colabkit


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
    assert "cell 2, line 2 failed with RuntimeError: out of data" in done.stdout + done.stderr


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


DISTRIBUTED = [
    "%load_ext colabkit",
    "import os, torch\n"
    "from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments\n"
    "torch.manual_seed(0)\n"
    "config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,\n"
    "                    intermediate_size=32, max_position_embeddings=32, num_labels=2)\n"
    "model = BertForSequenceClassification(config)\n"
    "data = [{'input_ids': torch.randint(0, 64, (12,)), 'labels': torch.tensor(i % 2)} for i in range(64)]",
    "%checkpoint every 2 steps model",
    # The notebook's runtime dies in step 3 (step-2 is saved); the job goes on from there.
    "class Dies(TrainerCallback):\n"
    "    def on_step_end(self, args, state, control, **kwargs):\n"
    "        if state.global_step == 3 and 'TRAINING_JOB_NAME' not in os.environ:\n"
    "            raise KeyboardInterrupt\n"
    "args = TrainingArguments(output_dir='out', per_device_train_batch_size=4, max_steps=6, save_strategy='no',\n"
    "                         report_to=[], use_cpu=True, disable_tqdm=True)\n"
    "trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[Dies()])\n"
    "trainer.train()\n"
    "print(f\"rank {os.environ.get('RANK', '0')} of {os.environ.get('WORLD_SIZE', '1')} \"\n"
    "      f\"trained {trainer.state.global_step} steps\")",
]


def test_a_trainer_notebook_runs_as_two_hosts_under_the_toolkits_torchrun(shell, aws, toolkit, tmp_path):
    """--instances 2 on this machine: two containers of SageMaker's toolkit, hosts 127.0.0.1 and
    127.0.0.2, torchrun over gloo. Both ranks resume from the notebook's checkpoint and train the
    steps left; rank 0 alone writes checkpoints."""
    for source in DISTRIBUTED:
        shell.run_cell(source, store_history=True)
    from colabkit.checkpoint import session

    assert [c.id for c in session.active().store.list()] == ["step-2"]  # the training cell failed at step 3
    job = submit(shell, [], "%to_sagemaker ml.m5.xlarge --instances 2")
    sent = __import__("json").loads((job.folder / "request.json").read_text())
    assert __import__("json").loads(sent["HyperParameters"]["sagemaker_torch_distributed_enabled"]) is True
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=job.name)
    hosts = ["127.0.0.1", "127.0.0.2"]
    done = aws.run_in_container(described, sent, tmp_path / "opt-ml", toolkit, os.environ["AWS_ENDPOINT_URL"],
                                timeout=400, hosts=hosts)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "torchrun --nnodes 2" in log
    # The toolkit logs a process's output as it reads it, which can break one print into several lines.
    said = {host: " ".join(line.split("] ", 1)[1] for line in log.splitlines() if line.startswith(f"[{host}] "))
            for host in hosts}
    said = {host: " ".join(text.split()) for host, text in said.items()}
    assert "rank 0 of 2 trained 6 steps" in said["127.0.0.1"] and "rank 1 of 2 trained 6 steps" in said["127.0.0.2"]

    def written_in_job(host):
        from colabkit.checkpoint.store import CheckpointStore

        store = CheckpointStore(tmp_path / "opt-ml" / host / "checkpoints" / "checkpoints")
        return [c.id for c in store.list() if c.manifest["platform"] == "sagemaker-job"]

    assert all("Trainer.train() resumes from step-2" in said[host] for host in hosts)
    assert sorted(written_in_job("127.0.0.1")) == ["step-4", "step-6"] and written_in_job("127.0.0.2") == []


def unpacked(body: bytes) -> bytes:
    """An object's bytes with its archives opened (sourcedir.tar.gz, model.tar.gz, the wheel in it)."""
    import gzip
    import io
    import tarfile
    import zipfile

    if body[:2] == b"\x1f\x8b":
        try:
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                return b"".join(unpacked(tar.extractfile(m).read()) for m in tar.getmembers() if m.isfile())
        except tarfile.ReadError:
            return unpacked(gzip.decompress(body))
    if body[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            return b"".join(unpacked(archive.read(name)) for name in archive.namelist())
    return body


def test_a_secret_reaches_the_job_through_secrets_manager_and_no_uploaded_byte(shell, aws, toolkit, tmp_path,
                                                                                 monkeypatch):
    import hashlib
    import json
    import random

    from helpers.secret_corpus import CATEGORIES

    value = CATEGORIES["hugging-face-token"][0](random.Random(11))  # a look-alike, never a real token
    monkeypatch.setenv("HF_TOKEN", value)
    job = submit(shell, [
        "%load_ext colabkit",
        "import os, hashlib, numpy as np, colabkit\nw = np.zeros(2)",
        "%checkpoint every 1 steps w",
        "for i in colabkit.resumable(range(2)):\n    w += 1",
        "if 'TRAINING_JOB_NAME' in os.environ:\n    from google.colab import userdata\n"
        "    token = userdata.get('HF_TOKEN')\n    assert token == os.environ['HF_TOKEN']\n"
        "    print('token sha', hashlib.sha256(token.encode()).hexdigest())",
    ], "%to_sagemaker ml.m5.xlarge --secret HF_TOKEN")
    monkeypatch.delenv("HF_TOKEN")  # the job can have it only from Secrets Manager
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=job.name)
    sent = json.loads((job.folder / "request.json").read_text())
    stored = aws.client("secretsmanager").get_secret_value(SecretId=sent["Environment"]["COLABKIT_SECRETS_ARN"])
    assert json.loads(stored["SecretString"]) == {"HF_TOKEN": value}
    done = aws.run_in_container(described, sent, tmp_path / "opt-ml", toolkit, os.environ["AWS_ENDPOINT_URL"])
    log = done.stdout + done.stderr
    assert done.returncode == 0, log
    assert "secrets given to the job: HF_TOKEN" in log
    assert f"token sha {hashlib.sha256(value.encode()).hexdigest()}" in log and value not in log
    everything = aws.every_object()
    assert any(key.endswith("sourcedir.tar.gz") for key in everything)
    assert any("/checkpoints/" in key for key in everything) and any(key.endswith("model.tar.gz") for key in everything)
    leaked = [key for key, body in everything.items() if value.encode() in unpacked(body)]
    assert leaked == []
    tags = aws.client("sagemaker").list_tags(ResourceArn=described["TrainingJobArn"])["Tags"]
    assert value not in json.dumps([described, sent, tags], default=str)
