"""What a SageMaker run will cost, and which instance fits what the notebook used.

Prices: a dated table of SageMaker training on-demand list prices in us-east-1, refreshed from
the AWS Price List API for the job's region when the credentials allow it. Managed Spot is
billed at a Spot rate that moves with demand; AWS quotes savings of up to 90%, and the estimate
uses a stated typical saving. Advice compares what each type has (hardware.py) with the peaks
`%gpuwatch` saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..units import format_bytes, format_duration, format_rate
from . import hardware

PRICES_AS_OF = "2025-06"
PRICES_REGION = "us-east-1"
TYPICAL_SPOT_SAVING = 0.65  # a planning figure, not a quote: Spot rates vary by type, region and hour
GIB = 1024 ** 3
HEADROOM = 1.15  # advise an instance with this much more memory than the run's peak


# On-demand $/h for training, PRICES_REGION, PRICES_AS_OF (what each type has: hardware.py).
PRICES = {
    "ml.m5.large": 0.115, "ml.m5.xlarge": 0.23, "ml.m5.2xlarge": 0.461, "ml.m5.4xlarge": 0.922,
    "ml.c5.xlarge": 0.204, "ml.c5.2xlarge": 0.408, "ml.c5.4xlarge": 0.816,
    "ml.g4dn.xlarge": 0.736, "ml.g4dn.2xlarge": 0.94, "ml.g4dn.4xlarge": 1.505, "ml.g4dn.8xlarge": 2.72,
    "ml.g4dn.12xlarge": 4.89,
    "ml.g5.xlarge": 1.408, "ml.g5.2xlarge": 1.515, "ml.g5.4xlarge": 2.03, "ml.g5.8xlarge": 3.06,
    "ml.g5.12xlarge": 7.09, "ml.g5.24xlarge": 10.18, "ml.g5.48xlarge": 20.36,
    "ml.g6.xlarge": 1.006, "ml.g6.2xlarge": 1.222, "ml.g6.12xlarge": 5.752, "ml.g6e.xlarge": 2.336,
    "ml.p3.2xlarge": 3.825, "ml.p3.8xlarge": 14.688, "ml.p3.16xlarge": 28.152,
    "ml.p4d.24xlarge": 37.688, "ml.p5.48xlarge": 113.07,
}


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
            cost = per_hour * n * self.hours
            lines.append(f"      the training loop: about {format_duration(max(self.hours * 3600, 1))} ({self.basis}), "
                         f"{'< $0.01' if cost < 0.01 else f'about ${cost:.2f}'} {'on Spot' if self.spot else 'on demand'}")
        else:
            lines.append(f"      the training loop's time is unknown ({self.basis})")
        lines.append("      not counted: the job's start (minutes), installs and the cells around the loop; "
                     "--max-run caps what you pay")
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
    if live is not None:
        price, source = live, f"AWS Price List, {region}"
    elif instance_type in PRICES:
        price, source = PRICES[instance_type], f"list price {PRICES_REGION}, {PRICES_AS_OF}"
    else:
        price, source = None, "unknown"
    hours, basis = None, "no resumable() loop with a known length in the latest checkpoint"
    if pace and pace.get("pace") and pace.get("total"):
        left = max(0, pace["total"] - pace.get("position", 0))
        if left:
            hours = left * pace["pace"] / 3600
            basis = (f"{left} of {pace['total']} iterations left at {format_rate(pace['pace'])}, as measured in the "
                     "notebook; a faster GPU shortens it")
        else:
            basis = f"the latest checkpoint has finished all {pace['total']} iterations of the resumable() loop"
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

    current = hardware.TYPES.get(chosen)
    # A GPU is needed when the run used one, or when one was chosen (the notebook may have had none).
    wants_gpu = usage.gpu_peak is not None or hardware.has_gpu(chosen)

    def fits(t: hardware.Hardware) -> bool:
        return t.ram_gib >= need_ram and (not wants_gpu or (t.gpus > 0 and t.gpu_gb >= need_gpu))

    fitting = sorted((hardware.TYPES[name] for name in PRICES if fits(hardware.TYPES[name])), key=lambda t: PRICES[t.name])
    best = fitting[0] if fitting else None
    advice = "; ".join(seen)
    if current is not None and not fits(current):
        suggestion = f": {best.describe()} fits it" if best else ""
        return [f"advice: {advice}. {current.describe()} is smaller than that, with {HEADROOM - 1:.0%} headroom"
                f"{suggestion}."]
    if best is not None and chosen in PRICES and PRICES[best.name] < PRICES[chosen]:
        return [f"advice: {advice}. {best.describe()} fits it for ${PRICES[best.name]:.2f}/h "
                f"(you chose {chosen}, ${PRICES[chosen]:.2f}/h)."]
    return [f"advice: {advice}: {chosen} fits it."] if current is not None else [f"advice: {advice}."]


def one_gpu_type_like(chosen: str) -> hardware.Hardware | None:
    """The cheapest listed one-GPU type whose GPU has at least the memory of `chosen`'s."""
    current = hardware.TYPES.get(chosen)
    if current is None or not current.gpus:
        return None
    single = [hardware.TYPES[n] for n in PRICES if hardware.TYPES[n].gpus == 1 and hardware.TYPES[n].gpu_gb >= current.gpu_gb]
    return min(single, key=lambda t: PRICES[t.name], default=None)
