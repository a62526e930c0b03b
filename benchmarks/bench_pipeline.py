"""Benchmark: dfray's Ray Data pipeline against a plain sequential DFDC-style reference.

    python benchmarks/bench_pipeline.py [--videos 16 --seed 3 --max-height 1080 --frames 32
                                         --work /tmp/dfray-bench --out DIR
                                         --config effnet --encoder efficientnet_b0
                                         --input-size 380 --device cpu --json OUT.json]

The default ensemble is one EfficientNet (DFDC 1st-place layout, seeded weights saved the
winner's way, 380 px, `confident`; see bench_models.py); `--config builtin:demo` gives the
meso4 demo ensemble, `--config FILE.yaml` any ensemble.

One run scores the same generated corpus twice:

1. the reference (`benchmarks/reference_scorer.py`): what the DFDC 1st-place script does:
   OpenCV decode, frame-by-frame MTCNN, a thread pool of 6 videos sharing one MTCNN and
   one model, torch's default intra-op threads;
2. dfray's pipeline: `dfray.runner.run_scoring` on a local Ray, fresh run id.

It first CHECKS that both give the same per-video result (same videos, same statuses,
|score difference| <= --tol for ok videos) and prints the largest difference. On a mismatch
it prints the offending videos and exits 1 without any speed comparison. Then it prints
videos/s for both, the ratio, the per-stage seconds per video, the bound the pipeline's
stage costs put on this machine's cores and the pipeline's efficiency against it, and its
start-up cost; `--json` writes the same figures. See benchmarks/README.md.

Exit codes: 0 agree (figures printed), 1 results disagree, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

from reference_scorer import STAGES, WORKERS, ReferenceScorer, list_videos

DEFAULT_WORK = "/tmp/dfray-bench"
TOL = 1e-4
EFFNET = "effnet"  # --config value: the built one-EfficientNet ensemble (bench_models.py)


# --- corpus -------------------------------------------------------------------------------


def ensure_corpus(work: Path, n_videos: int, seed: int, max_height: int) -> Path:
    """`dfray.samples.generate_corpus` into work/, once per (n, seed, max height, generator).

    The folder name carries a hash of the generator's source, so a changed generator gets a
    fresh corpus. The generator writes metadata.json last (atomically), so a folder with a
    metadata.json whose videos all exist is a finished corpus and is reused.
    """
    import hashlib
    import importlib

    samples = importlib.import_module("dfray.samples")  # the module (dfray.samples is the API)

    gen = hashlib.sha256(Path(samples.__file__).read_bytes()).hexdigest()[:8]
    min_height = min(360, max_height)
    root = work / f"corpus-n{n_videos}-seed{seed}-h{min_height}-{max_height}-{gen}"
    meta = root / "metadata.json"
    if meta.exists():
        names = json.loads(meta.read_text())
        if len(names) == n_videos and all((root / n).is_file() for n in names):
            return root
    samples.generate_corpus(
        root, n_videos=n_videos, seed=seed, min_height=min_height, max_height=max_height
    )
    return root


# --- the two scorers ----------------------------------------------------------------------


def run_reference(
    corpus: Path,
    ensemble,
    frames: int,
    device: str,
    threads: int | None,
    log=print,
    workers: int = WORKERS,
) -> dict:
    import torch

    prev_threads = torch.get_num_threads()  # --ref-threads sets its own; put it back after
    t0 = time.perf_counter()
    scorer = ReferenceScorer(
        ensemble, n_frames=frames, device=device, threads=threads, workers=workers
    )
    t1 = time.perf_counter()

    def on_video(r):
        log(
            f"  reference {r.video_id}: {r.status} score={r.score} faces={r.n_faces} "
            f"({sum(r.wall_s.values()):.1f} s)"
        )

    c1 = time.process_time()
    try:
        results = scorer.score_corpus(str(corpus), on_video=on_video)
    finally:
        torch.set_num_threads(prev_threads)
    t2 = time.perf_counter()
    return {
        "results": [r.to_dict() for r in results],
        "setup_s": t1 - t0,
        "loop_s": t2 - t1,
        "wall_s": t2 - t0,
        "cpu_s": time.process_time() - c1,  # the whole process, all threads, setup excluded
        "threads": scorer.threads,
        "workers": scorer.workers,
    }


class Timeline:
    """Handed to `run_scoring` as its `governor` to time rows reaching the driver.

    run_scoring calls `start()` just before it builds the dataset (after listing and
    ray.init), `planning_resources(cluster)` to size the actor pools (unchanged here),
    `should_stop(prog)` each time a batch of finished rows reaches the driver (and at its
    periodic checks in between), and
    `report()` for run.json. It never stops the run and reports nothing (None).
    """

    def __init__(self):
        self.t_start: float | None = None
        self.arrivals: list[tuple[float, int]] = []  # (perf_counter, rows done so far)

    def start(self, n_todo: int, prog=None) -> None:
        self.t_start = time.perf_counter()

    def planning_resources(self, cluster):
        return dict(cluster)  # plan the actor pools for the cluster as it is

    def should_stop(self, prog) -> bool:
        # also called between batches (periodic checks): keep the calls where rows arrived
        done = int(prog.done)
        if done and (not self.arrivals or done != self.arrivals[-1][1]):
            self.arrivals.append((time.perf_counter(), done))
        return False

    def report(self):
        return None


class RayCpuSampler:
    """CPU seconds of Ray's processes on this machine and of this script's children,
    sampled every `every_s`.

    With a local Ray started by this process, raylet, GCS and every Ray worker are its
    descendants; with `cluster` (a Ray started by `ray start --head` on this machine,
    `--address`), also this user's processes that are Ray's: `raylet`, `gcs_server`,
    `ray::…` workers and the Python daemons inside the ray package, and their children.
    Actor workers carry their class in their process title
    (`ray::MapWorker(MapBatches(_Extract))`); the calibration child (dfray.calibration) is
    the script's multiprocessing child. CPU of a process after its last sample is lost (at
    most `every_s` each). Finds only this script's children on a remote cluster.
    """

    def __init__(self, every_s: float = 0.5, cluster: bool = False):
        import threading

        self.every_s = every_s
        self.cluster = cluster
        self.roots: list[int] = []
        self.cpu: dict[int, tuple[str, float]] = {}  # pid -> (kind, cumulative CPU s)
        self.titles: dict[int, str] = {}  # pid -> its process title (a Ray one once it has one)
        self.series: list[tuple[float, dict[str, float]]] = []  # (perf_counter, totals)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ray-cpu-sampler", daemon=True)

    @staticmethod
    def _kind(title: str) -> str:
        if "multiprocessing.spawn" in title:
            return "calibration"
        if "_ExtractScore" in title:
            return "fused_actors"
        if "_Extract" in title:
            return "extract_actors"
        if "_Score" in title:
            return "score_actors"
        return "other_ray"

    def _sample(self) -> None:
        import psutil

        for p in self._processes():
            try:
                with p.oneshot():
                    cmd = p.cmdline()
                    title = " ".join(cmd[:1])
                    if "multiprocessing.spawn" in " ".join(cmd):
                        title = "dfray-calibration (multiprocessing.spawn)"
                    t = p.cpu_times()
                kind = self._kind(title)
                prev = self.cpu.get(p.pid)
                if prev is not None and prev[0] != "other_ray" and kind == "other_ray":
                    kind = prev[0]  # a dying actor loses its title; keep its kind
                self.cpu[p.pid] = (kind, t.user + t.system)
                short = _short_title(title)
                if "(" in short or "(" not in self.titles.get(p.pid, ""):
                    self.titles[p.pid] = short  # an actor's class name outlives its end
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        if hasattr(self, "base"):
            self.series.append((time.perf_counter(), self.totals()))

    def _processes(self) -> list:
        """This script's descendants and (`cluster`) those of the Ray processes found
        when sampling began: one pass over the process table's parent ids a sample (the
        cheap attribute; command lines only of the processes kept)."""
        import psutil

        kids: dict[int, list] = {}
        for p in psutil.process_iter(["ppid"]):
            kids.setdefault(p.info["ppid"], []).append(p)
        found, todo = [], [os.getpid(), *self.roots]
        seen = set(todo)
        found += [p for p in map(_process, self.roots) if p is not None]
        while todo:
            for c in kids.get(todo.pop(), []):
                if c.pid not in seen:
                    seen.add(c.pid)
                    found.append(c)
                    todo.append(c.pid)
        return found

    def _cluster_roots(self) -> list[int]:
        """This user's Ray processes not started by this script (a `ray start` cluster)."""
        import psutil

        uid, mine = os.getuid(), {c.pid for c in psutil.Process().children(recursive=True)}
        roots = []
        for p in psutil.process_iter(["cmdline", "uids"]):
            try:
                if (p.pid not in mine and p.info["uids"].real == uid
                        and _is_ray(p.info["cmdline"] or [])):
                    roots.append(p.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return roots

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def __enter__(self):
        self.roots = self._cluster_roots() if self.cluster else []
        self._sample()
        self.base = dict(self.cpu)  # processes already running: count only their increase
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        return False

    def totals(self, by_title: bool = False) -> dict[str, float]:
        """CPU seconds since __enter__ per kind, or (`by_title`) per process title."""
        out: dict[str, float] = {}
        for pid, (kind, cpu) in self.cpu.items():
            base = self.base.get(pid, (kind, 0.0))[1]
            key = self.titles.get(pid, kind) if by_title else kind
            out[key] = out.get(key, 0.0) + cpu - base
        return out


def _process(pid: int):
    import psutil

    try:
        return psutil.Process(pid)
    except psutil.NoSuchProcess:
        return None


def _is_ray(cmdline: list[str]) -> bool:
    """A process of a local Ray cluster: its daemons, its workers, its Python services."""
    if not cmdline:
        return False
    head = cmdline[0]
    return (head.startswith("ray::") or os.path.basename(head) in ("raylet", "gcs_server")
            or any(f"{os.sep}ray{os.sep}" in a and a.endswith(".py") for a in cmdline[:3]))


def _short_title(title: str) -> str:
    """`raylet`, `gcs_server`, `ray::IDLE`, `ray::MapWorker(MapBatches(_Extract))`: a
    process's name without its folder and arguments."""
    head = title.split()[0] if title.split() else "?"
    return head if head.startswith("ray::") else os.path.basename(head)


def run_pipeline(
    corpus: Path,
    out: Path,
    ensemble,
    frames: int,
    device: str,
    score_batch_videos: int | None = None,
    startup_run: bool = True,
    cpu_runtime: str = "torch",
    address: str | None = None,
) -> dict:
    """ray.init (or, with `address`, connect to a running Ray), then (optionally) a
    1-video run, then the full run, each a fresh run id.

    The 1-video run measures the fixed cost of a run_scoring call (listing, run folder,
    Ray Data planning, worker and actor start, model loads, final writes): its wall time
    minus the seconds its one video spent in decode/detect/score. Each run_scoring call
    starts its actors from scratch, so the full run pays the same cost once.
    """
    import ray

    from dfray.config import DecodeConfig, RunConfig
    from dfray.results import RunFolder, read_videos
    from dfray.runner import init_ray, run_scoring

    stamp = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    kw = {} if score_batch_videos is None else {"score_batch_videos": score_batch_videos}
    cfg = RunConfig(
        corpus=str(corpus),
        out=str(out),
        run_id=stamp,
        ensemble=ensemble,
        decode=DecodeConfig(n_frames=frames),
        device=device,
        cpu_runtime=cpu_runtime,
        address=address,
        **kw,
    )
    was_up = ray.is_initialized() or bool(address)
    t0 = time.perf_counter()
    init_ray(cfg.address)  # run_scoring skips its own ray.init when Ray is up
    ray_init_s = time.perf_counter() - t0

    one_video_s = one_video_work_s = None
    if startup_run:
        t = time.perf_counter()
        first = run_scoring(replace(cfg, run_id=f"{stamp}-1video", limit=1), progress=False)
        one_video_s = time.perf_counter() - t
        (row,) = read_videos(first.run_dir).to_pylist()
        one_video_work_s = sum(row.get(c) or 0.0 for c in ("decode_s", "detect_s", "score_s"))

    timeline = Timeline()
    c0 = time.process_time()
    with RayCpuSampler(cluster=bool(address)) as sampler:
        t2 = time.perf_counter()
        result = run_scoring(cfg, progress=False, governor=timeline)
        t3 = time.perf_counter()
    driver_cpu = time.process_time() - c0
    rows = read_videos(result.run_dir).to_pylist()
    layout = json.loads(Path(result.run_dir, "run.json").read_text())["attempts"][-1]["layout"]
    faces = RunFolder.at(result.run_dir).read_table(
        "faces", columns=["video_id", "frame_index", "box"]
    )
    return {
        "run_dir": result.run_dir,
        "state": result.state,
        "rows": rows,
        "faces": [] if faces is None else faces.to_pylist(),
        "ray_was_running": was_up,
        "ray_init_s": ray_init_s,
        "one_video_run_s": one_video_s,
        "one_video_work_s": one_video_work_s,
        "run_s": t3 - t2,
        "wall_s": ray_init_s + (t3 - t2),  # what a user waits for: ray.init + run_scoring
        "prepare_s": (timeline.t_start - t2) if timeline.t_start else None,
        "arrivals": [(t - t2, n) for t, n in timeline.arrivals],
        "cpu_s": {**sampler.totals(), "driver": driver_cpu},
        "cpu_s_by_process": {k: round(v, 2) for k, v in sorted(
            sampler.totals(by_title=True).items(), key=lambda kv: -kv[1])},
        "cpu_series": [
            (round(t - t2, 2), {k: round(v, 2) for k, v in d.items()}) for t, d in sampler.series
        ],
        "extract_actors_max": (layout.get("extract") or {}).get("actors"),
        "score_actors_max": (layout.get("score") or {}).get("actors"),
        "layout": layout,
        "score_batch_videos": cfg.score_batch_videos,
        "cpu_runtime": cfg.cpu_runtime,
        "ray_cpus": float(ray.cluster_resources().get("CPU", 0)),
    }


# --- the check ----------------------------------------------------------------------------


def compare_boxes(pipeline_faces: list[dict], reference_rows: list[dict]) -> dict:
    """Per video, MTCNN boxes of the pipeline (faces table: video_id, frame_index, box)
    against the reference's (`boxes`: frame index, x1, y1, x2, y2), both full-resolution
    floats before int(). Faces are paired within a frame in x1 order. Returns
    video_id -> {n_faces, max_abs_delta (px), n_crops_differ (faces whose int() box differs),
    frames_differ (frames whose face count differs)}."""
    import numpy as np

    def by_frame(items):
        out: dict[int, list] = {}
        for fi, box in items:
            out.setdefault(int(fi), []).append([float(v) for v in box])
        return {k: sorted(v) for k, v in out.items()}

    pipe: dict[str, list] = {}
    for f in pipeline_faces:
        pipe.setdefault(f["video_id"], []).append((f["frame_index"], f["box"]))
    out = {}
    for r in reference_rows:
        if "boxes" not in r:
            continue
        a = by_frame(pipe.get(r["video_id"], []))
        b = by_frame((x[0], x[1:]) for x in r["boxes"])
        max_d, n_diff, frames_differ = 0.0, 0, []
        for fi in sorted(set(a) | set(b)):
            pa, pb = a.get(fi, []), b.get(fi, [])
            if len(pa) != len(pb):
                frames_differ.append(fi)
                continue
            for x, y in zip(pa, pb, strict=True):
                x, y = np.asarray(x), np.asarray(y)
                max_d = max(max_d, float(np.abs(x - y).max()))
                n_diff += int(np.any(np.trunc(x) != np.trunc(y)))
        out[r["video_id"]] = {
            "n_faces": len(r["boxes"]),
            "max_abs_delta": max_d,
            "n_crops_differ": n_diff,
            "frames_differ": frames_differ,
        }
    return out


def check_agreement(
    pipeline_rows: list[dict],
    reference_rows: list[dict],
    tol: float = TOL,
    boxes: dict | None = None,
) -> dict:
    """Same video set, same statuses, |score difference| <= tol for ok videos.

    Both inputs are lists of dicts with at least video_id, status and score (dfray's
    videos rows; ReferenceResult.to_dict()). `boxes` (from compare_boxes) only adds detail
    to the messages. Returns ok, max_abs_delta (over videos ok in both), n_compared,
    problems (one line each) and per-video deltas.
    """
    pipe = {r["video_id"]: r for r in pipeline_rows}
    ref = {r["video_id"]: r for r in reference_rows}
    problems = []
    for v in sorted(set(pipe) - set(ref)):
        problems.append(f"{v}: scored by the pipeline only")
    for v in sorted(set(ref) - set(pipe)):
        problems.append(f"{v}: scored by the reference only")
    deltas: dict[str, float] = {}
    for v in sorted(set(pipe) & set(ref)):
        p, r = pipe[v], ref[v]
        if p["status"] != r["status"]:
            problems.append(f"{v}: status pipeline={p['status']} reference={r['status']}")
            continue
        if p["status"] != "ok":
            continue
        if p["score"] is None or r["score"] is None:
            problems.append(
                f"{v}: ok without a score (pipeline={p['score']}, reference={r['score']})"
            )
            continue
        d = abs(float(p["score"]) - float(r["score"]))
        deltas[v] = d
        if not d <= tol:  # also catches NaN
            n_p, n_r = p.get("n_faces"), r.get("n_faces")
            faces = f", faces pipeline={n_p} reference={n_r}" if n_p != n_r else ""
            bx = (boxes or {}).get(v)
            if bx is not None:
                faces += (
                    f"; MTCNN boxes: max |Δ| {bx['max_abs_delta']:.2g} px, "
                    f"{bx['n_crops_differ']} of {bx['n_faces']} crops differ after int()"
                )
                if bx["frames_differ"]:
                    faces += f", face count differs in frames {bx['frames_differ']}"
            problems.append(
                f"{v}: |Δscore| = {d:.3g} > {tol:g} (pipeline={p['score']:.6f}, "
                f"reference={r['score']:.6f}{faces})"
            )
    return {
        "ok": not problems,
        "tol": tol,
        "max_abs_delta": max(deltas.values()) if deltas else None,
        "n_videos": len(set(pipe) | set(ref)),
        "n_compared": len(deltas),
        "problems": problems,
        "deltas": deltas,
    }


# --- the figures --------------------------------------------------------------------------


def _mean(values) -> float | None:
    values = [float(v) for v in values if v is not None]
    return sum(values) / len(values) if values else None


def n_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def summarize(pipe: dict, ref: dict, check: dict, cores: int) -> dict:
    n = len(pipe["rows"])
    stage_cols = {"decode": "decode_s", "detect": "detect_s", "score": "score_s"}
    ok_rows = [r for r in pipe["rows"] if r["status"] == "ok"]
    pipe_stage = {s: _mean(r.get(c) for r in ok_rows) for s, c in stage_cols.items()}
    ok_ref = [r for r in ref["results"] if r["status"] == "ok"]
    ref_wall = {s: _mean(r["wall_s"].get(s) for r in ok_ref) for s in STAGES}
    ref_cpu = {s: _mean(r["cpu_s"].get(s) for r in ok_ref) for s in STAGES}

    # Start-up from the 1-video run (see run_pipeline): its wall minus the time its video
    # spent in the stages is the fixed cost of a run_scoring call; plus ray.init.
    startup = run_startup = pipe_excl = None
    if pipe["one_video_run_s"] is not None:
        run_startup = max(0.0, pipe["one_video_run_s"] - pipe["one_video_work_s"])
        startup = pipe["ray_init_s"] + run_startup
        if pipe["run_s"] > run_startup:
            pipe_excl = n / (pipe["run_s"] - run_startup)
    pipe_incl = n / pipe["wall_s"]
    n_ref = len(ref["results"])
    ref_incl = n_ref / ref["wall_s"]
    ref_excl = n_ref / ref["loop_s"]

    # The bound from the stages' own costs: CPU seconds per video of the processes that ran
    # the stages (their start-up — imports, model loads — included): the actor pools, and
    # the calibration child, which does the run's first video outside Ray (dfray/layout.py).
    # Not the rows' stage seconds: those are wall times, and with each pool able to fill
    # the machine they include waiting for a core the other pool holds.
    cpu = pipe["cpu_s"]
    row_sum = _sum(pipe_stage)
    shares = {s: (v / row_sum if v and row_sum else 0.0) for s, v in pipe_stage.items()}
    # a process that ran both stages (the one pool of CPU-only nodes, the calibration
    # child) has its CPU split by the rows' stage seconds (one thread: wall ~ CPU)
    e_share = shares["decode"] + shares["detect"]
    both = cpu.get("fused_actors", 0.0) + cpu.get("calibration", 0.0)
    stage_cpu = {"extract": (cpu.get("extract_actors", 0.0) + both * e_share) / n,
                 "score": (cpu.get("score_actors", 0.0) + both * (1 - e_share)) / n}
    per_video = sum(stage_cpu.values())
    bound = cores / per_video if per_video > 0 else None
    cpu_shares = {s: (v / per_video if per_video else 0.0) for s, v in stage_cpu.items()}
    limiting = max(cpu_shares, key=cpu_shares.get)
    # a pool cannot go faster than the cores its actors can hold / its CPU cost per video
    pool_caps = {
        "extract": (min(pipe["extract_actors_max"] or 0, cores) / stage_cpu["extract"]
                    if stage_cpu["extract"] else None),
        "score": (min(pipe["score_actors_max"] or 0, cores) / stage_cpu["score"]
                  if stage_cpu["score"] else None),
    }
    ref_by_id = {x["video_id"]: x for x in ref["results"]}
    pipe_by_id = {x["video_id"]: x for x in pipe["rows"]}
    per_video_scores = {}
    for v in sorted(set(ref_by_id) | set(pipe_by_id)):
        p, r = pipe_by_id.get(v, {}), ref_by_id.get(v, {})
        per_video_scores[v] = {
            "status": p.get("status"),
            "pipeline": p.get("score"),
            "reference": r.get("score"),
            "abs_delta": check["deltas"].get(v),
            "n_faces_pipeline": p.get("n_faces"),
            "n_faces_reference": r.get("n_faces"),
            "width": p.get("width"),
            "height": p.get("height"),
            "n_frames": p.get("n_frames"),
        }
    return {
        "n_videos": n,
        "n_cores": cores,
        "pipeline": {
            "videos_per_s": pipe_incl,
            "videos_per_s_excl_startup": pipe_excl,
            "wall_s": pipe["wall_s"],
            "startup_s": startup,
            "ray_init_s": pipe["ray_init_s"],
            "ray_was_running": pipe["ray_was_running"],
            "prepare_s": pipe["prepare_s"],
            "one_video_run_s": pipe["one_video_run_s"],
            "one_video_work_s": pipe["one_video_work_s"],
            "run_scoring_startup_s": run_startup,
            "run_scoring_s": pipe["run_s"],
            "rows_reached_driver_at_s": pipe["arrivals"],
            "cpu_s_series": pipe["cpu_series"],  # (s into run_scoring, CPU s so far by kind)
            "stage_s_per_video": pipe_stage,
            "process_cpu_s": pipe["cpu_s"],
            "process_cpu_s_by_title": pipe["cpu_s_by_process"],
            "process_cpu_s_per_video": {k: v / n for k, v in pipe["cpu_s"].items()},
            "extract_actors_max": pipe["extract_actors_max"],
            "score_actors_max": pipe["score_actors_max"],
            "score_batch_videos": pipe["score_batch_videos"],
            "cpu_runtime": pipe["cpu_runtime"],
            "layout": pipe["layout"],
            "run_dir": pipe["run_dir"],
        },
        "reference": {
            "videos_per_s": ref_incl,
            "videos_per_s_excl_startup": ref_excl,
            "wall_s": ref["wall_s"],
            "setup_s": ref["setup_s"],
            "threads": ref["threads"],
            "workers": ref["workers"],
            "process_cpu_s": ref["cpu_s"],
            "process_cpu_s_per_video": ref["cpu_s"] / n_ref,
            "stage_wall_s_per_video": ref_wall,
            "stage_cpu_s_per_video": ref_cpu,
        },
        "ratio": pipe_incl / ref_incl,
        "ratio_excl_startup": (pipe_excl / ref_excl) if pipe_excl is not None else None,
        "bound": {
            "stage_cpu_s_per_video": stage_cpu,
            "cpu_s_per_video": per_video,
            "cpu_shares": cpu_shares,
            "videos_per_s": bound,
            "limiting_stage": limiting,
            "stage_shares": shares,
            "pool_caps_videos_per_s": pool_caps,
            "efficiency": pipe_incl / bound if bound else None,
            "efficiency_excl_startup": (pipe_excl / bound) if bound and pipe_excl else None,
        },
        "per_video": per_video_scores,
    }


def _f(v, fmt=".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def format_report(s: dict) -> str:
    p, r, b, c = s["pipeline"], s["reference"], s["bound"], s["check"]
    lines = [
        f"videos: {s['n_videos']}   cores: {s['n_cores']}   check: AGREE, max |Δscore| "
        f"{_f(c['max_abs_delta'], '.2e')} over {c['n_compared']} ok videos (tol {c['tol']:g})",
        _boxes_line(c.get("boxes")),
        "",
        f"{'':30}{'pipeline':>10}{'reference':>11}{'ratio':>8}",
        f"{'videos/s incl. start-up':30}{_f(p['videos_per_s']):>10}"
        f"{_f(r['videos_per_s']):>11}{_f(s['ratio'], '.2f'):>8}",
        f"{'videos/s excl. start-up':30}{_f(p['videos_per_s_excl_startup']):>10}"
        f"{_f(r['videos_per_s_excl_startup']):>11}{_f(s['ratio_excl_startup'], '.2f'):>8}",
        f"{'wall s':30}{_f(p['wall_s'], '.1f'):>10}{_f(r['wall_s'], '.1f'):>11}",
        f"{'start-up s':30}{_f(p['startup_s'], '.1f'):>10}{_f(r['setup_s'], '.1f'):>11}",
        "",
        f"{'s per video':14}{'pipeline rows':>14}{'ref wall':>10}{'ref CPU':>10}{'share':>8}",
    ]
    for st in STAGES:
        lines.append(
            f"{st:14}{_f(p['stage_s_per_video'][st]):>14}"
            f"{_f(r['stage_wall_s_per_video'][st]):>10}{_f(r['stage_cpu_s_per_video'][st]):>10}"
            f"{b['stage_shares'][st]:>8.0%}"
        )
    lines.append(
        f"{'sum':14}{_f(_sum(p['stage_s_per_video'])):>14}"
        f"{_f(_sum(r['stage_wall_s_per_video'])):>10}"
        f"{_f(_sum(r['stage_cpu_s_per_video'])):>10}"
    )
    pc = p["process_cpu_s_per_video"]
    caps = b["pool_caps_videos_per_s"]
    lines += [
        "",
        "process CPU s per video (incl. start-up): pipeline "
        + (f"extract + score actors (one pool) {_f(pc.get('fused_actors'))}, "
           if pc.get("fused_actors") else
           f"extract actors {_f(pc.get('extract_actors'))}, score actors "
           f"{_f(pc.get('score_actors'))}, ")
        + (f"calibration child {_f(pc.get('calibration'))}, " if pc.get("calibration") else "")
        + f"other Ray {_f(pc.get('other_ray'))}, driver {_f(pc.get('driver'))}; "
        f"reference {_f(r['process_cpu_s_per_video'])} ({r['workers']} worker threads, "
        f"{r['threads']} torch threads)",
        f"bound: {s['n_cores']} cores / {_f(b['cpu_s_per_video'])} CPU s per video of the "
        f"stage processes = {_f(b['videos_per_s'])} videos/s; limiting stage: "
        f"{b['limiting_stage']} ({b['cpu_shares'][b['limiting_stage']]:.0%} of the work); "
        f"pool caps: extract {_f(caps['extract'])} ({p['extract_actors_max']} actors), score "
        f"{_f(caps['score'])} ({p['score_actors_max']} actors) videos/s",
        f"pipeline efficiency vs bound: {_f(b['efficiency'], '.0%')} incl. start-up, "
        f"{_f(b['efficiency_excl_startup'], '.0%')} excl. start-up",
        f"pipeline start-up {_f(p['startup_s'], '.1f')} s = ray.init "
        f"{_f(p['ray_init_s'], '.1f')}"
        + (" (Ray already running)" if p["ray_was_running"] else "")
        + f" + run_scoring start-up {_f(p['run_scoring_startup_s'], '.1f')} (listing, Ray Data "
        f"planning, actor start: 1-video run {_f(p['one_video_run_s'], '.1f')} s minus its "
        "video's stage time); rows reached the driver at "
        + ", ".join(f"{t:.1f} s ({k} rows)" for t, k in p["rows_reached_driver_at_s"]),
    ]
    return "\n".join(lines)


def _boxes_line(bx: dict | None) -> str:
    if not bx or not bx["n_faces"]:
        return "MTCNN boxes: -"
    return (
        "MTCNN boxes, pipeline (batched) vs reference (per frame): max |Δ| "
        f"{_f(bx['max_abs_delta_px'], '.2g')} px before int(), {bx['n_crops_differ']} of "
        f"{bx['n_faces']} crops differ, {bx['n_frames_face_count_differs']} frames with "
        "another face count"
    )


def _sum(d: dict) -> float | None:
    vals = [v for v in d.values() if v is not None]
    return sum(vals) if vals else None


# --- CLI ----------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="bench_pipeline.py",
        description="Score one generated corpus with dfray's pipeline and with a sequential "
        "DFDC-style reference; check they agree, then compare speed.",
    )
    ap.add_argument("--videos", type=int, default=16, help="corpus size (default 16)")
    ap.add_argument("--seed", type=int, default=3, help="corpus seed (default 3)")
    ap.add_argument(
        "--max-height",
        type=int,
        default=1080,
        help="largest frame height; sizes are 360p..this (default 1080)",
    )
    ap.add_argument("--frames", type=int, default=32, help="frames sampled per video")
    ap.add_argument(
        "--work",
        default=DEFAULT_WORK,
        help=f"where the corpus is generated and reused (default {DEFAULT_WORK})",
    )
    ap.add_argument("--out", default=None, help="pipeline run folders (default WORK/runs)")
    ap.add_argument(
        "--config",
        default=EFFNET,
        help=f"{EFFNET!r} (default): one EfficientNet built by bench_models.py (--encoder, "
        "--input-size, confident); builtin:demo (meso4) or an ensemble YAML",
    )
    ap.add_argument(
        "--encoder",
        default=None,
        help="timm encoder of the built EfficientNet (default efficientnet_b0)",
    )
    ap.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="input size of the built EfficientNet in px (default 380)",
    )
    ap.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="device for both scorers (default cpu)",
    )
    ap.add_argument(
        "--ref-threads",
        type=int,
        default=None,
        help="torch intra-op threads of the reference (default: torch's default)",
    )
    ap.add_argument(
        "--ref-workers",
        type=int,
        default=WORKERS,
        help=f"videos the reference scores at a time, threads sharing one MTCNN and one "
        f"model (default {WORKERS}, as the DFDC 1st-place script)",
    )
    ap.add_argument(
        "--score-batch-videos",
        type=int,
        default=None,
        help="pipeline score batch in videos (default: RunConfig's)",
    )
    ap.add_argument(
        "--cpu-runtime",
        default="torch",
        choices=("torch", "onnxruntime"),
        help="the pipeline's --cpu-runtime (default torch; the reference always runs torch, "
        "as the winner's script)",
    )
    ap.add_argument("--tol", type=float, default=TOL, help="max |Δscore| (default 1e-4)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument(
        "--no-startup-run",
        action="store_true",
        help="skip the 1-video run that measures start-up (no figures excluding start-up)",
    )
    ap.add_argument(
        "--address",
        default=None,
        help="run the pipeline on this running Ray (e.g. auto, after `ray start --head` "
        "on this machine) instead of starting one: the start-up of a run on a warm local "
        "cluster, as with `ray job submit`; its idle daemons run beside the reference too",
    )
    ap.add_argument("--quiet", action="store_true", help="no per-video progress lines")
    args = ap.parse_args(argv)
    if args.videos < 1 or args.frames < 1 or args.max_height < 64:
        ap.error("--videos and --frames must be >= 1 and --max-height >= 64")
    if args.ref_threads is not None and args.ref_threads < 1:
        ap.error("--ref-threads must be >= 1")
    if args.ref_workers < 1:
        ap.error("--ref-workers must be >= 1")
    if args.config != EFFNET and (args.encoder or args.input_size):
        ap.error("--encoder and --input-size apply to --config effnet only")
    if args.input_size is not None and args.input_size < 32:
        ap.error("--input-size must be >= 32")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            ap.error("--device cuda: CUDA is not available on this machine")
    return args


def make_ensemble(args, work: Path):
    """(EnsembleConfig, where it came from) for --config."""
    from dfray.config import load_ensemble

    if args.config == EFFNET:
        from bench_models import DEFAULT_ENCODER, DEFAULT_SIZE, bench_ensemble

        ensemble, yml = bench_ensemble(
            work / "weights", args.encoder or DEFAULT_ENCODER, args.input_size or DEFAULT_SIZE
        )
        return ensemble, str(yml)
    return load_ensemble(args.config), args.config


def ensemble_info(ensemble, config_path: str) -> dict:
    from dfray.detectors.weights import resolve_weights

    dets = []
    for d in ensemble.detectors:
        info = {
            "name": d.name,
            "arch": d.arch,
            "weights": d.weights,
            "input_size": d.input_size,
            "aggregation": d.aggregation,
            "options": d.options,
        }
        try:
            info["sha256"] = resolve_weights(d.weights, d.sha256)[1] if d.weights else None
        except Exception as e:  # noqa: BLE001 - only a label for the JSON
            info["sha256"] = f"unknown ({type(e).__name__})"
        dets.append(info)
    return {"config": config_path, "detectors": dets}


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    work = Path(args.work)
    out = Path(args.out) if args.out else work / "runs"
    t = time.perf_counter()
    ensemble, config_path = make_ensemble(args, work)
    log(f"[bench] ensemble {config_path} ready in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    corpus = ensure_corpus(work, args.videos, args.seed, args.max_height)
    log(
        f"[bench] corpus {corpus} ({len(list_videos(str(corpus)))} videos, "
        f"ready in {time.perf_counter() - t:.1f} s)"
    )

    # The reference first, before this script starts Ray (no Ray daemons running beside it).
    log(
        f"[bench] reference: {args.ref_workers} videos at a time, {args.frames} frames, "
        f"device {args.device}"
    )
    ref = run_reference(
        corpus, ensemble, args.frames, args.device, args.ref_threads, log, args.ref_workers
    )
    log(f"[bench] reference done in {ref['wall_s']:.1f} s; pipeline: run_scoring on local Ray")
    pipe = run_pipeline(
        corpus,
        out,
        ensemble,
        args.frames,
        args.device,
        args.score_batch_videos,
        startup_run=not args.no_startup_run,
        cpu_runtime=args.cpu_runtime,
        address=args.address,
    )
    log(f"[bench] pipeline done in {pipe['wall_s']:.1f} s -> {pipe['run_dir']}")

    boxes = compare_boxes(pipe["faces"], ref["results"])
    check = check_agreement(pipe["rows"], ref["results"], args.tol, boxes)
    check["boxes"] = {
        "max_abs_delta_px": max((b["max_abs_delta"] for b in boxes.values()), default=None),
        "n_faces": sum(b["n_faces"] for b in boxes.values()),
        "n_crops_differ": sum(b["n_crops_differ"] for b in boxes.values()),
        "n_frames_face_count_differs": sum(len(b["frames_differ"]) for b in boxes.values()),
    }
    report = {
        "command": " ".join(["python", "benchmarks/bench_pipeline.py", *(argv or sys.argv[1:])]),
        "args": vars(args),
        "corpus": str(corpus),
        "ensemble": ensemble_info(ensemble, config_path),
        "check": {k: v for k, v in check.items() if k != "deltas"},
        "boxes": boxes,
    }
    if not check["ok"]:
        print(
            f"MISMATCH: pipeline and reference disagree (max |Δscore| "
            f"{_f(check['max_abs_delta'], '.3g')}, tol {args.tol:g}); no speed comparison."
        )
        for line in check["problems"]:
            print(f"  {line}")
        print(_boxes_line(check["boxes"]))
        report["deltas"] = check["deltas"]
        _write_json(args.json, report)
        return 1
    summary = summarize(pipe, ref, check, n_cores())
    summary["check"] = report["check"]
    report.update(summary)
    print(format_report(summary))
    _write_json(args.json, report)
    return 0


def _write_json(path: str | None, doc: dict) -> None:
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
