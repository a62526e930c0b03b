"""The life of one run: lease, detector check, manifest, todo, Ray, layout, pipeline, the
driver loop, run.json. Three kinds share it:

- `score` of a corpus: extract + score (run.json);
- `score` of a face cache (CORPUS holds cache.json): the cache's faces + score; the
  extraction settings are the cache's;
- `extract`: extract only, into a face cache (cache.json, faces with PNG crops).

Ray starts in the background as soon as the run may have work, while the corpus is listed
and the detectors are checked; a run whose videos all have rows never starts it. On a
local CPU cluster the first video is processed in a child process while Ray starts: its
row is written like any other and its timings size the actor pools (dfray.layout).
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import multiprocessing
import time
from dataclasses import dataclass

from dfray import cache, lease, results, runinfo, storage
from dfray.config import RunConfig
from dfray.layout import DEFAULT_COSTS, StageCosts, costs_from_stats, plan_layout
from dfray.progress import Progress, format_stage_table
from dfray.runner import driver, pipeline
from dfray.runner.session import RayStarter

log = logging.getLogger("dfray")

EXIT_OK = 0
EXIT_BUDGET = 3  # the run stopped at its budget; resume with more budget to finish


@dataclass(frozen=True)
class RunResult:
    run_dir: str
    state: str  # complete | budget_exhausted
    counts: dict
    n_videos: int
    scored_now: int
    wall_s: float
    exit_code: int


@dataclass
class _Source:
    kind: str  # corpus | cache
    cache_doc: dict | None = None


def run_scoring(cfg: RunConfig, *, progress: bool | Progress = True, governor=None,
                verbose: bool = False, costs_from: str | None = None) -> RunResult:
    """Score a corpus or a face cache into OUT/<run_id>/ (resumes if it has rows)."""
    return _run(cfg, "score", progress, governor, verbose, costs_from)


def run_extract(cfg: RunConfig, *, progress: bool | Progress = True,
                verbose: bool = False) -> RunResult:
    """Build a face cache of a corpus in OUT/<run_id>/ (resumes if it has rows)."""
    return _run(cfg, "extract", progress, None, verbose, None)


def _progress(progress) -> Progress:
    return progress if isinstance(progress, Progress) else Progress(enabled=bool(progress))


def _run(cfg, kind, progress, governor, verbose, costs_from) -> RunResult:
    # one writer per run folder, for the whole run (the nothing-to-do path too)
    folder = results.RunFolder(cfg.out, cfg.run_id, cfg.storage)
    with lease.acquire(folder.root, cfg.storage, stale_after_s=cfg.lease_timeout_s):
        return _run_leased(cfg, kind, progress, governor, verbose, costs_from)


def _run_leased(cfg, kind, progress, governor, verbose, costs_from) -> RunResult:
    t_start = time.monotonic()
    started_at = results.now_utc()
    prog = _progress(progress)
    folder = results.RunFolder(cfg.out, cfg.run_id, cfg.storage)
    doc_name = cache.CACHE_JSON if kind == "extract" else "run.json"
    prog.phase(f"run {cfg.run_id} -> {folder.root}")
    source = _Source("corpus")
    if kind == "score" and cache.is_cache(cfg.corpus, cfg.storage):
        source = _Source("cache", _read_json(storage.join(cfg.corpus, cache.CACHE_JSON), cfg))
        decode, faces = cache.configs_from_spec(source.cache_doc)
        cfg = dataclasses.replace(cfg, decode=decode, faces=faces)
    storage.makedirs(folder.root, cfg.storage)
    previous = _read_json(storage.join(folder.root, doc_name), cfg, missing_ok=True)
    starter = None
    if not previous or previous.get("state") != "complete":
        starter = RayStarter(cfg.address, verbose)  # overlaps with listing and checks
    detectors = None
    if kind == "score":
        from dfray.detectors.check import check_detectors

        prog.phase("loading and checking the detectors")
        detectors = check_detectors(cfg.ensemble, cfg.storage)
    runinfo.start_doc(cfg, folder, detectors, previous, started_at, kind)  # refuses a mismatch
    listing = None
    if previous is None or not storage.exists(folder.manifest, cfg.storage):
        prog.phase(f"listing {cfg.corpus}")
        listing = _write_manifest(cfg, folder, source)
        for line in listing.lines() if listing else []:
            log.info(line)
    done = folder.done_ids()
    manifest = results.read_manifest(folder, columns=["video_id"]).column("video_id").to_pylist()
    wanted = manifest if cfg.limit is None else manifest[: cfg.limit]
    n_total = len(wanted)
    if all(v in done for v in wanted):
        return _nothing_to_do(cfg, folder, doc_name, previous, n_total, t_start, prog)

    extra = {"extraction": cache.spec(cfg.decode, cfg.faces)} if kind == "extract" else None
    if source.kind == "cache":
        extra = {"face_cache": cfg.corpus, "extraction": source.cache_doc.get("extraction")}
    if listing is not None:
        extra = {**(extra or {}), "listing": listing.to_dict()}
    doc = runinfo.start_doc(cfg, folder, detectors, previous, started_at, kind, extra)
    _write_json(folder, doc_name, doc)
    if starter is None:
        starter = RayStarter(cfg.address, verbose)
    calib = _start_calibration(cfg, folder, done, source, kind, costs_from, previous)
    prog.phase("starting Ray")
    starter.wait()
    prog.phase("starting the actor pools (model loads)")
    prog.start(n_total, sum(1 for v in wanted if v in done))
    state, attempt = _execute(cfg, kind, source, folder, done, prog, governor, detectors,
                              calib, costs_from, previous, t_start)
    prog.close()
    if state == "complete":
        _compact(cfg, folder, prog)
    doc = runinfo.finish_doc(doc, folder, state, attempt, governor)
    _write_json(folder, doc_name, doc)
    if prog.enabled and attempt:
        log.info("stage table:\n" + format_stage_table(attempt["stages"]))
    wall = time.monotonic() - t_start
    return RunResult(folder.root, state, doc["counts"], n_total, attempt["n_scored"], wall,
                     EXIT_BUDGET if state == "budget_exhausted" else EXIT_OK)


def _execute(cfg, kind, source, folder, done, prog, governor, detectors, calib, costs_from,
             previous, t_start):
    """Run the pipeline over the videos without a row; (state, this attempt's stats)."""
    n_todo_est = prog.total - prog.already_done
    if governor is not None:
        governor.start(n_todo=n_todo_est, prog=prog)  # caps the autoscaler before any demand
    writer = _writer(cfg, folder, kind)
    stopped = False
    replans = 0
    tracker = pipeline.start_tracker()
    layout = None
    try:
        costs = _known_costs(costs_from, previous, cfg, source)
        if costs is None and calib is not None:
            # only if it is done already: on CPU nodes the costs no longer size the pools
            # (dfray.layout), so waiting for them would only delay the run
            costs = calib.costs()
        costs = costs or DEFAULT_COSTS
        nodes = _Nodes()
        child = {calib.video_id} if calib is not None else set()  # its row comes from the child
        done = done | child
        state = {"stop": False, "lost": False}
        finish = cache.finish_row if kind == "extract" else (lambda r: r)

        def on_rows(rows):
            # one row at a time, the budget checked after each: once it says stop, the
            # rest of the batch is not written (a resume scores those videos)
            for row in map(finish, rows):
                writer.add([row])
                prog.add([row])
                if _budget_stop(governor, prog, state):
                    return True
            return False

        def on_tick():
            if calib is not None and calib.ready():
                rows = calib.take_row()
                writer.add(rows)
                prog.add(rows)
            if prog.due():  # a round trip to the tracker: only for a line that is shown
                prog.extracted = _extracted(tracker, prog)
                prog.maybe_print()
            if _budget_stop(governor, prog, state):
                return True
            state["lost"] = nodes.lost()  # the budget first: a stopping run is not re-planned
            return state["lost"]

        while True:
            layout = _layout(cfg, kind, source, _cluster(governor), detectors, costs)
            ds, passthrough = _dataset(cfg, kind, source, folder, done, layout, tracker)
            if passthrough:
                writer.add(passthrough)
                prog.add(passthrough)
            if ds is None:
                break
            stopped = driver.drive(ds, on_rows, on_tick)
            if not state["lost"] or state["stop"]:
                break
            # A node of the pools is gone. Ray Data would restart its actors elsewhere, but
            # a fixed pool planned for the lost node's CPUs or GPU slices has no room for
            # them, and their queued work would wait for ever; so the run stops this
            # pipeline, plans the pools again on the nodes that are left and goes on with
            # the videos that have no row yet (work in flight is done again).
            log.warning("a node left the cluster: the pools are planned again on the %d "
                        "node(s) left", len(nodes.ids))
            state["lost"], stopped = False, False
            pipeline.stop_pools(tracker)
            writer.flush()
            done = folder.done_ids() | child
            replans += 1
        if calib is not None and not calib.taken and not stopped:
            prog.phase("waiting for the calibration video")
            rows = calib.take_row(wait_s=cfg.video_timeout_s + 120)
            if rows:
                writer.add(rows)
                prog.add(rows)
            else:  # the child crashed or hung on it: the pipeline takes it like any other
                ds, _ = _dataset(cfg, kind, source, folder, done - {calib.video_id}, layout,
                                 tracker, only=calib.video_id)
                stopped = driver.drive(ds, on_rows, on_tick) if ds is not None else False
        writer.flush()
    finally:
        devices = pipeline.devices_used(tracker)  # what ran, before the tracker goes
        pipeline.kill(tracker)
        if calib is not None:
            calib.close()
        driver.delete_quietly(storage.join(folder.root, "_todo.parquet"), cfg.storage)
    wall = time.monotonic() - t_start
    extract_n = layout.extract.actors if layout and layout.extract else 0
    score_n = layout.score.actors if layout and layout.score else 0
    stages = prog.stage_table(wall, {"decode": extract_n, "detect": extract_n, "score": score_n})
    attempt = {
        "started_at": results.now_utc().isoformat(),
        "wall_s": round(wall, 3),
        "n_scored": prog.done,
        "videos_per_s": round(prog.done / wall, 4) if wall > 0 else None,
        "device": pipeline.device_label(devices),
        "devices": devices,
        "nodes": pipeline.alive_nodes(),
        "workers": extract_n,
        "score_workers": score_n,
        "layout": layout.to_dict() if layout else None,
        "replanned_after_node_loss": replans,
        "stages": stages,
    }
    return ("budget_exhausted" if stopped else "complete"), attempt


def _cluster(governor) -> dict:
    """The resources to plan the pools on: the cluster's, or (with a budget governor) the
    cluster the budget allows, not the one up now."""
    cluster = pipeline.cluster_resources()
    return governor.planning_resources(cluster) if governor is not None else cluster


class _Nodes:
    """The nodes the pools were planned on; `lost()` says (checked every `every_s`) whether
    one of them has left the cluster since."""

    def __init__(self, every_s: float = 5.0):
        self.every_s = every_s
        self.ids = pipeline.worker_nodes()
        self._next = time.monotonic() + every_s

    def lost(self) -> bool:
        if time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + self.every_s
        try:
            now = pipeline.worker_nodes()
        except Exception:  # noqa: BLE001 - the GCS did not answer: ask again later
            return False
        gone = self.ids - now
        self.ids = now
        return bool(gone)


def _budget_stop(governor, prog, state) -> bool:
    if governor is not None and not state["stop"] and governor.should_stop(prog):
        state["stop"] = True
    return state["stop"]


def _extracted(tracker, prog) -> int:
    import ray

    try:
        return int(ray.get(tracker.extracted.remote(), timeout=0.5))
    except Exception:  # noqa: BLE001 - progress only
        return prog.extracted


# -- layout --------------------------------------------------------------------------------


def _known_costs(costs_from, previous, cfg, source) -> StageCosts | None:
    """Costs from --costs-from, else from this run's earlier attempts."""
    if costs_from:
        doc = _read_run_doc(costs_from, cfg)
        costs = costs_from_stats(doc.get("stats") or {}, f"run {costs_from}")
        if costs is None:
            raise ValueError(f"--costs-from {costs_from}: that run has no stage timings yet")
        return costs
    if previous and previous.get("stats"):
        return costs_from_stats(previous["stats"], "earlier attempts of this run")
    return None


def _read_run_doc(run_dir: str, cfg) -> dict:
    for name in ("run.json", cache.CACHE_JSON):
        doc = _read_json(storage.join(run_dir, name), cfg, missing_ok=True)
        if doc is not None:
            return doc
    raise FileNotFoundError(f"no run.json or cache.json in {run_dir}")


def _layout(cfg, kind, source, cluster, detectors, costs):
    from dfray.extract import VideoExtractor
    from dfray.score import EnsembleScorer

    gpus = float(cluster.get("GPU", 0)) if cfg.device != "cpu" else 0.0
    on_gpu = gpus > 0
    model_mb = sum(d.get("model_mb") or 0 for d in detectors or [])
    layout = plan_layout(
        costs,
        float(cluster.get("CPU", 1)),
        gpus,
        extract=VideoExtractor.resources(on_gpu) if source.kind == "corpus" else None,
        score=EnsembleScorer.resources(on_gpu, model_mb) if kind == "score" else None,
        memory_mb=pipeline.node_memory_mb(),
        max_extract=cfg.extract_actors,
        max_score=cfg.score_actors,
    )
    if layout.fused and (cfg.score_batch_videos or 1) > 1:
        # batches across videos need a score pool of its own to gather them
        layout = dataclasses.replace(layout, fused=False)
    return layout


# -- the calibration child -------------------------------------------------------------------

class _Calibration:
    """The first todo video, processed in a spawned child process (dfray.calibration)."""

    def __init__(self, cfg, row: dict):
        from dfray.calibration import process_one

        self.video_id = row["video_id"]
        self._pool = cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self._future = self._pool.submit(process_one, cfg, row)
        self._taken = False
        self._failed = False

    @property
    def taken(self) -> bool:
        """Its row has been handed to the writer (or it failed and was given up on)."""
        return self._taken

    def ready(self) -> bool:
        return not self._taken and not self._failed and self._future.done()

    def _result(self, wait_s: float) -> dict | None:
        try:
            return self._future.result(timeout=wait_s)
        except Exception as e:  # noqa: BLE001 - crashed, hung or failed: no calibration
            log.debug("calibration video %s: %s", self.video_id, e)
            return None

    def costs(self) -> StageCosts | None:
        """Its stage costs if it is done already (the run does not wait for them)."""
        r = self._result(0.0) if self._future.done() else None
        if not r or r["extract_s"] is None:
            return None
        return StageCosts(r["extract_s"], r["score_s"], "calibration (first video)")

    def take_row(self, wait_s: float = 0.0) -> list[dict]:
        """Its row, once; [] while not ready, after it was taken, or if the child failed
        (then `taken` stays False and the pipeline must process the video)."""
        if self._taken or self._failed:
            return []
        r = self._result(wait_s) if (wait_s > 0 or self._future.done()) else None
        if r is None:
            self._failed = self._future.done() or wait_s > 0
            return []
        self._taken = True
        return [r["row"]]

    def close(self) -> None:
        if not self._future.done():
            for p in list(getattr(self._pool, "_processes", {}).values()):
                p.kill()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _start_calibration(cfg, folder, done, source, kind, costs_from, previous):
    """A calibration child for a local run over a corpus whose costs are not known yet."""
    if (source.kind != "corpus" or cfg.address or cfg.device == "cuda" or costs_from
            or (previous and previous.get("stats"))):
        return None
    first = None
    for row in results.read_manifest(folder).to_pylist():
        if row["video_id"] not in done:
            first = row
            break
    if first is None:
        return None
    if kind == "extract":
        return None  # a cache build writes PNG crops; its costs come from its own rows
    return _Calibration(cfg, first)


# -- datasets ----------------------------------------------------------------------------------


def _dataset(cfg, kind, source, folder, done, layout, tracker, only: str | None = None):
    """(the Ray Dataset or None, rows the driver writes itself)."""
    resources = _resources(layout)
    if source.kind == "cache":
        return _cache_dataset(cfg, folder, done, layout, tracker, resources)
    limit_done = done if only is None else done | _all_but(folder, only)
    todo_uri, n_todo, _ = driver.write_todo(folder, limit_done, cfg.limit,
                                            layout.extract.actors if layout.extract else 1)
    if not n_todo:
        return None, []
    ds = pipeline.corpus_dataset(cfg, todo_uri, layout, tracker, resources,
                                 pngs=kind == "extract")
    return ds, []


def _all_but(folder, video_id: str) -> set[str]:
    ids = results.read_manifest(folder, columns=["video_id"]).column("video_id").to_pylist()
    return {v for v in ids if v != video_id}


def _resources(layout) -> dict:
    from dfray.extract import VideoExtractor
    from dfray.score import EnsembleScorer

    return {
        "extract": VideoExtractor.resources(layout.use_gpu),
        "score": EnsembleScorer.resources(layout.use_gpu),
    }


def _cache_dataset(cfg, folder, done, layout, tracker, resources):
    """Cached videos without a row: final statuses straight from the cache (the driver
    writes them), extracted ones through the score pool, one read task per row group."""
    order = results.read_manifest(folder, columns=["video_id"]).column("video_id").to_pylist()
    if cfg.limit is not None:
        order = order[: cfg.limit]
    final, tasks = cache_plan(cfg, {v for v in order if v not in done})
    passthrough = [_final_from_cache(r, cfg.run_id) for r in final.values()]
    if not tasks:
        return None, passthrough
    return pipeline.cache_dataset(cfg, tasks, layout, tracker, resources), passthrough


def cache_plan(cfg, wanted: set) -> tuple[dict, list[dict]]:
    """For the `wanted` videos of the face cache `cfg.corpus`: (video id -> cache row of
    each video with a final status, the read tasks of the extracted ones — one per faces
    row group that holds any of them, with their cache rows)."""
    import pyarrow.parquet as pq

    cache_folder = results.RunFolder.at(cfg.corpus, cfg.storage)
    table = cache_folder.read_table("videos")
    if table is None:
        raise ValueError(f"face cache {cfg.corpus} has no videos yet; run `dfray extract` first")
    rows: dict[str, dict] = {}
    for r in table.to_pylist():
        if r["video_id"] in wanted and r["video_id"] not in rows:
            rows[r["video_id"]] = r
    missing = wanted - set(rows)
    if missing:
        raise ValueError(
            f"face cache {cfg.corpus} has no row for {len(missing)} videos of its manifest "
            f"(e.g. {sorted(missing)[0]}): finish it with `dfray extract` and the same run id"
        )
    final = {v: r for v, r in rows.items() if r["status"] != "ok"}
    ok = {v: r for v, r in rows.items() if r["status"] == "ok"}
    tasks = []
    fs, _ = storage.filesystem(cfg.corpus, cfg.storage)
    for part in cache_folder.parts("faces"):
        if not ok:
            break
        with fs.open_input_file(part) as f:
            pf = pq.ParquetFile(f)
            for rg in range(pf.num_row_groups):
                ids = set(pf.read_row_group(rg, columns=["video_id"]).column(0).to_pylist())
                here = [ok.pop(v) for v in sorted(ids & set(ok))]
                if here:
                    uri = f"s3://{part}" if storage.is_s3(cfg.corpus) else part
                    tasks.append({"file": uri, "row_group": rg, "videos": here})
    if ok:
        raise ValueError(f"face cache {cfg.corpus}: no faces for {len(ok)} extracted videos "
                         f"(e.g. {sorted(ok)[0]})")
    return final, tasks


def _final_from_cache(row: dict, run_id: str) -> dict:
    """A cached final status (no_faces, read_error, …) as this run's row."""
    return {**row, "score": None, "model_scores": None, "score_s": None,
            "scored_at": results.now_utc(), "run_id": run_id}


# -- writing -----------------------------------------------------------------------------------


def _writer(cfg, folder, kind) -> driver.RowWriter:
    if kind == "extract":
        return driver.RowWriter(folder, cache_videos_schema(), cache.faces_schema(),
                                cache.face_rows, cfg.flush_rows)
    names = [d.name for d in cfg.ensemble.detectors]
    face_rows = _score_face_rows(names) if cfg.write_faces else None
    return driver.RowWriter(folder, results.videos_schema(names), results.faces_schema(names),
                            face_rows, cfg.flush_rows)


def cache_videos_schema():
    """A face cache's videos table: the videos table without the score columns."""
    import pyarrow as pa

    v = results.videos_schema([])
    return pa.schema([f for f in v if f.name not in ("score", "model_scores", "score_s")])


def _score_face_rows(names):
    import numpy as np

    def face_rows(r: dict) -> list[dict]:
        n = int(r["n_faces"])
        fi = np.frombuffer(r["face_frame_index"], np.int32)
        boxes = np.frombuffer(r["face_boxes"], np.float32).reshape(n, 4)
        probs = np.frombuffer(r["face_probs"], np.float32)
        scores = np.frombuffer(r["face_scores"], np.float32).reshape(n, len(names))
        out, per_frame = [], {}
        for i in range(n):
            k = per_frame.get(int(fi[i]), 0)
            per_frame[int(fi[i])] = k + 1
            face = {"video_id": r["video_id"], "frame_index": int(fi[i]), "face_index": k,
                    "box": boxes[i].tolist(), "det_prob": float(probs[i])}
            face.update({f"score_{d}": float(scores[i, j]) for j, d in enumerate(names)})
            out.append(face)
        return out

    return face_rows


def _write_manifest(cfg, folder, source):
    """The run's manifest; the listing's report (dfray.listing_report) for a corpus."""
    if source.kind == "cache":
        data = storage.read_bytes(storage.join(cfg.corpus, "manifest.parquet"), cfg.storage)
        storage.write_bytes(folder.manifest, data, cfg.storage)
        return None
    from dfray.corpus import build_manifest

    return build_manifest(cfg.corpus, folder.manifest, cfg.storage, cfg.labels).listing


def _read_json(uri: str, cfg, missing_ok: bool = False) -> dict | None:
    import json

    if missing_ok and not storage.exists(uri, cfg.storage):
        return None
    return json.loads(storage.read_bytes(uri, cfg.storage))


def _write_json(folder, name: str, doc: dict) -> None:
    import json

    data = json.dumps(doc, indent=2, sort_keys=True, default=str).encode()
    storage.write_bytes(storage.join(folder.root, name), data, folder.cfg)


def _compact(cfg, folder, prog) -> None:
    """The last step of a completed run: its small part files compacted into a few large
    ones (dfray.compaction; atomic, one row per video still). A no-op when the folder is
    compact already; off with --no-compact. A failure leaves a consistent folder (the next
    run of this id finishes the job) and does not fail the run."""
    if not cfg.compact:
        return
    from dfray.compaction import compact

    try:
        out = compact(folder)
    except Exception as e:  # noqa: BLE001 - every row is written; compaction is tidying
        log.warning("compaction of %s failed (%s); the parts stay as written", folder.root, e)
        return
    merged = {k: v for k, v in out.items() if v["parts_after"] < v["parts_before"]}
    if merged:
        prog.phase("compacted " + ", ".join(f"{k}/ {v['parts_before']} -> {v['parts_after']} "
                                            "parts" for k, v in merged.items()))


def _nothing_to_do(cfg, folder, doc_name, previous, n_total, t_start, prog) -> RunResult:
    """Every video has a row: no Ray, no new attempt; an unfinished document is closed."""
    doc = dict(previous or {})
    if doc.get("state") != "complete":
        doc = runinfo.finish_doc(doc, folder, "complete", None)
        _write_json(folder, doc_name, doc)
    _compact(cfg, folder, prog)  # finishes a compaction an earlier attempt did not
    counts = doc.get("counts") or runinfo.video_counts(folder)[0]
    prog.phase(f"run {cfg.run_id}: every video already has a row; nothing to do")
    return RunResult(folder.root, "complete", counts, n_total, 0,
                     time.monotonic() - t_start, EXIT_OK)
