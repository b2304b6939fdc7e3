"""The SageMaker PyTorch training image for a region, an instance type and the notebook's torch.

The table is the `training` part of the SageMaker Python SDK's image_uri_config/pytorch.json
(sagemaker-core, read 2026-11): the framework versions AWS publishes, the Python each is built
for, and the ECR account that hosts the images in each region (763104351884 unless listed).
A newer image than this table knows: `--image URI`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ColabkitError

REPOSITORY = "pytorch-training"
DEFAULT_ACCOUNT = "763104351884"
# Regions whose Deep Learning Containers live in an account of their own.
ACCOUNTS = {
    "af-south-1": "626614931356", "ap-east-1": "871362719292", "ap-east-2": "975050140332",
    "ap-northeast-3": "364406365360", "ap-south-2": "772153158452", "ap-southeast-3": "907027046896",
    "ap-southeast-4": "457447274322", "ap-southeast-5": "550225433462", "ap-southeast-6": "633930458069",
    "ap-southeast-7": "590183813437", "ca-west-1": "204538143572", "cn-north-1": "727897471807",
    "cn-northwest-1": "727897471807", "eu-central-2": "380420809688", "eu-south-1": "692866216735",
    "eu-south-2": "503227376785", "il-central-1": "780543022126", "me-central-1": "914824155844",
    "me-south-1": "217643126080", "mx-central-1": "637423239942", "us-gov-east-1": "446045086412",
    "us-gov-west-1": "442386744353",
}
DEFAULT_ACCOUNT_REGIONS = {
    "ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2", "ca-central-1",
    "eu-central-1", "eu-north-1", "eu-west-1", "eu-west-2", "eu-west-3", "sa-east-1", "us-east-1",
    "us-east-2", "us-west-1", "us-west-2",
}
# torch minor version -> (the image's full version, its Python tag); 2.x only, oldest first.
VERSIONS = {
    (2, 0): ("2.0.1", "py310"), (2, 1): ("2.1.0", "py310"), (2, 2): ("2.2.0", "py310"),
    (2, 3): ("2.3.0", "py311"), (2, 4): ("2.4.0", "py311"), (2, 5): ("2.5.1", "py311"),
    (2, 6): ("2.6.0", "py312"), (2, 7): ("2.7.1", "py312"), (2, 8): ("2.8.0", "py312"),
    (2, 9): ("2.9.0", "py312"), (2, 10): ("2.10.0", "py313"),
}
GPU_FAMILIES = ("ml.p", "ml.g")


@dataclass(frozen=True)
class Image:
    uri: str
    note: str | None = None  # when the image's torch differs from the notebook's


def _minor(version: str | None) -> tuple[int, int] | None:
    try:
        major, minor = version.split("+")[0].split(".")[:2]
        return int(major), int(minor)
    except (AttributeError, ValueError):
        return None


def processor(instance_type: str) -> str:
    if instance_type.startswith(("ml.trn", "ml.inf")):
        raise ColabkitError(f"{instance_type} runs AWS Neuron chips, which need the Neuron build of PyTorch; "
                            "colabkit exports to GPU and CPU instances. Choose a GPU type such as ml.g5.xlarge, "
                            "or give a Neuron training image with --image.")
    return "gpu" if instance_type.startswith(GPU_FAMILIES) else "cpu"


def training_image(region: str, instance_type: str, torch_version: str | None) -> Image:
    """The image whose torch matches the notebook's minor version, else the nearest one AWS has."""
    account = ACCOUNTS.get(region) or (DEFAULT_ACCOUNT if region in DEFAULT_ACCOUNT_REGIONS else None)
    if account is None:
        raise ColabkitError(f"colabkit does not know the SageMaker PyTorch images of region {region!r}. "
                            "Choose another region with --region, or give the image with --image URI.")
    wanted = _minor(torch_version)
    known = sorted(VERSIONS)
    chosen = wanted if wanted in VERSIONS else (known[-1] if wanted is None or wanted > known[-1] else known[0])
    version, python = VERSIONS[chosen]
    note = None
    if wanted is not None and chosen != wanted:
        note = (f"the notebook runs torch {torch_version}; the nearest SageMaker PyTorch training image is "
                f"{version}. Pin torch in a `!pip install` cell, or pass --image, if the difference matters.")
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    uri = f"{account}.dkr.ecr.{region}.{domain}/{REPOSITORY}:{version}-{processor(instance_type)}-{python}"
    return Image(uri, note)
