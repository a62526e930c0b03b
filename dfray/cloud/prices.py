"""SageMaker `ml.*` prices and the job's stopping condition (client side).

The dated ml.* figures are the `sagemaker` section of the one static price table
(dfray.budget.static_prices); the EC2 prices it falls back to (x ML_MARKUP) come from
dfray.budget.prices."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dfray.budget.static_prices import SAGEMAKER_ON_DEMAND, STATIC_AS_OF
from dfray.cloud.processing import SageMakerError

MAX_RUNTIME_S = 777_600  # ProcessingStoppingCondition.MaxRuntimeInSeconds maximum (9 days)
MIN_RUNTIME_S = 600  # a budget that cannot pay for 10 minutes is refused
DEFAULT_RUNTIME_S = 86_400  # without --budget or --max-runtime-s

# SageMaker on-demand list prices (USD/h) for Processing, dated; they change: pass
# --price-per-hour for a figure you have checked.
ML_PRICES_AS_OF = STATIC_AS_OF
ML_ON_DEMAND = SAGEMAKER_ON_DEMAND
ML_MARKUP = 1.4  # ml.* / EC2 on-demand for the GPU types above (e.g. 0.736 / 0.526)


@dataclass(frozen=True)
class JobPrice:
    usd_per_hour: float  # per instance
    source: str


def resolve_price(
    instance_type: str, region: str | None, explicit: float | None, *, price_book: bool = True
) -> JobPrice | None:
    """USD per hour per instance: explicit > dated ml.* table > EC2 price book × ML_MARKUP
    (None when price_book is False and the table has no figure)."""
    if explicit is not None:
        if explicit <= 0:
            raise SageMakerError(f"--price-per-hour must be > 0, got {explicit}")
        return JobPrice(float(explicit), "--price-per-hour")
    reg = region or "us-east-1"
    table = ML_ON_DEMAND.get(reg, {})
    if instance_type in table:
        return JobPrice(table[instance_type], f"static:{ML_PRICES_AS_OF} ({reg})")
    if not price_book:
        return None
    ec2_type = instance_type.removeprefix("ml.")
    try:
        from dfray.budget.prices import PriceBook
    except ImportError as e:
        raise SageMakerError(
            f"no SageMaker price for {instance_type} in {reg}; pass --price-per-hour"
        ) from e
    try:
        price = PriceBook(reg).on_demand(ec2_type)
    except Exception as e:  # PriceError and anything the price book could not read
        raise SageMakerError(
            f"no SageMaker price for {instance_type} in {reg} ({e}); pass --price-per-hour"
        ) from e
    return JobPrice(
        round(price.usd_per_hour * ML_MARKUP, 4),
        f"EC2 {ec2_type} {price.source} x {ML_MARKUP} (ml.* markup estimate)",
    )


def max_runtime_s(
    budget_usd: float | None,
    usd_per_hour: float | None,
    instance_count: int,
    limit_s: int | None = None,
) -> int:
    """MaxRuntimeInSeconds: what the budget pays for, within SageMaker's and the user's caps."""
    if instance_count < 1:
        raise SageMakerError(f"--instance-count must be >= 1, got {instance_count}")
    if limit_s is not None and not 1 <= limit_s:
        raise SageMakerError(f"--max-runtime-s must be >= 1, got {limit_s}")
    cap = min(MAX_RUNTIME_S, limit_s) if limit_s is not None else MAX_RUNTIME_S
    if budget_usd is None:
        return min(cap, DEFAULT_RUNTIME_S) if limit_s is None else cap
    if budget_usd <= 0:
        raise SageMakerError(f"--budget must be > 0, got {budget_usd}")
    if not usd_per_hour or usd_per_hour <= 0:
        raise SageMakerError("a budget needs a price per hour")
    paid = math.floor(budget_usd / (usd_per_hour * instance_count) * 3600)
    if paid < MIN_RUNTIME_S:
        need = usd_per_hour * instance_count * MIN_RUNTIME_S / 3600
        raise SageMakerError(
            f"budget ${budget_usd:g} pays for only {paid} s of {instance_count} instance(s) at "
            f"${usd_per_hour:g}/h each; at least {MIN_RUNTIME_S // 60} minutes "
            f"(${need:.2f}) are needed: raise --budget or use fewer/cheaper instances"
        )
    return min(paid, cap)
