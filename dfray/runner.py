"""The runner: the only module that touches Ray and Ray Data.

Pipeline (streaming, Ray Data):

    todo.parquet ─read─▶ extract (actor pool) ─crops─▶ score (actor pool) ─rows─▶ driver
                          read+decode+MTCNN+crop        detector ensemble           writes parts

Why the split is here (measured on this 2-core CPU machine, benchmarks/RESULTS.md; 16
videos of 360p-1080p, CPU seconds per video: decode 0.7, detect 3.9-4.3, score 0.5):
- read, decode, detection and cropping share one process: a 1080p video's 32 frames are
  ~200 MB of RGB, while its crops are ~200 KB per face, so nothing bigger than crops
  crosses the object store. MTCNN is ~76% of the per-video cost and decoding ~14%; a
  separate decode stage would move 200 MB per video through the object store to save a
  stage that is a sixth of the work, so they stay fused.
- scoring is its own actor pool because it holds different models and batches faces
  across videos (`score_batch_videos` videos per call): on a GPU the detector forward
  pass wants large batches, which one video's faces alone do not give.
- rows come back to the driver, which is the single writer of immutable Parquet parts:
  exactly-once output falls out of "only the driver writes, and only whole parts", and
  progress, budget checks and resume state all live in one place.

Resources: on nodes with GPUs the extract actors take a slice of a GPU for MTCNN and the
score actors a larger slice for the detectors; without GPUs both run on CPU. Ray Data
gives its actors infinite restarts and task retries; a durable per-video attempt counter
(a small actor on the driver's node) turns a video that keeps killing its worker into an
`error` row after `max_attempts` instead of an endless retry loop.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass

from dfray import results, storage
from dfray.config import RunConfig
from dfray.progress import Progress, format_stage_table

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BUDGET = 3  # the run stopped at its budget; resume with more budget to finish
CRASH_ENV = "DFRAY_TEST_CRASH_ON"  # fault injection for tests: video_id substrings, comma-separated

# Logical resources per actor (CPU-only cluster / with GPUs).
EXTRACT_CPU, SCORE_CPU, READ_CPU = 0.9, 0.1, 0.05
EXTRACT_GPU, SCORE_GPU = 0.2, 0.3


@dataclass(frozen=True)
class RunResult:
    run_dir: str
    state: str  # complete | budget_exhausted
    counts: dict
    n_videos: int
    scored_now: int
    wall_s: float
    exit_code: int


class AttemptTracker:
    """Counts per-video starts and ends; starts without an end are crashes."""

    def __init__(self):
        self.starts: dict[str, int] = {}
        self.ends: dict[str, int] = {}

    def start(self, video_id: str) -> int:
        """Returns the attempt number: 1 + how often the video died mid-processing."""
        crashes = self.starts.get(video_id, 0) - self.ends.get(video_id, 0)
        self.starts[video_id] = self.starts.get(video_id, 0) + 1
        return crashes + 1

    def end(self, video_id: str) -> None:
        self.ends[video_id] = self.ends.get(video_id, 0) + 1


class _Extract:
    """Ray Data adapter around dfray.extract.VideoExtractor (one actor per instance)."""

    def __init__(self, cfg: RunConfig, tracker, use_gpu: bool):
        import ray
        import torch

        # one core's worth of intra-op threads per actor: the pool is the parallelism
        torch.set_num_threads(
            max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
        )

        from dfray.extract import VideoExtractor, extract_schema

        def on_start(vid: str) -> int:
            crash_on = [s for s in os.environ.get(CRASH_ENV, "").split(",") if s]
            attempt = ray.get(tracker.start.remote(vid))
            if attempt <= cfg.max_attempts and any(s in vid for s in crash_on):
                os._exit(17)  # simulate a segfaulting decoder, for tests
            return attempt

        self.tracker = tracker
        self.schema = extract_schema(cfg.ensemble.input_sizes)
        self.stage = VideoExtractor(
            cfg.faces,
            cfg.decode,
            cfg.storage,
            cfg.ensemble.input_sizes,
            device=_device(cfg.device, use_gpu),
            timeout_s=cfg.video_timeout_s,
            max_attempts=cfg.max_attempts,
            on_start=on_start,
        )

    def __call__(self, batch):
        import pyarrow as pa

        out = []
        for row in batch.to_pylist():
            out.append(self.stage(row))
            self.tracker.end.remote(row["video_id"])
        return pa.Table.from_pylist(out, schema=self.schema)


class _Score:
    """Ray Data adapter around dfray.score.EnsembleScorer."""

    def __init__(self, cfg: RunConfig, use_gpu: bool):
        from dfray.score import EnsembleScorer

        self.stage = EnsembleScorer(
            cfg.ensemble,
            device=_device(cfg.device, use_gpu),
            run_id=cfg.run_id,
            storage=cfg.storage,
        )

    def __call__(self, batch):
        import pyarrow as pa

        return pa.Table.from_pylist(self.stage(batch.to_pylist()), schema=self.stage.schema)


def _device(requested: str, use_gpu: bool) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


def init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    kw = dict(logging_level=logging.WARNING, configure_logging=False)
    if address:
        ray.init(address=address, **kw)
    else:
        ray.init(address="local", include_dashboard=False, **kw)


def plan_actors(cfg: RunConfig, cluster: dict) -> dict:
    """Actor pool sizes and per-actor resources for the cluster as it is now."""
    cpus = float(cluster.get("CPU", 1))
    gpus = float(cluster.get("GPU", 0))
    use_gpu = gpus > 0 and cfg.device != "cpu"
    s_min, s_max = 1, cfg.score_actors or 1
    e_min, e_max = 1, cfg.extract_actors
    if use_gpu:
        ex = {"num_cpus": 1, "num_gpus": EXTRACT_GPU}
        sc = {"num_cpus": 1, "num_gpus": SCORE_GPU}
        auto_max = max(1, min(int(cpus - s_max), int(gpus * (1 - SCORE_GPU) / EXTRACT_GPU)))
    else:
        ex = {"num_cpus": EXTRACT_CPU}
        sc = {"num_cpus": SCORE_CPU}
        auto_max = max(
            1, math.floor((cpus - SCORE_CPU * s_max - READ_CPU * 2) / EXTRACT_CPU + 1e-6)
        )
    e_max = e_max or auto_max
    gpu_names = sorted(k.split(":", 1)[1] for k in cluster if k.startswith("accelerator_type:"))
    return {
        "use_gpu": use_gpu,
        "device": ("cuda:" + (",".join(gpu_names) or "gpu")) if use_gpu else "cpu",
        "extract": (min(e_min, e_max), e_max, ex),
        "score": (min(s_min, s_max), s_max, sc),
    }


def _write_todo(
    folder: results.RunFolder, done: set[str], limit: int | None
) -> tuple[str, int, int]:
    """Stream manifest rows without a final row into _todo.parquet; (uri, n_todo, n_total)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(folder.manifest, folder.cfg)
    todo_uri = storage.join(folder.root, "_todo.parquet")
    tfs, tpath = storage.filesystem(todo_uri, folder.cfg)
    n_todo = n_total = 0
    with fs.open_input_file(path) as f:
        src = pq.ParquetFile(f)
        with tfs.open_output_stream(tpath) as sink, pq.ParquetWriter(sink, src.schema_arrow) as w:
            for i in range(src.num_row_groups):
                t = src.read_row_group(i)
                if limit is not None:
                    t = t.slice(0, max(0, limit - n_total))
                n_total += t.num_rows
                keep = [v not in done for v in t.column("video_id").to_pylist()]
                t = t.filter(pa.array(keep, pa.bool_()))
                n_todo += t.num_rows
                if t.num_rows:
                    w.write_table(t)
                if limit is not None and n_total >= limit:
                    break
    return todo_uri, n_todo, n_total


class _Writer:
    """Buffers finished rows in the driver and writes them as immutable parts."""

    def __init__(self, folder: results.RunFolder, cfg: RunConfig):
        names = [d.name for d in cfg.ensemble.detectors]
        self.names = names
        self.folder = folder
        self.write_faces = cfg.write_faces
        self.vschema = results.videos_schema(names)
        self.fschema = results.faces_schema(names)
        self.rows: list[dict] = []
        self.faces: list[dict] = []
        self.flush_rows = cfg.flush_rows
        self.last = time.monotonic()

    def add(self, rows: list[dict]) -> None:
        import numpy as np

        for r in rows:
            self.rows.append(r)
            if not self.write_faces or r.get("status") != "ok":
                continue
            n = int(r["n_faces"])
            fi = np.frombuffer(r["face_frame_index"], np.int32)
            boxes = np.frombuffer(r["face_boxes"], np.float32).reshape(n, 4)
            probs = np.frombuffer(r["face_probs"], np.float32)
            scores = np.frombuffer(r["face_scores"], np.float32).reshape(n, len(self.names))
            per_frame: dict[int, int] = {}
            for i in range(n):
                k = per_frame.get(int(fi[i]), 0)
                per_frame[int(fi[i])] = k + 1
                face = {
                    "video_id": r["video_id"],
                    "frame_index": int(fi[i]),
                    "face_index": k,
                    "box": boxes[i].tolist(),
                    "det_prob": float(probs[i]),
                }
                face.update({f"score_{d}": float(scores[i, j]) for j, d in enumerate(self.names)})
                self.faces.append(face)
        if len(self.rows) >= self.flush_rows or time.monotonic() - self.last > 30:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        self.last = time.monotonic()
        if not self.rows:
            return
        # faces first: a videos row is what marks a video done, so it goes last
        if self.faces:
            self.folder.write_part("faces", pa.Table.from_pylist(self.faces, schema=self.fschema))
        rows = [{k: r.get(k) for k in self.vschema.names} for r in self.rows]
        self.folder.write_part("videos", pa.Table.from_pylist(rows, schema=self.vschema))
        self.rows, self.faces = [], []


def build_dataset(cfg: RunConfig, todo_uri: str, n_todo: int, plan: dict, tracker):
    """The lazy Ray Data pipeline over the todo rows (nothing runs until iterated)."""
    import ray.data
    from ray.data import ActorPoolStrategy

    fs, path = storage.filesystem(todo_uri, cfg.storage)
    ds = ray.data.read_parquet(path, filesystem=fs, num_cpus=READ_CPU)
    # Small blocks: one failed task re-runs few videos, and the pool balances load.
    per_block = max(1, min(8, n_todo // 1000))
    ds = ds.repartition(max(1, math.ceil(n_todo / per_block)))
    e_min, e_max, ex_res = plan["extract"]
    s_min, s_max, sc_res = plan["score"]
    ds = ds.map_batches(
        _Extract,
        fn_constructor_kwargs={"cfg": cfg, "tracker": tracker, "use_gpu": plan["use_gpu"]},
        batch_size=1,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=max(1, e_min), max_size=e_max),
        **ex_res,
    )
    ds = ds.map_batches(
        _Score,
        fn_constructor_kwargs={"cfg": cfg, "use_gpu": plan["use_gpu"]},
        batch_size=cfg.score_batch_videos,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(min_size=max(1, s_min), max_size=s_max),
        **sc_res,
    )
    return ds


def run_scoring(cfg: RunConfig, *, progress: bool = True, governor=None) -> RunResult:
    """Score a corpus into OUT/<run_id>/; resumes if the run folder already has rows."""
    import ray

    from dfray import runinfo
    from dfray.corpus import build_manifest

    t_start = time.monotonic()
    started_at = results.now_utc()
    folder = results.RunFolder(cfg.out, cfg.run_id, cfg.storage)
    storage.makedirs(folder.root, cfg.storage)
    detectors = runinfo.detector_info(cfg)  # resolves weights and checks sha256 up front
    previous = folder.read_run_json()
    if previous is None or not storage.exists(folder.manifest, cfg.storage):
        build_manifest(cfg.corpus, folder.manifest, cfg.storage, cfg.labels)
    done = folder.done_ids()
    todo_uri, n_todo, n_total = _write_todo(folder, done, cfg.limit)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
    say(
        f"[dfray] run {cfg.run_id}: {n_total} videos, {n_total - n_todo} already scored, "
        f"{n_todo} to score -> {folder.root}"
    )
    doc = runinfo.start_doc(cfg, folder, detectors, previous, started_at)
    folder.write_run_json(doc)

    init_ray(cfg.address)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    prog = Progress(total=n_total, already_done=n_total - n_todo, enabled=progress)
    if governor is not None and n_todo:
        governor.start(n_todo=n_todo, prog=prog)  # caps the autoscaler before any demand
    cluster = ray.cluster_resources()
    if governor is not None:
        # size the actor pools for the cluster the budget allows, not the one up now
        # (an autoscaling cluster may have no workers yet)
        cluster = governor.planning_resources(cluster)
    plan = plan_actors(cfg, cluster)
    plan["nodes"] = sum(
        1 for n in ray.nodes() if n.get("Alive") and n["Resources"].get("CPU", 0) > 0
    )
    writer = _Writer(folder, cfg)
    state = "complete"
    if n_todo:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        tracker = (
            ray.remote(AttemptTracker)
            .options(
                num_cpus=0,
                max_restarts=-1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            )
            .remote()
        )
        ds = build_dataset(cfg, todo_uri, n_todo, plan, tracker)
        # rows are small: with prefetch the driver would get each batch only once the next is
        # ready, and progress, parts and budget checks would lag a whole score batch
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None, prefetch_batches=0):
            rows = batch.to_pylist()
            writer.add(rows)
            prog.add(rows)
            if governor is not None and governor.should_stop(prog):
                state = "budget_exhausted"
                break
        writer.flush()
        prog.maybe_print(force=True)
        ray.kill(tracker)
    wall = time.monotonic() - t_start
    workers = {
        "decode": plan["extract"][1],
        "detect": plan["extract"][1],
        "score": plan["score"][1],
    }
    stages = prog.stage_table(wall, workers)
    doc = runinfo.finish_doc(doc, folder, state, prog, stages, wall, plan, governor)
    folder.write_run_json(doc)
    if progress:
        say(format_stage_table(stages))
    storage_cleanup(todo_uri, cfg)
    return RunResult(
        folder.root,
        state,
        doc["counts"],
        n_total,
        prog.done,
        wall,
        EXIT_BUDGET if state == "budget_exhausted" else EXIT_OK,
    )


def storage_cleanup(uri: str, cfg: RunConfig) -> None:
    fs, path = storage.filesystem(uri, cfg.storage)
    try:
        fs.delete_file(path)
    except OSError:
        pass


def calibrate(
    corpus: str,
    n_videos: int = 20,
    storage=None,
    config: str | None = None,
    address: str | None = None,
) -> dict:
    """Score the first `n_videos` of a corpus into a scratch folder; the run's stats.

    Used by `dfray plan` to measure the per-video cost on this cluster."""
    import tempfile

    from dfray.config import RunConfig, StorageConfig, load_ensemble

    with tempfile.TemporaryDirectory(prefix="dfray-calibrate-") as out:
        cfg = RunConfig(
            corpus=corpus,
            out=out,
            run_id="calibrate",
            ensemble=load_ensemble(config),
            storage=storage or StorageConfig(),
            limit=n_videos,
            address=address,
            write_faces=False,
        )
        run_scoring(cfg, progress=False)
        doc = results.RunFolder(out, "calibrate", cfg.storage).read_run_json()
    return doc["stats"]
