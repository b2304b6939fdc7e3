"""What the job reads from S3: its source as sourcedir.tar.gz, the notebook's latest checkpoint
under the job's checkpoint prefix (SageMaker copies it to /opt/ml/checkpoints before the job
starts), and the Drive files the cells read, as an input channel.

Large files go up as concurrent multipart uploads (s3transfer); a checkpoint's packs (the tensor
bytes in its store's pool, checkpoint/codec.py) go first, only those not under the prefix already,
and its manifest last, so a checkpoint cut short on its way up is never taken for a whole one.
"""

from __future__ import annotations

import tarfile
import threading
import time
from pathlib import Path

from ..checkpoint import codec
from ..checkpoint.codec import MANIFEST
from ..errors import ColabkitError
from ..units import format_bytes, format_clock
from . import aws

PART = 16 * 1024 * 1024  # with 10 threads: measured the fastest of 8, 16 and 64 MiB parts


def default_bucket(region: str, account: str) -> str:
    return f"sagemaker-{region}-{account}"  # the SageMaker SDK's default bucket


def ensure_bucket(s3, bucket: str, region: str, create: bool, account: str) -> None:
    """Make sure `bucket` exists and is `account`'s (`s3` says so on every call: aws.Aws.client);
    create it when it is colabkit's default one, private, encrypted and owned by the account."""
    import botocore.exceptions

    with aws.errors(f"checking the S3 bucket {bucket}"):
        try:
            s3.head_bucket(Bucket=bucket)
            return
        except botocore.exceptions.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("403", "AccessDenied"):
                raise _not_yours(bucket, region, account, create) from None
            if code not in ("404", "NoSuchBucket", "NotFound"):
                raise
    if not create:
        raise ColabkitError(f"The S3 bucket {bucket} does not exist. Create it in the job's region, or leave "
                            "out --bucket to use sagemaker-<region>-<account>, which colabkit creates.")
    with aws.errors(f"creating the S3 bucket {bucket}"):
        arguments = {"Bucket": bucket}
        if region != "us-east-1":  # us-east-1 refuses a LocationConstraint naming itself
            arguments["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            s3.create_bucket(**arguments)
        except s3.exceptions.BucketAlreadyExists:  # another account made it between our two calls
            raise _not_yours(bucket, region, account, create) from None
        except s3.exceptions.BucketAlreadyOwnedByYou:
            return
    with aws.errors(f"making the new S3 bucket {bucket} private and encrypted"):
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [{
            "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}, "BucketKeyEnabled": True}]})
        s3.put_bucket_ownership_controls(Bucket=bucket, OwnershipControls={
            "Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]})


def _not_yours(bucket: str, region: str, account: str, default: bool) -> ColabkitError:
    what = (f"The S3 bucket {bucket}, the default name for your account's SageMaker files," if default
            else f"The S3 bucket {bucket}")
    return ColabkitError(
        f"{what} exists but is not your account's ({account}): S3 refused a request that names {account} as its "
        "owner. Anyone can create a bucket of any free name to receive what others upload to it, so colabkit "
        f"uploaded nothing. Create a bucket of your own (aws s3 mb s3://NAME --region {region}) and pass --bucket "
        f'NAME, or put {{"bucket": "NAME"}} in {aws.CONFIG_FILE}; if this bucket should be yours, check its owner '
        "and your credentials' s3:ListBucket permission on it.")


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


class Progress:
    """Byte progress over everything one export uploads, said at every tenth: only when there is
    enough (SAID_FROM) that someone waits for it. s3transfer calls it from its threads."""

    SAID_FROM = 64 * 1024 * 1024

    def __init__(self, total: int, echo=print):
        self.total, self.echo, self.sent, self.tenths = total, echo, 0, 0
        self.started, self.lock = time.monotonic(), threading.Lock()

    def __call__(self, sent: int) -> None:
        with self.lock:
            self.sent += sent
            tenths = min(10, self.sent * 10 // max(1, self.total))
            if self.total < self.SAID_FROM or tenths <= self.tenths:
                return
            self.tenths = tenths
            self.echo(f"[colabkit] uploading: {tenths * 10}% of {format_bytes(self.total)}, "
                      f"{format_clock(time.monotonic() - self.started)}")


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def put_file(s3, path: Path, uri: str, progress: Progress | None = None) -> None:
    bucket, key = split_uri(uri)
    with aws.errors(f"uploading {Path(path).name} to {uri}"):
        s3.upload_file(str(path), bucket, key, Config=transfer_config(), Callback=progress)


def put_folder(s3, folder: Path, uri: str, last: str | None = None, progress: Progress | None = None) -> int:
    """Upload every file under `folder` to the prefix `uri`; the file named `last` goes last."""
    total = 0
    for path in sorted(files_in(folder), key=lambda p: (p.name == last, str(p))):
        put_file(s3, path, f"{uri.rstrip('/')}/{path.relative_to(folder).as_posix()}", progress)
        total += path.stat().st_size
    return total


def put_checkpoint(s3, checkpoint_path: Path, checkpoint_uri: str, secret_values: dict | None = None,
                   progress: Progress | None = None) -> int:
    """The checkpoint folder under <checkpoint prefix>/checkpoints/, where the job's store looks
    (SageMaker syncs the prefix with /opt/ml/checkpoints, the job's storage: see storage.py).
    Refused before any of it goes when its state.json holds a token (secrets.check_state)."""
    from .. import storage
    from .secrets import check_state

    check_state(checkpoint_path, secret_values)
    stored = f"{checkpoint_uri}/{storage.CHECKPOINTS}"
    sent = 0
    for name, record in packs_of(checkpoint_path).items():
        uri = f"{stored}/{codec.POOL}/{name}"
        if _size(s3, uri) != record["size"]:  # a pack's name is its content's hash: one there already is this one
            put_file(s3, codec.pack_path(Path(checkpoint_path).parent, name), uri, progress)
            sent += record["size"]
        elif progress is not None:
            progress(record["size"])  # there already: counted as gone
    return sent + put_folder(s3, checkpoint_path, f"{stored}/{Path(checkpoint_path).name}", last=MANIFEST,
                             progress=progress)


def packs_of(checkpoint_path: Path) -> dict[str, dict]:
    """The packs a checkpoint points into: name -> its manifest record (size, hash)."""
    return codec.read_manifest(Path(checkpoint_path)).get("packs", {})


def _size(s3, uri: str) -> int | None:
    """The size of the object at `uri`, or None when there is none."""
    import botocore.exceptions

    bucket, key = split_uri(uri)
    try:
        return s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    except botocore.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        with aws.errors(f"checking {uri}"):
            raise


def get_packs(s3, stored: str, store_root: Path, folder: Path, job: str | None = None) -> None:
    """Download the packs the checkpoint in `folder` points at (from `stored`/pool, into the pool
    of `store_root`) that are not there yet; a name that is not a pack's is refused before any."""
    import botocore.exceptions

    try:
        packs = codec.read_manifest(folder).get("packs", {})
    except codec.CheckpointDamaged:
        return  # not whole: the store passes it over
    bucket, prefix = split_uri(f"{stored.rstrip('/')}/{codec.POOL}/")
    for name, record in packs.items():
        target = codec.pack_path(store_root, name)
        if target.is_file() and target.stat().st_size == record.get("size"):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with aws.errors(f"downloading s3://{bucket}/{prefix}{name}", job):
            try:
                s3.download_file(bucket, prefix + name, str(target), Config=transfer_config())
            except botocore.exceptions.ClientError as exc:  # not synced (yet): passed over as incomplete
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    continue
                raise


def subfolders(s3, uri: str, job: str | None = None) -> list[str]:
    """The names of the "folders" directly under the prefix `uri` (`job`: aws.errors')."""
    bucket, prefix = split_uri(uri.rstrip("/") + "/")
    with aws.errors(f"listing {uri}", job):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        return [common["Prefix"][len(prefix):].rstrip("/") for page in pages
                for common in page.get("CommonPrefixes", [])]


def get_prefix(s3, uri: str, folder: Path, job: str | None = None) -> None:
    """Download everything under the prefix `uri` into `folder`, keeping the relative paths. Every
    key is checked first: one that would land outside `folder` (`..`, an absolute path after `//`)
    refuses the whole download, so nothing is written anywhere else. `job`: aws.errors'."""
    bucket, prefix = split_uri(uri.rstrip("/") + "/")
    folder = Path(folder)
    with aws.errors(f"downloading {uri}", job):
        keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", [])]
    targets = [(key, inside(folder, key[len(prefix):], f"s3://{bucket}/{key}", job)) for key in keys
               if not key.endswith("/")]  # a console's empty "folder" object: nothing to write
    with aws.errors(f"downloading {uri}", job):
        for key, target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target), Config=transfer_config())


def inside(folder: Path, relative: str, what: str, job: str | None = None) -> Path:
    """`folder / relative`, refused unless it lies inside `folder` (a key or a file name written by
    someone else must never choose where on this machine it lands). `job`: aws.errors'."""
    parts = relative.split("/")
    target = (Path(folder) / relative).resolve()
    if (not relative or relative.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in relative
            or not target.is_relative_to(Path(folder).resolve())):
        raise ColabkitError(
            f"{what} would be written outside {folder} (as {relative!r}), so nothing was downloaded. Someone who can "
            "write under the job's S3 prefix (the job's own code and its dependencies included) put it there: check "
            "who can write to the bucket, and look at the job's files in the S3 console before using them."
            + (f" {job}" if job else ""))
    return target
