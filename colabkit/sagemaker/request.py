"""The CreateTrainingJob request for an export, and the checks made on it before it is sent.

Script mode as the SageMaker PyTorch containers expect it: the source folder as
sourcedir.tar.gz, named by the `sagemaker_program` / `sagemaker_submit_directory`
hyperparameters, each value JSON-encoded (the training toolkit json.loads every one).
Several GPUs or machines run under the container's torchrun, switched on the way the SageMaker
SDK's `distribution={"torch_distributed": {"enabled": True}}` does it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .. import __version__
from ..errors import ColabkitError
from . import validate

CHECKPOINT_PATH = "/opt/ml/checkpoints"
TAG_UNSAFE = re.compile(r"[^A-Za-z0-9 _.:/=+\-@]")
MAX_RUNTIME = 28 * 24 * 3600  # SageMaker's own limit on a training job's run time


@dataclass(frozen=True)
class Plan:
    """Everything decided about the job before anything is sent."""
    job_name: str
    notebook: str
    region: str
    role: str
    image: str
    instance_type: str
    instances: int
    volume_gb: int
    max_run: int  # seconds
    spot: bool
    max_wait: int | None  # seconds, Spot only
    bucket: str
    prefix: str  # colabkit/<run>/<job>, under which the job's files live
    distributed: bool = False  # one process per GPU and machine, under torchrun (launch.py decides)
    channels: dict[str, str] = field(default_factory=dict)  # channel name -> S3 prefix URI
    environment: dict[str, str] = field(default_factory=dict)

    def s3(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", self.prefix, *parts])

    @property
    def source_uri(self) -> str:
        return self.s3("source", "sourcedir.tar.gz")

    @property
    def checkpoint_uri(self) -> str:
        return self.s3("checkpoints")

    @property
    def output_uri(self) -> str:
        return self.s3("output")


def hyperparameters(plan: Plan) -> dict[str, str]:
    values = {"sagemaker_program": "entry.py", "sagemaker_submit_directory": plan.source_uri,
              "sagemaker_region": plan.region, "sagemaker_job_name": plan.job_name,
              "sagemaker_container_log_level": 20}
    if plan.distributed:
        values["sagemaker_torch_distributed_enabled"] = True
        values["sagemaker_instance_type"] = plan.instance_type
    return {key: json.dumps(value) for key, value in values.items()}


def tag(value: str) -> str:
    return TAG_UNSAFE.sub("-", value)[:256]


def build(plan: Plan) -> dict:
    stopping = {"MaxRuntimeInSeconds": plan.max_run}
    if plan.spot:
        stopping["MaxWaitTimeInSeconds"] = plan.max_wait
    request = {
        "TrainingJobName": plan.job_name,
        "HyperParameters": hyperparameters(plan),
        "AlgorithmSpecification": {"TrainingImage": plan.image, "TrainingInputMode": "File"},
        "RoleArn": plan.role,
        "OutputDataConfig": {"S3OutputPath": plan.output_uri},
        "ResourceConfig": {"InstanceType": plan.instance_type, "InstanceCount": plan.instances,
                           "VolumeSizeInGB": plan.volume_gb},
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": plan.spot,
        "CheckpointConfig": {"S3Uri": plan.checkpoint_uri, "LocalPath": CHECKPOINT_PATH},
        "Tags": [{"Key": "colabkit", "Value": __version__}, {"Key": "colabkit:notebook", "Value": tag(plan.notebook)}],
    }
    if plan.channels:
        request["InputDataConfig"] = [
            {"ChannelName": name, "InputMode": "File", "DataSource": {"S3DataSource": {
                "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}
            for name, uri in sorted(plan.channels.items())]
    if plan.environment:
        request["Environment"] = dict(plan.environment)
    return request


def check(request: dict) -> dict:
    """What botocore does not check before sending: the enum, the pattern, the limits between fields."""
    validate.instance_type(request["ResourceConfig"]["InstanceType"])
    validate.job_name(request["TrainingJobName"])
    resources, stopping = request["ResourceConfig"], request["StoppingCondition"]
    if resources["InstanceCount"] < 1:
        raise ColabkitError(f"--instances must be 1 or more (got {resources['InstanceCount']}).")
    if resources["VolumeSizeInGB"] < 1:
        raise ColabkitError(f"--volume must be at least 1 GB (got {resources['VolumeSizeInGB']}).")
    if not 1 <= stopping["MaxRuntimeInSeconds"] <= MAX_RUNTIME:
        raise ColabkitError(f"--max-run must be between 1 s and 28 days (got {stopping['MaxRuntimeInSeconds']} s).")
    if request["EnableManagedSpotTraining"]:
        wait = stopping.get("MaxWaitTimeInSeconds")
        if wait is None or wait < stopping["MaxRuntimeInSeconds"]:
            raise ColabkitError(
                f"On Spot, --max-wait ({wait} s) must be at least --max-run ({stopping['MaxRuntimeInSeconds']} s): "
                "it counts the time spent waiting for Spot capacity as well as the run itself.")
    for key, value in request["HyperParameters"].items():
        if len(value) > 2500:
            raise ColabkitError(f"The hyperparameter {key} is longer than SageMaker's 2500 characters.")
    if not request["RoleArn"].startswith("arn:aws"):
        raise ColabkitError(f"{request['RoleArn']!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME).")
    return request
