"""What a SageMaker run will cost, and which instance fits what the notebook used.

Prices: a dated table of SageMaker training on-demand list prices in us-east-1, refreshed from
the AWS Price List API for the job's region when the credentials allow it. Managed Spot is
billed at a Spot rate that moves with demand; AWS quotes savings of up to 90%, and the estimate
uses a stated typical saving. Instance sizes come from the same table: advice compares them
with the peaks `%gpuwatch` saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..units import format_bytes, format_duration

PRICES_AS_OF = "2025-06"
PRICES_REGION = "us-east-1"
TYPICAL_SPOT_SAVING = 0.65  # a planning figure, not a quote: Spot rates vary by type, region and hour
GIB = 1024 ** 3
HEADROOM = 1.15  # advise an instance with this much more memory than the run's peak


@dataclass(frozen=True)
class InstanceType:
    name: str
    price: float  # on-demand $/h for training, PRICES_REGION, PRICES_AS_OF
    vcpus: int
    ram_gib: float
    gpus: int = 0
    gpu_model: str | None = None
    gpu_gib: float = 0.0  # per GPU

    def describe(self) -> str:
        if self.gpus:
            return f"{self.name} ({self.gpus}x {self.gpu_model} {self.gpu_gib:g} GiB, {self.ram_gib:g} GiB RAM)"
        return f"{self.name} ({self.vcpus} vCPU, {self.ram_gib:g} GiB RAM, no GPU)"


def _types(*rows) -> dict[str, InstanceType]:
    return {row[0]: InstanceType(*row) for row in rows}


INSTANCE_TYPES = _types(
    ("ml.m5.large", 0.115, 2, 8), ("ml.m5.xlarge", 0.23, 4, 16), ("ml.m5.2xlarge", 0.461, 8, 32),
    ("ml.m5.4xlarge", 0.922, 16, 64), ("ml.c5.xlarge", 0.204, 4, 8), ("ml.c5.2xlarge", 0.408, 8, 16),
    ("ml.c5.4xlarge", 0.816, 16, 32),
    ("ml.g4dn.xlarge", 0.736, 4, 16, 1, "T4", 16), ("ml.g4dn.2xlarge", 0.94, 8, 32, 1, "T4", 16),
    ("ml.g4dn.4xlarge", 1.505, 16, 64, 1, "T4", 16), ("ml.g4dn.8xlarge", 2.72, 32, 128, 1, "T4", 16),
    ("ml.g4dn.12xlarge", 4.89, 48, 192, 4, "T4", 16),
    ("ml.g5.xlarge", 1.408, 4, 16, 1, "A10G", 24), ("ml.g5.2xlarge", 1.515, 8, 32, 1, "A10G", 24),
    ("ml.g5.4xlarge", 2.03, 16, 64, 1, "A10G", 24), ("ml.g5.8xlarge", 3.06, 32, 128, 1, "A10G", 24),
    ("ml.g5.12xlarge", 7.09, 48, 192, 4, "A10G", 24), ("ml.g5.24xlarge", 10.18, 96, 384, 4, "A10G", 24),
    ("ml.g5.48xlarge", 20.36, 192, 768, 8, "A10G", 24),
    ("ml.g6.xlarge", 1.006, 4, 16, 1, "L4", 24), ("ml.g6.2xlarge", 1.222, 8, 32, 1, "L4", 24),
    ("ml.g6.12xlarge", 5.752, 48, 192, 4, "L4", 24), ("ml.g6e.xlarge", 2.336, 4, 32, 1, "L40S", 48),
    ("ml.p3.2xlarge", 3.825, 8, 61, 1, "V100", 16), ("ml.p3.8xlarge", 14.688, 32, 244, 4, "V100", 16),
    ("ml.p3.16xlarge", 28.152, 64, 488, 8, "V100", 16),
    ("ml.p4d.24xlarge", 37.688, 96, 1152, 8, "A100", 40),
    ("ml.p5.48xlarge", 113.07, 192, 2048, 8, "H100", 80),
)


@dataclass(frozen=True)
class Estimate:
    instance_type: str
    instances: int
    on_demand_per_hour: float | None
    source: str  # where the price came from
    hours: float | None  # expected run time, when the run's pace is known
    basis: str  # how `hours` was worked out
    spot: bool

    @property
    def spot_per_hour(self) -> float | None:
        return None if self.on_demand_per_hour is None else self.on_demand_per_hour * (1 - TYPICAL_SPOT_SAVING)

    def lines(self) -> list[str]:
        if self.on_demand_per_hour is None:
            return [f"cost: colabkit has no price for {self.instance_type}; see https://aws.amazon.com/sagemaker/pricing/"]
        n = self.instances
        rate = f"${self.on_demand_per_hour * n:.2f}/h on demand"
        rate += f", about ${self.spot_per_hour * n:.2f}/h on Spot (typical saving {TYPICAL_SPOT_SAVING:.0%}, varies)"
        lines = [f"cost: {n} x {self.instance_type}: {rate} [{self.source}]"]
        if self.hours is not None:
            per_hour = self.spot_per_hour if self.spot else self.on_demand_per_hour
            lines.append(f"      expected run time {format_duration(self.hours * 3600)} ({self.basis}): about "
                         f"${per_hour * n * self.hours:.2f} {'on Spot' if self.spot else 'on demand'}")
        else:
            lines.append(f"      expected run time unknown ({self.basis})")
        return lines


def price_list(session, region: str, instance_type: str) -> float | None:
    """The on-demand training price from the AWS Price List API; None when it can't be read."""
    from botocore.config import Config

    try:  # one quick try: the table stands in, and a submit must not wait on a price
        client = session.client("pricing", region_name="us-east-1",  # the API answers from us-east-1
                                config=Config(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=5))
        filters = [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in (
            ("regionCode", region), ("instanceName", instance_type), ("productFamily", "ML Instance"),
            ("platoinstancetype", "Training"))]
        reply = client.get_products(ServiceCode="AmazonSageMaker", Filters=filters, MaxResults=10)
    except Exception:  # no permission, no network: the table stands in
        return None
    for item in reply.get("PriceList", []):
        product = json.loads(item) if isinstance(item, str) else item
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = float(dimension.get("pricePerUnit", {}).get("USD", 0) or 0)
                if usd > 0:
                    return usd
    return None


def estimate(instance_type: str, instances: int, spot: bool, pace: dict | None, session=None,
             region: str | None = None) -> Estimate:
    """`pace` is the notebook checkpoint's {"pace": s/iteration, "position": done, "total": all}."""
    live = price_list(session, region, instance_type) if session is not None and region else None
    known = INSTANCE_TYPES.get(instance_type)
    if live is not None:
        price, source = live, f"AWS Price List, {region}"
    elif known is not None:
        price, source = known.price, f"list price {PRICES_REGION}, {PRICES_AS_OF}"
    else:
        price, source = None, "unknown"
    hours, basis = None, "no resumable() loop with a known length in the latest checkpoint"
    if pace and pace.get("pace") and pace.get("total"):
        left = max(0, pace["total"] - pace.get("position", 0))
        hours = left * pace["pace"] / 3600
        basis = (f"{left} of {pace['total']} iterations left at {pace['pace']:.3g} s each, as measured in the "
                 "notebook; a faster GPU shortens it")
    return Estimate(instance_type, instances, price, source, hours, basis, spot)


@dataclass(frozen=True)
class Usage:
    """What the notebook's run used, from %gpuwatch's peaks."""
    gpu_name: str | None
    gpu_peak: int | None  # bytes, the busiest GPU
    gpu_total: int | None
    ram_peak: int | None


def advise(usage: Usage | None, chosen: str) -> list[str]:
    """A line on whether `chosen` fits the run's peaks, and the cheapest listed type that does."""
    if usage is None or (usage.gpu_peak is None and usage.ram_peak is None):
        return []
    need_gpu = (usage.gpu_peak or 0) * HEADROOM / GIB
    need_ram = (usage.ram_peak or 0) * HEADROOM / GIB
    seen = []
    if usage.gpu_peak is not None:
        seen.append(f"peak GPU memory {format_bytes(usage.gpu_peak)} of {format_bytes(usage.gpu_total)}"
                    + (f" on a {usage.gpu_name}" if usage.gpu_name else ""))
    if usage.ram_peak is not None:
        seen.append(f"peak RAM {format_bytes(usage.ram_peak)}")

    current = INSTANCE_TYPES.get(chosen)
    # A GPU is needed when the run used one, or when one was chosen (the notebook may have had none).
    wants_gpu = usage.gpu_peak is not None or bool(current and current.gpus)

    def fits(t: InstanceType) -> bool:
        return t.ram_gib >= need_ram and (not wants_gpu or (t.gpus > 0 and t.gpu_gib >= need_gpu))

    fitting = sorted((t for t in INSTANCE_TYPES.values() if fits(t)), key=lambda t: t.price)
    best = fitting[0] if fitting else None
    advice = "; ".join(seen)
    if current is not None and not fits(current):
        suggestion = f": {best.describe()} fits it" if best else ""
        return [f"advice: {advice}. {current.describe()} is smaller than that, with {HEADROOM - 1:.0%} headroom"
                f"{suggestion}."]
    if best is not None and current is not None and best.price < current.price:
        return [f"advice: {advice}. {best.describe()} fits it for ${best.price:.2f}/h "
                f"(you chose {chosen}, ${current.price:.2f}/h)."]
    return [f"advice: {advice}: {chosen} fits it."] if current is not None else [f"advice: {advice}."]
