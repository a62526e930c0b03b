"""One budget per cluster: a second budgeted run on a cluster is refused while the first
is alive, never undoes its cap, and a run that lost the lock (taken over as stale) never
restores the cap file at its completion. Scripted nodes on a SimClock, a copy of the fake
multi-node autoscaling config."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import yaml

from dfray.budget.clock import SimClock
from dfray.budget.clusterlock import SUFFIX, ClusterBusy
from dfray.budget.governor import ORIGINAL_SUFFIX, BudgetGovernor
from dfray.budget.ledger import NodeSeen
from dfray.progress import Progress

FAKE_CONFIG = Path(__file__).resolve().parents[2] / "infra" / "fake-multinode.yaml"
PRICES = {"g4dn.xlarge": 1.00, "m6i.large": 0.10}
NODES = [NodeSeen("h", "m6i.large", True, role="head"), NodeSeen("w1", "g4dn.xlarge", True)]


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "autoscaling.yaml"
    shutil.copy(FAKE_CONFIG, path)
    return path


def governor(budget: float, config: Path, run: str, clock: SimClock) -> BudgetGovernor:
    return BudgetGovernor(
        budget, PRICES, clock=clock, source=lambda: NODES, poll_s=0,
        autoscaling_config=str(config), run_key=run,
    )  # fmt: skip


def cap(config: Path) -> int:
    return yaml.safe_load(config.read_text())["max_workers"]


def test_second_budgeted_run_is_refused_and_never_undoes_the_cap(config):
    clock = SimClock(start=0.0)
    a = governor(2.0, config, "runs/a", clock)
    prog = Progress(total=1000, enabled=False)
    a.start(n_todo=1000, prog=prog)
    b = governor(100.0, config, "runs/b", clock)
    with pytest.raises(ClusterBusy, match="already under the budget of run runs/a"):
        b.start(n_todo=1000)
    stopped = False
    for _ in range(500):
        clock.advance(60)
        prog.add([{"status": "ok"}])
        if a.should_stop(prog):
            stopped = True
            break
        with pytest.raises(ClusterBusy):  # B keeps being refused while A runs
            b.start(n_todo=1000)
    assert stopped and cap(config) == 0  # A's stop holds: nothing of B ever wrote the file
    rep = a.report()
    assert rep["spent_usd"] <= a.cap_usd  # the only budget that ran on the cluster
    assert not Path(str(config) + SUFFIX).exists()  # released at its end
    b.start(n_todo=1000)  # A is done: B may take the cluster now
    assert cap(config) > 0
    b.report()


def test_completion_of_a_run_that_lost_the_lock_keeps_the_holders_cap(config):
    clock = SimClock(start=0.0)
    a = governor(2.0, config, "runs/a", clock)
    prog_a = Progress(total=1000, enabled=False)
    a.start(n_todo=1000, prog=prog_a)
    lock = Path(str(config) + SUFFIX)
    held = json.loads(lock.read_text())
    held["heartbeat"] = time.time() - 3600  # A's heartbeat stopped an hour ago: gone
    lock.write_text(json.dumps(held))

    b = governor(1.3, config, "runs/b", clock)
    prog_b = Progress(total=1000, enabled=False)
    b.start(n_todo=1000, prog=prog_b)  # takes the stale lock over
    b_cap = cap(config)
    assert b_cap == b.max_workers()

    clock.advance(60)
    prog_a.add([{"status": "ok"}] * 999)
    a.should_stop(prog_a)  # A is alive after all: it must not write the file
    assert cap(config) == b_cap
    prog_a.add([{"status": "ok"}])
    rep = a.report()  # A completes: no restore of the originals under B's feet
    assert cap(config) == b_cap and Path(str(config) + ORIGINAL_SUFFIX).exists()
    assert "lost the cluster's budget lock" in rep["autoscaler_cap_error"]
    assert json.loads(lock.read_text())["run"] == "runs/b"

    b.report()  # B completes: the originals come back, the lock goes
    assert cap(config) == 4 and not lock.exists()


def test_another_attempt_of_the_same_run_takes_the_lock_over(config):
    clock = SimClock(start=0.0)
    governor(5.0, config, "runs/a", clock).start(n_todo=10)  # attempt 1 dies, lock left
    g = governor(5.0, config, "runs/a", clock)
    g.start(n_todo=10)  # the resume
    assert json.loads(Path(str(config) + SUFFIX).read_text())["token"] == g.cluster_lock.token
    g.report()
