"""The crash-safe spend journal: a driver SIGKILLed mid-run loses no spend, the resumed
attempt bills the time in between once, the total over both attempts stays within the
budget; EBS and public IPv4 are in the ledger and the journal; `dfray plan --from-run` and
`dfray metrics`' reader see every attempt. Nodes come from a scripted source on a SimClock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfray.budget.clock import SimClock
from dfray.budget.governor import BudgetGovernor
from dfray.budget.journal import SpendJournal, latest_docs, summary
from dfray.budget.ledger import NodeSeen
from dfray.config import StorageConfig
from dfray.progress import Progress

PRICES = {"g4dn.xlarge": 1.00, "m6i.large": 0.10}
T0 = 1_000_000.0
REPO = Path(__file__).resolve().parents[2]

# attempt 1, in a child process that is SIGKILLed: 10 simulated s and one video per tick
CHILD = """
import sys, time
from dfray.budget.clock import SimClock
from dfray.budget.governor import BudgetGovernor
from dfray.budget.journal import SpendJournal
from dfray.budget.ledger import NodeSeen
from dfray.config import StorageConfig
from dfray.progress import Progress

clock = SimClock(start=%(t0)r)
nodes = [NodeSeen("head-1", "m6i.large", True, role="head"), NodeSeen("w1", "g4dn.xlarge", True)]
g = BudgetGovernor(%(budget)r, %(prices)r, head_type="m6i.large", worker_type="g4dn.xlarge",
                   clock=clock, source=lambda: nodes, poll_s=0, max_workers=4,
                   journal=SpendJournal(sys.argv[1], StorageConfig(), every_s=60))
prog = Progress(total=100000, enabled=False)
g.start(100000, prog)
while True:
    clock.advance(10)
    prog.add([{"status": "ok"}])
    assert not g.should_stop(prog)
    time.sleep(0.002)
"""


def _seq(run_dir: str) -> int:
    docs = latest_docs(run_dir, StorageConfig())
    return max((d["seq"] for d in docs.values()), default=0)


def test_killed_driver_then_resume_stays_within_budget(tmp_path):
    budget = 10.0
    run_dir = str(tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    code = CHILD % {"t0": T0, "budget": budget, "prices": PRICES}
    child = subprocess.Popen([sys.executable, "-c", code, run_dir], env=env)
    try:
        deadline = time.monotonic() + 60
        while _seq(run_dir) < 12 and time.monotonic() < deadline:  # > 11 simulated minutes
            assert child.poll() is None, "attempt 1 died on its own"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (doc1,) = latest_docs(run_dir, StorageConfig()).values()
    assert doc1["final"] is False and doc1["spent_usd"] > 0  # no final report: it was killed
    killed_at = doc1["written_at"]  # at most 60 simulated s before the kill
    assert len(list((tmp_path / "run" / "_spend").rglob("*.json"))) == 2  # its own old ones go

    # attempt 2, 5 minutes later; the head and the worker stayed up in between
    clock = SimClock(start=killed_at + 300)
    nodes = [
        NodeSeen("head-1", "m6i.large", True, role="head"),
        NodeSeen("w1", "g4dn.xlarge", True),
    ]
    g = BudgetGovernor(
        budget,
        PRICES,
        head_type="m6i.large",
        worker_type="g4dn.xlarge",
        clock=clock,
        source=lambda: nodes,
        poll_s=0,
        max_workers=4,
        journal=SpendJournal(run_dir, StorageConfig()),
    )
    assert g.prior_spent_usd == pytest.approx(doc1["spent_usd"])
    prog = Progress(total=100000, enabled=False)
    g.start(100000, prog)
    for _ in range(10000):
        clock.advance(10)
        prog.add([{"status": "ok"}])
        if g.should_stop(prog):
            break
    rep = g.report()
    assert rep["stopped_reason"].startswith("budget")
    total = summary(run_dir, StorageConfig())
    assert len(total.attempts) == 2
    # both nodes ran from T0 to now without a break: billed once, with no gap
    truth = 1.10 * (clock.now() - T0) / 3600
    assert total.spent_usd == pytest.approx(truth, abs=1e-6)
    assert total.spent_usd == pytest.approx(rep["spent_usd"], abs=1e-6)
    assert total.spent_usd <= budget


def test_ebs_and_ipv4_in_the_ledger_and_the_journal(tmp_path):
    from tests.budget.test_cost import TEMPLATE

    clock = SimClock(start=T0)
    nodes = [
        NodeSeen("h", "m5.large", True, role="head", node_type="head"),
        NodeSeen("w", "g5.xlarge", True, spot=True, node_type="gpu_g5_spot"),
    ]
    prices = {"m5.large": 0.096, "g5.xlarge": 0.4216}
    g = BudgetGovernor(
        50.0,
        prices,
        cluster_config=TEMPLATE,
        clock=clock,
        source=lambda: nodes,
        poll_s=0,
        journal=SpendJournal(str(tmp_path / "run"), StorageConfig()),
    )
    prog = Progress(total=100, enabled=False)
    g.start(100, prog)
    clock.advance(3600)
    prog.add([{"status": "ok"}])
    g.should_stop(prog)
    rep = g.report()
    ebs = 2 * 150 * 0.08 / 730
    parts = rep["parts_usd"]
    assert parts["instance"] == pytest.approx(0.096 + 0.4216, abs=1e-6)
    assert parts["ebs"] == pytest.approx(ebs, abs=1e-6)
    assert parts["public_ipv4"] == pytest.approx(2 * 0.005, abs=1e-6)
    assert parts["s3_requests"] == pytest.approx(2 * 0.01, abs=1e-6)
    assert rep["spent_usd"] == pytest.approx(sum(parts.values()), abs=1e-5)
    assert "data transfer" in " ".join(rep["not_counted"])
    (doc,) = latest_docs(str(tmp_path / "run"), StorageConfig()).values()
    assert doc["final"] and doc["parts_usd"]["ebs"] == pytest.approx(ebs)


def test_plan_from_run_and_metrics_reader_see_every_attempt(tmp_path, capsys):
    from dfray.cli import main
    from dfray.metrics import run_spend

    run_dir = tmp_path / "run1"
    run_dir.mkdir()
    stats = {"videos_per_s": 0.5, "n_scored": 200, "wall_s": 400.0, "device": "cuda:Tesla T4"}
    (run_dir / "run.json").write_text(json.dumps({"run_id": "run1", "stats": stats}))
    for attempt, spent, final in (("a1", 1.25, False), ("a2", 2.5, True)):
        j = SpendJournal(str(run_dir), StorageConfig(), attempt_id=attempt)
        j.write({"started_at": T0, "spent_usd": spent / 2, "nodes": [], "final": False}, T0)
        j.write({"started_at": T0, "spent_usd": spent, "nodes": [], "final": final}, T0 + 60)
    spend = run_spend(str(run_dir))
    assert spend["spent_usd"] == pytest.approx(3.75)
    assert [a["final"] for a in spend["attempts"]] == [False, True]
    rc = main(["plan", "s3://b/c/", "--offline", "--price", "g4dn.xlarge=0.5", "--price",
               "m6i.xlarge=0.1", "--budget", "100", "--deadline", "8h", "--from-run",
               str(run_dir), "--videos", "1000", "--instance-types", "g4dn.xlarge"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0
    assert "has spent $3.75 over 2 attempt(s), 1 without a final report" in out


def test_journal_on_s3(moto_server, s3):
    s3.create_bucket(Bucket="spend")
    cfg = StorageConfig(endpoint_url=moto_server)
    j = SpendJournal("s3://spend/runs/r1", cfg, attempt_id="a1")
    for i in range(4):
        j.write({"started_at": T0, "spent_usd": float(i), "nodes": [], "final": i == 3}, T0 + i)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="spend")["Contents"]]
    keys = [k for k in keys if not k.endswith("/")]  # pyarrow's directory markers
    assert sorted(keys) == ["runs/r1/_spend/a1/00000003.json", "runs/r1/_spend/a1/00000004.json"]
    s = summary("s3://spend/runs/r1", cfg)
    assert s.spent_usd == 3.0 and s.attempts[0]["final"]
