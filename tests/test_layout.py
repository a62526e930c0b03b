"""dfray.layout: stage sizing from measured costs (pure arithmetic)."""

import pytest

from dfray.layout import (
    DRIVER_CPU,
    StageCosts,
    costs_from_stats,
    plan_group,
    plan_layout,
)
from dfray.stage import Resources

CPU_EXTRACT = Resources(cpus=1.0, memory_mb=1500)
CPU_SCORE = Resources(cpus=1.0, memory_mb=1000)
GPU_EXTRACT = Resources(cpus=1.0, gpus=0.1, memory_mb=1500)
GPU_SCORE = Resources(cpus=1.0, gpus=0.5, memory_mb=1000)

# measured on the 2-core machine (benchmarks/RESULTS.md): CPU s per video on one thread
B0_380 = StageCosts(extract_s=2.9, score_s=4.2, source="calibration")
MESO4 = StageCosts(extract_s=4.3, score_s=0.5, source="calibration")


def _reserved(layout) -> float:
    return sum(p.actors * p.cpus for p in (layout.extract, layout.score) if p)


@pytest.mark.parametrize("costs", [B0_380, MESO4])
@pytest.mark.parametrize("cpus", [2.0, 4.0, 16.0])
def test_cpu_layout_lets_each_stage_fill_the_machine_alone(costs, cpus):
    lay = plan_layout(costs, cpus, extract=CPU_EXTRACT, score=CPU_SCORE)
    total = costs.extract_s + costs.score_s
    assert not lay.use_gpu and lay.costs == costs
    assert lay.bound_videos_per_s == pytest.approx(cpus / total)
    # whichever stage has work gets every core: the score stage's backlog after the
    # extract stage has finished, the extract stage before the first faces arrive
    for plan in (lay.extract, lay.score):
        assert plan.actors == cpus and plan.threads == 1
    # all actors are schedulable at once, leaving the driver its share
    assert _reserved(lay) <= cpus - DRIVER_CPU + 1e-6
    # equal pools on CPU-only nodes run as one pool of actors holding both stages, with
    # both stages' reservations
    assert lay.fused
    fused = lay.fused_plan()
    assert fused.actors == cpus and fused.threads == 1 and fused.gpus == 0
    assert fused.actors * fused.cpus == pytest.approx(_reserved(lay), abs=0.01)


def test_cpu_layout_reserves_cores_by_cost_share():
    b0 = plan_layout(B0_380, 2.0, extract=CPU_EXTRACT, score=CPU_SCORE)
    meso = plan_layout(MESO4, 2.0, extract=CPU_EXTRACT, score=CPU_SCORE)

    def held(plan):
        return plan.actors * plan.cpus

    assert held(b0.score) > held(b0.extract) and held(meso.extract) > held(meso.score)


def test_user_caps_and_memory_limit_actor_counts():
    lay = plan_layout(B0_380, 16.0, extract=CPU_EXTRACT, score=CPU_SCORE,
                      max_extract=3, max_score=2)
    assert (lay.extract.actors, lay.score.actors) == (3, 2)
    assert (lay.extract.threads, lay.score.threads) == (5, 8)  # the cores, as threads
    assert not lay.fused  # a cap on one stage keeps the pools apart
    big = plan_layout(B0_380, 16.0, extract=CPU_EXTRACT, score=Resources(cpus=1.0,
                      memory_mb=8000), memory_mb=20000)
    # 20 GB holds two pairs of a 1.5 GB extract actor and an 8 GB ensemble: two actors a
    # stage, each with half the cores as threads
    assert (big.extract.actors, big.score.actors) == (2, 2)
    assert big.score.threads == 8
    assert big.fused


def test_one_stage_layouts():
    cache_build = plan_layout(MESO4, 4.0, extract=CPU_EXTRACT, score=None)
    assert cache_build.score is None and cache_build.extract.actors == 4
    assert not cache_build.fused
    rescore = plan_layout(B0_380, 4.0, extract=None, score=CPU_SCORE)
    assert rescore.extract is None and rescore.score.actors == 4
    assert rescore.bound_videos_per_s == pytest.approx(4.0 / 4.2)
    with pytest.raises(ValueError):
        plan_layout(B0_380, 4.0, extract=None, score=None)
    with pytest.raises(ValueError):
        StageCosts(-1.0, 1.0, "x")


def test_gpu_node_feeds_the_gpu_from_the_other_cores():
    # a g5.xlarge-class node: 4 vCPUs, one GPU
    lay = plan_layout(B0_380, 4.0, 1.0, extract=GPU_EXTRACT, score=GPU_SCORE)
    assert lay.use_gpu and not lay.fused
    assert (lay.score.actors, lay.score.gpus) == (1, 0.5)
    assert lay.extract.actors == 3 and lay.extract.gpus <= 0.5 / 3 + 1e-9
    assert _reserved(lay) <= 4.0 - DRIVER_CPU + 1e-6  # all schedulable at once
    assert lay.bound_videos_per_s == pytest.approx(3 / B0_380.extract_s)  # decode-bound


def test_costs_from_run_stats_scale_score_time_by_threads():
    stats = {"stages": {"decode": {"s_per_video": 0.5}, "detect": {"s_per_video": 2.0},
                        "score": {"s_per_video": 1.5}},
             "layout": {"score": {"threads": 2}}}
    c = costs_from_stats(stats, "run r")
    assert (c.extract_s, c.score_s, c.source) == (2.5, 3.0, "run r")
    assert costs_from_stats({"stages": {}}, "x") is None


def test_group_pools_share_the_cores_evenly():
    lay = plan_group(3, 8.0, 0.0, CPU_SCORE)
    assert lay.extract is None and lay.score.actors == 2
    assert 3 * lay.score.actors * lay.score.cpus <= 8.0
    many = plan_group(5, 2.0, 0.0, CPU_SCORE)
    assert many.score.actors == 1 and 5 * many.score.cpus <= 2.0
