"""Render a Ray cluster launcher config whose size is capped by a budget and a deadline.

The cap is a hard bound, not a plan: it assumes every worker runs for the whole time until
the deadline, which is the most the cluster can spend by then. The arithmetic is the one
cost model's (dfray.budget.cost), the same the planner and the governor use:

    hours       = time until the deadline
    rate(node)  = instance price ($/h, on-demand or spot) + EBS + public IPv4 + S3 allowance
    usable      = budget × (1 − reserve) / (1 + margin)      (reserve 2%, margin 0 default)
    max_workers = floor((usable − rate(head) × hours) / (cap_rate × hours)),  ≥ 0; 0 is an error

Spot worker types get ``InstanceMarketOptions.SpotOptions.MaxPrice`` = the instance price
the cap was computed with (the on-demand price with the fallback on, else the spot price
read now): AWS never bills a spot node above the price the budget can pay.

Node-type policy (``available_node_types`` other than ``head_node_type`` are workers; a
worker type is *spot* when ``node_config.InstanceMarketOptions.MarketType`` is ``spot``):

- ``--spot`` (default): enabled = the spot worker types (only those of ``--instance-type``
  when given) plus, with fallback on (default), the on-demand worker types of the *same*
  instance types, so the autoscaler can fall back to on-demand when spot is short.
- ``--on-demand``: enabled = the on-demand worker types (of ``--instance-type`` if given).
- Every enabled type gets ``max_workers = cap`` and the top-level ``max_workers = cap``;
  every other worker type gets ``max_workers: 0`` and ``min_workers: 0``.
- ``cap_rate`` is the *highest* hourly rate among the enabled types (with fallback on
  that is the on-demand type's): whatever mix of types the autoscaler launches, at most
  ``cap`` workers each costing at most ``cap_rate`` run, so the spend stays inside the
  budget. ``--no-fallback`` caps at the spot price instead (more workers, no fallback).
- ``min_workers`` of enabled types is kept but clipped to the cap.

Network and identity settings come from arguments or a ``terraform output -json`` file
(``--tf-outputs``): region -> ``provider.region``; subnet ids -> ``node_config.SubnetIds``
of every node type (``provider.availability_zone`` is then dropped, the subnets decide the
AZs); security group -> ``node_config.SecurityGroupIds``; head / worker instance profile
ARNs -> ``node_config.IamInstanceProfile.Arn``; ``--image-id`` -> ``node_config.ImageId``.
Values still equal to the template's all-zero placeholder IDs are listed in the header and
warned about. The template's comments are not kept; the
rendered file starts with a header that records the arithmetic and the price sources.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from dfray.budget import cost
from dfray.budget.cluster import NodeType, NodeTypes
from dfray.budget.planner import _Prices
from dfray.budget.prices import Price

DEFAULT_TEMPLATE = "infra/aws-cluster.yaml"

# The template's fake IDs: subnet-000…, sg-000…, ami-000…, account 000000000000.
_PLACEHOLDER = re.compile(r"\b(?:subnet|sg|ami)-0{8,}\b|:0{12}:")

# terraform output name -> our key; the first name present wins.
TF_OUTPUT_ALIASES: dict[str, tuple[str, ...]] = {
    "region": ("region", "aws_region"),
    "image_id": ("ami_id", "image_id"),
    "subnet_ids": ("subnet_ids", "private_subnet_ids", "ray_subnet_ids", "public_subnet_ids"),
    "security_group_id": (
        "security_group_id",
        "ray_security_group_id",
        "cluster_security_group_id",
        "sg_id",
    ),
    "head_profile": (
        "head_instance_profile_arn",
        "ray_head_instance_profile_arn",
        "head_profile_arn",
    ),
    "worker_profile": (
        "worker_instance_profile_arn",
        "ray_worker_instance_profile_arn",
        "worker_profile_arn",
    ),
    "cluster_name": ("cluster_name",),
}


class RenderError(ValueError):
    """The cluster config cannot be rendered; the message says why."""


@dataclass(frozen=True)
class WorkerType:
    name: str
    instance_type: str
    market: str  # "spot" | "on_demand"


@dataclass(frozen=True)
class RenderResult:
    config: dict[str, Any] = field(hash=False)
    max_workers: int
    hours: float
    budget_usd: float
    margin: float
    head: Price
    cap_price: Price
    enabled: tuple[str, ...]
    disabled: tuple[str, ...]
    header: str
    placeholders: tuple[str, ...] = ()  # values still equal to the template's fake IDs
    head_usd_per_hour: float = 0.0  # head instance + EBS
    cap_usd_per_hour: float = 0.0  # the dearest enabled worker type, node rate
    projected_usd: float = 0.0  # head + max_workers workers until the deadline
    reserve: float = 0.0

    def to_yaml(self) -> str:
        import yaml

        return self.header + yaml.safe_dump(self.config, sort_keys=False, width=100)


def load_template(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path) as f:
            config = yaml.safe_load(f)
    except OSError as e:
        raise RenderError(f"cannot read cluster template {path}: {e}") from e
    except yaml.YAMLError as e:
        raise RenderError(f"cluster template {path} is not valid YAML: {e}") from e
    if not isinstance(config, dict) or "available_node_types" not in config:
        raise RenderError(f"{path} is not a Ray cluster config with available_node_types")
    return config


def default_template_path() -> str:
    """The repository's template, also found when run from elsewhere in a checkout."""
    from pathlib import Path

    here = Path(__file__).resolve().parents[2] / DEFAULT_TEMPLATE
    return DEFAULT_TEMPLATE if Path(DEFAULT_TEMPLATE).exists() else str(here)


def read_tf_outputs(path: str) -> dict[str, Any]:
    """Our settings from a ``terraform output -json`` file (``{name: {"value": …}}``)."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise RenderError(f"cannot read terraform outputs {path}: {e}") from e
    if not isinstance(raw, dict):
        raise RenderError(f"{path} is not `terraform output -json` output")
    values = {
        k: (v.get("value") if isinstance(v, dict) and "value" in v else v) for k, v in raw.items()
    }
    out: dict[str, Any] = {}
    for key, names in TF_OUTPUT_ALIASES.items():
        for name in names:
            if values.get(name) not in (None, "", []):
                out[key] = values[name]
                break
    if isinstance(out.get("subnet_ids"), str):
        out["subnet_ids"] = [out["subnet_ids"]]
    return out


def worker_types(config: dict[str, Any]) -> list[WorkerType]:
    out = []
    for t in NodeTypes.from_cluster_config(config).workers:
        if not t.instance_type:
            raise RenderError(f"node type {t.name} has no node_config.InstanceType")
        out.append(WorkerType(t.name, t.instance_type, t.market))
    return out


def head_node_type(config: dict[str, Any]) -> NodeType:
    head = NodeTypes.from_cluster_config(config).head
    if head is None:
        name = config.get("head_node_type")
        raise RenderError(f"head_node_type {name!r} is not among available_node_types")
    if not head.instance_type:
        raise RenderError(f"head node type {head.name} has no node_config.InstanceType")
    return head


def head_instance_type(config: dict[str, Any]) -> str:
    return head_node_type(config).instance_type


def budget_max_workers(
    budget_usd: float,
    hours: float,
    head_usd_per_hour: float,
    worker_usd_per_hour: float,
    margin: float = 0.0,
    reserve: float = cost.DEFAULT_RESERVE,
) -> int:
    """The cost model's cap until the deadline (dfray.budget.cost.budget_cap), at least 0."""
    if hours <= 0:
        raise RenderError("the deadline must be in the future")
    if worker_usd_per_hour <= 0:
        raise RenderError("a worker price of $0/h puts no bound on max_workers")
    return cost.budget_cap(
        budget_usd=budget_usd,
        hours=hours,
        head_usd_per_hour=head_usd_per_hour,
        worker_usd_per_hour=worker_usd_per_hour,
        reserve=reserve,
        margin=margin,
    ).workers


def select_types(
    workers: list[WorkerType], instance_type: str | None, spot: bool, fallback: bool
) -> list[WorkerType]:
    """The worker types to enable (see the module docstring for the policy)."""
    market = "spot" if spot else "on_demand"
    chosen = [
        w
        for w in workers
        if w.market == market and (instance_type is None or w.instance_type == instance_type)
    ]
    if not chosen:
        known = ", ".join(f"{w.name} ({w.instance_type} {w.market})" for w in workers) or "none"
        what = f"{instance_type} " if instance_type else ""
        raise RenderError(
            f"the template has no {what}{market.replace('_', '-')} worker type; it has: {known}"
        )
    if spot and fallback:
        itypes = {w.instance_type for w in chosen}
        chosen += [w for w in workers if w.market == "on_demand" and w.instance_type in itypes]
    return chosen


AUTOSCALER_V1 = "export RAY_enable_autoscaler_v2=0; "


def pin_autoscaler_v1(config: dict[str, Any]) -> bool:
    """Make the head's ``ray start --head`` run the v1 autoscaler; returns whether a
    command was changed. Ray 2.60's ``ray up`` prefixes ``export RAY_enable_autoscaler_v2=1;``
    to every head start command (unless ``RAY_UP_enable_autoscaler_v2=0`` is set where it
    runs); an export inside the command comes after it and wins. The governor's cap relies
    on v1 re-reading ``max_workers`` from the autoscaling config on every update, and the
    spot-first scorer is a v1 hook."""
    changed = False
    cmds = config.get("head_start_ray_commands") or []
    for i, cmd in enumerate(cmds):
        if "ray start" in cmd and "--head" in cmd and "RAY_enable_autoscaler_v2=0" not in cmd:
            cmds[i] = AUTOSCALER_V1 + cmd
            changed = True
    return changed


def find_placeholders(config: Any, path: str = "") -> list[str]:
    """Paths of values that still look like the template's all-zero placeholders."""
    found: list[str] = []
    if isinstance(config, dict):
        for k, v in config.items():
            found += find_placeholders(v, f"{path}.{k}" if path else str(k))
    elif isinstance(config, list):
        for i, v in enumerate(config):
            found += find_placeholders(v, f"{path}[{i}]")
    elif isinstance(config, str) and _PLACEHOLDER.search(config):
        found.append(f"{path}: {config}")
    return found


def summarize_placeholders(found: list[str]) -> list[str]:
    """``available_node_types.X.node_config.ImageId: ami-0…`` for every X -> one line each."""
    counts: dict[str, int] = {}
    for item in found:
        path, _, value = item.partition(": ")
        m = re.match(r"available_node_types\.[^.]+\.(.*)$", path)
        key = re.sub(r"\[\d+\]", "", m.group(1)) + ": " + value if m else item
        counts[key] = counts.get(key, 0) + (1 if m else 0)
    return [f"{k} ({n} node types)" if n else k for k, n in counts.items()]


def render_cluster(
    template: dict[str, Any],
    *,
    budget_usd: float,
    deadline_s: float,
    prices: _Prices,
    instance_type: str | None = None,
    spot: bool = True,
    fallback: bool = True,
    margin: float = cost.DEFAULT_MARGIN,
    reserve: float = cost.DEFAULT_RESERVE,
    max_workers_limit: int | None = None,
    region: str | None = None,
    subnet_ids: list[str] | None = None,
    security_group_id: str | None = None,
    head_profile: str | None = None,
    worker_profile: str | None = None,
    image_id: str | None = None,
    cluster_name: str | None = None,
    template_path: str | None = None,
    now: datetime | None = None,
) -> RenderResult:
    """A copy of ``template`` with budget-capped max_workers and the given settings.

    A node's hourly cost is the cost model's node rate (dfray.budget.cost.node_rate).
    """
    if budget_usd <= 0:
        raise RenderError(f"the budget must be > 0, got {budget_usd}")
    if margin < 0:
        raise RenderError("margin must be >= 0")
    if not 0 <= reserve < 1:
        raise RenderError(f"the reserve is a fraction in [0, 1), got {reserve}")
    config = copy.deepcopy(template)
    now = now or datetime.now().astimezone()
    hours = deadline_s / 3600.0
    nts = config["available_node_types"]
    head_name = config.get("head_node_type")
    types = NodeTypes.from_cluster_config(config)
    workers = worker_types(config)
    enabled = select_types(workers, instance_type, spot, fallback)
    enabled_names = {w.name for w in enabled}

    head_nt = head_node_type(config)
    head = prices.price(head_nt.instance_type, spot=False)
    head_node_rate = cost.node_rate(head, head_nt)
    head_rate = head_node_rate.usd_per_hour
    rates = {
        w.name: cost.node_rate(
            prices.price(w.instance_type, spot=w.market == "spot"), types.by_name[w.name]
        )
        for w in enabled
    }
    worker_prices = {name: r.price for name, r in rates.items()}
    worker_rates = {name: r.usd_per_hour for name, r in rates.items()}
    cap_name = max(enabled, key=lambda w: worker_rates[w.name]).name
    cap_price, cap_rate = worker_prices[cap_name], worker_rates[cap_name]
    if hours <= 0:
        raise RenderError("the deadline must be in the future")
    plan = cost.budget_cap(
        budget_usd=budget_usd,
        hours=hours,
        head_usd_per_hour=head_rate,
        worker_usd_per_hour=cap_rate,
        reserve=reserve,
        margin=margin,
    )
    cap = plan.workers
    usable = plan.usable_usd - head_rate * hours
    if cap == 0:
        need = (head_rate + cap_rate) * hours * (1 + margin) / (1 - reserve)
        raise RenderError(
            f"the budget ${budget_usd:,.2f} cannot pay for one worker until the deadline "
            f"({hours:.2f} h): the head ({head.instance_type}, ${head_rate:.4f}/h) leaves "
            f"${max(usable, 0.0):,.2f}, one {cap_price.instance_type} {cap_price.market} worker "
            f"(${cap_rate:.4f}/h) needs ${cap_rate * hours:,.2f}; at least ${need:,.2f} is "
            "needed, or a nearer deadline"
        )
    budget_cap = cap
    if max_workers_limit is not None:
        cap = min(cap, max_workers_limit)
    projected = cost.projected_usd(
        spent_usd=0.0,
        head_usd_per_hour=head_rate,
        worker_usd_per_hour=cap_rate,
        workers=cap,
        hours=hours,
    )
    # AWS never bills a spot node above its MaxPrice: the instance price the cap paid for.
    max_price = cap_price.usd_per_hour
    for w in enabled:
        if w.market == "spot":
            opts = (
                nts[w.name]
                .setdefault("node_config", {})
                .setdefault("InstanceMarketOptions", {"MarketType": "spot"})
            )
            opts.setdefault("SpotOptions", {})["MaxPrice"] = f"{max_price:.4f}"

    config["max_workers"] = cap
    for name, nt in nts.items():
        if name == head_name:
            continue
        if name in enabled_names:
            nt["max_workers"] = cap
            nt["min_workers"] = min(int(nt.get("min_workers", 0) or 0), cap)
        else:
            nt["max_workers"] = 0
            nt["min_workers"] = 0

    pin_autoscaler_v1(config)
    provider = config.setdefault("provider", {})
    dropped_az = None
    if region:
        provider["region"] = region
    if cluster_name:
        config["cluster_name"] = cluster_name
    for name, nt in nts.items():
        nc = nt.setdefault("node_config", {})
        if subnet_ids:
            nc["SubnetIds"] = list(subnet_ids)
        if security_group_id:
            nc["SecurityGroupIds"] = [security_group_id]
        if image_id:
            nc["ImageId"] = image_id
        profile = head_profile if name == head_name else worker_profile
        if profile:
            nc["IamInstanceProfile"] = {"Arn": profile}
    if subnet_ids and "availability_zone" in provider:
        dropped_az = provider.pop("availability_zone")

    def extras_note(rate: cost.NodeRate) -> str:
        parts = {k: v for k, v in rate.parts().items() if k != "instance" and v}
        return "".join(f" + {k} ${v:.4f}/h" for k, v in parts.items())

    deadline_at = now + timedelta(seconds=deadline_s)
    lines = [
        "Rendered by `dfray cluster render`; edit the template, not this file.",
        f"template: {template_path or '(in memory)'}; rendered {now.isoformat(timespec='seconds')}",
        f"budget ${budget_usd:,.2f}, reserve {reserve:.0%}, margin {margin:.0%}, deadline "
        f"{deadline_at.isoformat(timespec='minutes')} ({hours:.3f} h from render time)",
        f"head: {head.instance_type} on-demand ${head.usd_per_hour:.4f}/h "
        f"[{head.source}, as of {head.as_of}]{extras_note(head_node_rate)} × {hours:.3f} h "
        f"= ${head_rate * hours:,.2f}",
    ]
    for w in enabled:
        p = worker_prices[w.name]
        lines.append(
            f"worker {w.name}: {w.instance_type} {w.market} ${p.usd_per_hour:.4f}/h "
            f"[{p.source}, as of {p.as_of}]{extras_note(rates[w.name])}"
        )
    lines += [
        f"cap rate = highest enabled worker rate = ${cap_rate:.4f}/h ({cap_name})",
        f"usable = ${budget_usd:,.2f} × {1 - reserve:g} / {1 + margin:g} = "
        f"${plan.usable_usd:,.2f}; max_workers = floor((${plan.usable_usd:,.2f} - "
        f"${head_rate * hours:,.2f}) / (${cap_rate:.4f}/h × {hours:.3f} h)) = "
        f"floor(${usable:,.2f} / ${cap_rate * hours:,.2f}) = {budget_cap}"
        + (f", limited to {cap} by --max-workers" if cap != budget_cap else ""),
        "worst case, every worker running until the deadline: $"
        f"{projected:,.2f} <= ${plan.usable_usd:,.2f}",
        f"spot MaxPrice of the spot worker types: ${max_price:.4f}/h",
        "autoscaler v1 pinned (RAY_enable_autoscaler_v2=0 in head_start_ray_commands): "
        "the budget cap and the spot-first scorer are tested with v1 only",
        "enabled worker types (max_workers = cap): " + ", ".join(sorted(enabled_names)),
        "disabled worker types (max_workers = 0): "
        + (", ".join(w.name for w in workers if w.name not in enabled_names) or "none"),
        "policy: spot types plus the on-demand fallback of the same instance types; "
        "any mix stays within the cap rate"
        if spot and fallback
        else "policy: only the selected market; no fallback",
    ]
    if dropped_az:
        lines.append(f"provider.availability_zone {dropped_az!r} dropped: the subnets set the AZs")
    lines.append(
        "not counted: " + "; ".join(cost.UNSEEN) + "; the dfray budget governor enforces "
        "the cap at run time"
    )
    placeholders = summarize_placeholders(find_placeholders(config))
    if placeholders:
        lines.append("STILL PLACEHOLDERS (fill them in before `ray up`):")
        lines += [f"  {p}" for p in placeholders]
    header = "".join(f"# {line}\n" for line in lines) + "\n"
    return RenderResult(
        config=config,
        max_workers=cap,
        hours=hours,
        budget_usd=budget_usd,
        margin=margin,
        head=head,
        cap_price=cap_price,
        enabled=tuple(w.name for w in enabled),
        disabled=tuple(w.name for w in workers if w.name not in enabled_names),
        header=header,
        placeholders=tuple(placeholders),
        head_usd_per_hour=head_rate,
        cap_usd_per_hour=cap_rate,
        projected_usd=projected,
        reserve=reserve,
    )


def validate_ray_config(config: dict[str, Any]) -> None:
    """Raise if ``config`` is not a valid Ray cluster config (Ray's schema, with defaults)."""
    import logging

    from ray.autoscaler._private.util import prepare_config, validate_config

    # prepare_config logs what defaults it fills in at INFO; that is noise here.
    util_log = logging.getLogger("ray.autoscaler._private.util")
    level = util_log.level
    util_log.setLevel(logging.WARNING)
    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    finally:
        util_log.setLevel(level)
