"""Planner: turn a measured per-video rate into instance type × worker count for a deadline,
inside a budget. Pure arithmetic, plus a thin adapter that reads the rate from a run's
``run.json`` or from a short calibration run.

Model, per instance type × market (all times in hours):

- ``r``  videos/hour one worker node of this type scores
         = measured rate on the reference type × speed[type] / speed[reference]
- ``p``  worker rate ($/h), ``h`` head rate ($/h, on-demand, runs the whole time): the
         cost model's node rates (dfray.budget.cost: instance + EBS + public IPv4 + S3
         allowance, the extras read from a cluster template when one is given)
- ``o``  start-up overhead (node boot, image pull, model load; default 5 min), billed
- ``D``  hours until the deadline, ``N`` videos
- with ``w`` workers: ``hours(w) = N / (r·w) + o``; ``cost(w) = (w·p + h) · hours(w)``
- ``w_deadline = ceil(N / (r · (D − o)))``: the fewest workers that finish by the deadline
- the row's worker count is the *cheapest* count in ``[w_deadline, max_workers]``. Usually
  that is ``w_deadline``; when the head node is a noticeable part of the bill, a few more
  workers finish sooner, shorten the head's hours and cost less overall (``cost(w)`` is
  convex with its minimum at ``sqrt(N·h / (r·o·p))``). Ties go to fewer workers.
- ``fits`` = finishes by the deadline and ``cost ≤ budget × (1 − reserve) / (1 + margin)``
  (the cost model's usable budget).
- Each row also shows the cost model's cap for the budget: the most workers the budget pays
  for until the deadline (``budget_workers``) and that total (``budget_projected_usd``),
  the same numbers ``dfray cluster render`` and the governor compute for that budget.
- If ``w_deadline > max_workers`` the row shows ``max_workers`` and when that would finish.

The relative speeds below are ASSUMPTIONS, not measurements; they are printed with every
plan. Measure on the type you plan for (``--from-run`` of a run on that type) whenever the
money matters.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Protocol

from dfray.budget import cost
from dfray.budget.cluster import NodeTypes
from dfray.budget.prices import Price

DEFAULT_REFERENCE_TYPE = "g4dn.xlarge"
DEFAULT_HEAD_TYPE = "m6i.xlarge"
DEFAULT_OVERHEAD_S = 300.0
DEFAULT_MARGIN = 0.10
DEFAULT_MAX_WORKERS = 20
MARKETS = ("spot", "on_demand")

# Videos/hour of one worker node relative to a g4dn.xlarge (1× T4, 4 vCPU). ASSUMPTIONS,
# from public inference benchmarks of the GPUs, not measured with dfray:
#   A10G ≈ 2× T4, L4 ≈ 1.6× T4, V100 ≈ 1.8× T4 for small-batch CNN inference.
#   A 2xlarge has the same GPU and twice the vCPUs; decode and face detection are partly
#   CPU-bound on 4 vCPUs, so we assume 1.2–1.3× the xlarge, not 2×.
RELATIVE_SPEED: dict[str, float] = {
    "g4dn.xlarge": 1.0,  # NVIDIA T4 16 GB, 4 vCPU
    "g4dn.2xlarge": 1.3,  # T4, 8 vCPU
    "g5.xlarge": 2.0,  # NVIDIA A10G 24 GB, 4 vCPU
    "g5.2xlarge": 2.4,  # A10G, 8 vCPU
    "g6.xlarge": 1.6,  # NVIDIA L4 24 GB, 4 vCPU
    "g6.2xlarge": 1.9,  # L4, 8 vCPU
    "p3.2xlarge": 1.8,  # NVIDIA V100 16 GB, 8 vCPU
}

# GPU name in a run's "device" string -> the instance type that carries that GPU.
_GPU_TYPES = (
    ("A10G", "g5.xlarge"),
    ("L4", "g6.xlarge"),
    ("V100", "p3.2xlarge"),
    ("T4", "g4dn.xlarge"),
)


class PlanError(ValueError):
    """Bad planner input; the message says which and why."""


class _Prices(Protocol):
    def price(self, instance_type: str, spot: bool) -> Price: ...


# -- deadlines ------------------------------------------------------------------------------

_DURATION = re.compile(
    r"^(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m(?:in)?)?(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)
_CLOCK = re.compile(r"^(?P<h>\d{1,2}):(?P<m>\d{2})$")


def parse_deadline(text: str, now: datetime | None = None) -> float:
    """Seconds from ``now`` until the deadline ``text``.

    - a duration: ``8h``, ``90m``, ``7h30m``, ``1d2h``, ``45s`` (units d/h/m/s, decimals ok);
    - a local wall-clock time ``HH:MM``: today, or tomorrow when it has already passed today
      (a time equal to now counts as tomorrow); interpreted in ``now``'s time zone
      (naive ``now``: local wall clock, no DST correction);
    - an ISO date-time ``2025-06-01T08:00`` (time zone of ``now`` unless it has one).
    """
    if now is None:
        now = datetime.now().astimezone()
    s = (text or "").strip().lower().replace(" ", "")
    if not s:
        raise PlanError("empty deadline; give HH:MM or a duration such as 8h, 90m, 7h30m")
    m = _CLOCK.match(s)
    if m:
        hh, mm = int(m["h"]), int(m["m"])
        if hh > 23 or mm > 59:
            raise PlanError(f"deadline {text!r}: not a valid HH:MM time")
        target = datetime.combine(now.date(), time(hh, mm), tzinfo=now.tzinfo)
        if target <= now:
            target += timedelta(days=1)
        return (target - now).total_seconds()
    m = _DURATION.match(s)
    if m and any(m.groupdict().values()):
        g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
        seconds = g["d"] * 86400 + g["h"] * 3600 + g["m"] * 60 + g["s"]
        if seconds <= 0:
            raise PlanError(f"deadline {text!r} is not in the future")
        return seconds
    try:
        target = datetime.fromisoformat(text.strip())
    except ValueError:
        raise PlanError(
            f"cannot read deadline {text!r}; give HH:MM (local time), a duration such as "
            "8h, 90m or 7h30m, or an ISO date-time"
        ) from None
    if target.tzinfo is None and now.tzinfo is not None:
        target = target.replace(tzinfo=now.tzinfo)
    elif target.tzinfo is not None and now.tzinfo is None:
        target = target.astimezone().replace(tzinfo=None)
    seconds = (target - now).total_seconds()
    if seconds <= 0:
        raise PlanError(f"deadline {text!r} is in the past")
    return seconds


# -- plan -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanRow:
    instance_type: str
    market: str  # "spot" | "on_demand"
    workers: int
    hours: float  # wall-clock hours from now to the end, start-up included
    finish_at: datetime
    cost_usd: float  # workers + head, without the safety margin
    usd_per_1000_videos: float
    fits: bool
    reason: str
    price_source: str
    usd_per_hour: float = 0.0  # worker rate (instance + extras)
    videos_per_hour_per_worker: float = 0.0  # assumed rate on this type
    budget_workers: int = 0  # the cost model's cap: most workers paid until the deadline
    budget_projected_usd: float = 0.0  # head + budget_workers workers until the deadline

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["finish_at"] = self.finish_at.isoformat(timespec="seconds")
        return d


@dataclass(frozen=True)
class Plan:
    rows: tuple[PlanRow, ...]
    best: PlanRow | None
    why_none: str | None
    n_videos: int
    budget_usd: float
    now: datetime
    deadline_at: datetime
    videos_per_hour_per_worker: float  # measured, on the reference type
    reference_type: str
    head: Price
    overhead_s: float
    margin: float
    max_workers: int
    reserve: float = cost.DEFAULT_RESERVE
    head_usd_per_hour: float = 0.0  # head rate (instance + extras)
    relative_speed: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_videos": self.n_videos,
            "budget_usd": self.budget_usd,
            "now": self.now.isoformat(timespec="seconds"),
            "deadline_at": self.deadline_at.isoformat(timespec="seconds"),
            "videos_per_hour_per_worker": self.videos_per_hour_per_worker,
            "reference_type": self.reference_type,
            "head": self.head.to_dict(),
            "overhead_s": self.overhead_s,
            "margin": self.margin,
            "reserve": self.reserve,
            "head_usd_per_hour": self.head_usd_per_hour,
            "max_workers": self.max_workers,
            "relative_speed": dict(self.relative_speed),
            "relative_speed_note": "assumed, not measured",
            "rows": [r.to_dict() for r in self.rows],
            "best": self.best.to_dict() if self.best else None,
            "why_none": self.why_none,
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _hours(n: int, rate: float, workers: int, overhead_h: float) -> float:
    return n / (rate * workers) + overhead_h


def _cost(n: int, rate: float, workers: int, overhead_h: float, price: float, head: float):
    return (workers * price + head) * _hours(n, rate, workers, overhead_h)


def type_rate(
    rate_ref: float,
    instance_type: str,
    reference_type: str,
    relative_speed: dict[str, float] | None = None,
) -> float:
    """Videos/hour/worker on ``instance_type`` given the rate measured on ``reference_type``."""
    speed = RELATIVE_SPEED if relative_speed is None else relative_speed
    for t in (instance_type, reference_type):
        if t not in speed:
            raise PlanError(
                f"no relative speed for {t}; known: {sorted(speed)} "
                "(measure on it and pass --reference-type)"
            )
    return rate_ref * speed[instance_type] / speed[reference_type]


def make_plan(
    *,
    n_videos: int,
    budget_usd: float,
    deadline_s: float,
    videos_per_hour_per_worker: float,
    prices: _Prices,
    instance_types: Iterable[str] | None = None,
    markets: Iterable[str] = MARKETS,
    reference_type: str = DEFAULT_REFERENCE_TYPE,
    relative_speed: dict[str, float] | None = None,
    head_type: str = DEFAULT_HEAD_TYPE,
    overhead_s: float = DEFAULT_OVERHEAD_S,
    margin: float = DEFAULT_MARGIN,
    reserve: float = cost.DEFAULT_RESERVE,
    max_workers: int = DEFAULT_MAX_WORKERS,
    node_types: NodeTypes | None = None,
    now: datetime | None = None,
    notes: Iterable[str] = (),
) -> Plan:
    """One row per instance type × market, the cheapest fitting row, or why none fits."""
    if n_videos <= 0:
        raise PlanError(f"nothing to plan: the corpus has {n_videos} videos")
    if not (videos_per_hour_per_worker > 0 and math.isfinite(videos_per_hour_per_worker)):
        raise PlanError(f"the per-worker rate must be > 0, got {videos_per_hour_per_worker}")
    if budget_usd <= 0:
        raise PlanError(f"the budget must be > 0, got {budget_usd}")
    if deadline_s <= 0:
        raise PlanError("the deadline must be in the future")
    if max_workers < 1:
        raise PlanError(f"max_workers must be >= 1, got {max_workers}")
    if margin < 0 or overhead_s < 0:
        raise PlanError("margin and overhead must be >= 0")
    speed = dict(RELATIVE_SPEED if relative_speed is None else relative_speed)
    if reference_type not in speed:
        raise PlanError(f"unknown reference type {reference_type}; known: {sorted(speed)}")
    types = list(instance_types) if instance_types is not None else list(speed)
    markets = [m.replace("-", "_") for m in markets]
    for m in markets:
        if m not in MARKETS:
            raise PlanError(f"market must be one of {MARKETS}, got {m!r}")
    now = now or datetime.now().astimezone()
    deadline_h = deadline_s / 3600.0
    overhead_h = overhead_s / 3600.0
    deadline_at = now + timedelta(seconds=deadline_s)
    if not 0 <= reserve < 1:
        raise PlanError(f"the reserve is a fraction in [0, 1), got {reserve}")
    head = prices.price(head_type, spot=False)
    h = cost.node_rate(head, node_types.head if node_types else None).usd_per_hour
    usable = cost.usable_usd(budget_usd, reserve, margin)
    N = n_videos
    eps = 1e-9

    rows: list[PlanRow] = []
    for itype in types:
        rate = type_rate(videos_per_hour_per_worker, itype, reference_type, speed)
        for market in markets:
            price = prices.price(itype, spot=market == "spot")
            p = _worker_rate(price, itype, market, node_types).usd_per_hour
            cap = cost.budget_cap(
                budget_usd=budget_usd,
                hours=deadline_h,
                head_usd_per_hour=h,
                worker_usd_per_hour=p,
                reserve=reserve,
                margin=margin,
            )
            usable_h = deadline_h - overhead_h
            w_deadline = (
                max(1, math.ceil(N / (rate * usable_h) - eps)) if usable_h > 0 else math.inf
            )
            if w_deadline <= max_workers:
                workers = min(
                    range(int(w_deadline), max_workers + 1),
                    key=lambda w, r=rate, p=p: (round(_cost(N, r, w, overhead_h, p, h), 9), w),
                )
            else:
                workers = max_workers
            hours = _hours(N, rate, workers, overhead_h)
            run_cost = (workers * p + h) * hours
            on_time = hours <= deadline_h + eps
            in_budget = run_cost <= usable + eps
            reasons = []
            if not on_time:
                if usable_h <= 0:
                    reasons.append(
                        f"deadline is within the {overhead_s / 60:.0f} min start-up overhead"
                    )
                else:
                    reasons.append(
                        f"needs {w_deadline} workers to meet the deadline, max is {max_workers}"
                    )
            if not in_budget:
                reasons.append(
                    f"${run_cost:,.2f} > ${usable:,.2f} usable of the budget "
                    f"${budget_usd:,.2f} ({reserve:.0%} reserve, {margin:.0%} margin)"
                )
            if on_time and in_budget:
                reasons.append(
                    "ok"
                    if workers == w_deadline
                    else f"ok; {workers} workers cost less than {w_deadline} (shorter head time)"
                )
            rows.append(
                PlanRow(
                    instance_type=itype,
                    market=market,
                    workers=workers,
                    hours=hours,
                    finish_at=now + timedelta(hours=hours),
                    cost_usd=run_cost,
                    usd_per_1000_videos=run_cost / N * 1000.0,
                    fits=on_time and in_budget,
                    reason="; ".join(reasons),
                    price_source=price.source,
                    usd_per_hour=p,
                    videos_per_hour_per_worker=rate,
                    budget_workers=cap.workers,
                    budget_projected_usd=cap.projected_usd,
                )
            )

    fitting = [r for r in rows if r.fits]
    best = min(fitting, key=lambda r: (r.cost_usd, r.hours)) if fitting else None
    why = None if best else _why_none(rows, N, usable, deadline_h, overhead_h, h, max_workers, now)
    return Plan(
        rows=tuple(rows),
        best=best,
        why_none=why,
        n_videos=N,
        budget_usd=budget_usd,
        now=now,
        deadline_at=deadline_at,
        videos_per_hour_per_worker=videos_per_hour_per_worker,
        reference_type=reference_type,
        head=head,
        overhead_s=overhead_s,
        margin=margin,
        max_workers=max_workers,
        reserve=reserve,
        head_usd_per_hour=h,
        relative_speed={t: speed[t] for t in dict.fromkeys([*types, reference_type])},
        notes=tuple(notes),
    )


def _worker_rate(price: Price, itype: str, market: str, types: NodeTypes | None) -> cost.NodeRate:
    """The node rate of a worker: the template's type of that instance type and market,
    else the dearest extras of its worker types (none without a template)."""
    if types is None or not types.workers:
        return cost.node_rate(price, None)
    same = [t for t in types.workers if t.instance_type == itype and t.market == market]
    rates = [cost.node_rate(price, t) for t in (same or types.workers)]
    return max(rates, key=lambda r: r.usd_per_hour)


def _why_none(rows, N, usable, deadline_h, overhead_h, head, max_workers, now) -> str:
    """Why no row fits: the deadline, the budget, or both, with the numbers that would."""
    if not rows:
        return "no instance types to plan for"
    parts: list[str] = []
    on_time = [r for r in rows if r.hours <= deadline_h + 1e-9]
    if on_time:
        cheapest = min(on_time, key=lambda r: r.cost_usd)
        parts.append(
            f"budget too small: meeting the deadline needs at least "
            f"${cheapest.cost_usd:,.2f} (${usable:,.2f} usable) with "
            f"{cheapest.workers} × {cheapest.instance_type} {cheapest.market}"
        )
    else:
        fastest = min(rows, key=lambda r: r.hours)
        parts.append(
            f"deadline too tight: even at {max_workers} workers the earliest finish is "
            f"{_fmt_time(fastest.finish_at, now)} ({fastest.hours:.2f} h) with "
            f"{fastest.workers} × {fastest.instance_type} {fastest.market}"
        )
    # Earliest finish the budget allows: the most workers whose cost fits, per row type.
    best_in_budget = None  # (hours, workers, row, cost)
    cheapest_run = None  # (cost, workers, row)
    for r in rows:
        rate, p = r.videos_per_hour_per_worker, r.usd_per_hour
        for w in range(1, max_workers + 1):
            c = _cost(N, rate, w, overhead_h, p, head)
            if cheapest_run is None or c < cheapest_run[0]:
                cheapest_run = (c, w, r)
            if c <= usable + 1e-9:
                hrs = _hours(N, rate, w, overhead_h)
                if best_in_budget is None or hrs < best_in_budget[0]:
                    best_in_budget = (hrs, w, r, c)
    if best_in_budget:
        hrs, w, r, c = best_in_budget
        parts.append(
            f"within the budget the earliest finish is {_fmt_time(now + timedelta(hours=hrs), now)} "
            f"({hrs:.2f} h) with {w} × {r.instance_type} {r.market} for ${c:,.2f}"
        )
    elif cheapest_run:
        c, w, r = cheapest_run
        parts.append(
            f"the budget cannot pay for the whole corpus at any speed: the cheapest run costs "
            f"${c:,.2f} (${usable:,.2f} usable) with {w} × "
            f"{r.instance_type} {r.market}"
        )
    return "; ".join(parts)


def _fmt_time(t: datetime, now: datetime) -> str:
    days = (t.date() - now.date()).days
    return t.strftime("%H:%M") + (f" (+{days}d)" if days else "")


def format_plan(plan: Plan) -> str:
    """Human-readable table, assumptions and the verdict."""
    head = (
        f"{'instance type':<14} {'market':<9} {'workers':>7} {'hours':>7} {'finish':>12} "
        f"{'cost $':>10} {'$/1k vid':>9} {'fits':<4}  price source"
    )
    lines = [
        f"{plan.n_videos:,} videos, budget ${plan.budget_usd:,.2f}, deadline "
        f"{_fmt_time(plan.deadline_at, plan.now)} ({(plan.deadline_at - plan.now).total_seconds() / 3600:.2f} h from now)",
        f"measured rate: {plan.videos_per_hour_per_worker:,.1f} videos/h per worker on "
        f"{plan.reference_type}; other types scaled by ASSUMED relative speeds "
        + ", ".join(f"{t}={s:g}" for t, s in plan.relative_speed.items()),
        f"head node {plan.head.instance_type} on-demand ${plan.head.usd_per_hour:.4f}/h "
        f"({plan.head.source}) runs the whole time; start-up overhead "
        f"{plan.overhead_s / 60:.0f} min; reserve {plan.reserve:.0%}, margin {plan.margin:.0%}; "
        f"max {plan.max_workers} workers; node rates include EBS, public IPv4 and the S3 "
        "allowance when a cluster template is given; not counted: data transfer, S3 storage",
        *plan.notes,
        "",
        head,
        "-" * len(head),
    ]
    for r in plan.rows:
        lines.append(
            f"{r.instance_type:<14} {r.market:<9} {r.workers:>7} {r.hours:>7.2f} "
            f"{_fmt_time(r.finish_at, plan.now):>12} {r.cost_usd:>10.2f} "
            f"{r.usd_per_1000_videos:>9.3f} {'yes' if r.fits else 'no':<4}  {r.price_source}"
            + ("" if r.fits else f"  [{r.reason}]")
        )
    if any(r.market == "spot" for r in plan.rows):
        lines.append(
            "spot rows assume no interruptions; a reclaimed node's videos are rescored "
            "elsewhere, which costs time and money this table does not include"
        )
    lines.append("")
    if plan.best:
        b = plan.best
        lines.append(
            f"cheapest plan that meets the deadline: {b.workers} × {b.instance_type} "
            f"{b.market} at ${b.usd_per_hour:.4f}/h, finishes {_fmt_time(b.finish_at, plan.now)} "
            f"({b.hours:.2f} h), costs ${b.cost_usd:,.2f} "
            f"(${b.cost_usd * (1 + plan.margin):,.2f} with margin), "
            f"${b.usd_per_1000_videos:.3f} per 1000 videos"
        )
    else:
        lines.append(f"no plan fits: {plan.why_none}")
    return "\n".join(lines)


# -- calibration adapter -----------------------------------------------------------------------


def load_run_stats(run_dir: str) -> dict[str, Any]:
    """The ``stats`` block of ``RUN_DIR/run.json`` (a local folder or an ``s3://`` URI)."""
    path = run_dir.rstrip("/") + "/run.json"
    try:
        if "://" in run_dir:
            from pyarrow import fs as pafs

            filesystem, p = pafs.FileSystem.from_uri(path)
            with filesystem.open_input_stream(p) as f:
                text = f.read().decode()
        else:
            with open(path) as f:
                text = f.read()
        data = json.loads(text)
    except (OSError, ValueError) as e:
        raise PlanError(f"cannot read {path}: {e}") from e
    stats = data.get("stats") if isinstance(data, dict) else None
    if not isinstance(stats, dict):
        raise PlanError(f"{path} has no 'stats' block; was the run finished with this dfray?")
    return stats


def rate_from_stats(stats: dict[str, Any]) -> float:
    """Videos per hour per worker node: ``videos_per_s × 3600 / workers``.

    ``workers`` must count worker *nodes* (machines); a ``nodes`` key, when present, is
    preferred, for run.json files whose ``workers`` counts actors instead.
    """
    try:
        vps = float(stats["videos_per_s"])
        workers = int(stats.get("nodes") or stats.get("workers") or 1)
    except (KeyError, TypeError, ValueError) as e:
        raise PlanError(f"run stats need 'videos_per_s' (and 'workers'): {e}") from e
    if not (vps > 0 and math.isfinite(vps)):
        raise PlanError(f"run stats have videos_per_s={vps}; nothing was scored?")
    return vps * 3600.0 / max(1, workers)


def is_cpu_device(device: str | None) -> bool:
    """True for ``cpu`` (and unknown); False for ``cuda…`` / ``gpu…`` device strings."""
    return not device or not str(device).lower().startswith(("cuda", "gpu"))


def reference_type_for_device(device: str | None) -> str | None:
    """The instance type whose GPU is named in a run's device string (``cuda:NVIDIA T4``)."""
    if is_cpu_device(device):
        return None
    name = str(device).upper()
    for gpu, itype in _GPU_TYPES:
        if re.search(rf"(?<![A-Z0-9]){gpu}(?![0-9])", name):
            return itype
    return None


def calibrate_stats(corpus: str, n_videos: int, storage: Any) -> dict[str, Any]:
    """Score ``n_videos`` of the corpus here and return the run's ``stats`` block."""
    try:
        from dfray.runner import calibrate
    except ImportError as e:
        raise PlanError(
            f"calibration is not available in this checkout ({e}); pass --from-run or --rate"
        ) from e
    return calibrate(corpus, n_videos=n_videos, storage=storage)
