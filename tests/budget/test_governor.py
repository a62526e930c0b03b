"""Budget governor arithmetic (re-derived by hand on a SimClock) and the autoscaling config
rewrite. No Ray: nodes come from a scripted source."""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dfray.budget.clock import SimClock
from dfray.budget.governor import (
    AutoscalerCap,
    BudgetError,
    BudgetGovernor,
    allowed_workers,
    governor_from_config,
)
from dfray.budget.ledger import Ec2NodeSource, NodeSeen
from dfray.config import BudgetConfig, StorageConfig
from dfray.progress import Progress

FAKE_CONFIG = Path(__file__).resolve().parents[2] / "infra" / "fake-multinode.yaml"
PRICES = {"g4dn.xlarge": 1.00, "m6i.large": 0.10}
HEAD = NodeSeen("h", "m6i.large", True, role="head")
W1, W2 = NodeSeen("w1", "g4dn.xlarge", True), NodeSeen("w2", "g4dn.xlarge", True)


@pytest.fixture
def fake_config(tmp_path) -> Path:
    path = tmp_path / "autoscaling.yaml"
    shutil.copy(FAKE_CONFIG, path)
    return path


def governor(budget, nodes, clock, **kw) -> BudgetGovernor:
    kw.setdefault("head_type", "m6i.large")
    kw.setdefault("worker_type", "g4dn.xlarge")
    return BudgetGovernor(budget, PRICES, clock=clock, source=lambda: list(nodes), poll_s=0, **kw)


def finish(prog: Progress, n: int) -> None:
    prog.add([{"status": "ok"}] * n)


# -- allowed_workers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, expected",
    [
        # floor((cap − spent − head·h) / (worker·h))
        (dict(cap_usd=9.8, spent_usd=0.0, remaining_h=1.0), 9),  # 9.7 / 1
        (dict(cap_usd=9.8, spent_usd=2.0, remaining_h=2.0), 3),  # (9.8 − 2 − 0.2) / 2 = 3.8
        (dict(cap_usd=2.1, spent_usd=0.0, remaining_h=1.0), 2),  # exactly two: 0.1 + 2 = 2.1
        (dict(cap_usd=2.099, spent_usd=0.0, remaining_h=1.0), 1),  # a cent short of two
        (dict(cap_usd=9.8, spent_usd=0.0, remaining_h=1.0, upper=4), 4),  # the config's max
        (dict(cap_usd=9.8, spent_usd=0.0, remaining_h=1.0, remaining_videos=3), 3),
        (dict(cap_usd=0.5, spent_usd=0.4, remaining_h=1.0), 1),  # too poor: floor of 1
        (dict(cap_usd=0.5, spent_usd=0.0, remaining_h=float("inf")), 1),
        (dict(cap_usd=9.8, spent_usd=0.0, remaining_h=0.0, upper=4), 4),  # nothing left to do
    ],
)
def test_allowed_workers(kw, expected):
    assert allowed_workers(head_usd_per_hour=0.10, worker_usd_per_hour=1.00, **kw) == expected


# -- the governor's arithmetic ---------------------------------------------------------------------


def test_start_and_projection_arithmetic():
    clock = SimClock(start=0.0)
    g = governor(10.0, [HEAD, W1, W2], clock, max_workers=20)
    prog = Progress(total=1000, enabled=False)
    g.start(n_todo=1000, prog=prog)
    # before any video: h = startup horizon 1 h; cap 9.8: floor((9.8 − 0 − 0.1) / 1) = 9
    assert g.cap_usd == pytest.approx(9.8) and g.max_workers() == 9
    assert prog.extra == {
        "spend": "$0.00/$10.00",
        "projected": "$2.10",
        "$/1k videos": "?",
        "workers": "2/9",
    }

    clock.advance(600)
    finish(prog, 100)
    assert g.should_stop(prog) is False
    # spent = 600 s × (0.10 + 2 × 1.00) $/h = $0.35; rate 100/600 s; 900 left → 1.5 h
    # projected = 0.35 + 2.10 × 1.5 = 3.50; allowed = floor((9.8 − 0.35 − 0.15) / 1.5) = 6
    snap = g.snapshot()
    assert snap["spent_usd"] == pytest.approx(0.35)
    assert snap["projected_total_usd"] == pytest.approx(3.50)
    assert snap["usd_per_1000_videos"] == pytest.approx(3.50)
    assert snap["max_workers_allowed"] == g.max_workers() == 6
    assert prog.extra == {
        "spend": "$0.35/$10.00",
        "projected": "$3.50",
        "$/1k videos": "$3.50",
        "workers": "2/6",
    }
    assert "$0.35/$10.00" in prog.line()


def test_should_stop_before_the_cap_never_after():
    clock = SimClock(start=0.0)
    g = governor(1.0, [HEAD, W1, W2], clock)  # cap 0.98; burn 2.10 $/h
    prog = Progress(total=1000, enabled=False)
    g.start(n_todo=1000, prog=prog)
    spent_at_checks = []
    for _ in range(20):
        clock.advance(300)
        finish(prog, 10)
        stop = g.should_stop(prog)
        spent_at_checks.append(g.snapshot()["spent_usd"])
        if stop:
            break
    # check k: spent 0.175 k; next step + 60 s shutdown: 2.10 × 360 / 3600 = 0.21
    # k=4: 0.70 + 0.21 = 0.91 ≤ 0.98 goes on; k=5: 0.875 + 0.21 > 0.98 stops
    assert spent_at_checks == pytest.approx([0.175, 0.35, 0.525, 0.70, 0.875])
    assert stop and max(spent_at_checks) <= g.cap_usd
    assert spent_at_checks[-1] + 0.175 > g.cap_usd  # one more step would have passed it
    rep = g.report()
    assert rep["stopped_reason"].startswith("budget: spent $0.8750 + $0.2100")
    assert rep["spent_usd"] == pytest.approx(0.875) and rep["videos_this_attempt"] == 50
    assert rep["reserve"] == 0.02 and rep["budget_usd"] == 1.0
    assert [n["node_id"] for n in rep["nodes"]] == ["h", "w1", "w2"]
    assert rep["price_sources"]["g4dn.xlarge:on_demand"]["source"] == "override"
    json.dumps(rep)


def test_step_is_the_longest_recent_gap_and_nothing_left_never_stops():
    clock = SimClock(start=0.0)
    g = governor(1.0, [HEAD, W1], clock, shutdown_s=0)  # burn 1.10 $/h, cap 0.98
    prog = Progress(total=10, enabled=False)
    g.start(n_todo=10, prog=prog)
    clock.advance(1800)  # first batch took 30 min: $0.55 spent
    finish(prog, 1)
    # the next step is assumed as long as the longest recent gap: 0.55 + 0.55 > 0.98
    assert g.should_stop(prog) is True
    g2 = governor(0.5, [HEAD, W1], clock, shutdown_s=0)
    prog2 = Progress(total=2, enabled=False)
    g2.start(n_todo=2, prog=prog2)
    clock.advance(3600)
    finish(prog2, 2)  # the last videos: nothing in flight, no reason to stop
    assert g2.should_stop(prog2) is False


def test_prior_spend_counts_against_the_budget():
    clock = SimClock(start=0.0)
    g = governor(2.0, [HEAD], clock, prior_spent_usd=1.93, shutdown_s=0)
    prog = Progress(total=100, enabled=False)
    g.start(n_todo=100, prog=prog)
    clock.advance(600)
    finish(prog, 1)
    # cap 1.96: 1.93 + 0.1 × 600/3600 = 1.9467 now, + 0.0167 for the next step = 1.963
    assert g.should_stop(prog) is True
    rep = g.report()
    assert rep["prior_spent_usd"] == 1.93 and rep["spent_usd"] <= g.cap_usd
    assert rep["spent_this_attempt_usd"] == pytest.approx(0.1 / 6, abs=1e-6)
    assert rep["usd_per_1000_videos"] == pytest.approx(0.1 / 6 * 1000)


def test_budget_settings_are_checked():
    with pytest.raises(BudgetError, match="positive"):
        BudgetGovernor(0, PRICES, head_type="m6i.large")
    with pytest.raises(BudgetError, match="reserve"):
        BudgetGovernor(1, PRICES, head_type="m6i.large", reserve=1.5)
    with pytest.raises(BudgetError, match="--head-type"):
        BudgetGovernor(1, PRICES)


# -- the autoscaling config rewrite ----------------------------------------------------------------


def read(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def limits(config: dict) -> tuple:
    t = config["available_node_types"]
    return (
        config["max_workers"],
        t["gpu_worker"]["max_workers"],
        t["cpu_worker"]["max_workers"],
        t["ray.head.default"]["max_workers"],
    )


def test_cap_file_rewrite_sidecar_and_restore(fake_config):
    from ray.autoscaler._private.util import validate_config

    os.chmod(fake_config, 0o640)
    original = read(fake_config)
    cap = AutoscalerCap(str(fake_config))
    assert cap.upper == 4  # min(global 4, 4 + 2 per type)
    assert cap.apply(2) is True and cap.apply(2) is False  # unchanged: not rewritten
    c = read(fake_config)
    assert limits(c) == (2, 2, 2, 0)
    validate_config(c)  # still a valid Ray cluster config
    assert {k: v for k, v in c.items() if k not in ("max_workers", "available_node_types")} == {
        k: v for k, v in original.items() if k not in ("max_workers", "available_node_types")
    }
    assert fake_config.read_text().startswith("# max_workers capped at 2 by the dfray budget")
    assert stat.S_IMODE(os.stat(fake_config).st_mode) == 0o640
    assert sorted(p.name for p in fake_config.parent.iterdir()) == [
        "autoscaling.yaml",
        "autoscaling.yaml.dfray-original.json",
    ]

    cap.apply(0)
    assert limits(read(fake_config)) == (0, 0, 0, 0)
    # the next attempt (resume) finds the originals in the sidecar, not the capped file
    again = AutoscalerCap(str(fake_config))
    assert again.upper == 4
    again.apply(3)
    assert limits(read(fake_config)) == (3, 3, 2, 0)
    again.restore()
    assert read(fake_config) == original
    assert not Path(str(fake_config) + ".dfray-original.json").exists()


def test_cap_file_write_is_atomic(fake_config, monkeypatch):
    before = fake_config.read_text()
    cap = AutoscalerCap(str(fake_config))

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        cap.apply(1)
    assert fake_config.read_text() == before  # the monitor never sees a half-written file
    assert not [p for p in fake_config.parent.iterdir() if p.name.startswith(".dfray-cap-")]


def test_governor_caps_the_file_stops_at_zero_and_restores_when_complete(fake_config):
    clock = SimClock(start=0.0)
    g = BudgetGovernor(
        1.0,
        PRICES,
        clock=clock,
        autoscaling_config=str(fake_config),
        source=lambda: [HEAD, W1],
        poll_s=0,
        startup_horizon_s=1800,
    )
    assert (g.head_type, g.worker_type, g.upper) == ("m6i.large", "g4dn.xlarge", 4)
    prog = Progress(total=100, enabled=False)
    g.start(n_todo=100, prog=prog)
    # h = 0.5 h: floor((0.98 − 0.05) / 0.5) = 1
    assert g.max_workers() == 1 and limits(read(fake_config))[:2] == (1, 1)
    # planning: the head's resources + 1 gpu_worker's (from the config; no Ray here)
    assert g.planning_resources({"CPU": 1.0, "memory": 8e9}) == {
        "CPU": 2.0,
        "GPU": 1.0,
        "memory": 8e9,
    }
    for _ in range(100):
        clock.advance(600)
        finish(prog, 1)
        if g.should_stop(prog):
            break
    assert limits(read(fake_config)) == (0, 0, 0, 0)  # stopped: nothing new is launched
    rep = g.report()
    assert rep["autoscaler_cap"] == 0 and rep["stopped_reason"]
    assert limits(read(fake_config)) == (0, 0, 0, 0)  # and report() leaves it so

    g2 = BudgetGovernor(
        100.0,
        PRICES,
        clock=clock,
        autoscaling_config=str(fake_config),
        source=lambda: [HEAD, W1],
        poll_s=0,
    )
    assert g2.upper == 4  # originals from the sidecar
    g2.start(n_todo=10, prog=Progress(total=10, enabled=False))
    assert limits(read(fake_config))[:2] == (4, 4)
    rep2 = g2.report()  # a run that was not stopped gets the original config back
    assert rep2["stopped_reason"] is None
    assert read(fake_config) == read(FAKE_CONFIG)


def test_local_governor_has_no_cap():
    clock = SimClock(start=0.0)
    g = BudgetGovernor(
        5.0, PRICES, head_type="m6i.large", clock=clock, source=lambda: [HEAD], poll_s=0
    )
    g.start(n_todo=3, prog=None)
    assert g.worker_type is None and g.max_workers() is None
    assert g.planning_resources({"CPU": 2.0}) == {"CPU": 2.0}
    rep = g.report()
    assert rep["autoscaling_config"] is None and rep["max_workers_allowed"] is None


# -- governor_from_config ----------------------------------------------------------------------------


def args(**kw) -> BudgetConfig:
    base = dict(
        budget_usd=5.0,
        prices=("g4dn.xlarge=1.0", "m6i.large=0.1"),
        reserve=0.05,
    )
    base.update(kw)
    return BudgetConfig(**base)


@pytest.fixture
def no_bootstrap(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/ray_bootstrap_config.yaml
    monkeypatch.delenv("DFRAY_AUTOSCALING_CONFIG", raising=False)


def test_governor_from_config(fake_config, tmp_path, no_bootstrap):
    out = tmp_path / "out"
    (out / "r1").mkdir(parents=True)
    (out / "r1" / "run.json").write_text(
        json.dumps({"state": "budget_exhausted", "spend": {"spent_usd": 1.25}})
    )
    cfg = SimpleNamespace(out=str(out), run_id="r1", storage=StorageConfig(region="us-east-1"))
    g = governor_from_config(args(autoscaling_config=str(fake_config)), cfg)
    assert (g.budget_usd, g.reserve, g.prior_spent_usd) == (5.0, 0.05, 1.25)
    assert (g.head_type, g.worker_type, g.upper) == ("m6i.large", "g4dn.xlarge", 4)
    assert (g.head_price.source, g.worker_price.usd_per_hour) == ("override", 1.0)

    # an attempt that crashed left no "spend", only what runinfo carried over from before
    (out / "r2").mkdir()
    (out / "r2" / "run.json").write_text(json.dumps({"state": "running", "spent_usd_before": 2.5}))
    crashed = SimpleNamespace(out=str(out), run_id="r2", storage=StorageConfig(region="us-east-1"))
    assert governor_from_config(args(head_type="m6i.large"), crashed).prior_spent_usd == 2.5

    new = SimpleNamespace(out=str(out), run_id="new", storage=StorageConfig(region="us-east-1"))
    local = governor_from_config(args(head_type="m6i.large"), new)
    assert local.prior_spent_usd == 0.0 and local.cap_file is None
    with pytest.raises(BudgetError, match="--head-type"):
        governor_from_config(args(), new)
    with pytest.raises(BudgetError, match="TYPE=USD"):
        governor_from_config(args(prices=("nonsense",), head_type="m6i.large"), new)


def test_governor_from_config_on_aws_reads_ec2(tmp_path, no_bootstrap):
    config = read(FAKE_CONFIG)
    config["provider"] = {"type": "aws", "region": "us-west-2"}
    path = tmp_path / "aws.yaml"
    path.write_text(yaml.safe_dump(config))
    cfg = SimpleNamespace(out=str(tmp_path), run_id="x", storage=StorageConfig(region="us-east-1"))
    g = governor_from_config(args(autoscaling_config=str(path)), cfg)
    assert isinstance(g.source, Ec2NodeSource)
    assert (g.source.cluster_name, g.source.region) == ("dfray-fake", "us-west-2")


def test_background_poll_on_a_real_clock():
    """Rows arrive in bursts; on a wall clock nodes are polled between checks too."""
    calls = []

    def source():
        calls.append(1)
        return [HEAD]

    g = BudgetGovernor(5.0, PRICES, head_type="m6i.large", source=source, poll_s=0.5)
    assert g.background_poll  # a WallClock: yes; a SimClock: no (tests poll explicitly)
    g.start(n_todo=10)
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(calls) >= 3  # start + at least two background polls, with no check at all
    g.report()
    assert g._poller is None
    n = len(calls)
    time.sleep(1.5)
    assert len(calls) == n  # report() stopped the thread
    assert not governor(5.0, [HEAD], SimClock()).background_poll
