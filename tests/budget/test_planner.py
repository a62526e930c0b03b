"""Planner: deadlines, arithmetic on fixed inputs, and the CLI's JSON re-derived by hand."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest

from dfray.budget.planner import (
    RELATIVE_SPEED,
    PlanError,
    is_cpu_device,
    make_plan,
    parse_deadline,
    rate_from_stats,
    reference_type_for_device,
)
from dfray.budget.prices import PriceBook
from dfray.cli import main

NOW = datetime(2025, 3, 4, 10, 0, 0)


@pytest.fixture(autouse=True)
def no_aws(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))  # the default price cache lands in tmp


# -- parse_deadline -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, seconds",
    [
        ("8h", 8 * 3600),
        ("90m", 90 * 60),
        ("7h30m", 7.5 * 3600),
        ("1d2h", 26 * 3600),
        ("45s", 45),
        ("1.5h", 5400),
        (" 2H ", 7200),
        ("18:30", 8.5 * 3600),  # later today
        ("09:00", 23 * 3600),  # passed today -> tomorrow
        ("10:00", 24 * 3600),  # now -> tomorrow
        ("0:15", 14.25 * 3600),
        ("2025-03-05T06:00", 20 * 3600),
    ],
)
def test_parse_deadline(text, seconds):
    assert parse_deadline(text, NOW) == pytest.approx(seconds)


def test_parse_deadline_aware_now():
    now = datetime(2025, 3, 4, 23, 30, tzinfo=timezone(timedelta(hours=2)))
    assert parse_deadline("01:00", now) == pytest.approx(1.5 * 3600)


@pytest.mark.parametrize("text", ["", "abc", "25:00", "12:60", "0h", "8x", "2020-01-01T00:00"])
def test_parse_deadline_rejects(text):
    with pytest.raises(PlanError):
        parse_deadline(text, NOW)


# -- arithmetic on fixed inputs ------------------------------------------------------------


def book(**prices):
    return PriceBook("us-east-1", offline=True, overrides=prices, cache_dir="/nonexistent")


def test_plan_fixed_inputs_by_hand():
    # 10,000 videos, 500 videos/h/worker on g4dn.xlarge, 6 h, 5 min start-up, spot $0.20/h,
    # head $0.10/h. Fewest workers for the deadline: ceil(10000 / (500 × 5.9167)) = 4.
    # cost(w) = (0.2 w + 0.1)(20/w + 1/12) is convex, minimum at sqrt(10000·0.1/(500·(1/12)·0.2))
    # = 10.95 -> 11 workers: (2.3)(20/11 + 1/12) = 4.3735 (4 workers would cost 4.575).
    plan = make_plan(
        n_videos=10_000,
        budget_usd=10,
        deadline_s=6 * 3600,
        videos_per_hour_per_worker=500,
        prices=book(**{"g4dn.xlarge:spot": 0.2, "m6i.xlarge": 0.1}),
        instance_types=["g4dn.xlarge"],
        markets=["spot"],
        now=NOW,
    )
    (row,) = plan.rows
    assert row.workers == 11
    assert row.hours == pytest.approx(20 / 11 + 1 / 12)
    assert row.cost_usd == pytest.approx(2.3 * (20 / 11 + 1 / 12))
    assert row.usd_per_1000_videos == pytest.approx(row.cost_usd / 10)
    assert row.fits and plan.best == row
    assert row.finish_at == NOW + timedelta(hours=row.hours)
    assert row.price_source == "override"
    assert "cost less than 4" in row.reason


def test_plan_minimum_workers_when_head_is_cheap():
    # Head price 0: cost only grows with workers, so the plan takes the deadline minimum.
    plan = make_plan(
        n_videos=10_000,
        budget_usd=100,
        deadline_s=6 * 3600,
        videos_per_hour_per_worker=500,
        prices=book(**{"g5.xlarge:on_demand": 1.0, "m6i.xlarge": 0.0}),
        instance_types=["g5.xlarge"],
        markets=["on_demand"],
        now=NOW,
    )
    (row,) = plan.rows
    # g5.xlarge is assumed 2× g4dn.xlarge: 1000 videos/h; ceil(10000 / (1000 × 5.9167)) = 2
    assert row.videos_per_hour_per_worker == pytest.approx(1000)
    assert row.workers == 2
    assert row.cost_usd == pytest.approx(2 * 1.0 * (5 + 1 / 12))


def test_plan_picks_cheapest_fitting():
    plan = make_plan(
        n_videos=20_000,
        budget_usd=50,
        deadline_s=8 * 3600,
        videos_per_hour_per_worker=400,
        prices=book(
            **{
                "g4dn.xlarge:spot": 0.2,
                "g4dn.xlarge:on_demand": 0.5,
                "g5.xlarge:spot": 0.3,
                "g5.xlarge:on_demand": 1.0,
                "m6i.xlarge": 0.2,
            }
        ),  # fmt: skip
        instance_types=["g4dn.xlarge", "g5.xlarge"],
        now=NOW,
    )
    assert len(plan.rows) == 4
    fitting = [r for r in plan.rows if r.fits]
    assert plan.best == min(fitting, key=lambda r: r.cost_usd)
    assert plan.best.instance_type == "g5.xlarge" and plan.best.market == "spot"


def test_no_fit_deadline_too_tight():
    plan = make_plan(
        n_videos=1_000_000,
        budget_usd=1e6,
        deadline_s=2 * 3600,
        videos_per_hour_per_worker=100,
        prices=book(**{"g4dn.xlarge": 0.5, "m6i.xlarge": 0.2}),
        instance_types=["g4dn.xlarge"],
        max_workers=10,
        now=NOW,
    )
    assert plan.best is None
    assert "deadline too tight" in plan.why_none
    assert all(r.workers == 10 and not r.fits for r in plan.rows)
    assert "needs" in plan.rows[0].reason and "max is 10" in plan.rows[0].reason


def test_no_fit_deadline_inside_startup():
    plan = make_plan(
        n_videos=10,
        budget_usd=100,
        deadline_s=60,
        videos_per_hour_per_worker=100,
        prices=book(**{"g4dn.xlarge": 0.5, "m6i.xlarge": 0.2}),
        instance_types=["g4dn.xlarge"],
        now=NOW,
    )
    assert plan.best is None
    assert "start-up" in plan.rows[0].reason


def test_bad_inputs():
    kw = dict(
        n_videos=10,
        budget_usd=10,
        deadline_s=3600,
        videos_per_hour_per_worker=10,
        prices=book(**{"g4dn.xlarge": 0.5, "m6i.xlarge": 0.2}),
    )
    for change in ({"n_videos": 0}, {"budget_usd": 0}, {"videos_per_hour_per_worker": 0},
                   {"max_workers": 0}, {"instance_types": ["x9.huge"]},
                   {"reference_type": "x9.huge"}, {"markets": ["reserved"]}):  # fmt: skip
        with pytest.raises(PlanError):
            make_plan(**{**kw, **change})


def test_rate_and_device_helpers():
    assert rate_from_stats({"videos_per_s": 0.5, "workers": 2}) == pytest.approx(900)
    assert rate_from_stats({"videos_per_s": 1.0}) == pytest.approx(3600)
    with pytest.raises(PlanError):
        rate_from_stats({"videos_per_s": 0})
    assert reference_type_for_device("cuda:Tesla T4") == "g4dn.xlarge"
    assert reference_type_for_device("cuda:NVIDIA A10G") == "g5.xlarge"
    assert reference_type_for_device("cuda:NVIDIA L4") == "g6.xlarge"
    assert reference_type_for_device("cuda:Tesla V100-SXM2-16GB") == "p3.2xlarge"
    assert reference_type_for_device("cuda:NVIDIA H100 80GB HBM3") is None
    assert reference_type_for_device("cpu") is None
    assert reference_type_for_device("gpu") is None  # GPU, but which one is unknown
    assert is_cpu_device("cpu") and is_cpu_device(None)
    assert not is_cpu_device("gpu") and not is_cpu_device("cuda:0")
    assert rate_from_stats({"videos_per_s": 1.0, "workers": 4, "nodes": 2}) == pytest.approx(1800)


# -- the CLI, re-derived independently -----------------------------------------------------

PRICES = {
    "g4dn.xlarge:spot": 0.21,
    "g4dn.xlarge:on_demand": 0.526,
    "g5.xlarge:spot": 0.45,
    "g5.xlarge:on_demand": 1.006,
    "g6.xlarge:spot": 0.36,
    "g6.xlarge:on_demand": 0.8048,
    "m6i.xlarge": 0.192,
}


def write_run(tmp_path, **stats):
    run_dir = tmp_path / "run1"
    run_dir.mkdir()
    base = {"videos_per_s": 0.5, "n_scored": 200, "wall_s": 400.0, "device": "cuda:Tesla T4",
            "workers": 2}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps({"run_id": "run1", "stats": {**base, **stats}}))
    return str(run_dir)


def run_plan(capsys, *args):
    price_args = [a for k, v in PRICES.items() for a in ("--price", f"{k}={v}")]
    # instance prices only: the template's EBS/IPv4 extras are tested in test_cost.py
    rc = main(["plan", "s3://bucket/corpus/", "--offline", "--cluster-config", "none",
               *price_args, *args])  # fmt: skip
    out = capsys.readouterr()
    return rc, out.out, out.err


def rederive(n, budget, deadline_h, rate_ref, ref, itype, market, head, max_workers,
             overhead_h=5 / 60, margin=0.10, reserve=0.02):  # fmt: skip
    """The planner's arithmetic, written again from its docstring."""
    rate = rate_ref * RELATIVE_SPEED[itype] / RELATIVE_SPEED[ref]
    p = PRICES[f"{itype}:{market}"]

    def cost(w):
        return (w * p + head) * (n / (rate * w) + overhead_h)

    need = math.ceil(n / (rate * (deadline_h - overhead_h)))
    if need <= max_workers:
        costs = {w: cost(w) for w in range(need, max_workers + 1)}
        workers = min(costs, key=lambda w: (costs[w], w))
    else:
        workers = max_workers
    hours = n / (rate * workers) + overhead_h
    c = (workers * p + head) * hours
    usable = budget * (1 - reserve) / (1 + margin)  # the cost model's usable budget
    fits = hours <= deadline_h + 1e-9 and c <= usable + 1e-9
    return workers, hours, c, fits


def test_cli_plan_from_run_json_rederived(tmp_path, capsys):
    run_dir = write_run(tmp_path)  # 0.5 videos/s over 2 workers = 900 videos/h/worker on T4
    rc, out, err = run_plan(
        capsys,
        "--budget", "40", "--deadline", "6h", "--from-run", run_dir, "--videos", "50000",
        "--instance-types", "g4dn.xlarge", "g5.xlarge", "g6.xlarge", "--json",
    )  # fmt: skip
    assert rc == 0, err
    plan = json.loads(out)
    assert plan["n_videos"] == 50000
    assert plan["videos_per_hour_per_worker"] == pytest.approx(900)
    assert plan["reference_type"] == "g4dn.xlarge"  # from "cuda:Tesla T4"
    assert plan["head"]["instance_type"] == "m6i.xlarge"
    assert plan["head"]["usd_per_hour"] == pytest.approx(0.192)
    now = datetime.fromisoformat(plan["now"])
    deadline_h = (datetime.fromisoformat(plan["deadline_at"]) - now).total_seconds() / 3600
    assert deadline_h == pytest.approx(6, abs=1 / 3600)
    assert len(plan["rows"]) == 6
    for row in plan["rows"]:
        workers, hours, cost, fits = rederive(
            50000, 40, 6, 900, "g4dn.xlarge", row["instance_type"], row["market"], 0.192,
            plan["max_workers"],
        )  # fmt: skip
        assert row["workers"] == workers, row
        assert row["hours"] == pytest.approx(hours)
        assert row["cost_usd"] == pytest.approx(cost)
        assert row["usd_per_1000_videos"] == pytest.approx(cost / 50)
        assert row["fits"] is fits
        assert row["price_source"] == "override"
        finish = datetime.fromisoformat(row["finish_at"])
        assert abs((finish - now).total_seconds() / 3600 - hours) < 1 / 3600
    fitting = [r for r in plan["rows"] if r["fits"]]
    assert fitting
    assert plan["best"] == min(fitting, key=lambda r: r["cost_usd"])
    # the human table goes to stderr with --json
    assert "cheapest plan that meets the deadline" in err
    assert "ASSUMED relative speeds" in err


def test_cli_table_output(tmp_path, capsys):
    rc, out, _ = run_plan(
        capsys, "--budget", "40", "--deadline", "6h", "--rate", "900", "--videos", "50000",
        "--instance-types", "g4dn.xlarge", "g5.xlarge",
    )  # fmt: skip
    assert rc == 0
    assert "instance type" in out and "price source" in out
    assert out.count("override") >= 4
    assert "cheapest plan that meets the deadline:" in out


def test_cli_cpu_calibration_is_flagged(tmp_path, capsys):
    run_dir = write_run(tmp_path, device="cpu", workers=1, videos_per_s=0.05)
    rc, out, _ = run_plan(
        capsys, "--budget", "1000", "--deadline", "10h", "--from-run", run_dir,
        "--videos", "1000", "--instance-types", "g4dn.xlarge",
    )  # fmt: skip
    assert rc == 0
    assert "measured on a CPU" in out and "g4dn.xlarge" in out


def test_cli_no_fit_budget_says_minimum(tmp_path, capsys):
    run_dir = write_run(tmp_path)
    # 30 min start-up makes each extra worker cost money: the deadline needs 38 workers and
    # $16.04; $16 leaves $14.25 usable (2% reserve, 10% margin), which pays for at most 18
    # workers, finishing after ~3.6 h.
    rc, out, err = run_plan(
        capsys, "--budget", "16", "--deadline", "2h", "--from-run", run_dir, "--videos", "50000",
        "--instance-types", "g4dn.xlarge", "--market", "spot", "--json", "--overhead-min", "30",
        "--max-workers", "50",
    )  # fmt: skip
    assert rc == 1
    plan = json.loads(out)
    assert plan["best"] is None
    workers, hours, cost, fits = rederive(
        50000, 16, 2, 900, "g4dn.xlarge", "g4dn.xlarge", "spot", 0.192, 50, overhead_h=0.5
    )
    assert not fits and workers == 38
    assert "budget too small" in plan["why_none"]
    usable = 16 * 0.98 / 1.1
    assert f"${cost:,.2f} (${usable:,.2f} usable)" in plan["why_none"]  # for the deadline
    # earliest finish within the budget: the most workers whose cost <= the usable budget
    rate, p, head = 900, PRICES["g4dn.xlarge:spot"], 0.192
    affordable = [w for w in range(1, 51) if (w * p + head) * (50000 / (rate * w) + 0.5) <= usable]
    w_max = max(affordable)
    assert w_max == 18
    assert "earliest finish" in plan["why_none"]
    assert f"({50000 / (rate * w_max) + 0.5:.2f} h) with {w_max} × g4dn.xlarge" in plan["why_none"]
    assert "no plan fits: budget too small" in err


def test_cli_no_fit_budget_cannot_pay_at_all(tmp_path, capsys):
    rc, out, _ = run_plan(
        capsys, "--budget", "5", "--deadline", "6h", "--rate", "900", "--videos", "50000",
        "--instance-types", "g4dn.xlarge", "--market", "spot",
    )  # fmt: skip
    assert rc == 1
    assert "cannot pay for the whole corpus at any speed" in out


def test_cli_no_fit_deadline(tmp_path, capsys):
    rc, out, _ = run_plan(
        capsys, "--budget", "1000", "--deadline", "1h", "--rate", "10", "--videos", "100000",
        "--instance-types", "g4dn.xlarge", "--max-workers", "5",
    )  # fmt: skip
    assert rc == 1
    assert "no plan fits: deadline too tight" in out


@pytest.mark.timeout(600)
def test_cli_plan_calibrates_on_a_generated_corpus(tiny_corpus, capsys):
    """Real calibration: dfray scores 2 videos of a generated corpus on a local Ray, counts
    the corpus, and the printed plan's arithmetic is re-derived here."""
    price_args = [a for k, v in PRICES.items() for a in ("--price", f"{k}={v}")]
    rc = main(["plan", str(tiny_corpus), "--offline", "--cluster-config", "none", *price_args,
               "--budget", "100", "--deadline", "8h", "--calibrate", "2", "--instance-types", "g4dn.xlarge",
               "g5.xlarge", "--json"])  # fmt: skip
    out = capsys.readouterr()
    assert rc == 0, out.err
    plan = json.loads(out.out)
    assert plan["n_videos"] == len(list(tiny_corpus.glob("*.mp4"))) == 6
    rate = plan["videos_per_hour_per_worker"]
    assert rate > 0
    assert "cpu" in out.err.lower()  # a CPU-measured rate is flagged as such
    for row in plan["rows"]:
        workers, hours, cost, fits = rederive(
            6, 100, 8, rate, plan["reference_type"], row["instance_type"], row["market"],
            0.192, plan["max_workers"],
        )  # fmt: skip
        assert (row["workers"], row["fits"]) == (workers, fits)
        assert row["hours"] == pytest.approx(hours) and row["cost_usd"] == pytest.approx(cost)


def test_cli_bad_input_exit_2(tmp_path, capsys):
    rc, _, err = run_plan(capsys, "--budget", "10", "--deadline", "soon", "--rate", "5",
                          "--videos", "10")  # fmt: skip
    assert rc == 2 and "deadline" in err
    rc, _, err = run_plan(capsys, "--budget", "10", "--deadline", "1h",
                          "--from-run", str(tmp_path / "missing"), "--videos", "10")  # fmt: skip
    assert rc == 2 and "run.json" in err
