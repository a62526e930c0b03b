"""The one cost model of the budget: what a node costs per hour, how much of a budget may be
spent, how many workers that pays for until a horizon, and the projected total. The
planner, the rendered cluster config and the in-run governor all use it, so they agree on
the same budget to the cent (tests/budget/test_cost.py).

    node rate    = instance price ($/h, on demand or spot)
                   + EBS volumes (list $/GB-month / 730 h)
                   + public IPv4 addresses ($0.005/h each, AWS only)
                   + the S3 request allowance ($/node-hour, AWS only)
    usable       = budget × (1 − reserve) / (1 + margin)
    workers      = largest k with  spent + (head + k × worker) × hours ≤ usable
                 = floor((usable − spent − head × hours) / (worker × hours))
    projected    = spent + (head + workers × worker) × hours

``reserve`` is held back for what no ledger sees (nodes booting before a source shows
them, rounding, the unseen costs named in ``UNSEEN``); ``margin`` is the caller's extra
safety on top (the planner's default covers the error of an estimated rate). ``hours`` is
the horizon the workers may run: until the deadline for a plan and a rendered config, the
projected remaining time in a run. Prices and the other rates come from the one dated table
``dfray.budget.static_prices`` (or the live price book).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dfray.budget.cluster import NodeType, Volume
from dfray.budget.prices import Price
from dfray.budget.static_prices import (
    EBS_USD_PER_GB_MONTH,
    HOURS_PER_MONTH,
    PUBLIC_IPV4_USD_PER_HOUR,
    S3_REQUESTS_USD_PER_NODE_HOUR,
)

DEFAULT_RESERVE = 0.02
DEFAULT_MARGIN = 0.0

# Billed while a run is up, but seen by no ledger here; named in run.json["spend"].
UNSEEN = (
    "S3 storage (GB-month of the output and the corpus)",
    "data transfer (cross-AZ, internet egress, NAT gateway)",
    "S3 requests beyond the stated allowance",
    "EBS volumes the cluster config does not list (an AMI's default root volume)",
    "EBS snapshots, CloudWatch, and anything not launched by this Ray cluster",
)


def ebs_usd_per_hour(volumes: tuple[Volume, ...]) -> float:
    """Hourly list price of EBS volumes (an unknown volume type at the dearest rate)."""
    dearest = max(EBS_USD_PER_GB_MONTH.values())
    return sum(
        v.size_gb * EBS_USD_PER_GB_MONTH.get(v.volume_type, dearest) / HOURS_PER_MONTH
        for v in volumes
    )


@dataclass(frozen=True)
class NodeRate:
    """What one running node costs per hour, by part."""

    price: Price  # the instance
    ebs_usd_per_hour: float = 0.0
    ipv4_usd_per_hour: float = 0.0
    s3_usd_per_hour: float = 0.0

    @property
    def usd_per_hour(self) -> float:
        return (
            self.price.usd_per_hour
            + self.ebs_usd_per_hour
            + self.ipv4_usd_per_hour
            + self.s3_usd_per_hour
        )

    @property
    def extras_usd_per_hour(self) -> float:
        return self.usd_per_hour - self.price.usd_per_hour

    def parts(self) -> dict[str, float]:
        return {
            "instance": self.price.usd_per_hour,
            "ebs": self.ebs_usd_per_hour,
            "public_ipv4": self.ipv4_usd_per_hour,
            "s3_requests": self.s3_usd_per_hour,
        }


def node_rate(price: Price, node_type: NodeType | None) -> NodeRate:
    """The rate of a node of ``node_type`` (None: the instance alone, e.g. a local run)."""
    if node_type is None:
        return NodeRate(price)
    return NodeRate(
        price,
        ebs_usd_per_hour=ebs_usd_per_hour(node_type.volumes),
        ipv4_usd_per_hour=node_type.public_ipv4 * PUBLIC_IPV4_USD_PER_HOUR,
        s3_usd_per_hour=S3_REQUESTS_USD_PER_NODE_HOUR if node_type.on_aws else 0.0,
    )


def usable_usd(budget_usd: float, reserve: float = DEFAULT_RESERVE, margin: float = 0.0) -> float:
    """The part of the budget that may be spent: ``budget × (1 − reserve) / (1 + margin)``."""
    return budget_usd * (1.0 - reserve) / (1.0 + margin)


def max_workers(
    *,
    usable_usd: float,
    spent_usd: float,
    head_usd_per_hour: float,
    worker_usd_per_hour: float,
    hours: float,
    upper: int | None = None,
    remaining_videos: int | None = None,
    floor: int = 0,
) -> int:
    """Largest k with ``spent + (head + k × worker) × hours ≤ usable``, clipped to
    ``[floor, min(upper, remaining_videos)]``. No time left (``hours`` ≤ 0) allows ``upper``;
    an endless horizon allows ``floor``."""
    hi = upper
    if remaining_videos is not None:
        rv = max(floor, remaining_videos)
        hi = rv if hi is None else min(hi, rv)
    if hours <= 0 or worker_usd_per_hour <= 0:
        k = hi if hi is not None else floor
    elif not math.isfinite(hours):
        k = 0
    else:
        room = usable_usd - spent_usd - head_usd_per_hour * hours
        k = math.floor(room / (worker_usd_per_hour * hours) + 1e-9)
    k = max(floor, k)
    return min(k, hi) if hi is not None else k


def projected_usd(
    *,
    spent_usd: float,
    head_usd_per_hour: float,
    worker_usd_per_hour: float,
    workers: int,
    hours: float,
) -> float:
    """``spent + (head + workers × worker) × hours``."""
    return spent_usd + (head_usd_per_hour + workers * worker_usd_per_hour) * max(0.0, hours)


@dataclass(frozen=True)
class BudgetCap:
    """How many workers a budget pays for until a horizon, and what that costs at most."""

    workers: int
    projected_usd: float
    usable_usd: float
    hours: float
    head_usd_per_hour: float
    worker_usd_per_hour: float


def budget_cap(
    *,
    budget_usd: float,
    hours: float,
    head_usd_per_hour: float,
    worker_usd_per_hour: float,
    spent_usd: float = 0.0,
    reserve: float = DEFAULT_RESERVE,
    margin: float = DEFAULT_MARGIN,
    upper: int | None = None,
    floor: int = 0,
) -> BudgetCap:
    """``max_workers`` and ``projected_usd`` for one budget; see the module docstring."""
    usable = usable_usd(budget_usd, reserve, margin)
    k = max_workers(
        usable_usd=usable,
        spent_usd=spent_usd,
        head_usd_per_hour=head_usd_per_hour,
        worker_usd_per_hour=worker_usd_per_hour,
        hours=hours,
        upper=upper,
        floor=floor,
    )
    total = projected_usd(
        spent_usd=spent_usd,
        head_usd_per_hour=head_usd_per_hour,
        worker_usd_per_hour=worker_usd_per_hour,
        workers=k,
        hours=hours,
    )
    return BudgetCap(k, total, usable, hours, head_usd_per_hour, worker_usd_per_hour)
