"""What the job reads from S3: its source as sourcedir.tar.gz, the notebook's latest checkpoint
under the job's checkpoint prefix (SageMaker copies it to /opt/ml/checkpoints before the job
starts), and the Drive files the cells read, as an input channel.

Large files go up as concurrent multipart uploads (s3transfer); a checkpoint's manifest goes
last, so a checkpoint cut short on its way up is never taken for a whole one.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from ..checkpoint.codec import MANIFEST
from ..errors import ColabkitError
from . import aws

PART = 16 * 1024 * 1024  # with 10 threads: measured the fastest of 8, 16 and 64 MiB parts


def default_bucket(region: str, account: str) -> str:
    return f"sagemaker-{region}-{account}"  # the SageMaker SDK's default bucket


def ensure_bucket(s3, bucket: str, region: str, create: bool) -> None:
    """Make sure `bucket` exists; create it when it is colabkit's default one."""
    import botocore.exceptions

    with aws.errors(f"checking the S3 bucket {bucket}"):
        try:
            s3.head_bucket(Bucket=bucket)
            return
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
    if not create:
        raise ColabkitError(f"The S3 bucket {bucket} does not exist. Create it in the job's region, or leave "
                            "out --bucket to use sagemaker-<region>-<account>, which colabkit creates.")
    with aws.errors(f"creating the S3 bucket {bucket}"):
        arguments = {"Bucket": bucket}
        if region != "us-east-1":  # us-east-1 refuses a LocationConstraint naming itself
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
        s3.create_bucket(**arguments)


def transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=10)


def split_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key)."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def source_archive(folder: Path, archive: Path) -> Path:
    """sourcedir.tar.gz with the folder's files at its root, as the toolkit unpacks it."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(Path(folder).iterdir()):
            tar.add(path, arcname=path.name)
    return archive


def put_file(s3, path: Path, uri: str) -> None:
    bucket, key = split_uri(uri)
    with aws.errors(f"uploading {Path(path).name} to {uri}"):
        s3.upload_file(str(path), bucket, key, Config=transfer_config())


def put_folder(s3, folder: Path, uri: str, last: str | None = None) -> int:
    """Upload every file under `folder` to the prefix `uri`; the file named `last` goes last."""
    files = sorted((p for p in Path(folder).rglob("*") if p.is_file()), key=lambda p: (p.name == last, str(p)))
    total = 0
    for path in files:
        put_file(s3, path, f"{uri.rstrip('/')}/{path.relative_to(folder).as_posix()}")
        total += path.stat().st_size
    return total


def put_checkpoint(s3, checkpoint_path: Path, checkpoint_uri: str) -> int:
    """The checkpoint folder under <checkpoint prefix>/checkpoints/, where the job's store looks
    (SageMaker syncs the prefix with /opt/ml/checkpoints, the job's storage: see storage.py)."""
    from .. import storage

    return put_folder(s3, checkpoint_path, f"{checkpoint_uri}/{storage.CHECKPOINTS}/{Path(checkpoint_path).name}",
                      last=MANIFEST)


def subfolders(s3, uri: str) -> list[str]:
    """The names of the "folders" directly under the prefix `uri`."""
    bucket, prefix = split_uri(uri.rstrip("/") + "/")
    with aws.errors(f"listing {uri}"):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        return [common["Prefix"][len(prefix):].rstrip("/") for page in pages
                for common in page.get("CommonPrefixes", [])]


def get_prefix(s3, uri: str, folder: Path) -> None:
    """Download everything under the prefix `uri` into `folder`, keeping the relative paths."""
    bucket, prefix = split_uri(uri.rstrip("/") + "/")
    with aws.errors(f"downloading {uri}"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                target = Path(folder) / item["Key"][len(prefix):]
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(target), Config=transfer_config())
