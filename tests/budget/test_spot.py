"""Spot prices follow the market: the price book re-reads spot history every 10 minutes
(on a SimClock; the EC2 answers come from a botocore Stubber), the ledger bills each
interval at the price in force, and the governor stops within the budget after a rise."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from botocore.stub import Stubber

from dfray.budget.clock import SimClock
from dfray.budget.governor import BudgetGovernor
from dfray.budget.ledger import NodeSeen
from dfray.budget.prices import PriceBook
from dfray.progress import Progress

T0 = 1_700_000_000.0
NODES = [
    NodeSeen("h", "m6i.large", True, role="head"),
    NodeSeen("w1", "g4dn.xlarge", True, spot=True),
    NodeSeen("w2", "g4dn.xlarge", True, spot=True),
]


def _history(usd: float) -> dict:
    rec = {
        "AvailabilityZone": "us-east-1a",
        "InstanceType": "g4dn.xlarge",
        "ProductDescription": "Linux/UNIX",
        "SpotPrice": f"{usd:.6f}",
        "Timestamp": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }
    return {"SpotPriceHistory": [rec]}


def test_spot_rise_is_billed_at_the_new_price_and_the_run_stops_in_budget(tmp_path):
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1")
    clock = SimClock(start=T0)
    book = PriceBook(
        "us-east-1", ec2_client=ec2, cache_dir=str(tmp_path), clock=clock,
        overrides={"m6i.large": 0.10},
    )  # fmt: skip
    with Stubber(ec2) as stub:
        for i in range(200):  # reads at t = 0, 600, …, 3000 s: $0.50; from 3600 s: $0.80
            stub.add_response("describe_spot_price_history", _history(0.50 if i < 6 else 0.80))
        g = BudgetGovernor(
            5.0, book, head_type="m6i.large", worker_type="g4dn.xlarge", spot=True,
            clock=clock, source=lambda: NODES, poll_s=0, max_workers=2,
        )  # fmt: skip
        prog = Progress(total=100_000, enabled=False)
        g.start(n_todo=100_000, prog=prog)
        stopped = False
        for _ in range(24 * 60):
            clock.advance(60)
            prog.add([{"status": "ok"}])
            if g.should_stop(prog):
                stopped = True
                break
        rep = g.report()
    assert stopped and rep["stopped_reason"].startswith("budget")
    elapsed_h = (clock.now() - T0) / 3600
    assert elapsed_h > 1  # it ran past the rise
    # by hand: each worker $0.50/h for the first hour, $0.80/h after; the head $0.10/h
    truth = 0.10 * elapsed_h + 2 * (0.50 * 1 + 0.80 * (elapsed_h - 1))
    assert rep["spent_usd"] == pytest.approx(truth, abs=1e-6)
    assert rep["spent_usd"] <= g.cap_usd < 5.0
    workers = [n for n in rep["nodes"] if n["role"] == "worker"]
    assert all(n["price_changes"] == 1 and n["usd_per_hour"] == 0.80 for n in workers)
    assert rep["worker_usd_per_hour"] == pytest.approx(0.80)  # the projection follows it
    assert rep["price_sources"]["g4dn.xlarge:spot"]["source"] == "spot-history"


def test_spot_figure_is_reread_only_after_the_refresh_interval(tmp_path):
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1")
    clock = SimClock(start=T0)
    book = PriceBook("us-east-1", ec2_client=ec2, cache_dir=str(tmp_path), clock=clock)
    with Stubber(ec2) as stub:
        stub.add_response("describe_spot_price_history", _history(0.30))
        stub.add_response("describe_spot_price_history", _history(0.45))
        assert book.spot("g4dn.xlarge").usd_per_hour == 0.30
        clock.advance(599)  # memo and cache are fresh: no call
        assert book.spot("g4dn.xlarge").usd_per_hour == 0.30
        clock.advance(1)
        assert book.spot("g4dn.xlarge").usd_per_hour == 0.45
        stub.assert_no_pending_responses()
