"""The export's AWS side as an attacker would try it, against moto on 127.0.0.1 (helpers/aws.py
puts AWS's bucket-owner condition and AWS's error answers in front of moto): a bucket nobody else
owns, downloads that stay in their folder, bounded Drive uploads, secrets kept in Secrets Manager,
and failures after the job exists that never say "run it again".
"""

import json
import re
from pathlib import Path

import pytest
from conftest import run
from IPython.core.error import UsageError
from test_sagemaker_submit import TRAIN, cells

from colabkit.errors import ColabkitError
from colabkit.sagemaker import capture, export, job_secrets


def submitted(shell, line="%to_sagemaker ml.g5.xlarge"):
    cells(shell, TRAIN)
    result, out = run(shell, line, store_history=True)
    assert result.success, result.error_in_exec
    return result.result, out.stdout


def default_bucket(aws):
    return f"sagemaker-{aws.REGION}-{aws.ACCOUNT}"


# -- a bucket nobody else owns ----------------------------------------------------------------------
def test_another_accounts_bucket_under_the_default_name_gets_nothing(shell, aws):
    squatter = aws.other_account().client("s3")
    squatter.create_bucket(Bucket=default_bucket(aws))  # the name anyone can compute from an account id
    cells(shell, TRAIN)
    result, _ = run(shell, "%to_sagemaker ml.g5.xlarge", store_history=True)
    said = str(result.error_in_exec)
    assert isinstance(result.error_in_exec, UsageError)
    assert f"The S3 bucket {default_bucket(aws)}, the default name for your account's SageMaker files, exists but " \
           f"is not your account's ({aws.ACCOUNT})" in said and "uploaded nothing" in said and "--bucket" in said
    assert aws.every_object() == {}  # not one byte reached it
    assert aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_the_bucket_colabkit_creates_is_private_encrypted_and_its_own(shell, aws):
    job, _ = submitted(shell)
    s3, bucket = aws.client("s3"), default_bucket(aws)
    block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    assert block == {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
                     "RestrictPublicBuckets": True}
    rule = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}]
    aws.S3_REQUESTS.clear()  # what the notebook does from here on: follow and fetch
    job.fetch(echo=lambda line: None)
    assert aws.S3_REQUESTS
    mine = [r for r in aws.S3_REQUESTS if r["bucket"] == bucket]
    assert mine and all(r["expected_owner"] == aws.ACCOUNT for r in mine), mine


def test_every_s3_call_of_an_export_names_the_owner(shell, aws):
    submitted(shell)
    calls = [r for r in aws.S3_REQUESTS if r["bucket"] == default_bucket(aws)]
    creation = [r for r in calls if r["method"] == "PUT" and not r["key"] and not r["query"]]  # CreateBucket
    assert len(creation) == 1 and len(calls) > 6
    assert all(r["expected_owner"] == aws.ACCOUNT for r in calls if r not in creation), calls


# -- downloads stay in their folder -------------------------------------------------------------------
@pytest.mark.parametrize("planted", ["step-1000//{outside}/sitecustomize.py", "step-1000/../../../../{name}"])
def test_a_planted_key_is_refused_and_nothing_is_written_outside(shell, aws, tmp_path, planted):
    job, _ = submitted(shell)
    outside = tmp_path / "outside"
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=job.name)
    bucket, prefix = described["CheckpointConfig"]["S3Uri"].removeprefix("s3://").split("/", 1)
    key = f"{prefix}/checkpoints/" + planted.format(outside=outside, name="planted.py")
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=b"import os  # runs at every Python start")
    with pytest.raises(ColabkitError) as refused:
        job.fetch(echo=lambda line: None)
    said = str(refused.value)
    assert "would be written outside" in said and "nothing was downloaded" in said
    assert f"The training job {job.name} exists on SageMaker" in said and "run it again" not in said
    assert not outside.exists() and not (job.store.root.parent.parent / "planted.py").exists()
    assert not list(job.store.root.parent.parent.parent.rglob("planted.py"))


def test_a_manifest_naming_a_file_outside_its_folder_is_refused(shell, aws, tmp_path):
    """A checkpoint that verifies, but whose manifest names `../step-9/state.json`: copying it into
    the notebook's store would write outside the new checkpoint's folder."""
    job, _ = submitted(shell)
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=job.name)
    planted = tmp_path / "job" / "checkpoints" / "step-9"
    import shutil

    shutil.copytree(job.store.root / "step-4", planted)
    manifest = json.loads((planted / "manifest.json").read_text())
    manifest["files"]["../step-9/state.json"] = manifest["files"].pop("state.json")
    manifest["step"] = 9
    (planted / "manifest.json").write_text(json.dumps(manifest))
    aws.upload_folder(tmp_path / "job", described["CheckpointConfig"]["S3Uri"])
    with pytest.raises(ColabkitError, match=r"a file named '\.\./step-9/state\.json'.*would be written outside"):
        job.fetch(echo=lambda line: None)
    assert not (job.store.root / "step-9").exists() and job.store.latest_valid()[0].id == "step-4"


@pytest.mark.parametrize("data_filter", [True, False], ids=["python-data-filter", "older-python"])
def test_a_model_archive_reaching_outside_its_folder_is_refused(shell, aws, tmp_path, monkeypatch, data_filter):
    import io
    import tarfile

    if not data_filter:  # Pythons before 3.10.12 have no tarfile.data_filter: colabkit checks each member
        monkeypatch.delattr(tarfile, "data_filter")
    job, _ = submitted(shell)
    described = aws.client("sagemaker").describe_training_job(TrainingJobName=job.name)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        member = tarfile.TarInfo("../../../escaped.txt")
        member.size = 2
        tar.addfile(member, io.BytesIO(b"hi"))
    bucket, key = described["ModelArtifacts"]["S3ModelArtifacts"].removeprefix("s3://").split("/", 1)
    aws.client("s3").put_object(Bucket=bucket, Key=key, Body=archive.getvalue())
    with pytest.raises(ColabkitError, match=f"outside .*The training job {job.name} exists on SageMaker"):
        job.fetch(echo=lambda line: None)
    assert not list(tmp_path.rglob("escaped.txt"))


# -- after the job exists, never "run it again" ----------------------------------------------------
def test_a_failure_after_create_says_the_job_exists_and_how_to_follow_it(shell, aws):
    aws.FAULTS.append({"operation": "DescribeTrainingJob", "status": 400, "code": "ThrottlingException",
                       "message": "Rate exceeded"})
    job, said = submitted(shell)
    assert f"submitted {job.name}" in said
    assert f"WARNING: AWS is throttling requests (reading the status of training job {job.name}): Rate " \
           "exceeded." in said
    assert f"The training job {job.name} exists on SageMaker (it was created): don't export again" in said
    assert "job.wait()" in said and "console.aws.amazon.com" in said and "run it again" not in said
    with pytest.raises(ColabkitError) as failed:
        job.wait(poll=0, echo=lambda line: None)
    assert f"The training job {job.name} exists on SageMaker" in str(failed.value)
    assert "run it again" not in str(failed.value)
    aws.FAULTS.clear()
    assert job.wait(poll=0, echo=lambda line: None) == "Completed"
    assert len(aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]) == 1


@pytest.mark.parametrize("status,code,says", [
    (403, "AccessDenied", "AWS refused uploading sourcedir.tar.gz to s3://"),
    (503, "SlowDown", "AWS is throttling requests (uploading sourcedir.tar.gz to s3://"),
])
def test_s3_transfer_errors_are_one_paragraph(shell, aws, status, code, says):
    aws.FAULTS.append({"method": "PUT", "key": "sourcedir.tar.gz", "status": status, "code": code,
                       "message": "S3 said no"})
    cells(shell, ["x = 1"])
    result, _ = run(shell, "%to_sagemaker ml.g5.xlarge", store_history=True)
    said = str(result.error_in_exec)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    assert says in said and "S3 said no" in said and "S3UploadFailedError" not in said and "\n" not in said
    assert aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


# -- a token in a tracked variable never reaches S3 ------------------------------------------------
def test_a_token_the_notebook_read_into_a_tracked_variable_stops_the_upload(shell, aws, monkeypatch):
    from helpers.secret_corpus import CATEGORIES

    token = CATEGORIES["hugging-face-token"][0](__import__("random").Random(3))
    monkeypatch.setenv("HF_TOKEN", token)
    cells(shell, ["import os, numpy as np, colabkit\nw = np.zeros(4)\ntoken = os.environ['HF_TOKEN']",
                  "%checkpoint every 1 steps w token", "for i in colabkit.resumable(range(2)):\n    w += 1"])
    result, out = run(shell, "%to_sagemaker ml.g5.xlarge", store_history=True)
    said = str(result.error_in_exec)
    assert "cell 1, line 3 reads HF_TOKEN from the environment" in out.stdout
    assert "step-2 holds a Hugging Face token at" in said and "stop tracking it" in said
    assert not [k for k in aws.every_object() if "/colabkit/" in f"/{k}"]
    assert all(token.encode() not in body for body in aws.every_object().values())


# -- secrets in AWS Secrets Manager ----------------------------------------------------------------
def test_a_secret_is_kept_in_secrets_manager_for_the_jobs_role_only(shell, aws, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "0" * 8 + "wandb-key-for-the-job")
    cells(shell, ["import os\nkey = os.environ['WANDB_API_KEY']"])
    result, out = run(shell, "%to_sagemaker ml.m5.large --secret WANDB_API_KEY", store_history=True)
    assert result.success, result.error_in_exec
    job = result.result
    assert "kept in AWS Secrets Manager as colabkit/notebook" in out.stdout
    sm = aws.client("secretsmanager")
    described = sm.describe_secret(SecretId="colabkit/notebook")
    assert {"Key": "colabkit:notebook", "Value": "notebook"} in described["Tags"]
    policy = json.loads(sm.get_resource_policy(SecretId="colabkit/notebook")["ResourcePolicy"])
    [statement] = policy["Statement"]
    assert statement["Principal"] == {"AWS": aws.ROLE} and statement["Action"] == "secretsmanager:GetSecretValue"
    environment = json.loads((job.folder / "request.json").read_text())["Environment"]
    assert environment[job_secrets.NAMES] == "WANDB_API_KEY" and environment[job_secrets.ARN] == described["ARN"]
    value = sm.get_secret_value(SecretId=described["ARN"], VersionId=environment[job_secrets.VERSION])
    assert json.loads(value["SecretString"]) == {"WANDB_API_KEY": "0" * 8 + "wandb-key-for-the-job"}
    assert "wandb-key-for-the-job" not in (job.folder / "request.json").read_text()
    # A second export writes a new version; the first job still reads its own.
    cells(shell, ["y = 2"])
    monkeypatch.setenv("WANDB_API_KEY", "0" * 8 + "a-newer-key")
    result, _ = run(shell, "%to_sagemaker ml.m5.large --secret WANDB_API_KEY", store_history=True)
    assert json.loads(sm.get_secret_value(SecretId=described["ARN"], VersionId=environment[job_secrets.VERSION])[
        "SecretString"])["WANDB_API_KEY"].endswith("wandb-key-for-the-job")


def test_missing_permissions_and_values_are_named(shell, aws, monkeypatch):
    cells(shell, ["x = 1"])
    result, _ = run(shell, "%to_sagemaker ml.m5.large --secret HF_TOKEN", store_history=True)
    assert "--secret HF_TOKEN: there is no value for HF_TOKEN" in str(result.error_in_exec)
    result, _ = run(shell, "%to_sagemaker ml.m5.large --secret AWS_SECRET_ACCESS_KEY", store_history=True)
    assert "gets its AWS access from its IAM role" in str(result.error_in_exec)
    monkeypatch.setenv("HF_TOKEN", "a-token-value-0123456789")
    aws.FAULTS.append({"operation": "PutResourcePolicy", "status": 400, "code": "AccessDeniedException",
                       "message": "not authorized to perform: secretsmanager:PutResourcePolicy"})
    result, _ = run(shell, "%to_sagemaker ml.m5.large --secret HF_TOKEN", store_history=True)
    said = str(result.error_in_exec)
    assert f"AWS refused letting the job's role {aws.ROLE} read the job's secrets in AWS Secrets Manager " \
           "(colabkit/notebook): secretsmanager:PutResourcePolicy" in said
    assert aws.client("sagemaker").list_training_jobs()["TrainingJobSummaries"] == []


def test_a_job_whose_role_may_not_read_its_secrets_fails_at_once_naming_the_permission(aws):
    arn = aws.client("secretsmanager").create_secret(Name="colabkit/nb", SecretString='{"HF_TOKEN": "x"}')["ARN"]
    aws.FAULTS.append({"operation": "GetSecretValue", "status": 400, "code": "AccessDeniedException",
                       "message": "not authorized"})
    with pytest.raises(job_secrets.Unavailable, match=f"needs secretsmanager:GetSecretValue on {arn}"):
        job_secrets.load({job_secrets.NAMES: "HF_TOKEN", job_secrets.ARN: arn, job_secrets.VERSION: ""})


def test_a_dry_run_shows_the_secrets_names_and_never_their_values(shell, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "a-token-value-0123456789")
    cells(shell, ["x = 1"])
    result, out = run(shell, "%to_sagemaker ml.m5.large --dry-run --region us-east-1 --secret HF_TOKEN",
                      store_history=True)
    assert result.success, result.error_in_exec
    request = Path(re.search(r"  request      (\S+)", out.stdout).group(1)).read_text()
    assert json.loads(request)["Environment"]["COLABKIT_SECRETS"] == "HF_TOKEN"
    assert "  secrets      HF_TOKEN (names only" in out.stdout
    assert "a-token-value" not in out.stdout + request


# -- Drive uploads are bounded ---------------------------------------------------------------------
def mounted(fake_colab):
    from colabkit import runtime

    runtime.mount()  # Drive, through the fake google.colab
    return fake_colab / "drive" / "MyDrive"


def drive_export(sources, options=None):
    lines = []
    cells_ = tuple(capture.Cell(i, s) for i, s in enumerate(sources, 1))
    outcome = export.run(options or export.Options("ml.m5.xlarge"), capture.Captured(cells_, "colab", "drive-nb"),
                         echo=lines.append)
    return outcome, "\n".join(lines)


def test_the_drive_root_is_refused_and_credential_files_stay_behind(fake_colab, aws):
    drive = mounted(fake_colab)
    (drive / "project").mkdir(parents=True)
    (drive / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    (drive / "other notebook.ipynb").write_text("{}")
    (drive / "project" / "train.csv").write_text("1,2\n")
    (drive / "project" / ".netrc").write_text("machine x login y password z")
    (drive / "project" / "deploy.pem").write_text("key")
    read = f"rows = open('{drive}/project/train.csv').read()\nDATA = '{drive}/project'"
    with pytest.raises(ColabkitError) as stopped:
        drive_export([f"import os\nos.chdir('{drive}')", read])
    said = str(stopped.value)
    assert f"cell 1, line 2 names {drive}, the whole Drive, and a job never gets a whole Drive" in said
    assert aws.every_object() == {}
    outcome, said = drive_export([f"import os\nos.chdir('{drive}/project')", read])
    assert f"WARNING: left out of the job: {drive}/project/.netrc: a credential file never goes" in said
    assert f"left out of the job: {drive}/project/deploy.pem: a credential file" in said
    assert "Drive files that go with the job (1, 4 B of at most 10.0 GiB): MyDrive/project/train.csv (4 B)" in said
    assert said.index("Drive files that go with the job") < said.index("submitted")
    uploaded = [k for k in aws.every_object() if "/input/drive/" in k]
    assert [k.split("/input/drive/")[1] for k in uploaded] == ["MyDrive/project/train.csv"]
    assert outcome.job is not None


def test_drive_files_over_the_limit_stop_the_export_listing_the_largest(fake_colab, aws, monkeypatch):
    from colabkit.sagemaker import drive

    monkeypatch.setattr(drive, "LIMIT", 1000)
    data = mounted(fake_colab) / "data"
    data.mkdir(parents=True)
    (data / "big.bin").write_bytes(b"x" * 900)
    (data / "small.csv").write_bytes(b"y" * 200)
    with pytest.raises(ColabkitError) as stopped:
        drive_export([f"DATA = '{data}'"])
    said = str(stopped.value)
    assert "come to 1.1 KiB in 2 files, more than the 1000 B that go with a job" in said
    assert "(the largest: MyDrive/data/big.bin (900 B)" in said
    assert aws.every_object() == {}
