"""The budget governor against real Ray: an autoscaling cluster from Ray's fake multi-node
provider (infra/fake-multinode.yaml), and a real dfray scoring run that stops at its budget
and resumes.

The fake cluster is started by tests/budget/fakecluster.py.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dfray.budget.clock import SimClock
from dfray.budget.governor import BudgetGovernor
from dfray.progress import Progress
from tests.budget.fakecluster import cap_in_file, fake_autoscaling_cluster, gpu_workers_alive

PRICES = {"g4dn.xlarge": 1.00, "m6i.large": 0.10}  # $/h: GPU worker, head (and CPU worker)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_budget_caps_workers(tmp_path):
    """Demand for 4 GPU workers, a budget for 2: never more than 2 come up, the spend on the
    SimClock stays under the budget; a larger budget lets the other two come (so it was the
    cap, not a lack of demand), and the stop scales the workers away."""
    from ray.autoscaler.sdk import request_resources

    n_todo = 400
    tick_s = 4.5  # simulated seconds per finished video: 400 videos in 0.5 h
    # cap = budget × 0.98 = 1.30: 0.5 h of head + 2 workers costs $1.05, + a 3rd $1.55.
    budget = 1.30 / 0.98
    clock = SimClock()
    with fake_autoscaling_cluster(tmp_path) as (path, _):
        g = BudgetGovernor(
            budget,
            PRICES,
            clock=clock,
            autoscaling_config=str(path),
            reserve=0.02,
            startup_horizon_s=1800,
            poll_s=0,
        )
        assert (g.head_type, g.worker_type) == ("m6i.large", "g4dn.xlarge")
        prog = Progress(total=n_todo, enabled=False)
        g.start(n_todo=n_todo, prog=prog)
        assert g.max_workers() == 2 and cap_in_file(path) == (2, 2)
        assert prog.extra["spend"] == f"$0.00/${budget:.2f}"
        time.sleep(2.5)  # the monitor re-reads the file every second
        request_resources(bundles=[{"GPU": 1}] * 4)  # a workload that wants 4 GPU workers

        def step(n: int = 1, tick: float = tick_s) -> bool:
            clock.advance(tick * n)
            prog.add([{"status": "ok"}] * n)
            stop = g.should_stop(prog)
            snap = g.snapshot()
            assert snap["spent_usd"] <= g.cap_usd, snap
            return stop

        seen, t_end = [], time.monotonic() + 45
        while time.monotonic() < t_end:  # phase 1: capped at 2
            assert not step()
            assert g.max_workers() == 2 and cap_in_file(path) == (2, 2)
            seen.append(gpu_workers_alive())
            assert seen[-1] <= 2, seen
            if seen[-5:] == [2] * 5 and len(seen) >= 15:
                break
            time.sleep(1)
        assert max(seen) == 2, seen
        assert prog.done < 0.16 * n_todo  # see the arithmetic in the docstring
        rep = g.snapshot()
        workers = [n for n in rep["nodes"] if n["role"] == "worker"]
        assert len(workers) == 2 and {n["instance_type"] for n in workers} == {"g4dn.xlarge"}
        assert [n["instance_type"] for n in rep["nodes"] if n["role"] == "head"] == ["m6i.large"]
        assert rep["price_sources"]["g4dn.xlarge:on_demand"]["usd_per_hour"] == 1.0

        g.budget_usd = 10.0  # phase 2: a larger budget lifts the cap to the config's 4
        assert not step()
        assert g.max_workers() == 4 and cap_in_file(path) == (4, 4)
        t_end = time.monotonic() + 45
        while gpu_workers_alive() < 4 and time.monotonic() < t_end:
            time.sleep(1)
        assert gpu_workers_alive() == 4

        stopped = False  # phase 3: run the budget down on the clock until the governor stops
        for _ in range(200):
            if step(n=1, tick=300):
                stopped = True
                break
        assert stopped
        rep = g.report()
        assert rep["stopped_reason"].startswith("budget")
        assert rep["spent_usd"] <= g.cap_usd < g.budget_usd
        assert cap_in_file(path) == (0, 0)  # the stop scales the workers away
        t_end = time.monotonic() + 45
        while gpu_workers_alive() and time.monotonic() < t_end:
            time.sleep(1)
        assert gpu_workers_alive() == 0
        json.dumps(rep)  # run.json-ready


# -- a real scoring run that stops at its budget and resumes -----------------------------------


class TickingGovernor(BudgetGovernor):
    """Advances its SimClock by `tick_s` per finished video before every check."""

    tick_s = 600.0

    def start(self, n_todo, prog=None):
        self._ticked = 0
        super().start(n_todo, prog)

    def should_stop(self, prog):
        self.clock.advance(self.tick_s * (prog.done - self._ticked))
        self._ticked = prog.done
        return super().should_stop(prog)


def _run_cfg(corpus: Path, out: Path, config: str):
    from dfray.config import DecodeConfig, RunConfig, load_ensemble

    return RunConfig(
        corpus=str(corpus),
        out=str(out),
        run_id="budget",
        ensemble=load_ensemble(config),
        decode=DecodeConfig(n_frames=8),
        address=None,
        write_faces=False,
        extract_actors=1,
        score_actors=1,
        score_batch_videos=1,
        flush_rows=1,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_budget_exhausted_then_resume(tiny_corpus, tmp_path, random_config):
    """Local Ray; the head node ($1/h) is the only node; 600 simulated s per video = $0.167."""
    import ray

    from dfray.budget.journal import SpendJournal, summary
    from dfray.results import RunFolder
    from dfray.runner import EXIT_BUDGET, run_scoring

    cfg = _run_cfg(tiny_corpus, tmp_path / "out", random_config)
    run_root = RunFolder(cfg.out, cfg.run_id, cfg.storage).root
    prices = {"m6i.large": 1.0}
    try:
        g1 = TickingGovernor(
            0.60, prices, head_type="m6i.large", clock=SimClock(), shutdown_s=60, poll_s=0,
            journal=SpendJournal(run_root, cfg.storage),
        )  # fmt: skip
        r1 = run_scoring(cfg, progress=False, governor=g1)
        assert r1.state == "budget_exhausted" and r1.exit_code == EXIT_BUDGET == 3
        folder = RunFolder(cfg.out, cfg.run_id, cfg.storage)
        doc = json.loads(Path(folder.run_json).read_text())
        ids = folder.read_table("videos", columns=["video_id"]).column("video_id").to_pylist()
        assert doc["state"] == "budget_exhausted"
        assert 1 <= len(ids) == len(set(ids)) == r1.scored_now < 6  # one row per finished video
        assert sorted(doc["unscored"]) == sorted(set(_manifest_ids(folder)) - set(ids))
        spend = doc["spend"]
        assert spend["stopped_reason"].startswith("budget")
        # each check: spent + $1/h × (600 s × videos since the last check + 60 s) ≤ cap
        assert spend["spent_usd"] == pytest.approx(r1.scored_now * 600 / 3600, abs=1e-6)
        assert spend["spent_usd"] <= spend["cap_usd"] == pytest.approx(0.60 * 0.98)
        assert spend["usd_per_1000_videos"] == pytest.approx(1000 / 6, rel=1e-6)
        assert [n["role"] for n in spend["nodes"]] == ["head"]
        assert spend["price_sources"] == {
            "m6i.large:on_demand": {"usd_per_hour": 1.0, "source": "override", "as_of": ""}
        }

        g2 = TickingGovernor(
            3.0,
            prices,
            head_type="m6i.large",
            clock=SimClock(),
            shutdown_s=60,
            poll_s=0,
            journal=SpendJournal(run_root, cfg.storage),  # its prior spend: the journal's
        )
        assert g2.prior_spent_usd == pytest.approx(spend["spent_usd"])
        r2 = run_scoring(cfg, progress=False, governor=g2)
        assert r2.state == "complete" and r2.exit_code == 0
        assert r2.scored_now == 6 - r1.scored_now
        doc = json.loads(Path(folder.run_json).read_text())
        ids = folder.read_table("videos", columns=["video_id"]).column("video_id").to_pylist()
        assert doc["state"] == "complete" and "unscored" not in doc
        assert sorted(ids) == sorted(set(ids)) == sorted(_manifest_ids(folder))
        assert doc["launches"] == 2
        assert doc["spend"]["prior_spent_usd"] == pytest.approx(spend["spent_usd"])
        assert doc["spend"]["spent_usd"] == pytest.approx(6 * 600 / 3600, abs=1e-6)
        assert doc["spend"]["stopped_reason"] is None
        journal = summary(run_root, cfg.storage)  # written by the runner's checks
        assert [a["final"] for a in journal.attempts] == [True, True]
        assert journal.spent_usd == pytest.approx(doc["spend"]["spent_usd"], abs=1e-6)
    finally:
        ray.shutdown()


def _manifest_ids(folder) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(folder.manifest, columns=["video_id"]).column("video_id").to_pylist()
