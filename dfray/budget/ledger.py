"""Spend ledger: what the cluster has cost so far, as node uptime × hourly price.

The ledger is fed snapshots of the cluster's nodes (``observe([NodeSeen, ...])``) from a
source, and keeps one record per node: when it was first seen alive (or launched, when the
source knows), when it was last seen, when it ended, and the price it is billed at (with the
price's source). Times are read from an injectable clock (``dfray.budget.clock``), so tests
run it on a simulated clock.

Billing rules (conservative, as EC2 bills Linux instances: per second, one minute minimum):

- A node is billed from its launch time when the source gives one (EC2 ``LaunchTime``:
  boot time is billed even before the node joins Ray), but never from before the ledger's
  start (``since``): the budget is for this run, not for the head's uptime before it.
  Without a launch time, billing starts at the first snapshot that shows the node alive.
- A node seen alive is billed up to *now* on every ``spend_usd()`` call, not only up to its
  last snapshot. A node that disappears (or is reported dead) is billed up to the snapshot
  that first shows it gone: between two snapshots we cannot know when it died, so we assume
  the latest moment.
- Every billing period is at least ``min_billed_s`` (60 s) long.
- A node's rate is the cost model's (dfray.budget.cost.node_rate): the instance price plus,
  for a node type of the cluster config, its EBS volumes, public IPv4 and the S3 request
  allowance. The instance is billed per price segment: running nodes are re-priced on every
  snapshot (a price book re-reads spot prices every 10 min), and a new price closes the
  segment at the old one.
- A node that an earlier attempt of the run billed (``billed_until``, from the spend
  journal) is billed from where that record left it: the time between attempts counts, and
  nothing counts twice.
- A node first seen already dead (a previous run's, or one we never saw alive) is ignored.

Sources (callables returning ``list[NodeSeen]``):

- ``RayNodeSource``: Ray's own view, ``ray.nodes()``. Each node's type comes from its
  resources: the head has ``node:__internal_head__``; a worker type is recognised by a
  *marker* resource that only that type declares in the cluster config
  (``available_node_types.<type>.resources``, e.g. ``dfray_node_gpu_worker: 1``; custom
  resources there are given to the node by the autoscaler). The instance type is that node
  type's ``node_config.InstanceType`` (or an explicit mapping), its market from
  ``node_config.InstanceMarketOptions.MarketType``. Nodes still booting are invisible to Ray.
- ``Ec2NodeSource``: AWS's view, ``ec2:DescribeInstances`` filtered by the tag
  ``ray-cluster-name`` that Ray's AWS provider puts on every node of a cluster. It gives
  instance type, spot or not, and launch time, and sees nodes that are still booting: the
  better source on AWS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

from dfray.budget import cost
from dfray.budget.cluster import HEAD_RESOURCE, NodeType, NodeTypes
from dfray.budget.prices import Price

log = logging.getLogger(__name__)

EC2_ALIVE_STATES = frozenset({"pending", "running", "stopping", "shutting-down"})
TAG_CLUSTER_NAME = "ray-cluster-name"  # ray.autoscaler.tags.TAG_RAY_CLUSTER_NAME
TAG_NODE_KIND = "ray-node-type"  # ray.autoscaler.tags.TAG_RAY_NODE_KIND: head | worker
TAG_USER_NODE_TYPE = "ray-user-node-type"  # ray.autoscaler.tags.TAG_RAY_USER_NODE_TYPE


class LedgerError(ValueError):
    """A node cannot be priced or classified; the message says which and why."""


class NodeSeen(NamedTuple):
    """One node in one snapshot of the cluster."""

    node_id: str
    instance_type: str
    alive: bool
    role: str = "worker"  # "head" | "worker"
    spot: bool | None = None  # None: the price function decides the market
    launched_at: float | None = None  # clock seconds (epoch) when billing began, if known
    node_type: str | None = None  # the cluster config's node type name, if known


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def price_lookup(prices: Any) -> Callable[[str, bool | None], Price]:
    """A ``(instance_type, spot) -> Price`` function from what callers have at hand.

    ``prices`` is an object with ``.price(instance_type, spot)`` (a ``PriceBook``), a
    callable ``instance_type -> Price`` (the market is then the callable's business), or a
    mapping ``{instance_type: usd_per_hour or Price}`` (tests, ``--price`` overrides).
    """
    if hasattr(prices, "price") and callable(prices.price):
        return lambda itype, spot: prices.price(itype, spot=bool(spot))
    if isinstance(prices, Mapping):

        def from_map(itype: str, spot: bool | None) -> Price:
            if itype not in prices:
                raise LedgerError(
                    f"no price for {itype}; known: {sorted(prices)} (give --price {itype}=USD)"
                )
            v = prices[itype]
            if isinstance(v, Price):
                return v
            market = "spot" if spot else "on_demand"
            return Price(itype, "", market, float(v), "override", "")

        return from_map
    if callable(prices):
        return lambda itype, spot: prices(itype)
    raise TypeError(f"prices must be a PriceBook, a callable or a mapping, not {type(prices)}")


@dataclass
class NodeRecord:
    """One node's billing record in the ledger.

    The instance is billed per price segment (a spot price re-read mid-run closes the
    segment at the old price); EBS, public IPv4 and the S3 allowance per billed second."""

    node_id: str
    instance_type: str
    role: str
    node_type: str | None
    price: Price  # the price in force now
    first_seen: float  # start of the current billing period (clock seconds)
    last_seen: float
    ended_at: float | None = None  # end of the current period; None while running
    closed_s: float = 0.0  # billed seconds of earlier, finished periods
    periods: int = 1
    extras: cost.NodeRate | None = None  # EBS, IPv4, S3 of this node (its price unused)
    seg_start: float | None = None  # start of the current price segment
    closed_instance_usd: float = 0.0  # instance cost of finished segments and periods
    price_changes: int = 0

    def __post_init__(self) -> None:
        if self.seg_start is None:
            self.seg_start = self.first_seen

    @property
    def running(self) -> bool:
        return self.ended_at is None

    @property
    def extras_usd_per_hour(self) -> float:
        return self.extras.extras_usd_per_hour if self.extras is not None else 0.0

    @property
    def usd_per_hour(self) -> float:
        return self.price.usd_per_hour + self.extras_usd_per_hour

    def _pad_s(self, end: float, min_billed_s: float) -> float:
        if self.ended_at is None:
            return 0.0
        return max(0.0, min_billed_s - max(0.0, end - self.first_seen))

    def billed_s(self, now: float, min_billed_s: float = 0.0) -> float:
        end = now if self.ended_at is None else self.ended_at
        current = max(0.0, end - self.first_seen)
        if self.ended_at is not None:  # a finished period is billed at least the minimum
            current = max(current, min_billed_s)
        return self.closed_s + current

    def instance_usd(self, now: float, min_billed_s: float = 0.0) -> float:
        end = now if self.ended_at is None else self.ended_at
        seg = max(0.0, end - self.seg_start) + self._pad_s(end, min_billed_s)
        return self.closed_instance_usd + seg / 3600.0 * self.price.usd_per_hour

    def parts_usd(self, now: float, min_billed_s: float = 0.0) -> dict[str, float]:
        hours = self.billed_s(now, min_billed_s) / 3600.0
        parts = {"instance": self.instance_usd(now, min_billed_s)}
        if self.extras is not None:
            for k, v in self.extras.parts().items():
                if k != "instance":
                    parts[k] = hours * v
        return parts

    def cost_usd(self, now: float, min_billed_s: float = 0.0) -> float:
        return sum(self.parts_usd(now, min_billed_s).values())

    def reprice(self, now: float, price: Price) -> None:
        """Close the current segment at the old price; bill on at ``price``."""
        if price.usd_per_hour == self.price.usd_per_hour:
            self.price = price
            return
        self.closed_instance_usd += (
            max(0.0, now - self.seg_start) / 3600.0 * self.price.usd_per_hour
        )
        self.seg_start = now
        self.price = price
        self.price_changes += 1

    def restart(self, now: float, min_billed_s: float) -> None:
        """Back after we saw it gone (a stopped EC2 instance started again)."""
        self.closed_instance_usd = self.instance_usd(now, min_billed_s)
        self.closed_s = self.billed_s(now, min_billed_s)
        self.first_seen = self.last_seen = self.seg_start = now
        self.ended_at = None
        self.periods += 1

    def to_dict(self, now: float, min_billed_s: float = 0.0) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "instance_type": self.instance_type,
            "role": self.role,
            "node_type": self.node_type,
            "market": self.price.market,
            "usd_per_hour": self.price.usd_per_hour,
            "extras_usd_per_hour": round(self.extras_usd_per_hour, 6),
            "price_source": self.price.source,
            "price_as_of": self.price.as_of,
            "price_changes": self.price_changes,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "ended_at": _iso(self.ended_at),
            "billed_until": self.ended_at if self.ended_at is not None else now,
            "running": self.running,
            "uptime_s": round(self.billed_s(now, min_billed_s), 3),
            "cost_usd": round(self.cost_usd(now, min_billed_s), 6),
            "parts_usd": {k: round(v, 6) for k, v in self.parts_usd(now, min_billed_s).items()},
        }


@dataclass
class Ledger:
    """Node uptime × price. See the module docstring for the billing rules.

    ``node_types``: the cluster config's node types; a node of a known type is also billed
    for its EBS volumes, public IPv4 and the S3 allowance (dfray.budget.cost.node_rate).
    ``billed_until``: node id -> the time up to which earlier attempts of the run billed it
    (from the spend journal): such a node is billed from there, so the time between two
    attempts is counted and nothing is counted twice.
    ``reprice_s``: running nodes are re-priced at most this often (a ``PriceBook`` re-reads
    spot prices on its own schedule); a new price closes the node's price segment.
    """

    prices: Any
    clock: Any = None
    min_billed_s: float = 60.0
    since: float | None = None  # billing starts no earlier than this (default: creation)
    records: dict[str, NodeRecord] = field(default_factory=dict)
    node_types: NodeTypes | None = None
    billed_until: dict[str, float] = field(default_factory=dict)
    reprice_s: float = 0.0

    def __post_init__(self) -> None:
        if self.clock is None:
            from dfray.budget.clock import WallClock

            self.clock = WallClock()
        if self.since is None:
            self.since = self.clock.now()
        self._lookup = price_lookup(self.prices)
        self._price_memo: dict[tuple[str, bool | None], Price] = {}
        self._last_reprice: float | None = None

    # -- feeding -------------------------------------------------------------------------

    def price_of(self, instance_type: str, spot: bool | None) -> Price:
        """The price in force now (the price source decides how fresh)."""
        price = self._lookup(instance_type, spot)
        self._price_memo[(instance_type, spot)] = price
        return price

    def _node_type(self, n: NodeSeen) -> NodeType | None:
        if self.node_types is None:
            return None
        if n.node_type and n.node_type in self.node_types.by_name:
            return self.node_types.by_name[n.node_type]
        if n.role == "head":
            return self.node_types.head
        # an unknown worker: the dearest extras of any worker type
        workers = self.node_types.workers
        if not workers:
            return None
        return max(workers, key=lambda t: cost.node_rate(_ZERO, t).extras_usd_per_hour)

    def _start(self, n: NodeSeen, now: float) -> float:
        if n.node_id in self.billed_until:  # billed by an earlier attempt up to then
            return min(max(self.billed_until[n.node_id], self.since), now)
        if n.launched_at is not None:
            return min(max(n.launched_at, self.since), now)
        return now

    def observe(self, nodes: Iterable[NodeSeen], *, complete: bool = True) -> None:
        """Record one snapshot. ``complete``: the snapshot lists every node of the cluster,
        so a running node missing from it has ended."""
        now = self.clock.now()
        reprice = self._last_reprice is None or now - self._last_reprice >= self.reprice_s
        seen: set[str] = set()
        for n in nodes:
            seen.add(n.node_id)
            rec = self.records.get(n.node_id)
            if not n.alive:
                if rec is not None and rec.running:
                    rec.ended_at = now
                continue
            if rec is None:
                start = self._start(n, now)
                self.records[n.node_id] = NodeRecord(
                    node_id=n.node_id,
                    instance_type=n.instance_type,
                    role=n.role,
                    node_type=n.node_type,
                    price=self.price_of(n.instance_type, n.spot),
                    first_seen=start,
                    last_seen=now,
                    extras=cost.node_rate(_ZERO, self._node_type(n)),
                )
                continue
            if rec.running:
                rec.last_seen = now
            else:
                rec.restart(now, self.min_billed_s)
            if reprice:
                rec.reprice(now, self.price_of(n.instance_type, n.spot))
        if reprice:
            self._last_reprice = now
        if complete:
            for rec in self.records.values():
                if rec.running and rec.node_id not in seen:
                    rec.ended_at = now

    # -- reading -------------------------------------------------------------------------

    def running(self) -> list[NodeRecord]:
        return [r for r in self.records.values() if r.running]

    def spend_usd(self, now: float | None = None) -> float:
        """Σ billed uptime × $/h over every node, head included, up to ``now``."""
        now = self.clock.now() if now is None else now
        return sum(r.cost_usd(now, self.min_billed_s) for r in self.records.values())

    def parts_usd(self, now: float | None = None) -> dict[str, float]:
        """The spend by what is billed: instance, ebs, public_ipv4, s3_requests."""
        now = self.clock.now() if now is None else now
        out: dict[str, float] = {"instance": 0.0}
        for r in self.records.values():
            for k, v in r.parts_usd(now, self.min_billed_s).items():
                out[k] = out.get(k, 0.0) + v
        return out

    def burn_usd_per_hour(self, role: str | None = None) -> float:
        """$/h of the nodes running now (of one role if given), extras included."""
        return sum(r.usd_per_hour for r in self.running() if role is None or r.role == role)

    def count_running(self, role: str | None = None) -> int:
        return sum(1 for r in self.running() if role is None or r.role == role)

    def price_sources(self) -> dict[str, dict[str, Any]]:
        out = {}
        for p in self._price_memo.values():
            out[f"{p.instance_type}:{p.market}"] = {
                "usd_per_hour": p.usd_per_hour,
                "source": p.source,
                "as_of": p.as_of,
            }
        return out

    def nodes(self, now: float | None = None) -> list[dict[str, Any]]:
        now = self.clock.now() if now is None else now
        return [r.to_dict(now, self.min_billed_s) for r in self.records.values()]


_ZERO = Price("", "", "on_demand", 0.0, "", "")


# -- sources -----------------------------------------------------------------------------------


class RayNodeSource:
    """Snapshots from ``ray.nodes()`` (needs a connected Ray driver).

    ``head_instance_type`` / ``worker_instance_type``: the instance types of the head and of
    workers whose node type cannot be told from their resources (no marker resource, or no
    cluster config, e.g. a fixed cluster). ``worker_spot`` is their market.
    """

    def __init__(
        self,
        node_types: NodeTypes | None = None,
        *,
        head_instance_type: str | None = None,
        worker_instance_type: str | None = None,
        worker_spot: bool | None = None,
    ):
        self.node_types = node_types or NodeTypes([])
        self.head_instance_type = head_instance_type
        self.worker_instance_type = worker_instance_type
        self.worker_spot = worker_spot

    def __call__(self) -> list[NodeSeen]:
        import ray

        return self.parse(ray.nodes())

    def parse(self, raw_nodes: Iterable[Mapping[str, Any]]) -> list[NodeSeen]:
        out = []
        for n in raw_nodes:
            resources = n.get("Resources") or {}
            alive = bool(n.get("Alive", n.get("alive", False)))
            head = HEAD_RESOURCE in resources
            nt = self.node_types.classify(resources)
            itype = nt.instance_type if nt is not None else None
            spot = nt.spot if nt is not None else None
            if head:
                itype = itype or self.head_instance_type
                spot = False if spot is None else spot
            elif itype is None:
                itype, spot = self.worker_instance_type, self.worker_spot
            if itype is None:
                if not alive:
                    continue  # a dead node we cannot price was never ours to bill
                raise LedgerError(
                    f"cannot tell the instance type of Ray node {n.get('NodeID')} "
                    f"(resources {sorted(resources)}): give its node type a marker resource "
                    f"and node_config.InstanceType in the cluster config, or a default "
                    f"{'head' if head else 'worker'} instance type"
                )
            out.append(
                NodeSeen(
                    node_id=str(n.get("NodeID")),
                    instance_type=itype,
                    alive=alive,
                    role="head" if head else "worker",
                    spot=spot,
                    node_type=nt.name if nt is not None else None,
                )
            )
        return out


class Ec2NodeSource:
    """Snapshots from ``ec2:DescribeInstances`` of the instances tagged
    ``ray-cluster-name=<cluster_name>`` (head and workers, every state)."""

    def __init__(self, cluster_name: str, *, region: str | None = None, client: Any = None):
        if not cluster_name:
            raise ValueError("Ec2NodeSource needs the Ray cluster name")
        self.cluster_name = cluster_name
        self.region = region
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "ec2",
                region_name=self.region,
                config=Config(retries={"max_attempts": 5, "mode": "standard"}),
            )
        return self._client

    def __call__(self) -> list[NodeSeen]:
        pages = self.client.get_paginator("describe_instances").paginate(
            Filters=[{"Name": f"tag:{TAG_CLUSTER_NAME}", "Values": [self.cluster_name]}]
        )
        return self.parse(r for page in pages for r in page.get("Reservations", []))

    @staticmethod
    def parse(reservations: Iterable[Mapping[str, Any]]) -> list[NodeSeen]:
        out = []
        for res in reservations:
            for inst in res.get("Instances", []):
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", []) or []}
                launched = inst.get("LaunchTime")
                if isinstance(launched, datetime):
                    if launched.tzinfo is None:
                        launched = launched.replace(tzinfo=timezone.utc)
                    launched_at = launched.timestamp()
                else:
                    launched_at = None
                out.append(
                    NodeSeen(
                        node_id=inst["InstanceId"],
                        instance_type=inst["InstanceType"],
                        alive=inst.get("State", {}).get("Name") in EC2_ALIVE_STATES,
                        role="head" if tags.get(TAG_NODE_KIND) == "head" else "worker",
                        spot=inst.get("InstanceLifecycle") == "spot",
                        launched_at=launched_at,
                        node_type=tags.get(TAG_USER_NODE_TYPE),
                    )
                )
        return out


__all__ = [
    "Ec2NodeSource",
    "Ledger",
    "LedgerError",
    "NodeRecord",
    "NodeSeen",
    "NodeType",
    "NodeTypes",
    "RayNodeSource",
    "price_lookup",
]
