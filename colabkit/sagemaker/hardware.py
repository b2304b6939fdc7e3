"""What each SageMaker training instance type has: GPUs (count, model, memory), vCPUs and RAM.

Facts, kept apart from prices (pricing.py), which change. vCPUs, RAM and GPU counts are AWS's own
table in aws/sagemaker-hyperpod-cli (src/sagemaker/hyperpod/training/constants.py, read 2026-11),
with the EC2 instance-type pages for the families it lacks (g4dn, p2, p3, p3dn). GPU memory is
per GPU as AWS lists it (nominal GB; the full MIG profile for P5e/P6). The families botocore's
model lists that are missing here (g7, announced 2026-06, sizes unconfirmed) are unknown: an
export to one asks for `--gpus N` instead of guessing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ColabkitError

GPU_FAMILIES = ("ml.p", "ml.g")


@dataclass(frozen=True)
class Hardware:
    name: str
    vcpus: int
    ram_gib: float
    gpus: int = 0
    gpu_model: str | None = None
    gpu_gb: float = 0.0  # per GPU

    def describe(self) -> str:
        if self.gpus:
            return f"{self.name} ({self.gpus}x {self.gpu_model} {self.gpu_gb:g} GB, {self.ram_gib:g} GiB RAM)"
        return f"{self.name} ({self.vcpus} vCPU, {self.ram_gib:g} GiB RAM, no GPU)"


def _family(prefix: str, model: str | None, gpu_gb: float, sizes: str) -> dict[str, Hardware]:
    """sizes: "size vcpus ram gpus, ..." for one family."""
    table = {}
    for row in sizes.split(","):
        size, vcpus, ram, gpus = row.split()
        name = f"ml.{prefix}.{size}"
        table[name] = Hardware(name, int(vcpus), float(ram), int(gpus), model if int(gpus) else None,
                               gpu_gb if int(gpus) else 0.0)
    return table


TYPES: dict[str, Hardware] = {
    **_family("g4dn", "T4", 16, "xlarge 4 16 1, 2xlarge 8 32 1, 4xlarge 16 64 1, 8xlarge 32 128 1, "
                                 "12xlarge 48 192 4, 16xlarge 64 256 1"),
    **_family("g5", "A10G", 24, "xlarge 4 16 1, 2xlarge 8 32 1, 4xlarge 16 64 1, 8xlarge 32 128 1, "
                                "16xlarge 64 256 1, 12xlarge 48 192 4, 24xlarge 96 384 4, 48xlarge 192 768 8"),
    **_family("g6", "L4", 24, "xlarge 4 16 1, 2xlarge 8 32 1, 4xlarge 16 64 1, 8xlarge 32 128 1, "
                              "16xlarge 64 256 1, 12xlarge 48 192 4, 24xlarge 96 384 4, 48xlarge 192 768 8"),
    **_family("g6e", "L40S", 48, "xlarge 4 32 1, 2xlarge 8 64 1, 4xlarge 16 128 1, 8xlarge 32 256 1, "
                                 "16xlarge 64 512 1, 12xlarge 48 384 4, 24xlarge 96 768 4, 48xlarge 192 1536 8"),
    **_family("g7e", "RTX PRO 6000", 96, "2xlarge 8 64 1, 4xlarge 16 128 1, 8xlarge 32 256 1, 12xlarge 48 512 2, "
                                         "24xlarge 96 1024 4, 48xlarge 192 2048 8"),
    **_family("p2", "K80", 12, "xlarge 4 61 1, 8xlarge 32 488 8, 16xlarge 64 732 16"),
    **_family("p3", "V100", 16, "2xlarge 8 61 1, 8xlarge 32 244 4, 16xlarge 64 488 8"),
    **_family("p3dn", "V100", 32, "24xlarge 96 768 8"),
    **_family("p4d", "A100", 40, "24xlarge 96 1152 8"),
    **_family("p4de", "A100", 80, "24xlarge 96 1152 8"),
    **_family("p5", "H100", 80, "4xlarge 16 256 1, 48xlarge 192 2048 8"),
    **_family("p5e", "H200", 141, "48xlarge 192 2048 8"),
    **_family("p5en", "H200", 141, "48xlarge 192 2048 8"),
    **_family("p6-b200", "B200", 180, "48xlarge 192 2048 8"),
    **_family("p6-b300", "B300", 269, "48xlarge 192 4096 8"),
    **_family("p6e-gb200", "GB200", 186, "36xlarge 144 960 4"),
    **_family("m5", None, 0, "large 2 8 0, xlarge 4 16 0, 2xlarge 8 32 0, 4xlarge 16 64 0, 12xlarge 48 192 0, "
                             "24xlarge 96 384 0"),
    **_family("c5", None, 0, "xlarge 4 8 0, 2xlarge 8 16 0, 4xlarge 16 32 0, 9xlarge 36 72 0, 18xlarge 72 144 0"),
}


def has_gpu(instance_type: str) -> bool:
    return instance_type.startswith(GPU_FAMILIES)


def gpus(instance_type: str, given: int | None = None) -> int:
    """The GPUs per instance: from the table, else `given` (--gpus); a GPU type unknown to both is
    a question for the person, not a guess."""
    known = TYPES.get(instance_type)
    if known is not None:
        if given is not None and given != known.gpus:
            raise ColabkitError(f"{instance_type} has {known.gpus} GPU(s), not {given}: leave out --gpus.")
        return known.gpus
    if given is not None:
        if given < 0:
            raise ColabkitError(f"--gpus must be 0 or more (got {given}).")
        return given
    if has_gpu(instance_type):
        raise ColabkitError(
            f"colabkit doesn't know how many GPUs {instance_type} has, and a wrong guess would either leave "
            "GPUs idle or start more training processes than there are GPUs. Say it with --gpus N (AWS's "
            "instance-type page lists it).")
    return 0
