"""AWS for tests: moto's server on 127.0.0.1, started and stopped by the tests themselves, and
the SageMaker platform's part of a training job (the /opt/ml tree, the S3 syncs around it) so
the real training toolkit can run an exported job.

moto marks a job Completed at once and writes no logs, model or checkpoints: the tests play
SageMaker's part with `run_in_container`, which does what the platform does before and after
the container runs, from the stored describe_training_job response.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ACCOUNT = "123456789012"  # moto's
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerExecution"
S3_REQUESTS: list[dict] = []  # every S3 request the server answered since the last reset
# AWS's error answers to play, until removed: {"operation": "DescribeTrainingJob"} (JSON services) or
# {"method": "PUT", "key": a part of the key} (S3), with "status", "code" and "message".
FAULTS: list[dict] = []


class LikeAws:
    """What AWS does and moto leaves out, in front of moto's server:
    - S3: a request whose x-amz-expected-bucket-owner is not the bucket's owner fails 403
      AccessDenied (docs.aws.amazon.com/AmazonS3/latest/userguide/bucket-owner-condition.html);
    - error answers to the requests FAULTS names, in the service's own wire format (S3's XML, the
      JSON services' __type), so the client's own code (botocore, s3transfer) raises what it raises
      against AWS.
    Every S3 request is recorded in S3_REQUESTS."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        for fault in FAULTS:
            if fault.get("operation") and target.endswith(f".{fault['operation']}"):
                return self._answer(start_response, fault, json.dumps(
                    {"__type": fault["code"], "message": fault["message"]}).encode(), "application/x-amz-json-1.1")
        if "/s3/aws4_request" not in environ.get("HTTP_AUTHORIZATION", ""):
            return self.app(environ, start_response)
        from moto.s3.models import s3_backends

        bucket, _, key = environ.get("PATH_INFO", "").lstrip("/").partition("/")
        request = {"method": environ["REQUEST_METHOD"], "bucket": bucket, "key": key,
                   "query": environ.get("QUERY_STRING", ""),
                   "expected_owner": environ.get("HTTP_X_AMZ_EXPECTED_BUCKET_OWNER")}
        S3_REQUESTS.append(request)
        owner = s3_backends.bucket_accounts.get(bucket, (None, None))[1]
        if request["expected_owner"] and owner and owner != request["expected_owner"]:
            return self._s3_error(start_response, {"status": 403, "code": "AccessDenied", "message": "Access Denied"})
        for fault in FAULTS:
            if fault.get("method") == request["method"] and fault["key"] in key:
                return self._s3_error(start_response, fault)
        return self.app(environ, start_response)

    @classmethod
    def _s3_error(cls, start_response, fault: dict):
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fault["code"]}</Code>'
                f'<Message>{fault["message"]}</Message><RequestId>colabkit-test</RequestId></Error>').encode()
        return cls._answer(start_response, fault, body, "application/xml")

    @staticmethod
    def _answer(start_response, fault: dict, body: bytes, content_type: str):
        start_response(f"{fault['status']} {fault['code']}",
                       [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]


@contextmanager
def moto_server():
    import logging

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from moto.server import ThreadedMotoServer
    from werkzeug.serving import make_server

    class Server(ThreadedMotoServer):
        def _server_entry(self):  # moto's own, with LikeAws in front of its application
            self._server = make_server(self._ip_address, self._port,
                                       LikeAws(DomainDispatcherApplication(create_backend_app)), True,
                                       request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = Server(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).read()
    S3_REQUESTS.clear()
    FAULTS.clear()


def other_account(account: str = "111111111111"):
    """A boto3 session of another AWS account (moto keys the credentials STS gives to that account)."""
    import boto3

    given = client("sts").assume_role(RoleArn=f"arn:aws:iam::{account}:role/elsewhere",
                                      RoleSessionName="other-account")["Credentials"]
    return boto3.Session(aws_access_key_id=given["AccessKeyId"], aws_secret_access_key=given["SecretAccessKey"],
                         aws_session_token=given["SessionToken"], region_name=REGION)


def every_object() -> dict[str, bytes]:
    """Every object moto holds, in every bucket of every account: "bucket/key" -> its bytes."""
    from moto.s3.models import s3_backends

    found = {}
    for account, partitions in list(s3_backends.items()):
        for backend in partitions.values():
            for bucket in list(backend.buckets.values()):
                for key in list(bucket.keys.values()):
                    found[f"{bucket.name}/{key.name}"] = bytes(key.value)
    return found


def environment(url: str) -> dict[str, str]:
    """What points boto3 (and the training toolkit) at the server, with dummy credentials."""
    return {"AWS_ENDPOINT_URL": url, "S3_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION,
            "AWS_MAX_ATTEMPTS": "1"}


def client(service: str):
    import boto3

    return boto3.client(service, region_name=REGION)


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def download_prefix(uri: str, folder: Path) -> None:
    s3 = client("s3")
    bucket, prefix = _split(uri.rstrip("/") + "/")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            target = folder / item["Key"][len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, item["Key"], str(target))


def upload_folder(folder: Path, uri: str) -> None:
    s3 = client("s3")
    bucket, prefix = _split(uri.rstrip("/"))
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def _lay_out(job: dict, base: Path, hosts: list[str], current: str) -> None:
    """What SageMaker puts in a host's /opt/ml before the container starts."""
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(job["HyperParameters"]))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": current, "hosts": hosts, "network_interface_name": "lo"}))
    channels = {c["ChannelName"]: c for c in job.get("InputDataConfig", [])}
    (config / "inputdataconfig.json").write_text(json.dumps(
        {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
         for name in channels}))
    for name, channel in channels.items():
        download_prefix(channel["DataSource"]["S3DataSource"]["S3Uri"], base / "input" / "data" / name)
    (base / "checkpoints").mkdir()
    download_prefix(job["CheckpointConfig"]["S3Uri"], base / "checkpoints")
    for folder in ("model", "output/data"):
        (base / folder).mkdir(parents=True, exist_ok=True)


def _job_env(job: dict, request: dict, base: Path, url: str, toolkit: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLAB", "JPY_", "SM_", "SAGEMAKER"))}
    env["PATH"] = os.pathsep.join([str(toolkit / "bin"), env.get("PATH", "")])  # the image's torchrun, pip
    env.update(environment(url))
    env.update(request.get("Environment", {}))
    # Offline, as in a VPC without internet: the job's requirements are its own colabkit wheel and
    # pins of what the "image" (the toolkit's venv: tests/run) has at the test kernel's versions.
    env.update({"SAGEMAKER_BASE_DIR": str(base), "SM_STUDIO_LOCAL_MODE": "true",
                "TRAINING_JOB_NAME": job["TrainingJobName"], "PIP_NO_INDEX": "1",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONUNBUFFERED": "1",
                # A real container's /content is its own; here the job's stands in a folder of its own.
                "COLABKIT_CONTENT": str(base / "content"), "GLOO_SOCKET_IFNAME": "lo",
                # What the PyTorch training image sets: its launcher runs the job (torchrun when distributed).
                "SAGEMAKER_TRAINING_MODULE": "sagemaker_pytorch_container.training:main"})
    return env


def run_in_container(job: dict, request: dict, base: Path, toolkit: Path, url: str,
                     timeout: float = 300, hosts: list[str] | None = None) -> subprocess.CompletedProcess:
    """Lay out /opt/ml (as `base`) from the job's description, run the toolkit's `train`, then
    sync the checkpoints and model.tar.gz back to S3 as SageMaker does when a job ends.
    `request` supplies Environment, which moto's describe leaves out. With several `hosts`
    (loopback addresses: the hosts of an --instances N job on this machine), one container per
    host runs at once, each in a folder of its own (`base`/<host>); their output is joined, the
    return code is the first failure's, and the first host's model is the job's."""
    count = job["ResourceConfig"]["InstanceCount"]
    hosts = hosts or ["algo-1"]
    assert len(hosts) == count, (hosts, count)
    bases = [base] if count == 1 else [base / host for host in hosts]
    running = []
    for host, root in zip(hosts, bases):
        _lay_out(job, root, hosts, host)
        running.append(subprocess.Popen([str(toolkit / "bin" / "train")], env=_job_env(job, request, root, url, toolkit),
                                        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [process.communicate(timeout=timeout) for process in running]
    codes = [process.returncode for process in running]
    for root in bases:  # every host syncs its checkpoint folder with the job's checkpoint prefix
        upload_folder(root / "checkpoints", job["CheckpointConfig"]["S3Uri"])
    if (bases[0] / "output" / "success").exists():
        archive = bases[0] / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted((bases[0] / "model").iterdir()):
                tar.add(path, arcname=path.name)
        bucket, key = _split(job["ModelArtifacts"]["S3ModelArtifacts"])
        client("s3").upload_file(str(archive), bucket, key)
    return subprocess.CompletedProcess(
        ["train"] * count, next((c for c in codes if c), 0),
        "".join(f"[{h}] {line}\n" if count > 1 else f"{line}\n" for h, (out, _) in zip(hosts, outputs)
                for line in out.splitlines()),
        "".join(f"[{h}] {line}\n" if count > 1 else f"{line}\n" for h, (_, err) in zip(hosts, outputs)
                for line in err.splitlines()))
