"""Budget governor: caps how far the cluster may scale, and ends a run cleanly at its budget.

The runner calls ``start(n_todo, prog)`` before the pipeline starts, ``should_stop(prog)``
after every batch of finished rows and ``report()`` at the end (stored as
``run.json["spend"]``). Spend comes from a ``Ledger`` (node uptime × price) fed by a node
source (Ray's ``ray.nodes()`` or, on AWS, EC2 ``DescribeInstances``); times come from an
injectable clock, so tests run the governor on a ``SimClock``.

Arithmetic, on every check (hours unless noted):

    cap          = budget × (1 − reserve) / (1 + margin)        (dfray.budget.cost)
    spent        = prior_spent + ledger spend of this attempt (head included; node rates
                   are the cost model's: instance + EBS + public IPv4 + S3 allowance)
    rate         = videos done in this attempt / time since start (the governor's clock)
    h            = remaining videos / rate        (until one is done: the time to the
                   deadline when one is given, else ``startup_horizon_s``)
    projected    = spent + burn × h               burn: $/h of the nodes running now
    allowed      = largest k with  spent + (head + k × worker) × h ≤ cap   (cost.max_workers)
                 = floor((cap − spent − head × h) / (worker × h)),
                   clipped to [1, min(the config's max_workers, remaining videos)]
    stop when    spent + burn' × (step + shutdown_s) > cap
                   burn' = max(burn, head + allowed × worker): nodes may come up to the cap
                   before the next check

``h`` is held fixed whatever ``k``: more workers would finish sooner, so the bound is a
conservative one (it stays true if workers do not speed the run up at all). ``allowed``
never goes below 1: a budget too small for the whole corpus still buys as many videos as it
can, and the stop rule ends the run at the cap. ``step`` is the time to the next check: the
longest of the last five gaps between checks (before the first gap, the time the first batch
took). ``shutdown_s`` is how long nodes keep billing after the stop while the run flushes
and the autoscaler terminates them. The reserve covers what this cannot see (nodes booting
that Ray does not show yet, price moves, rounding).

What caps the autoscaler (Ray 2.60, v1 ``StandardAutoscaler``, which the fake multi-node
provider runs and which the template and every rendered config pin for ``ray up`` clusters:
``RAY_enable_autoscaler_v2=0`` in the head's start command, see dfray.budget.render): ``StandardAutoscaler.update()`` calls ``reset()``,
which re-reads the autoscaling config file (``config_reader``) on every update and hands
``max_workers`` and each node type's ``max_workers`` to the ``ResourceDemandScheduler``; a
lower value also makes ``terminate_nodes_to_enforce_config_constraints`` terminate nodes
above it (per-type excess first, even busy ones). So the governor rewrites those numbers in
the file (atomically: temp file + ``os.replace``, the monitor may read at any moment):
global ``max_workers = cap`` and each worker type's ``max_workers = min(its original, cap)``
with ``cap = max(allowed, workers running now)``: the cap holds back new nodes but does not
terminate busy ones (see ``_file_cap``). ``ray.autoscaler.sdk.request_resources`` is not a
cap: it asks for a *minimum* cluster size and is itself bounded by ``max_workers``. The
runner's actor-pool sizes cap the *demand* (``planning_resources``/``max_workers`` below);
the file is the hard cap.

Nodes are polled at every check and, on a real clock, by a background thread every
``poll_s`` seconds: rows arrive in bursts (none at all while the first nodes boot and load
their models), and a node must be billed from when it came up, not from the next batch.
The stop itself can only happen at a check, when rows arrive.

At a budget stop the governor writes ``max_workers: 0`` so the autoscaler terminates the
workers at once, and leaves it so: nothing new is launched against a spent budget. A later
attempt (resume) restores the cap from the original values, which are kept next to the file
in ``<file>.dfray-original.json`` while the file is capped. A run that completes restores
the original values.

The budget is for the whole run, across attempts: every attempt appends its spend to the
run's spend journal (``RUN/_spend/``, dfray.budget.journal) at least every minute on the
runner's ~1 s tick (``should_stop`` -> ``record``), so a resumed run starts from the spend of
every earlier attempt, killed ones included (``prior_spent_usd``: the journal's total, or the
spend recorded in ``run.json`` when that is larger). A node that stayed up between attempts
(the head) is billed from where the last record left it; on AWS a node launched after the
run's first attempt began is billed from its EC2 launch time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from dfray.budget import cost
from dfray.budget.cluster import NodeTypes
from dfray.budget.clusterlock import ClusterLock
from dfray.budget.ledger import Ec2NodeSource, Ledger, NodeSeen, RayNodeSource, price_lookup
from dfray.budget.static_prices import S3_REQUESTS_USD_PER_NODE_HOUR

log = logging.getLogger(__name__)

DEFAULT_RESERVE = cost.DEFAULT_RESERVE
DEFAULT_STARTUP_HORIZON_S = 3600.0
DEFAULT_SHUTDOWN_S = 60.0
DEFAULT_POLL_S = 10.0
ORIGINAL_SUFFIX = ".dfray-original.json"
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` puts it on the head


class BudgetError(ValueError):
    """The budget settings are wrong or incomplete; the message says which and why."""


def allowed_workers(
    *,
    cap_usd: float,
    spent_usd: float,
    head_usd_per_hour: float,
    worker_usd_per_hour: float,
    remaining_h: float,
    upper: int | None = None,
    remaining_videos: int | None = None,
    floor: int = 1,
) -> int:
    """The cost model's ``max_workers`` with ``usable = cap_usd`` and a floor of one worker
    (see the module docstring and dfray.budget.cost)."""
    return cost.max_workers(
        usable_usd=cap_usd,
        spent_usd=spent_usd,
        head_usd_per_hour=head_usd_per_hour,
        worker_usd_per_hour=worker_usd_per_hour,
        hours=remaining_h,
        upper=upper,
        remaining_videos=remaining_videos,
        floor=floor,
    )


# -- the autoscaling config file --------------------------------------------------------------


def _write_yaml(path: str, data: dict, header: str = "") -> None:
    """Through the one atomic write: the monitor may read the file at any moment."""
    import yaml

    from dfray.storage import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(header)
        yaml.safe_dump(data, f, sort_keys=False, width=100)


class AutoscalerCap:
    """Rewrites ``max_workers`` in the autoscaling config file that Ray's monitor reads.

    The original limits (global ``max_workers`` and each worker type's ``min_workers`` /
    ``max_workers``) are kept in ``<path>.dfray-original.json`` while the file is capped.
    """

    def __init__(self, path: str):
        self.path = os.path.expanduser(path)
        self.sidecar = self.path + ORIGINAL_SUFFIX
        self.original = self._load_original()
        self.current: int | None = None

    def read(self) -> dict:
        import yaml

        try:
            with open(self.path) as f:
                config = yaml.safe_load(f)
        except OSError as e:
            raise BudgetError(f"cannot read the autoscaling config {self.path}: {e}") from e
        if not isinstance(config, dict) or "available_node_types" not in config:
            raise BudgetError(f"{self.path} is not a Ray autoscaling config")
        return config

    def _load_original(self) -> dict:
        try:
            with open(self.sidecar) as f:
                return json.load(f)  # capped by an earlier attempt: its originals are here
        except (OSError, ValueError):
            pass
        return NodeTypes.from_cluster_config(self.read()).original_limits()

    @property
    def upper(self) -> int:
        """The most workers the original config allows."""
        per_type = sum(t["max_workers"] for t in self.original["types"].values())
        return min(self.original["max_workers"], per_type)

    def apply(self, k: int) -> bool:
        """Cap the cluster at ``k`` workers; returns whether the file changed."""
        k = max(0, int(k))
        if k == self.current:
            return False
        config = self.read()
        if not os.path.exists(self.sidecar):
            from dfray.storage import atomic_path

            with atomic_path(self.sidecar) as tmp, open(tmp, "w") as f:
                json.dump(self.original, f, indent=1)
        config["max_workers"] = min(k, self.original["max_workers"])
        for name, orig in self.original["types"].items():
            nt = config["available_node_types"].get(name)
            if nt is None:
                continue
            nt["max_workers"] = min(orig["max_workers"], k)
            nt["min_workers"] = min(orig["min_workers"], nt["max_workers"])
        header = (
            f"# max_workers capped at {k} by the dfray budget governor; "
            f"originals in {os.path.basename(self.sidecar)}\n"
        )
        _write_yaml(self.path, config, header)
        self.current = k
        log.info("autoscaler capped at %d workers (%s)", k, self.path)
        return True

    def restore(self) -> None:
        """Put the original limits back and drop the sidecar."""
        if not os.path.exists(self.sidecar):
            return
        config = self.read()
        config["max_workers"] = self.original["max_workers"]
        for name, orig in self.original["types"].items():
            nt = config["available_node_types"].get(name)
            if nt is not None:
                nt.update(orig)
        _write_yaml(self.path, config)
        os.unlink(self.sidecar)
        self.current = None


# -- the governor -------------------------------------------------------------------------------


class BudgetGovernor:
    """Keeps a run inside ``budget_usd``. See the module docstring for the arithmetic.

    ``prices``: a ``PriceBook`` (``.price(type, spot)``), a callable ``type -> Price`` or a
    mapping ``{type: usd_per_hour}``. ``worker_type``/``head_type``: instance types used for
    the projection (the head on demand, workers ``spot`` or not); with a cluster config they
    default to its head type and its most expensive worker type that may run.
    ``source``: a callable returning ``list[NodeSeen]`` (default: ``RayNodeSource`` over the
    cluster config's node types). ``autoscaling_config``: the file the Ray monitor reads; the
    governor caps its ``max_workers`` (None: no file to cap, e.g. a local or fixed cluster).
    """

    def __init__(
        self,
        budget_usd: float,
        prices: Any,
        *,
        worker_type: str | None = None,
        head_type: str | None = None,
        spot: bool = False,
        reserve: float = DEFAULT_RESERVE,
        margin: float = cost.DEFAULT_MARGIN,
        deadline_s: float | None = None,
        clock: Any = None,
        source: Callable[[], list[NodeSeen]] | None = None,
        cluster_config: Mapping[str, Any] | None = None,
        autoscaling_config: str | None = None,
        instance_types: Mapping[str, str] | None = None,
        prior_spent_usd: float = 0.0,
        startup_horizon_s: float = DEFAULT_STARTUP_HORIZON_S,
        shutdown_s: float = DEFAULT_SHUTDOWN_S,
        poll_s: float = DEFAULT_POLL_S,
        min_billed_s: float = 60.0,
        max_workers: int | None = None,
        background_poll: bool | None = None,
        journal: Any = None,
        run_key: str | None = None,
    ):
        from dfray.budget.clock import SimClock, WallClock

        if not (budget_usd > 0 and math.isfinite(budget_usd)):
            raise BudgetError(f"the budget must be a positive number of USD, got {budget_usd}")
        if not 0 <= reserve < 1:
            raise BudgetError(f"the reserve is a fraction in [0, 1), got {reserve}")
        if margin < 0:
            raise BudgetError(f"the margin must be >= 0, got {margin}")
        self.budget_usd = float(budget_usd)
        self.reserve = float(reserve)
        self.margin = float(margin)
        self.clock = clock or WallClock()
        # before the first video the horizon is the deadline (as a plan and a rendered
        # config assume), else startup_horizon_s
        self.deadline_at = None if deadline_s is None else self.clock.now() + float(deadline_s)
        self.prior_spent_usd = float(prior_spent_usd)
        self.startup_horizon_s = float(startup_horizon_s)
        self.shutdown_s = float(shutdown_s)
        self.poll_s = float(poll_s)
        self.spot = bool(spot)

        self.cap_file = AutoscalerCap(autoscaling_config) if autoscaling_config else None
        # one budget per cluster (dfray.budget.clusterlock), taken at start()
        self.cluster_lock = (
            ClusterLock(autoscaling_config, run_key or f"run-{uuid.uuid4().hex[:8]}")
            if autoscaling_config
            else None
        )
        if cluster_config is None and self.cap_file is not None:
            cluster_config = self.cap_file.read()
        self.cluster_config = dict(cluster_config) if cluster_config else None
        self.node_types = (
            NodeTypes.from_cluster_config(self.cluster_config, instance_types)
            if self.cluster_config
            else NodeTypes([])
        )
        self._lookup = price_lookup(prices)

        if head_type is None and self.node_types.head is not None:
            head_type = self.node_types.head.instance_type
        if head_type is None:
            raise BudgetError(
                "the head node's instance type is unknown: give --head-type (and --price "
                "TYPE=USD if it has no AWS price), or a cluster config whose head node type "
                "has node_config.InstanceType"
            )
        self.head_type = head_type
        self.head_price = self._lookup(head_type, False)
        self.head_rate = cost.node_rate(self.head_price, self.node_types.head)
        if worker_type is not None:
            self.worker_rate: cost.NodeRate | None = self._worker_rate(worker_type)
        else:
            self.worker_rate = self._default_worker_rate()
        self.worker_price = self.worker_rate.price if self.worker_rate else None
        self.worker_type = self.worker_price.instance_type if self.worker_price else None

        self.upper = max_workers
        if self.upper is None and self.cap_file is not None:
            self.upper = self.cap_file.upper
        elif self.upper is None and self.cluster_config is not None:
            self.upper = int(self.cluster_config.get("max_workers", 0) or 0)

        # the spend journal of the run: every earlier attempt's spend, killed ones included
        self.journal = journal
        self.run_started_at: float | None = None
        billed_until: dict[str, float] = {}
        if journal is not None:
            earlier = journal.summary()
            self.prior_spent_usd = max(self.prior_spent_usd, earlier.spent_usd)
            self.run_started_at = earlier.first_started_at
            billed_until = earlier.billed_until
        self.ledger = Ledger(
            prices,
            self.clock,
            min_billed_s=min_billed_s,
            node_types=self.node_types if self.cluster_config else None,
            billed_until=billed_until,
        )
        self.source = source or RayNodeSource(
            self.node_types,
            head_instance_type=head_type,
            worker_instance_type=self.worker_type,
            worker_spot=self.worker_price.market == "spot" if self.worker_price else self.spot,
        )
        self.t0: float | None = None
        self.n_todo = 0
        self.done = 0
        self.allowed: int | None = self.upper
        self.stopped_reason: str | None = None
        self.cap_error: str | None = None
        self._last_poll: float | None = None
        self._last_check: float | None = None
        self._gaps: list[float] = []
        self._last: dict[str, float] = {}
        # Rows arrive in bursts (nothing at all while the first nodes boot and load models),
        # so on a real clock a thread also polls the nodes every poll_s: a node is billed
        # from the first snapshot that shows it, and that must not wait for a batch.
        if background_poll is None:
            background_poll = not isinstance(self.clock, SimClock)
        self.background_poll = background_poll
        self._lock = threading.RLock()
        self._stop_polling = threading.Event()
        self._poller: threading.Thread | None = None

    # -- set-up helpers ------------------------------------------------------------------

    def _refresh_rates(self) -> None:
        """Re-read the head's and the workers' prices (a price book re-reads spot on its
        schedule): the projection and the cap follow the price in force."""
        head = self._lookup(self.head_type, False)
        self.head_rate = cost.node_rate(head, self.node_types.head)
        if self.worker_rate is not None:
            p = self.worker_rate.price
            price = self._lookup(p.instance_type, p.market == "spot")
            self.worker_rate = dataclasses.replace(self.worker_rate, price=price)
            self.worker_price = price

    def _worker_rate(self, worker_type: str) -> cost.NodeRate:
        """``worker_type`` at ``spot`` or not, with the extras of its dearest node type."""
        price = self._lookup(worker_type, self.spot)
        types = [t for t in self.node_types.workers if t.instance_type == worker_type]
        rates = [cost.node_rate(price, t) for t in types] or [cost.node_rate(price, None)]
        return max(rates, key=lambda r: r.usd_per_hour)

    def _default_worker_rate(self) -> cost.NodeRate | None:
        """The rate of the most expensive worker type the cluster config lets run, each at
        its market in the config (on demand unless ``node_config.InstanceMarketOptions``
        says spot), EBS and the rest included: whatever mix the autoscaler launches, no
        worker costs more."""
        best: cost.NodeRate | None = None
        for t in self.node_types.workers:
            if not t.instance_type or t.max_workers <= 0:
                continue
            p = self._lookup(t.instance_type, self.spot if t.spot is None else t.spot)
            r = cost.node_rate(p, t)
            if best is None or r.usd_per_hour > best.usd_per_hour:
                best = r
        return best

    @property
    def cap_usd(self) -> float:
        return cost.usable_usd(self.budget_usd, self.reserve, self.margin)

    # -- runner hooks --------------------------------------------------------------------

    def start(self, n_todo: int, prog=None) -> None:
        if self.cluster_lock is not None and not self.cluster_lock.held():
            self.cluster_lock.acquire()  # ClusterBusy: another budgeted run has this cluster
        self.t0 = self.clock.now()
        # a node launched (EC2) after the run's first attempt began is billed from its launch
        first = self.run_started_at
        self.ledger.since = self.t0 if first is None else min(first, self.t0)
        self.n_todo = int(n_todo)
        self.done = 0
        self.stopped_reason = None
        self._gaps.clear()
        self._last_check = None
        self._poll(force=True)
        self._update(remaining=self.n_todo, done=0)
        self._apply_cap(self._file_cap())
        self.record(force=True)
        if prog is not None:
            self._show(prog)
        if self.background_poll and self._poller is None:
            self._stop_polling.clear()
            self._poller = threading.Thread(
                target=self._poll_loop, name="dfray-budget-poll", daemon=True
            )
            self._poller.start()

    def should_stop(self, prog) -> bool:
        """The runner's check, after every finished row and on its ~1 s tick whether or not
        rows arrive: a stalled pipeline is stopped on the clock like a busy one."""
        if self.t0 is None:
            self.start(getattr(prog, "total", 0) - getattr(prog, "already_done", 0), prog)
        with self._lock:
            now = self.clock.now()
            if self._last_check is not None:
                self._gaps.append(now - self._last_check)
            else:
                self._gaps.append(now - self.t0)  # the first batch: from start to now
            self._gaps = self._gaps[-5:]
            self._last_check = now
            self.done = int(prog.done)
            self._poll()
            stop = self._check(max(self._gaps))
        self._show(prog)
        return stop

    def _check(self, step_s: float, why: str = "") -> bool:
        """The stop rule (module docstring); on a stop the cap goes to 0 workers at once."""
        with self._lock:
            if self.stopped_reason is not None:  # stopped already (e.g. by the poll thread)
                return True
            remaining = max(0, self.n_todo - self.done)
            numbers = self._update(remaining=remaining, done=self.done)
            stop = False
            if remaining > 0:
                burn = numbers["burn"]
                if self.allowed is not None and self.worker_rate is not None:
                    # workers may come up to the cap before the next check
                    burn = max(
                        burn,
                        self.head_rate.usd_per_hour + self.allowed * self.worker_rate.usd_per_hour,
                    )
                need = burn * (step_s + self.shutdown_s) / 3600.0
                if numbers["spent"] + need > self.cap_usd:
                    stop = True
                    reason = (
                        f"budget{why}: spent ${numbers['spent']:.4f} + ${need:.4f} until the "
                        f"next check and shutdown (${burn:.4f}/h × "
                        f"{step_s + self.shutdown_s:.0f} s) > ${self.cap_usd:.4f} (budget "
                        f"${self.budget_usd:.2f} less {self.reserve:.0%} reserve)"
                    )
                    log.warning("stopping at the budget: %s", reason)
            # the cap first: once stopped_reason is visible, the workers are already capped
            self._apply_cap(0 if stop else self._file_cap())
            if stop:
                self.stopped_reason = reason
            self.record(force=stop)
            return stop

    def report(self) -> dict[str, Any]:
        """The end-of-run hook: a last snapshot of the spend (``run.json["spend"]``). A run
        that was not stopped by the budget gets the autoscaler's original limits back."""
        self._stop_polling.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
            self._poller = None
        if self.t0 is not None:
            self._poll(force=True)
        if self.stopped_reason is None and self.cap_file is not None and self._lock_ours():
            try:
                self.cap_file.restore()
            except (OSError, BudgetError) as e:
                self.cap_error = f"cannot restore {self.cap_file.path}: {e}"
                log.warning(self.cap_error)
        if self.t0 is not None:
            self.record(force=True, final=True)
        if self.stopped_reason is not None:
            log.warning(self.after_stop_message())
        snap = self.snapshot()
        if self.cluster_lock is not None:
            self.cluster_lock.release()
        return snap

    def _lock_ours(self) -> bool:
        """Whether this run may write the cap file: it holds the cluster's budget lock."""
        if self.cluster_lock is None:
            return True
        if self.cluster_lock.held():
            return True
        self.cap_error = (
            f"lost the cluster's budget lock {self.cluster_lock.path} (taken over as stale): "
            "the cap file is left to the run that holds it"
        )
        return False

    def after_stop_message(self) -> str:
        """What still bills after a budget stop, and how to take it down."""
        where = f" (max_workers 0 in {self.cap_file.path})" if self.cap_file else ""
        return (
            f"the budget stopped the run; the workers are scaled to zero{where}. The head "
            f"({self.head_type}, ${self.head_rate.usd_per_hour:.4f}/h) is still up and "
            "billing: take it down with `ray down -y CLUSTER.yaml` where you ran `ray up`, "
            "or run with --down-on-exit"
        )

    def take_down(self) -> dict[str, Any]:
        """``--down-on-exit``: scale to zero workers, then terminate every EC2 instance of
        the cluster (workers first, the head, which may be this machine, last). Called by
        ``dfray score`` after run.json is written. Without an EC2 source there is nothing
        to terminate from here (a local or fake cluster): it says so."""
        self._apply_cap(0)
        if not isinstance(self.source, Ec2NodeSource):
            msg = "--down-on-exit: not an EC2 cluster, nothing to terminate from here"
            log.warning(msg)
            return {"terminated": [], "note": msg}
        alive = [n for n in self.source() if n.alive]
        workers = [n.node_id for n in alive if n.role != "head"]
        heads = [n.node_id for n in alive if n.role == "head"]
        done = []
        for ids in (workers, heads):
            if ids:
                self.source.client.terminate_instances(InstanceIds=ids)
                done += ids
        log.warning("--down-on-exit: terminated %s", ", ".join(done) or "nothing")
        return {"terminated": done, "note": None}

    def record(self, *, force: bool = False, final: bool = False) -> None:
        """Append this attempt's spend to the journal when a minute has passed (or now)."""
        if self.journal is None or self.t0 is None:
            return
        now = self.clock.now()
        if not (force or self.journal.due(now)):
            return
        with self._lock:
            doc = {
                "started_at": self.t0,
                "spent_usd": self.ledger.spend_usd(now),
                "parts_usd": self.ledger.parts_usd(now),
                "nodes": self.ledger.nodes(now),
                "final": final,
                "stopped_reason": self.stopped_reason,
                "budget_usd": self.budget_usd,
                "not_counted": list(cost.UNSEEN),
            }
        self.journal.write(doc, now)

    def snapshot(self) -> dict[str, Any]:
        """The spend so far, as ``report()`` gives it, without polling or side effects."""
        with self._lock:
            now = self.clock.now()
            numbers = self._update(remaining=max(0, self.n_todo - self.done), done=self.done)
            nodes = self.ledger.nodes(now)
            parts = self.ledger.parts_usd(now)
            sources = self._price_sources()
        return {
            "budget_usd": self.budget_usd,
            "reserve": self.reserve,
            "margin": self.margin,
            "cap_usd": round(self.cap_usd, 6),
            "spent_usd": round(numbers["spent"], 6),
            "spent_this_attempt_usd": round(numbers["spent"] - self.prior_spent_usd, 6),
            "prior_spent_usd": round(self.prior_spent_usd, 6),
            "projected_total_usd": round(numbers["projected"], 6),
            "projected_at_cap_usd": (
                None if numbers["at_cap"] is None else round(numbers["at_cap"], 6)
            ),
            "remaining_h": round(numbers["remaining_h"], 6),
            "parts_usd": {k: round(v, 6) for k, v in parts.items()},
            "head_usd_per_hour": round(self.head_rate.usd_per_hour, 6),
            "worker_usd_per_hour": (
                None if self.worker_rate is None else round(self.worker_rate.usd_per_hour, 6)
            ),
            "s3_request_allowance_usd_per_node_hour": S3_REQUESTS_USD_PER_NODE_HOUR,
            "not_counted": list(cost.UNSEEN),
            "usd_per_1000_videos": (
                None if numbers["per_1k"] is None else round(numbers["per_1k"], 6)
            ),
            "videos_this_attempt": self.done,
            "burn_usd_per_hour": round(numbers["burn"], 6),
            "nodes": nodes,
            "price_sources": sources,
            "head_type": self.head_type,
            "worker_type": self.worker_type,
            "worker_market": self.worker_price.market if self.worker_price else None,
            "max_workers_allowed": self.allowed,
            "max_workers_config": self.upper,
            "autoscaling_config": self.cap_file.path if self.cap_file else None,
            "autoscaler_cap": self.cap_file.current if self.cap_file else None,
            "autoscaler_cap_error": self.cap_error,
            "stopped_reason": self.stopped_reason,
            "after_stop": self.after_stop_message() if self.stopped_reason else None,
            "journal": None
            if self.journal is None
            else {
                "attempt_id": self.journal.attempt_id,
                "every_s": self.journal.every_s,
                "error": self.journal.error,
            },
        }

    # -- for the runner's actor pools ----------------------------------------------------

    def max_workers(self) -> int | None:
        """How many worker nodes the budget allows now (None: no limit known)."""
        return self.allowed

    def planning_resources(self, cluster: Mapping[str, float]) -> dict[str, float]:
        """Resources to size the actor pools for: the head's plus ``max_workers()`` nodes of
        the worker type, instead of what happens to be up now (an autoscaling cluster may
        start with no workers at all). Only CPU and GPU change; unchanged without a
        cluster config."""
        wt = self._worker_node_type()
        if wt is None or self.allowed is None:
            return dict(cluster)
        head = self._head_resources()
        out = dict(cluster)
        for r in ("CPU", "GPU"):
            base = float(head.get(r, 0.0)) if head is not None else float(cluster.get(r, 0.0))
            total = base + self.allowed * float(wt.resources.get(r, 0.0))
            if total or r in cluster:
                out[r] = total
        return out

    # -- internals -----------------------------------------------------------------------

    def _worker_node_type(self):
        for t in self.node_types.workers:
            if t.instance_type == self.worker_type and t.max_workers > 0:
                return t
        return None

    def _head_resources(self) -> dict[str, float] | None:
        try:
            import ray

            if ray.is_initialized():
                for n in ray.nodes():
                    if n.get("Alive") and "node:__internal_head__" in (n.get("Resources") or {}):
                        return {k: v for k, v in n["Resources"].items() if k in ("CPU", "GPU")}
        except Exception as e:  # noqa: BLE001 - planning falls back to the config
            log.debug("cannot read the head's resources from Ray: %s", e)
        head = self.node_types.head
        return dict(head.resources) if head is not None and head.resources else None

    def _poll(self, force: bool = False) -> None:
        with self._lock:
            now = self.clock.now()
            if not force and self._last_poll is not None and now - self._last_poll < self.poll_s:
                return
            self.ledger.observe(self.source())
            self._refresh_rates()
            self._last_poll = now

    def _poll_loop(self) -> None:
        """On a real clock: poll the nodes every ``poll_s`` and apply the stop rule, so the
        budget holds (workers scaled to zero, the journal written) even while the driver
        is not checking at all (a long blocking step outside the pipeline loop)."""
        while not self._stop_polling.wait(max(1.0, self.poll_s)):
            try:
                self._poll()
                step = max([max(1.0, self.poll_s), *self._gaps])
                self._check(step, why=" (timer)")
            except Exception as e:  # noqa: BLE001 - a failed poll is retried; checks poll too
                log.warning("cannot read the cluster's nodes for the budget: %s", e)

    def _file_cap(self) -> int | None:
        """The cap to write while the run goes on: ``allowed``, but never below the workers
        running now. Under the linear cost model a worker costs the same per video however
        many run, so terminating a busy one saves nothing and throws its in-flight videos
        away; the cap holds back *new* nodes, and the stop rule ends the run at the budget.
        (Idle workers go by the autoscaler's idle timeout.)"""
        if self.allowed is None:
            return None
        with self._lock:
            return max(self.allowed, self.ledger.count_running("worker"))

    def _remaining_h(self, remaining: int, done: int) -> float:
        if remaining <= 0:
            return 0.0
        elapsed = self.clock.now() - (self.t0 if self.t0 is not None else self.clock.now())
        if done <= 0 or elapsed <= 0:
            if self.deadline_at is not None:
                return max(0.0, self.deadline_at - self.clock.now()) / 3600.0
            return self.startup_horizon_s / 3600.0
        rate = done / elapsed  # videos per second of this attempt
        return remaining / rate / 3600.0

    def _update(self, remaining: int, done: int) -> dict[str, Any]:
        with self._lock:
            spent = self.prior_spent_usd + self.ledger.spend_usd()
            burn = self.ledger.burn_usd_per_hour()
        h = self._remaining_h(remaining, done)
        projected = spent + burn * h
        this_attempt = spent - self.prior_spent_usd
        per_1k = this_attempt / done * 1000.0 if done > 0 else None
        at_cap = None
        if self.worker_rate is not None:
            self.allowed = allowed_workers(
                cap_usd=self.cap_usd,
                spent_usd=spent,
                head_usd_per_hour=self.head_rate.usd_per_hour,
                worker_usd_per_hour=self.worker_rate.usd_per_hour,
                remaining_h=h,
                upper=self.upper,
                remaining_videos=remaining if remaining > 0 else None,
            )
            at_cap = cost.projected_usd(
                spent_usd=spent,
                head_usd_per_hour=self.head_rate.usd_per_hour,
                worker_usd_per_hour=self.worker_rate.usd_per_hour,
                workers=self.allowed,
                hours=h,
            )
        self._last = {"spent": spent, "burn": burn, "remaining_h": h, "projected": projected}
        return {
            "spent": spent,
            "burn": burn,
            "remaining_h": h,
            "projected": projected,
            "per_1k": per_1k,
            "at_cap": at_cap,
        }

    def _apply_cap(self, k: int | None) -> None:
        if self.cap_file is None or k is None or not self._lock_ours():
            return
        self.cluster_lock.heartbeat()
        try:
            self.cap_file.apply(k)
            self.cap_error = None
        except (OSError, BudgetError) as e:  # a cap we cannot write must not kill the run
            self.cap_error = f"cannot cap {self.cap_file.path}: {e}"
            log.warning(self.cap_error)

    def _price_sources(self) -> dict[str, dict[str, Any]]:
        out = self.ledger.price_sources()
        for p in (self.head_price, self.worker_price):
            if p is not None:
                out.setdefault(
                    f"{p.instance_type}:{p.market}",
                    {"usd_per_hour": p.usd_per_hour, "source": p.source, "as_of": p.as_of},
                )
        return out

    def _show(self, prog) -> None:
        n = self._last
        if not n:
            return
        extra = getattr(prog, "extra", None)
        if extra is None:
            return
        done = self.done
        this_attempt = n["spent"] - self.prior_spent_usd
        extra["spend"] = f"${n['spent']:.2f}/${self.budget_usd:.2f}"
        extra["projected"] = f"${n['projected']:.2f}"
        extra["$/1k videos"] = f"${this_attempt / done * 1000:.2f}" if done else "?"
        if self.allowed is not None:
            with self._lock:
                running = self.ledger.count_running("worker")
            extra["workers"] = f"{running}/{self.allowed}"


# -- CLI ----------------------------------------------------------------------------------------


def _prior_spent(cfg) -> float:
    """What earlier attempts of this run spent, from its run.json (0 for a new run)."""
    from dfray import results, runinfo

    try:
        doc = results.RunFolder(cfg.out, cfg.run_id, cfg.storage).read_run_json()
    except Exception as e:  # noqa: BLE001 - an unreadable old run.json costs only the history
        log.warning("cannot read the previous spend of run %s: %s", cfg.run_id, e)
        return 0.0
    return runinfo.spent_before(doc)


def governor_from_config(budget, cfg) -> BudgetGovernor:
    """Build the governor for a run with a BudgetConfig (``dfray score --budget USD``).

    The autoscaling config falls back to ``~/ray_bootstrap_config.yaml`` when it exists
    (where ``ray up`` puts it on the head); the region to the cluster config's provider."""
    from dfray import results
    from dfray.budget.journal import SpendJournal
    from dfray.budget.prices import PriceBook, parse_price_overrides

    folder = results.RunFolder(cfg.out, cfg.run_id, cfg.storage).root
    path = budget.autoscaling_config
    if path is None and os.path.exists(os.path.expanduser(BOOTSTRAP_CONFIG)):
        path = os.path.expanduser(BOOTSTRAP_CONFIG)
    cap = AutoscalerCap(path) if path else None
    cluster_config = cap.read() if cap else None
    provider = (cluster_config or {}).get("provider") or {}
    region = cfg.storage.region or provider.get("region") or "us-east-1"
    try:
        overrides = parse_price_overrides(list(budget.prices))
    except ValueError as e:
        raise BudgetError(str(e)) from e
    book = PriceBook(region, overrides=overrides)
    source = None
    if budget.spend_source == "ec2" or (
        budget.spend_source == "auto" and provider.get("type") == "aws"
    ):
        name = (cluster_config or {}).get("cluster_name")
        if not name:
            raise BudgetError("--spend-source ec2 needs a cluster config with cluster_name")
        source = Ec2NodeSource(name, region=provider.get("region") or region)
    return BudgetGovernor(
        budget.budget_usd,
        book,
        worker_type=budget.worker_type,
        head_type=budget.head_type,
        spot=budget.spot,
        reserve=budget.reserve,
        source=source,
        cluster_config=cluster_config,
        autoscaling_config=path,
        prior_spent_usd=_prior_spent(cfg),
        journal=SpendJournal(folder, cfg.storage),
        run_key=folder,
    )


__all__ = [
    "AutoscalerCap",
    "BudgetError",
    "BudgetGovernor",
    "allowed_workers",
    "governor_from_config",
]
