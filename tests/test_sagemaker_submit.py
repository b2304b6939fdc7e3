"""Submitting an export to SageMaker, against moto's server on 127.0.0.1 (see helpers/aws.py):
the uploads, the CreateTrainingJob request, following, fetching; and the checks before it.
"""

import datetime as dt
import io
import json
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from botocore.stub import Stubber
from conftest import run
from IPython.core.error import UsageError

from colabkit.errors import ColabkitError
from colabkit.sagemaker import aws as sm_aws
from colabkit.sagemaker import images, pricing, request

TRAIN = [
    "import numpy as np, colabkit\nw = np.zeros(8, dtype=np.float32)",
    "%checkpoint every 1 steps w",
    "for i in colabkit.resumable(range(4)):\n    w += 1",
]


def cells(ip, sources):
    for source in sources:
        result = ip.run_cell(source, store_history=True)
        assert result.success, result.error_in_exec or result.error_before_exec


def objects(bucket):
    from helpers.aws import client

    return {o["Key"]: o["Size"] for o in client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])}


# -- the request, offline -------------------------------------------------------------------
def test_dry_run_prints_the_request_and_sends_nothing(shell):
    cells(shell, ["x = 1", "!pip install einops==0.8.0"])
    line = "%to_sagemaker ml.g5.xlarge --dry-run --region eu-west-1 --max-run 2h"
    result, out = run(shell, line, store_history=True)
    assert result.success, result.error_in_exec
    assert "\n{" not in out.stdout  # a summary, the JSON in its file
    assert "  Spot         no (on demand)" in out.stdout and "  limits       runs at most 2h 00m" in out.stdout
    body = json.loads(Path(re.search(r"  request      (\S+)", out.stdout).group(1)).read_text())
    assert body["AlgorithmSpecification"]["TrainingImage"].startswith(
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:")
    assert body["ResourceConfig"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
    assert body["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert body["EnableManagedSpotTraining"] is False  # no checkpoint to resume from after an interruption
    hp = body["HyperParameters"]
    assert json.loads(hp["sagemaker_program"]) == "entry.py" and json.loads(hp["sagemaker_region"]) == "eu-west-1"
    assert json.loads(hp["sagemaker_submit_directory"]).startswith("s3://sagemaker-eu-west-1-ACCOUNT/colabkit/notebook/")
    assert "YOUR-SAGEMAKER-ROLE" in body["RoleArn"] and "no role given" in out.stdout
    assert "cost: 1 x ml.g5.xlarge: $1.41/h on demand" in out.stdout
    assert "dry run: nothing was sent" in out.stdout


def test_the_request_is_checked_against_the_service_model_before_sending():
    plan = request.Plan(job_name="colabkit-x-1", notebook="x", region="us-east-1", role="arn:aws:iam::1:role/r",
                        image="img", instance_type="ml.g5.xlarge", instances=1, volume_gb=30, max_run=3600,
                        spot=True, max_wait=1800, bucket="b", prefix="colabkit/x/colabkit-x-1")
    with pytest.raises(ColabkitError, match="--max-wait .* must be at least --max-run"):
        request.check(request.build(plan))
    from dataclasses import replace

    with pytest.raises(ColabkitError, match="can't name a SageMaker training job"):
        request.check(request.build(replace(plan, max_wait=7200, job_name="bad_name!")))
    with pytest.raises(ColabkitError, match="--volume must be at least 1 GB"):
        request.check(request.build(replace(plan, max_wait=7200, volume_gb=0)))
    with pytest.raises(ColabkitError, match="not a SageMaker training instance type"):
        request.check(request.build(replace(plan, max_wait=7200, instance_type="ml.g5.huge")))
    ok = request.check(request.build(replace(plan, max_wait=7200)))
    assert ok["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}


def test_several_gpus_run_under_the_containers_torchrun():
    plan = request.Plan(job_name="j", notebook="x", region="us-east-1", role="arn:aws:iam::1:role/r",
                        image="img", instance_type="ml.g5.12xlarge", instances=1, volume_gb=30, max_run=60,
                        spot=False, max_wait=None, bucket="b", prefix="p", distributed=True)
    hp = request.hyperparameters(plan)
    assert json.loads(hp["sagemaker_torch_distributed_enabled"]) is True
    assert json.loads(hp["sagemaker_instance_type"]) == "ml.g5.12xlarge"
    from dataclasses import replace

    single = request.hyperparameters(replace(plan, distributed=False))
    assert "sagemaker_torch_distributed_enabled" not in single


# Exported, never run here (no GPU, no transformers): what decides the launch is read from the code.
PLAIN_LOOP = ["if False:\n    import torch\n    model = torch.nn.Linear(4, 1).to('cuda')",
              "if False:\n    for step in range(100):\n        model(torch.randn(8, 4, device='cuda')).sum().backward()"]
TRAINER = ["if False:\n    from transformers import Trainer, TrainingArguments",
           "if False:\n    trainer = Trainer(model=model, args=TrainingArguments('out'), train_dataset=data)\n"
           "    trainer.train()"]


@pytest.mark.parametrize("instance_type,gpus", [
    ("ml.g6e.12xlarge", 4), ("ml.p4de.24xlarge", 8), ("ml.g7e.12xlarge", 2), ("ml.p5.4xlarge", 1),
    ("ml.p6e-gb200.36xlarge", 4), ("ml.g4dn.16xlarge", 1)])
def test_a_distributed_aware_notebook_runs_one_process_per_gpu_of_every_multi_gpu_type(shell, instance_type, gpus):
    """GPU counts come from the hardware table, not from the price table (which lists 27 types)."""
    cells(shell, TRAINER[:1])
    result, out = run(shell, f"%to_sagemaker {instance_type} --dry-run --region us-east-1", store_history=True)
    assert result.success, result.error_in_exec
    body = json.loads(Path(re.search(r"  request      (\S+)", out.stdout).group(1)).read_text())
    assert ("sagemaker_torch_distributed_enabled" in body["HyperParameters"]) == (gpus > 1)
    assert (f"{gpus} training processes under torchrun" in out.stdout) == (gpus > 1)


def test_a_plain_loop_runs_once_and_is_told_the_other_gpus_idle(shell):
    cells(shell, PLAIN_LOOP)
    result, out = run(shell, "%to_sagemaker ml.g5.12xlarge --dry-run --region us-east-1", store_history=True)
    assert result.success, result.error_in_exec
    body = json.loads(Path(re.search(r"  request      (\S+)", out.stdout).group(1)).read_text())
    assert "sagemaker_torch_distributed_enabled" not in body["HyperParameters"]
    assert "not distributed-aware" in out.stdout and "3 of the 4 GPUs of ml.g5.12xlarge will idle" in out.stdout
    assert "ml.g6.xlarge (1x L4 24 GB" in out.stdout  # the cheapest one-GPU type like these
    result, _ = run(shell, "%to_sagemaker ml.g5.xlarge --instances 2 --dry-run --region us-east-1", store_history=True)
    assert isinstance(result.error_in_exec, UsageError) and "each machine would train" in str(result.error_in_exec)


def test_an_unknown_gpu_type_asks_for_its_gpu_count(shell):
    cells(shell, TRAINER)
    result, _ = run(shell, "%to_sagemaker ml.g7.12xlarge --dry-run --region us-east-1", store_history=True)
    assert isinstance(result.error_in_exec, UsageError) and "--gpus N" in str(result.error_in_exec)
    result, out = run(shell, "%to_sagemaker ml.g7.12xlarge --gpus 2 --dry-run --region us-east-1", store_history=True)
    assert result.success and "2 training processes under torchrun" in out.stdout
    result, _ = run(shell, "%to_sagemaker ml.g5.xlarge --gpus 4 --dry-run --region us-east-1", store_history=True)
    assert "ml.g5.xlarge has 1 GPU(s), not 4" in str(result.error_in_exec)


def test_every_gpu_training_type_botocore_lists_is_known_or_asked_about():
    from colabkit.sagemaker import hardware, validate

    listed = [t for t in validate._model().shape_for("TrainingInstanceType").enum if hardware.has_gpu(t)]
    unknown = sorted(t for t in listed if t not in hardware.TYPES)
    assert len(listed) >= 50 and all(t.startswith("ml.g7.") for t in unknown), unknown
    assert all(hardware.TYPES[t].gpus >= 1 and hardware.TYPES[t].gpu_gb > 0 for t in listed if t in hardware.TYPES)


def test_only_rank_zero_writes_checkpoints_and_every_rank_restores(tmp_path, monkeypatch):
    import numpy as np

    from colabkit.checkpoint.checkpointer import Checkpointer

    w = np.arange(4.0)
    ck = Checkpointer(to=tmp_path / "ck", w=w)
    ck.save(wait=True)
    ck.close()
    monkeypatch.setenv("RANK", "1")
    other = Checkpointer(to=tmp_path / "ck", w=np.zeros(4))
    assert list(other.restore().values["w"]) == [0.0, 1.0, 2.0, 3.0]
    other.step = 5
    assert other.save(wait=True) is False
    other.close()
    assert [c.id for c in other.store.list()] == ["step-0"]


def pytorch(version):
    return images.Framework("pytorch", version, images.TORCH_MODULES, "test")


@pytest.mark.parametrize("region,instance,torch,uri", [
    ("us-east-1", "ml.g5.xlarge", "2.5.0+cu121", "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5.1-gpu-py311"),
    ("af-south-1", "ml.m5.xlarge", "2.8.1", "626614931356.dkr.ecr.af-south-1.amazonaws.com/pytorch-training:2.8.0-cpu-py312"),
    ("il-central-1", "ml.p4d.24xlarge", "2.7.0", "780543022126.dkr.ecr.il-central-1.amazonaws.com/pytorch-training:2.7.1-gpu-py312"),
    ("cn-north-1", "ml.g4dn.xlarge", "2.6.0", "727897471807.dkr.ecr.cn-north-1.amazonaws.com.cn/pytorch-training:2.6.0-gpu-py312"),
    ("us-gov-west-1", "ml.g5.xlarge", None, "442386744353.dkr.ecr.us-gov-west-1.amazonaws.com/pytorch-training:2.8.0-gpu-py312"),
])
def test_the_pytorch_training_image_for_region_instance_and_torch(region, instance, torch, uri):
    image = images.training_image(region, instance, pytorch(torch))
    assert image.uri == uri and image.note is None


def test_image_versions_the_table_lacks_are_said():
    newer = images.training_image("us-east-1", "ml.g5.xlarge", pytorch("2.11.0+cu128"))  # Colab's, 2026-08
    assert newer.uri.endswith(":2.8.0-gpu-py312") and "torch 2.11.0+cu128" in newer.note
    older = images.training_image("us-east-1", "ml.g5.xlarge", pytorch("1.13.1"))
    assert older.uri.endswith(":2.0.1-gpu-py310") and "--image" in older.note
    with pytest.raises(ColabkitError, match="no PyTorch training image in region 'xx-nowhere-1'"):
        images.training_image("xx-nowhere-1", "ml.g5.xlarge", pytorch("2.5.0"))
    with pytest.raises(ColabkitError, match="no PyTorch training image in region 'us-iso-east-1'"):
        images.training_image("us-iso-east-1", "ml.g5.xlarge", pytorch("2.8.0"))  # not published there


@pytest.mark.parametrize("modules,versions,instance,family,uri_end", [
    ({"tensorflow", "numpy"}, {"tensorflow": "2.19.1"}, "ml.g5.xlarge", "tensorflow", "tensorflow-training:2.19.0-gpu-py312"),
    ({"keras"}, {"tensorflow": "2.16.1"}, "ml.m5.large", "tensorflow", "tensorflow-training:2.16.2-cpu-py310"),
    ({"transformers", "datasets"}, {"transformers": "4.56.1", "torch": "2.8.0"}, "ml.g5.xlarge", "huggingface",
     "huggingface-pytorch-training:2.8.0-transformers4.56.2-gpu-py312-cu129-ubuntu22.04"),
    ({"transformers"}, {"transformers": "5.15.0", "torch": "2.11.0"}, "ml.g5.xlarge", "pytorch",
     "pytorch-training:2.8.0-gpu-py312"),  # no Hugging Face image of that release: PyTorch, transformers pinned
    ({"transformers"}, {"transformers": "4.56.1", "torch": "2.8.0"}, "ml.m5.large", "pytorch",
     "pytorch-training:2.8.0-cpu-py312"),  # the Hugging Face images are GPU only
    ({"sklearn", "pandas"}, {}, "ml.m5.large", "python", "pytorch-training:2.8.0-cpu-py312"),
    ({"jax", "flax"}, {}, "ml.g5.xlarge", "python", "pytorch-training:2.8.0-gpu-py312"),
])
def test_the_image_follows_what_the_cells_import(modules, versions, instance, family, uri_end):
    framework = images.framework_for(modules, versions.get, instance)
    assert framework.name == family
    assert images.training_image("us-east-1", instance, framework).uri.endswith(uri_end)


def test_a_tensorflow_notebook_from_the_corpus_gets_the_tensorflow_image(shell, tmp_path):
    from colabkit.notebook import from_file
    from colabkit.runtime import Runtime
    from colabkit.sagemaker import capture, export

    path = Path(__file__).parent / "corpus" / "notebooks" / "tensorflow__docs__beginner.ipynb"
    kernel = Runtime(notebook=from_file(path))
    kernel.mount(to=tmp_path)
    lines = []
    outcome = export.run(export.Options("ml.g5.xlarge", dry_run=True, region="us-east-1"), capture.read_notebook(path),
                         kernel, echo=lines.append)
    image = outcome.request["AlgorithmSpecification"]["TrainingImage"]
    said = "\n".join(lines)
    assert "image: the cells import tensorflow: the SageMaker TensorFlow training image" in said
    # Colab's TensorFlow (2.20 in its 2026-08 list) is newer than any SageMaker image: the nearest, said.
    assert image.endswith("/tensorflow-training:2.19.0-gpu-py312") and "the notebook runs tensorflow 2.20" in said


# -- cost and advice --------------------------------------------------------------------------
def test_the_estimate_uses_the_measured_pace():
    estimate = pricing.estimate("ml.g5.xlarge", 2, spot=True, pace={"pace": 3.6, "position": 1000, "total": 3000})
    assert estimate.hours == pytest.approx(2.0)
    text = "\n".join(estimate.lines())
    assert "2 x ml.g5.xlarge: $2.82/h on demand" in text
    assert "2000 of 3000 iterations left at 3.60 s/it" in text
    fast = "\n".join(pricing.estimate("ml.g5.xlarge", 1, False, {"pace": 3.87e-05, "position": 0, "total": 9}).lines())
    assert "9 of 9 iterations left at 25839.8 it/s" in fast  # was "3.87e-05 s each"
    assert f"${1.408 * (1 - pricing.TYPICAL_SPOT_SAVING) * 2 * 2:.2f} on Spot" in text
    unknown = pricing.estimate("ml.g5.xlarge", 1, spot=False, pace={"pace": 1.0, "position": 3})
    assert unknown.hours is None and "the training loop's time is unknown" in "\n".join(unknown.lines())
    finished = pricing.estimate("ml.g5.xlarge", 1, spot=False, pace={"pace": 1.0, "position": 3, "total": 3})
    text = "\n".join(finished.lines())  # nothing left of the loop is not a free job
    assert finished.hours is None and "$0.00" not in text and "finished all 3 iterations" in text
    assert "not counted: the job's start (minutes), installs" in text


def test_advice_from_what_gpuwatch_saw():
    full_t4 = pricing.Usage("Tesla T4", int(14.9 * 2**30), 15 * 2**30, 10 * 2**30)
    [line] = pricing.advise(full_t4, "ml.g4dn.xlarge")
    assert "peak GPU memory 14.9 GiB of 15.0 GiB on a Tesla T4" in line
    assert "ml.g4dn.xlarge (1x T4 16 GB, 16 GiB RAM) is smaller than that" in line
    assert "ml.g6.xlarge (1x L4 24 GB" in line  # the cheapest listed type with room
    [fits] = pricing.advise(pricing.Usage("Tesla T4", 2**30, 15 * 2**30, 2**30), "ml.g4dn.xlarge")
    assert fits.endswith("ml.g4dn.xlarge fits it.")
    assert pricing.advise(None, "ml.g5.xlarge") == []


# -- submitting, against moto ---------------------------------------------------------------------
def test_submit_uploads_the_source_and_checkpoint_and_creates_the_job(shell, aws):
    cells(shell, TRAIN)
    result, out = run(shell, "%to_sagemaker ml.g5.xlarge --max-run 1h", store_history=True)
    assert result.success, result.error_in_exec
    job = result.result
    bucket = f"sagemaker-{aws.REGION}-{aws.ACCOUNT}"
    stored = objects(bucket)
    prefix = f"colabkit/notebook/{job.name}"
    assert f"{prefix}/source/sourcedir.tar.gz" in stored
    step = f"{prefix}/checkpoints/checkpoints/step-4"
    assert {f"{step}/manifest.json", f"{step}/tensors.json", f"{step}/state.json"} <= set(stored)
    packs = job.store.get("step-4").manifest["packs"] if job.store else None
    assert packs and {f"{prefix}/checkpoints/checkpoints/pool/{name}" for name in packs} <= set(stored)
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=job.name)
    assert described["EnableManagedSpotTraining"] is True
    assert described["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert described["CheckpointConfig"] == {"S3Uri": f"s3://{bucket}/{prefix}/checkpoints",
                                             "LocalPath": "/opt/ml/checkpoints"}
    assert described["RoleArn"] == aws.ROLE
    assert described["OutputDataConfig"] == {"S3OutputPath": f"s3://{bucket}/{prefix}/output"}
    tags = aws.client("sagemaker").list_tags(ResourceArn=described["TrainingJobArn"])["Tags"]
    assert {"Key": "colabkit:notebook", "Value": "notebook"} in tags
    archive = aws.client("s3").get_object(Bucket=bucket, Key=f"{prefix}/source/sourcedir.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        names = tar.getnames()
        assert {"entry.py", "cells.json", "requirements.txt"} <= set(names)
        assert any(n.startswith("colabkit-") and n.endswith(".whl") for n in names)
        sent = tar.extractfile("cells.json").read().decode()
    assert "testing" not in sent and "testing" not in json.dumps(described, default=str)  # no credentials travel
    assert "uploaded step-4" in out.stdout and "submitted" in out.stdout and "on Spot" in out.stdout


def test_a_named_bucket_that_does_not_exist_is_one_clear_paragraph(shell, aws):
    cells(shell, ["x = 1"])
    result, _ = run(shell, "%to_sagemaker ml.g5.xlarge --bucket no-such-bucket-here", store_history=True)
    assert isinstance(result.error_in_exec, UsageError)
    assert "The S3 bucket no-such-bucket-here does not exist" in str(result.error_in_exec)


def test_credentials_come_from_colab_secrets(fake_colab, aws, monkeypatch):
    from google.colab import userdata

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setattr(userdata, "SECRETS", {"AWS_ACCESS_KEY_ID": ("AKIAFROMCOLABSECRETS", True),
                                              "AWS_SECRET_ACCESS_KEY": ("s" * 40, True),
                                              "AWS_SESSION_TOKEN": ("", False)})  # not granted: skipped
    connection = sm_aws.connect()
    assert connection.account == aws.ACCOUNT
    assert connection.session.get_credentials().access_key == "AKIAFROMCOLABSECRETS"


def test_no_role_says_how_to_make_one(monkeypatch):
    monkeypatch.delenv("COLABKIT_SAGEMAKER_ROLE", raising=False)
    with pytest.raises(ColabkitError, match="IAM role.*--role ARN.*COLABKIT_SAGEMAKER_ROLE.*Create role"):
        sm_aws.role_arn(None, "123456789012")
    assert sm_aws.role_arn("MyRole", "123456789012") == "arn:aws:iam::123456789012:role/MyRole"


@pytest.mark.parametrize("code,says", [
    ("ResourceLimitExceeded", "quota of 0.*Service Quotas"),
    ("AccessDeniedException", "AWS refused creating the training job.*IAM"),
    ("ValidationException", "did not accept the request while creating the training job"),
    ("ThrottlingException", "throttling.*Wait a minute"),
    ("UnrecognizedClientException", "did not accept your credentials"),
])
def test_aws_errors_are_one_paragraph(code, says, aws):
    client = aws.client("sagemaker")
    with Stubber(client) as stub:
        stub.add_client_error("create_training_job", service_error_code=code, service_message="It said no.")
        with pytest.raises(ColabkitError, match=says) as caught:
            with sm_aws.errors("creating the training job"):
                client.create_training_job(TrainingJobName="j", AlgorithmSpecification={"TrainingInputMode": "File"},
                                           RoleArn="arn:aws:iam::1:role/r", OutputDataConfig={"S3OutputPath": "s3://b"},
                                           ResourceConfig={"InstanceType": "ml.g5.xlarge", "InstanceCount": 1,
                                                           "VolumeSizeInGB": 1},
                                           StoppingCondition={"MaxRuntimeInSeconds": 1})
    assert "It said no." in str(caught.value) and "\n" not in str(caught.value)


# -- following a job ---------------------------------------------------------------------------
def _submitted(shell, aws):
    cells(shell, TRAIN)
    result = shell.run_cell("%to_sagemaker ml.g5.xlarge", store_history=True)
    assert result.success, result.error_in_exec
    return result.result


def test_wait_streams_the_logs_and_fetch_brings_the_results_back(shell, aws, tmp_path):
    job = _submitted(shell, aws)
    logs = aws.client("logs")
    now = int(time.time() * 1000)  # CloudWatch drops events from long ago
    logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=f"{job.name}/algo-1-1700000000")
    logs.put_log_events(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=f"{job.name}/algo-1-1700000000",
                        logEvents=[{"timestamp": now, "message": "[colabkit] running cell 1"},
                                   {"timestamp": now + 1, "message": "epoch 4"}])
    # What SageMaker does when the job ends: model.tar.gz and the synced checkpoint folder.
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=job.name)
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"w" * 100)
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        tar.add(model / "weights.bin", arcname="weights.bin")
    bucket, key = described["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("s3://").split("/", 1)
    aws.client("s3").upload_file(str(tmp_path / "model.tar.gz"), bucket, key)
    final = job.store.root / "step-4"
    job_side = tmp_path / "job-checkpoints" / "checkpoints" / "step-9"
    import shutil

    shutil.copytree(final, job_side)
    shutil.copytree(job.store.root / "pool", job_side.parent / "pool")
    manifest = json.loads((job_side / "manifest.json").read_text())
    manifest["step"] = 9
    (job_side / "manifest.json").write_text(json.dumps(manifest))
    torn = tmp_path / "job-checkpoints" / "checkpoints" / "step-12"  # a newer one the job left damaged
    shutil.copytree(job_side, torn)
    (torn / "tensors.json").write_bytes(b"cut short")
    aws.upload_folder(tmp_path / "job-checkpoints", described["CheckpointConfig"]["S3Uri"])
    from colabkit.sagemaker.export import follow

    lines = []
    follow(job, poll=0, echo=lines.append, in_notebook=False)
    assert "[colabkit] running cell 1" in lines and "epoch 4" in lines
    assert any(f"{job.name}: Completed" in line for line in lines)
    assert (job.folder / "model" / "weights.bin").read_bytes() == b"w" * 100
    assert job.store.latest_valid()[0].id == "step-9"
    assert any("step-9 from the job is in your checkpoints" in line for line in lines)
    assert "Completed" in job._repr_html_() and "console.aws.amazon.com" in job._repr_html_()


def test_stop_and_status_with_the_real_request_shapes(shell, aws):
    """moto implements neither StopTrainingJob nor a job that is still running: botocore's Stubber
    checks our requests against the service model and plays SageMaker's answers."""
    job = _submitted(shell, aws)
    start = dt.datetime(2026, 11, 23, 10, tzinfo=dt.timezone.utc)
    with Stubber(job.sagemaker) as stub:
        stub.add_response("stop_training_job", {}, {"TrainingJobName": job.name})
        job.stop()
        running = {"TrainingJobName": job.name, "TrainingJobArn": "arn:aws:sagemaker:us-east-1:1:training-job/x",
                   "TrainingJobStatus": "InProgress", "SecondaryStatus": "Training",
                   "AlgorithmSpecification": {"TrainingInputMode": "File"},
                   "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 30},
                   "StoppingCondition": {"MaxRuntimeInSeconds": 60}, "ModelArtifacts": {"S3ModelArtifacts": ""},
                   "CreationTime": start, "TrainingStartTime": start,
                   "BillableTimeInSeconds": 1800}
        stub.add_response("describe_training_job", running, {"TrainingJobName": job.name})
        stub.add_response("describe_training_job", {**running, "TrainingJobStatus": "Stopped",
                                                    "SecondaryStatus": "Stopped",
                                                    "TrainingEndTime": start + dt.timedelta(hours=1)},
                          {"TrainingJobName": job.name})
        shown = []
        assert job.wait(poll=0, echo=lambda line: None, show=lambda j: shown.append(j.summary())) == "Stopped"
    assert "InProgress · Training" in shown[0]
    assert shown[1].startswith(f"{job.name}: Stopped · elapsed 1h 00m · billable 30m 00s · cost so far $1.41")
    with Stubber(job.sagemaker) as stub:
        stub.add_client_error("stop_training_job", "ValidationException", "The job is not running.")
        with pytest.raises(ColabkitError, match="did not accept the request while stopping training job"):
            job.stop()


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "colabkit.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def write_notebook(path, *sources):
    import nbformat

    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources]), path)
    return path


def test_colabkit_export_from_a_terminal(tmp_path):
    path = write_notebook(tmp_path / "train me.ipynb", "x = 1", "print('trained', x + 1)")
    assert cli("--version").stdout.startswith("colabkit 0.")
    dry = cli("export", path, "--instance", "ml.g5.xlarge", "--dry-run", "--region", "eu-west-1")
    assert dry.returncode == 0, dry.stderr
    request_file = Path(re.search(r"  request      (\S+)", dry.stdout).group(1))
    assert json.loads(request_file.read_text())["TrainingJobName"].startswith("colabkit-train-me-")
    assert (tmp_path / "colabkit-storage" / "train-me" / "sagemaker").is_dir()  # the notebook's own storage
    local = cli("export", path, "--instance", "ml.g5.xlarge", "--local")
    assert local.returncode == 0, local.stdout + local.stderr
    assert "trained 2" in local.stdout
    bad = cli("export", tmp_path / "missing.ipynb", "--instance", "ml.g5.xlarge", "--dry-run", timeout=60)
    assert bad.returncode == 2 and "There is no notebook at" in bad.stderr and "Traceback" not in bad.stderr


def test_two_notebooks_in_one_folder_never_share_checkpoints(tmp_path):
    """The bug: a never-run second notebook resumed the first one's step-12 and finished green."""
    train = ("%load_ext colabkit", "import numpy as np, colabkit\nw = np.zeros(4)", "%checkpoint every 1 steps w",
             "for i in colabkit.resumable(range(12)):\n    w += 1\nprint('w is', w[0])")
    first = write_notebook(tmp_path / "first.ipynb", *train)
    second = write_notebook(tmp_path / "second.ipynb", *train)
    ran = cli("export", first, "--instance", "ml.m5.large", "--local")
    assert ran.returncode == 0 and "w is 12.0" in ran.stdout, ran.stdout + ran.stderr
    assert (tmp_path / "colabkit-storage" / "first" / "checkpoints" / "step-12").is_dir()
    dry = cli("export", second, "--instance", "ml.m5.large", "--dry-run", "--region", "us-east-1")
    assert dry.returncode == 0 and "on demand: the run has no checkpoint" in dry.stdout, dry.stdout + dry.stderr
    ran = cli("export", second, "--instance", "ml.m5.large", "--local")
    assert ran.returncode == 0 and "starts from" not in ran.stdout and "resumed" not in ran.stdout
    assert "w is 12.0" in ran.stdout  # trained all twelve steps itself
    # Pointed at the first notebook's storage on purpose, the export refuses rather than resume it.
    crossed = cli("export", second, "--instance", "ml.m5.large", "--dry-run", "--storage",
                  tmp_path / "colabkit-storage" / "first")
    assert crossed.returncode == 2 and "was written by the notebook 'first', not 'second'" in crossed.stderr


def test_the_price_list_api_answer_is_read_and_failures_fall_back_to_the_table():
    """moto has no Price List API: botocore's Stubber checks our request against the service
    model and plays a GetProducts answer shaped like AWS's."""
    import boto3

    client = boto3.client("pricing", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    product = {"product": {"attributes": {"instanceName": "ml.g5.xlarge", "regionCode": "eu-west-1"}},
               "terms": {"OnDemand": {"T": {"priceDimensions": {"D": {"unit": "Hrs",
                                                                       "pricePerUnit": {"USD": "1.5840000000"}}}}}}}

    class Session:
        def client(self, service, region_name=None, config=None):
            assert (service, region_name) == ("pricing", "us-east-1")
            return client

    with Stubber(client) as stub:
        filters = [{"Type": "TERM_MATCH", "Field": f, "Value": v} for f, v in (
            ("regionCode", "eu-west-1"), ("instanceName", "ml.g5.xlarge"), ("productFamily", "ML Instance"),
            ("platoinstancetype", "Training"))]
        stub.add_response("get_products", {"PriceList": [json.dumps(product)]},
                          {"ServiceCode": "AmazonSageMaker", "Filters": filters, "MaxResults": 10})
        live = pricing.estimate("ml.g5.xlarge", 1, spot=False, pace=None, session=Session(), region="eu-west-1")
        stub.add_client_error("get_products", "AccessDeniedException", "no pricing:GetProducts")
        table = pricing.estimate("ml.g5.xlarge", 1, spot=False, pace=None, session=Session(), region="eu-west-1")
    assert live.on_demand_per_hour == 1.584 and live.source == "AWS Price List, eu-west-1"
    assert table.on_demand_per_hour == 1.408 and table.source.startswith("list price us-east-1")


def test_a_large_checkpoint_goes_up_as_a_multipart_upload(shell, aws, monkeypatch):
    from colabkit.sagemaker import upload

    monkeypatch.setattr(upload, "PART", 5 * 2**20)  # S3's smallest part, so 12 MiB makes three
    monkeypatch.setattr(upload.Progress, "SAID_FROM", 8 * 2**20)  # said from 64 MiB: 12 MiB stands in
    cells(shell, ["import numpy as np, colabkit\nw = np.ones(3 * 2**20, dtype=np.float32)",
                  "%checkpoint every 1 steps w", "for i in colabkit.resumable(range(1)):\n    w += 1"])
    result, out = run(shell, "%to_sagemaker ml.g5.xlarge", store_history=True)
    job = result.result
    (pack,) = [name for name, record in job.store.get("step-1").manifest["packs"].items() if record["size"] >= 12 << 20]
    key = f"colabkit/notebook/{job.name}/checkpoints/checkpoints/pool/{pack}"
    head = aws.client("s3").head_object(Bucket=f"sagemaker-{aws.REGION}-{aws.ACCOUNT}", Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # S3's mark of a three-part upload
    said = [line for line in out.stdout.splitlines() if line.startswith("[colabkit] uploading: ")]
    assert len(said) >= 2 and re.match(r"\[colabkit\] uploading: 100% of 12\.\d MiB, 0:\d\d$", said[-1])  # as it goes


def test_dry_run_advises_an_instance_from_what_gpuwatch_saw(shell, nvml):
    from fake_nvml import GiB, FakeGpu

    gpu = FakeGpu(memory_used=int(14.9 * GiB))
    nvml.install([gpu])
    cells(shell, ["%gpuwatch --view text --interval 0.2s --every 1h", "import time; time.sleep(0.5)"])
    gpu.memory_used = 2 * GiB  # the peak is what counts, not the last reading
    cells(shell, ["time.sleep(0.5)"])
    result, out = run(shell, "%to_sagemaker ml.g4dn.xlarge --dry-run --region us-east-1", store_history=True)
    assert result.success, result.error_in_exec
    assert "advice: peak GPU memory 14.9 GiB of 15.0 GiB on a Tesla T4" in out.stdout
    assert "ml.g4dn.xlarge (1x T4 16 GB, 16 GiB RAM) is smaller than that" in out.stdout


def test_a_damaged_latest_checkpoint_is_said_and_the_one_before_goes_too(shell, aws):
    cells(shell, TRAIN)
    store = shell.user_ns["colabkit"].checkpoint.session.active().store
    newest = store.latest_valid()[0]
    (own,) = set(newest.manifest["packs"]) - {p for c in store.list()[1:] for p in c.manifest["packs"]}
    with open(store.root / "pool" / own, "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\xff")  # one flipped byte: its hash no longer matches the manifest
    result, out = run(shell, "%to_sagemaker ml.g5.xlarge", store_history=True)
    assert result.success, result.error_in_exec
    assert f"{newest.id}: pool/{own} does not match its xxh3_128" in out.stdout
    older = store.latest_valid()[0].id
    assert f"The job resumes from {older} instead." in out.stdout
    stored = objects(f"sagemaker-{aws.REGION}-{aws.ACCOUNT}")
    prefix = f"colabkit/notebook/{result.result.name}/checkpoints/checkpoints"
    assert f"{prefix}/{older}/manifest.json" in stored and f"{prefix}/{newest.id}/manifest.json" in stored


def test_a_run_without_a_gpu_is_not_advised_off_the_gpu_it_asked_for():
    [line] = pricing.advise(pricing.Usage(None, None, None, 2 * 2**30), "ml.g5.xlarge")
    assert "ml.g4dn.xlarge (1x T4 16 GB" in line and "you chose ml.g5.xlarge" in line
    [cpu] = pricing.advise(pricing.Usage(None, None, None, 2 * 2**30), "ml.m5.xlarge")
    assert "ml.m5.large (2 vCPU, 8 GiB RAM, no GPU) fits it" in cpu
