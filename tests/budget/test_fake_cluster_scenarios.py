"""The budget scenarios of issue 13 on Ray's fake multi-node autoscaling cluster.

One fake cluster (tests/budget/fakecluster.py, infra/fake-multinode.yaml) serves every test
of this module. The governor's node source is the product's: ``RayNodeSource`` over the real
``ray.nodes()`` of that cluster, built by the governor from the autoscaling config as for
``dfray score --budget`` on a Ray cluster. Only billing time is simulated (``SimClock``), so
hours of spend take seconds; the workers are real fake-provider nodes that the v1 autoscaler
launches for actors asking for the GPU worker's marker resource, and terminates when the
governor's cap in the config file goes down. Each test leaves the cluster with no worker,
no demand and the original config (the ``cluster`` fixture).

The copy of the config gives the head and the GPU worker EBS volumes and makes the GPU
worker spot (the fake provider ignores ``node_config``; the ledger prices it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from pathlib import Path

import pytest
import yaml

from dfray.budget.clock import SimClock
from dfray.budget.clusterlock import SUFFIX, ClusterBusy
from dfray.budget.governor import ORIGINAL_SUFFIX, BudgetGovernor
from dfray.budget.journal import SpendJournal, latest_docs, summary
from dfray.budget.ledger import Ledger, LedgerError, RayNodeSource
from dfray.budget.prices import Price
from dfray.config import StorageConfig
from dfray.progress import Progress
from tests.budget.fakecluster import (
    GPU_MARKER,
    cap_in_file,
    fake_autoscaling_cluster,
    gpu_workers_alive,
)

pytestmark = pytest.mark.slow

T0 = 1_700_000_000.0
N = 100_000  # videos to do: far more than any budget here pays for (one worker allowed)
PRICES = {"g4dn.xlarge": 1.00, "m6i.large": 0.10}  # $/h: GPU worker (spot here), head
HEAD_GB, WORKER_GB = 100, 200  # gp3 volumes in the config copy
GP3 = 0.08 / 730  # $/GB-hour
HEAD_RATE = 0.10 + HEAD_GB * GP3  # a fake provider has no public IPv4 and no S3 allowance
WORKER_RATE = 1.00 + WORKER_GB * GP3


def _edit(config: dict) -> None:
    types = config["available_node_types"]
    types["ray.head.default"]["node_config"]["BlockDeviceMappings"] = [
        {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": HEAD_GB, "VolumeType": "gp3"}}
    ]
    gpu = types["gpu_worker"]["node_config"]
    gpu["BlockDeviceMappings"] = [
        {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": WORKER_GB, "VolumeType": "gp3"}}
    ]
    gpu["InstanceMarketOptions"] = {"MarketType": "spot"}


def _wait(cond, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


def _write(path: Path, text: str) -> None:
    """Atomically: the monitor re-reads the file every second."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclasses.dataclass
class FakeCluster:
    path: Path  # the autoscaling config the monitor reads (and the governor caps)
    original: str
    holders: list = dataclasses.field(default_factory=list)

    def hold(self, n: int, *, wait: bool = True) -> list:
        """``n`` actors on the GPU worker's marker resource: demand for ``n`` workers.
        They restart after their node goes, so the demand stays until the test ends."""
        import ray

        @ray.remote(num_cpus=0, resources={GPU_MARKER: 1}, max_restarts=-1)
        class Holder:
            def node(self) -> str:
                return ray.get_runtime_context().get_node_id()

        hs = [Holder.remote() for _ in range(n)]
        self.holders += hs
        if wait:
            ray.get([h.node.remote() for h in hs], timeout=120)  # placed: the nodes are up
        return hs

    def reset(self) -> None:
        """No demand, no worker, the original config, no sidecar and no budget lock."""
        import ray

        for h in self.holders:
            ray.kill(h, no_restart=True)
        self.holders.clear()
        if gpu_workers_alive():
            c = yaml.safe_load(self.original)
            c["max_workers"] = c["available_node_types"]["gpu_worker"]["max_workers"] = 0
            _write(self.path, yaml.safe_dump(c, sort_keys=False))
            _wait(lambda: gpu_workers_alive() == 0, "the workers to go at reset")
        _write(self.path, self.original)
        for p in self.path.parent.glob(self.path.name + ".*"):
            p.unlink()


@pytest.fixture(scope="module")
def fake_cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fake-cluster")
    with fake_autoscaling_cluster(tmp, edit=_edit) as (path, _):
        yield FakeCluster(path, path.read_text())


@pytest.fixture
def cluster(fake_cluster):
    fake_cluster.reset()
    yield fake_cluster
    fake_cluster.reset()


def governor(cluster: FakeCluster, budget: float, clock: SimClock, **kw) -> BudgetGovernor:
    """As ``governor_from_config`` builds it on a (non-AWS) Ray cluster, on a SimClock."""
    g = BudgetGovernor(
        budget, kw.pop("prices", PRICES), clock=clock, poll_s=0,
        autoscaling_config=str(cluster.path), **kw,
    )  # fmt: skip
    assert isinstance(g.source, RayNodeSource)
    return g


def _step(g: BudgetGovernor, prog: Progress, seconds: float, rows: int = 1) -> bool:
    g.clock.advance(seconds)
    prog.add([{"status": "ok"}] * rows)
    return g.should_stop(prog)


def _until_stopped(g: BudgetGovernor, prog: Progress, minutes: int) -> bool:
    """A row a simulated minute until the governor stops the run (True) or `minutes` pass."""
    return any(_step(g, prog, 60) for _ in range(minutes))


def _alive_ids() -> dict[str, str]:
    """Alive Ray node id -> "head" | "worker", from ray.nodes()."""
    import ray

    return {
        n["NodeID"]: "head" if "node:__internal_head__" in n["Resources"] else "worker"
        for n in ray.nodes()
        if n["Alive"]
    }


def _worker_record(g: BudgetGovernor):
    (rec,) = [r for r in g.ledger.records.values() if r.role == "worker"]
    return rec


@pytest.mark.timeout(300)
def test_killed_driver_then_resume_total_within_budget(cluster, tmp_path):
    """Attempt 1 writes its spend to the run's journal and is killed (dropped with no final
    report: no record after its last one, lock and cap left behind); attempt 2 on the same
    run folder starts from attempt 1's spend, bills the head and the worker that stayed up
    from where the journal left them, and stops; the total over both attempts is the
    by-hand bill of one continuous run and stays within the budget."""
    budget = 1.5
    run_dir = str(tmp_path / "run")
    clock1 = SimClock(start=T0)
    g1 = governor(
        cluster, budget, clock1, run_key=run_dir, journal=SpendJournal(run_dir, StorageConfig())
    )
    prog = Progress(total=N, enabled=False)
    g1.start(N, prog)
    assert cap_in_file(cluster.path) == (1, 1)
    cluster.hold(1)
    for _ in range(30):  # 30 simulated minutes with the worker up
        assert not _step(g1, prog, 60)
    worker = _worker_record(g1)
    assert worker.first_seen == T0 + 60 and _alive_ids()[worker.node_id] == "worker"
    assert not _step(g1, prog, 30)  # the journal is written every 60 s: not now
    killed_at = clock1.now()
    del g1  # the kill: no report(), no final record; the lock and the cap stay behind

    (doc1,) = latest_docs(run_dir, StorageConfig()).values()
    assert doc1["final"] is False and doc1["written_at"] == killed_at - 30
    assert {n["node_id"] for n in doc1["nodes"]} == set(_alive_ids())
    assert doc1["spent_usd"] == pytest.approx(
        HEAD_RATE * 1800 / 3600 + WORKER_RATE * 1740 / 3600, abs=1e-9
    )
    assert cap_in_file(cluster.path) == (1, 1) and gpu_workers_alive() == 1

    # attempt 2, five minutes later: the same nodes are still up and billing
    clock2 = SimClock(start=killed_at + 300)
    g2 = governor(
        cluster, budget, clock2, run_key=run_dir, journal=SpendJournal(run_dir, StorageConfig())
    )
    assert g2.prior_spent_usd == pytest.approx(doc1["spent_usd"])
    prog = Progress(total=N, enabled=False)
    g2.start(N, prog)  # takes the run's own lock over
    stopped = _until_stopped(g2, prog, 200)
    rep = g2.report()
    end = clock2.now()
    assert stopped and rep["stopped_reason"].startswith("budget")
    assert _worker_record(g2).node_id == worker.node_id  # billed on from the journal
    total = summary(run_dir, StorageConfig())
    assert [a["final"] for a in total.attempts] == [False, True]
    truth = HEAD_RATE * (end - T0) / 3600 + WORKER_RATE * (end - worker.first_seen) / 3600
    assert total.spent_usd == pytest.approx(truth, abs=1e-6)  # no gap, nothing twice
    assert rep["spent_usd"] == pytest.approx(total.spent_usd, abs=1e-6)
    assert total.spent_usd <= g2.cap_usd < budget
    assert cap_in_file(cluster.path) == (0, 0)
    _wait(lambda: gpu_workers_alive() == 0, "the stop to terminate the worker")


@pytest.mark.timeout(300)
def test_stalled_pipeline_is_stopped_by_the_tick_and_the_workers_go(cluster):
    """Actors hold the worker and no row arrives: the runner's tick alone (should_stop on
    the clock) stops the run within the budget, the cap goes to 0 and the fake autoscaler
    terminates the busy worker; the demand stays, and nothing is launched again."""
    clock = SimClock(start=T0)
    g = governor(cluster, 1.0, clock)
    prog = Progress(total=N, enabled=False)
    g.start(N, prog)
    cluster.hold(1)
    for _ in range(3):
        assert not _step(g, prog, 60)
    assert g.ledger.count_running("worker") == 1
    done = prog.done
    ticks = 0
    while not _step(g, prog, 10, rows=0):  # the stall: the clock moves, no rows
        ticks += 1
        assert ticks < 3 * 360, "the tick never stopped the stalled run"
        assert gpu_workers_alive() == 1
    assert prog.done == done and ticks > 100  # stopped with no row, on the clock
    assert g.stopped_reason.startswith("budget")
    assert cap_in_file(cluster.path) == (0, 0)
    _wait(lambda: gpu_workers_alive() == 0, "the autoscaler to terminate the stalled worker")
    t_end = time.monotonic() + 5  # five autoscaler updates with the actor pending again
    while time.monotonic() < t_end:
        assert gpu_workers_alive() == 0 and cap_in_file(cluster.path) == (0, 0)
        time.sleep(0.5)
    rep = g.report()
    assert rep["spent_usd"] <= g.cap_usd < 1.0
    assert cap_in_file(cluster.path) == (0, 0)  # a stopped run leaves the cap at 0
    (w,) = [n for n in rep["nodes"] if n["role"] == "worker"]
    assert not w["running"]  # the report's poll saw the worker gone
    json.dumps(rep)


class RisingSpot:
    """Spot price of the GPU worker: $0.50/h, then $0.80/h from ``rise_at`` (clock time)."""

    def __init__(self, clock: SimClock, rise_at: float):
        self.clock, self.rise_at = clock, rise_at

    def price(self, itype: str, spot: bool = False) -> Price:
        if itype == "m6i.large" and not spot:
            return Price(itype, "us-east-1", "on_demand", 0.10, "override", "")
        if itype == "g4dn.xlarge" and spot:
            usd = 0.50 if self.clock.now() < self.rise_at else 0.80
            return Price(itype, "us-east-1", "spot", usd, "spot-history", "")
        raise LedgerError(f"no price for {itype} (spot={spot})")


@pytest.mark.timeout(300)
def test_spot_rise_is_billed_at_the_new_price_and_the_run_stops_in_budget(cluster):
    """The spot worker's price rises from $0.50/h to $0.80/h an hour in: the ledger bills
    each interval at the price in force (the by-hand bill), the projection follows the new
    price, and the run stops within the budget."""
    budget = 1.5
    clock = SimClock(start=T0)
    rise_at = T0 + 3600
    g = governor(cluster, budget, clock, prices=RisingSpot(clock, rise_at))
    assert g.worker_price.market == "spot"
    prog = Progress(total=N, enabled=False)
    g.start(N, prog)
    cluster.hold(1)
    stopped = _until_stopped(g, prog, 24 * 60)
    rep = g.report()
    end = clock.now()
    assert stopped and rep["stopped_reason"].startswith("budget")
    assert end > rise_at + 600  # it ran well past the rise
    extras = WORKER_GB * GP3
    truth = (
        HEAD_RATE * (end - T0)
        + extras * (end - T0 - 60)  # the worker first seen at the first check
        + 0.50 * (rise_at - T0 - 60)
        + 0.80 * (end - rise_at)
    ) / 3600
    assert rep["spent_usd"] == pytest.approx(truth, abs=1e-6)
    assert rep["spent_usd"] <= g.cap_usd < budget
    (w,) = [n for n in rep["nodes"] if n["role"] == "worker"]
    assert w["market"] == "spot" and w["usd_per_hour"] == 0.80 and w["price_changes"] == 1
    assert rep["worker_usd_per_hour"] == pytest.approx(0.80 + extras)  # the projection too
    assert rep["price_sources"]["g4dn.xlarge:spot"]["usd_per_hour"] == 0.80


@pytest.mark.timeout(300)
def test_ebs_and_public_ipv4_in_the_ledger_of_the_fake_nodes(cluster, tmp_path):
    """The real nodes of the cluster, each billed for its EBS volumes and, priced as on AWS
    (the same node types under an ``aws`` provider: a fake provider has no public IPv4),
    its public IPv4 address and the S3 allowance; in the report and in the journal."""
    aws = yaml.safe_load(cluster.path.read_text())
    aws["provider"] = {"type": "aws", "region": "us-east-1"}
    run_dir = str(tmp_path / "run")
    clock = SimClock(start=T0)
    g = governor(
        cluster, 50.0, clock, cluster_config=aws,
        journal=SpendJournal(run_dir, StorageConfig()),
    )  # fmt: skip
    prog = Progress(total=N, enabled=False)
    g.start(N, prog)
    cluster.hold(1)
    assert not _step(g, prog, 60)  # the worker is first seen here
    assert not _step(g, prog, 3600)
    rep = g.report()
    nodes = {n["node_id"]: n for n in rep["nodes"]}
    assert {k: n["role"] for k, n in nodes.items()} == _alive_ids()  # the real Ray nodes
    (head,) = [n for n in nodes.values() if n["role"] == "head"]
    (worker,) = [n for n in nodes.values() if n["role"] == "worker"]
    h_h, w_h = 3660 / 3600, 1.0
    assert head["parts_usd"] == pytest.approx(
        {"instance": 0.10 * h_h, "ebs": HEAD_GB * GP3 * h_h, "public_ipv4": 0.005 * h_h,
         "s3_requests": 0.01 * h_h}, abs=1e-6,
    )  # fmt: skip
    assert worker["parts_usd"] == pytest.approx(
        {"instance": 1.00 * w_h, "ebs": WORKER_GB * GP3 * w_h, "public_ipv4": 0.005 * w_h,
         "s3_requests": 0.01 * w_h}, abs=1e-6,
    )  # fmt: skip
    parts = rep["parts_usd"]
    assert parts["ebs"] == pytest.approx((HEAD_GB * h_h + WORKER_GB * w_h) * GP3, abs=1e-6)
    assert parts["public_ipv4"] == pytest.approx(0.005 * (h_h + w_h), abs=1e-6)
    assert rep["spent_usd"] == pytest.approx(sum(parts.values()), abs=1e-5)
    (doc,) = latest_docs(run_dir, StorageConfig()).values()
    assert doc["final"] and doc["parts_usd"] == pytest.approx(parts, abs=1e-6)


@pytest.mark.timeout(300)
def test_two_budgeted_runs_on_one_cluster(cluster):
    """Run A's budget holds the cluster: B is refused while A runs, the cluster's bill (a
    ledger of its own over the same nodes) stays within A's budget, A's stop at 0 workers
    is not undone though the demand stays; once A is done B takes the cluster and its cap
    lets a worker come back. When B's lock is taken over as stale by C, B's completion
    leaves C's cap and the sidecar alone, and C's stop takes the worker away."""
    clock = SimClock(start=T0)
    a = governor(cluster, 1.0, clock, run_key="runs/a")
    b = governor(cluster, 1.5, clock, run_key="runs/b")
    bill = Ledger(PRICES, clock, node_types=a.node_types)  # what the cluster costs
    source = RayNodeSource(a.node_types)
    prog = Progress(total=N, enabled=False)
    a.start(N, prog)
    bill.observe(source())  # the bill sees what A sees, at the same clock times
    assert cap_in_file(cluster.path) == (1, 1)
    cluster.hold(2, wait=False)  # demand for two workers; A's cap lets one come
    _wait(lambda: gpu_workers_alive() == 1, "A's worker")
    stopped = False
    for _ in range(200):
        stopped = _step(a, prog, 60)
        bill.observe(source())
        if stopped:
            break
        with pytest.raises(ClusterBusy, match="already under the budget of run runs/a"):
            b.start(N)
        assert gpu_workers_alive() <= 1
    assert stopped and cap_in_file(cluster.path) == (0, 0)
    _wait(lambda: gpu_workers_alive() == 0, "A's stop to terminate the worker")
    t_end = time.monotonic() + 5  # B is refused; nothing undoes A's stop
    while time.monotonic() < t_end:
        with pytest.raises(ClusterBusy):
            b.start(N)
        assert gpu_workers_alive() == 0 and cap_in_file(cluster.path) == (0, 0)
        time.sleep(0.5)
    rep_a = a.report()
    assert rep_a["spent_usd"] == pytest.approx(bill.spend_usd(), abs=1e-6)
    assert rep_a["spent_usd"] + b.snapshot()["spent_usd"] <= a.cap_usd < a.budget_usd
    assert bill.spend_usd() <= a.budget_usd  # one budget for the cluster, and it held
    assert not Path(str(cluster.path) + SUFFIX).exists()

    prog_b = Progress(total=N, enabled=False)
    b.start(N, prog_b)  # A is done: B takes the cluster, its cap lets a worker come back
    assert cap_in_file(cluster.path) == (1, 1)
    _wait(lambda: gpu_workers_alive() == 1, "B's worker")
    assert not _step(b, prog_b, 60)

    lock = Path(str(cluster.path) + SUFFIX)
    held = json.loads(lock.read_text())
    held["heartbeat"] = time.time() - 3600  # B's heartbeat stopped an hour ago
    lock.write_text(json.dumps(held))
    c = governor(cluster, 1.2, clock, run_key="runs/c")
    prog_c = Progress(total=N, enabled=False)
    c.start(N, prog_c)  # takes the stale lock over and caps the file itself
    assert json.loads(lock.read_text())["run"] == "runs/c"
    assert cap_in_file(cluster.path) == (1, 1)
    prog_b.add([{"status": "ok"}] * (N - prog_b.done))
    rep_b = b.report()  # B completes: it must not restore the originals under C's feet
    assert "lost the cluster's budget lock" in rep_b["autoscaler_cap_error"]
    assert cap_in_file(cluster.path) == (1, 1)
    assert Path(str(cluster.path) + ORIGINAL_SUFFIX).exists()
    assert gpu_workers_alive() == 1
    stopped = _until_stopped(c, prog_c, 200)
    assert stopped and cap_in_file(cluster.path) == (0, 0)
    _wait(lambda: gpu_workers_alive() == 0, "C's stop to terminate the worker")
    rep_c = c.report()
    assert rep_c["spent_usd"] <= c.cap_usd and not lock.exists()
