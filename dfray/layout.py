"""How many actors each stage gets, with how many cores and torch threads each (pure
arithmetic; the runner measures the costs and applies the plan).

Costs are CPU seconds per video on one thread: `extract_s` (read + decode + MTCNN + crop)
and `score_s` (the detector ensemble). They come, in this order, from a run named with
`--costs-from`, from earlier attempts of the same run (run.json stats), from a calibration
(the first video, processed on one thread in a child process while Ray starts; used only
if it is done when the pools are planned, which a fresh local Ray rarely allows — the run
does not wait for it), or from defaults. On CPU nodes the costs set the logical CPU
reservations and the bound, not the actor counts; on GPU nodes, the bound.

CPU-only nodes. On C cores the work of one video is extract_s + score_s CPU seconds, so no
layout beats C / (extract_s + score_s) videos/s (the bound). Each stage gets enough actors
to fill the machine on its own — floor(C) actors of one torch thread (processes scale better
than intra-op threads: an EfficientNet-B0 batch at 380 px takes 4.4 s on one thread and
3.1 s on two) — so no core idles whichever stage has work: while both run, the OS shares
the cores between their processes and the cheaper stage catches up and waits; when the
extract stage has run through the corpus (Ray Data's object-store backpressure lets it run
far ahead when faces are small), the score stage's backlog still gets every core. Sizing
the pools by cost shares instead (one B0 score actor beside two extract actors on two
cores) left the second core idle for the last 70 s of a 190-s run (benchmarks/RESULTS.md,
2026-12-07), and it rested on one video's noisy timings. Logical CPU reservations are the
stage cost shares of C, so Ray schedules all actors at once. Where memory does not allow
that many actors (big ensembles), fewer actors get more threads each.

On CPU-only nodes the two stages are fused (Layout.fused) when they get the same actors:
one pool whose actors each extract a video and score its faces, a video at a time. Two
pools of floor(C) actors each put 2·floor(C) processes on C cores, move every video's
crops through the object store and hold two sets of models; the fused pool spent 8% fewer
actor CPU seconds per video (4.3 against 4.6, EfficientNet-B0 at 380 px, 48 videos,
benchmarks/RESULTS.md 2026-12-07) and left no stage waiting for the other. The split stays
where it pays: on GPU nodes (decode on the CPU, detectors on the GPU), and where the user
caps one stage's actors (--extract-actors/--score-actors) or memory gives them different
thread counts.

GPU nodes. Each GPU gets one score actor (one core feeding it, the detectors at fp16) and
the other cores run extract actors (decode on the CPU, MTCNN on a slice of the GPU), so a
g5.xlarge-class node (4 vCPUs, one GPU) runs 3 decoders against one GPU and is bound by
decode, not by the detectors.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from dfray.stage import Resources

READ_CPU = 0.05  # logical CPU of Ray Data's read tasks (runs over a face cache)
DRIVER_CPU = 0.1  # held back for the driver and Ray's own processes


@dataclass(frozen=True)
class StageCosts:
    extract_s: float  # CPU s per video of read + decode + detect + crop, one thread
    score_s: float  # CPU s per video of the ensemble, one thread
    source: str

    def __post_init__(self) -> None:
        if not (self.extract_s >= 0 and self.score_s >= 0):
            raise ValueError(f"stage costs must be >= 0, got {self}")


# Measured on the 2-core CI machine with the meso4 demo detector (benchmarks/RESULTS.md);
# used only when nothing better is known.
DEFAULT_COSTS = StageCosts(extract_s=4.3, score_s=0.5, source="default")


@dataclass(frozen=True)
class StagePlan:
    actors: int
    cpus: float  # logical CPUs reserved per actor
    gpus: float  # GPU share per actor
    threads: int  # torch intra-op threads per actor


@dataclass(frozen=True)
class Layout:
    extract: StagePlan | None  # None: no extract stage (scoring a face cache)
    score: StagePlan | None  # None: no score stage (building a face cache)
    costs: StageCosts
    use_gpu: bool
    bound_videos_per_s: float | None  # what the costs allow on these resources
    # both stages in each actor of one pool (CPU-only nodes, equal actor counts): the
    # extract plan's actors, each with the two stages' reservations
    fused: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def fused_plan(self) -> StagePlan:
        """The one pool of a fused layout: its actors hold both stages."""
        e, s = self.extract, self.score
        return StagePlan(actors=e.actors, cpus=round(e.cpus + s.cpus, 3), gpus=0.0,
                         threads=e.threads)


def _down(cpus: float) -> float:
    """A per-actor reservation to 3 decimals, rounded down: the actors' reservations
    together never exceed what the plan gave them."""
    return math.floor(cpus * 1e3 + 1e-9) / 1e3


def plan_layout(
    costs: StageCosts,
    cpus: float,
    gpus: float = 0.0,
    *,
    extract: Resources | None,
    score: Resources | None,
    memory_mb: float | None = None,
    max_extract: int = 0,
    max_score: int = 0,
) -> Layout:
    """The layout for a cluster with `cpus` CPUs and `gpus` GPUs (totals). A stage whose
    Resources is None is not part of the run. `max_*` (0: no limit) cap the actor counts
    (the user's --extract-actors/--score-actors)."""
    if extract is None and score is None:
        raise ValueError("a layout needs at least one stage")
    use_gpu = gpus > 0 and ((extract and extract.gpus) or (score and score.gpus))
    if use_gpu:
        return _gpu_layout(costs, cpus, gpus, extract, score, max_extract, max_score)
    # a face-cache scoring run has read tasks; a corpus run none (its actors read the todo)
    usable = max(1.0, cpus - DRIVER_CPU - (0.0 if extract else READ_CPU))
    e_cost = costs.extract_s if extract else 0.0
    s_cost = costs.score_s if score else 0.0
    total = e_cost + s_cost
    e_share = e_cost / total if total > 0 else (1.0 if extract else 0.0)
    s_share = 1.0 - e_share if score else 0.0
    # enough actors to fill the machine alone, as many of each as memory holds of both
    full = max(1, math.floor(cpus + 1e-9))
    per_pair_mb = sum(r.memory_mb or 0 for r in (extract, score) if r)
    if memory_mb and per_pair_mb:
        full = max(1, min(full, math.floor(memory_mb / per_pair_mb)))
    plans: dict[str, StagePlan | None] = {"extract": None, "score": None}
    for name, res, share, cap in (
        ("extract", extract, e_share, max_extract),
        ("score", score, s_share, max_score),
    ):
        if res is None:
            continue
        n = full
        if cap:
            n = min(n, cap)
        threads = max(1, round(cpus / n))
        plans[name] = StagePlan(actors=n, cpus=_down(max(share, 0.05) * usable / n),
                                gpus=0.0, threads=threads)
    bound = cpus / total if total > 0 else None
    e, s = plans["extract"], plans["score"]
    fused = e is not None and s is not None and e.actors == s.actors and e.threads == s.threads
    return Layout(e, s, costs, False, bound, fused)


def _gpu_layout(costs, cpus, gpus, extract, score, max_extract, max_score) -> Layout:
    n_gpus = max(1, math.floor(gpus + 1e-9))
    n_s = min(n_gpus, max_score) if max_score else n_gpus
    score_plan = (
        StagePlan(actors=n_s, cpus=1.0, gpus=round(score.gpus, 3), threads=1) if score else None
    )
    extract_plan = None
    if extract:
        # one decoder per core the score actors leave; their reservations give the driver
        # its slice (4 vCPUs, one GPU: 3 decoders at 0.967 CPU each)
        left = cpus - (n_s if score else 0)
        n_e = max(1, math.floor(left + 1e-9))
        if max_extract:
            n_e = min(n_e, max_extract)
        cpu_each = min(1.0, max(0.05, (left - DRIVER_CPU) / n_e))
        room = gpus - (score_plan.gpus * n_s if score_plan else 0.0)
        gpu_each = min(extract.gpus, max(0.01, room / n_e))
        extract_plan = StagePlan(actors=n_e, cpus=_down(cpu_each), gpus=round(gpu_each, 3),
                                 threads=1)
    # on GPUs the CPU side (decode) bounds the node: extract actors / decode cost
    bound = (extract_plan.actors / costs.extract_s) if extract_plan and costs.extract_s else None
    return Layout(extract_plan, score_plan, costs, True, bound)


def costs_from_stats(stats: dict, source: str) -> StageCosts | None:
    """Stage costs from a run's run.json `stats` (None if it scored nothing): per-video
    seconds of each stage times the threads its actors ran with."""
    stages = (stats or {}).get("stages") or {}

    def per_video(name: str) -> float | None:
        v = (stages.get(name) or {}).get("s_per_video")
        return float(v) if v is not None else None

    decode, detect, score = per_video("decode"), per_video("detect"), per_video("score")
    if decode is None and detect is None and score is None:
        return None
    threads = ((stats.get("layout") or {}).get("score") or {}).get("threads") or 1
    return StageCosts(
        extract_s=(decode or 0.0) + (detect or 0.0),
        score_s=(score or 0.0) * threads,
        source=source,
    )


def plan_group(n: int, cpus: float, gpus: float, score: Resources,
               memory_mb: float | None = None) -> Layout:
    """The score pool of each of `n` ensembles scored together from one read of a face
    cache (`run_group_scoring`): every ensemble gets its own pool of the same size. CPU
    nodes: the cores are shared out evenly — floor(C / n) actors each (at least one; when
    n > C, fractional reservations so that every pool is scheduled at once), one torch
    thread each, fewer actors where memory does not hold them. GPU nodes: one actor per
    ensemble, each a 1/n slice of the GPUs (at most the score stage's own share)."""
    if n < 1:
        raise ValueError("a group needs at least one ensemble")
    costs = StageCosts(0.0, 1.0, "group (even shares)")
    if gpus > 0 and score.gpus:
        plan = StagePlan(actors=1, cpus=round(min(1.0, max(0.05, (cpus - DRIVER_CPU) / n)), 3),
                         gpus=round(min(score.gpus, gpus / n), 3), threads=1)
        return Layout(None, plan, costs, True, None)
    usable = max(0.1 * n, cpus - DRIVER_CPU - READ_CPU)
    actors = max(1, math.floor(cpus / n + 1e-9))
    if memory_mb and score.memory_mb:
        actors = max(1, min(actors, int(memory_mb / n // score.memory_mb) or 1))
    plan = StagePlan(actors=actors, cpus=round(usable / (n * actors), 3), gpus=0.0, threads=1)
    return Layout(None, plan, costs, False, None)
