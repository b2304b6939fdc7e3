"""The SageMaker training image for what the notebook runs: PyTorch, TensorFlow, Hugging Face, or
a Python base.

The cells' imports choose the family: transformers, diffusers, lightning, fastai... mean PyTorch
(the Hugging Face image when it has the notebook's transformers release, on a GPU); tensorflow or
keras without torch mean TensorFlow; no framework means the PyTorch image as a Python base (its
Python and CUDA are current; the scikit-learn image's Python is too old for today's packages).
The version follows the notebook's (the nearest one AWS publishes, said, when it can't). The
framework an image brings is not pinned in requirements.txt, so its CUDA build is what runs.
Version and account tables: image_tables.py. `--image URI` overrides all of this.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ColabkitError
from . import image_tables as tables
from .hardware import has_gpu

REPOSITORIES = {"pytorch": "pytorch-training", "tensorflow": "tensorflow-training",
                "huggingface": "huggingface-pytorch-training"}
TORCH_MODULES = frozenset({"torch", "torchvision", "torchaudio"})
USES_TORCH = TORCH_MODULES | {"transformers", "lightning", "pytorch_lightning", "fastai", "diffusers", "timm",
                              "accelerate", "peft", "trl", "ultralytics", "sentence_transformers", "bitsandbytes",
                              "unsloth", "torchmetrics", "torchtext", "xformers"}
TENSORFLOW_MODULES = frozenset({"tensorflow", "tensorboard"})
USES_TENSORFLOW = TENSORFLOW_MODULES | {"keras", "tf_keras", "tensorflow_hub", "tensorflow_datasets"}


@dataclass(frozen=True)
class Framework:
    name: str  # "pytorch", "tensorflow", "huggingface", or "python" (the PyTorch image as a Python base)
    version: str | None  # the framework's version the notebook ran with
    provides: frozenset[str]  # modules the image brings: not pinned in requirements
    reason: str
    transformers: str | None = None  # with "huggingface": the notebook's transformers


@dataclass(frozen=True)
class Image:
    uri: str
    note: str | None = None  # when the image's version differs from the notebook's


def _minor(version: str | None) -> tuple[int, int] | None:
    try:
        major, minor = version.split("+")[0].split(".")[:2]
        return int(major), int(minor)
    except (AttributeError, ValueError):
        return None


def framework_for(modules, version_of, instance_type: str) -> Framework:
    """The image family the cells need, from the modules they import; `version_of(distribution)`
    says the version the notebook ran with (None when unknown)."""
    modules = set(modules)
    torch_users = sorted(modules & USES_TORCH)
    tf_users = sorted(modules & USES_TENSORFLOW)
    if torch_users:
        transformers = version_of("transformers") if "transformers" in modules else None
        if transformers and has_gpu(instance_type) and _minor(transformers) in tables.HUGGINGFACE_PYTORCH:
            return Framework("huggingface", version_of("torch"), TORCH_MODULES,
                             f"the cells import {', '.join(torch_users)}: the Hugging Face PyTorch image with "
                             f"transformers {transformers}", transformers)
        return Framework("pytorch", version_of("torch"), TORCH_MODULES,
                         f"the cells import {', '.join(torch_users)}: the SageMaker PyTorch training image")
    if tf_users:
        return Framework("tensorflow", version_of("tensorflow"), TENSORFLOW_MODULES,
                         f"the cells import {', '.join(tf_users)}: the SageMaker TensorFlow training image")
    return Framework("python", None, frozenset(),
                     "the cells import no deep-learning framework: the SageMaker PyTorch training image serves as "
                     "a Python base (its Python and CUDA are current), and requirements.txt brings the rest")


def processor(instance_type: str) -> str:
    if instance_type.startswith(("ml.trn", "ml.inf")):
        raise ColabkitError(f"{instance_type} runs AWS Neuron chips, which need the Neuron build of PyTorch; "
                            "colabkit exports to GPU and CPU instances. Choose a GPU type such as ml.g5.xlarge, "
                            "or give a Neuron training image with --image.")
    return "gpu" if has_gpu(instance_type) else "cpu"


def _nearest(table: dict, wanted: tuple[int, int] | None) -> tuple[int, int]:
    known = sorted(table)
    if wanted in table:
        return wanted
    if wanted is None or wanted > known[-1]:
        return known[-1]
    return max((k for k in known if k < wanted), default=known[0])


def _registry(region: str, group: str, what: str) -> str:
    account = tables.ACCOUNTS.get(region)
    if account is None or region in tables.REGIONS_MISSING[group]:
        raise ColabkitError(f"SageMaker publishes no {what} training image in region {region!r}. Choose another "
                            "region with --region, or give the image with --image URI.")
    host = tables.HOSTNAMES.get(region, f"ecr.{region}.amazonaws.com")
    return f"{account}.dkr.{host}"


def training_image(region: str, instance_type: str, framework: Framework) -> Image:
    """The image for `framework` whose version matches the notebook's minor version, else the nearest."""
    chip = processor(instance_type)
    if framework.name == "huggingface":
        version, torch, python, containers = tables.HUGGINGFACE_PYTORCH[_minor(framework.transformers)]
        host = _registry(region, tables.HUGGINGFACE_REGION_GROUP[version], "Hugging Face")
        note = None
        if framework.transformers.split("+")[0] != version:
            note = (f"the notebook runs transformers {framework.transformers}; the Hugging Face image has {version}, "
                    "and requirements.txt installs yours over it")
        tag = f"{torch}-transformers{version}-{chip}-{python}-{containers[chip]}"
        return Image(f"{host}/{REPOSITORIES['huggingface']}:{tag}", note)
    name = "tensorflow" if framework.name == "tensorflow" else "pytorch"
    table = tables.TENSORFLOW if name == "tensorflow" else tables.PYTORCH
    groups = tables.TENSORFLOW_REGION_GROUP if name == "tensorflow" else tables.PYTORCH_REGION_GROUP
    label = "TensorFlow" if name == "tensorflow" else "PyTorch"
    wanted = _minor(framework.version)
    version, python, _ = table[_nearest(table, wanted)]
    note = None
    if wanted is not None and _minor(version) != wanted:
        module = "tensorflow" if name == "tensorflow" else "torch"
        note = (f"the notebook runs {module} {framework.version}; the nearest SageMaker {label} training image has "
                f"{version}. Install yours in a `!pip install {module}==...` cell, or pass --image, if the difference "
                "matters.")
    host = _registry(region, groups[version], label)
    return Image(f"{host}/{REPOSITORIES[name]}:{version}-{chip}-{python}", note)
