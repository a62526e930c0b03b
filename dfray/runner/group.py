"""Several ensembles scored from one read of a face cache (the group of `dfray rescore`).

`run_group_scoring(cfgs)`: every cfg scores the same face cache (`corpus`, storage,
cluster, limit) with its own ensemble into its own run folder. Each folder ends as
`run_scoring(cfg)` would leave it — the same rows, run.json, resume and compaction — but:

- the cache's faces row groups holding videos that any run still needs are read once
  for the whole group (run.json's attempt records `group.cache_row_groups_read`);
- each ensemble runs in its own actor pool, with the resources its Resources declare and
  an even share of the cluster (dfray.layout.plan_group: cores on CPU nodes, a GPU slice
  on GPU nodes); all pools run at once, the rows flowing through them in turn;
- a pool scores only the videos its run has no row for (a resumed group skips the rest).

One governor watches the whole group (its rows, all runs together) and its report goes
into every run's run.json: a stop ends every run of the group as `budget_exhausted`. A
crash of one ensemble's worker is retried per video as in a single run; anything that
fails the group as a whole (a pool that cannot start, a hang the caller kills) leaves each
run with the rows written so far — `dfray rescore` then scores what is missing of each
submission alone, with its own limits.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

from dfray import cache, lease, results, runinfo, storage
from dfray.config import RunConfig
from dfray.progress import Progress
from dfray.runner import pipeline
from dfray.runner.run import (
    EXIT_BUDGET,
    EXIT_OK,
    RunResult,
    _budget_stop,
    _compact,
    _final_from_cache,
    _nothing_to_do,
    _read_json,
    _resources,
    _Source,
    _write_json,
    _write_manifest,
    _writer,
    cache_plan,
)
from dfray.runner.session import RayStarter

SHARED = ("corpus", "storage", "address", "limit", "device")


@dataclass
class _Member:
    cfg: RunConfig
    folder: results.RunFolder
    doc: dict
    detectors: list
    wanted: list
    done: set
    prog: Progress = field(default_factory=lambda: Progress(enabled=False))
    writer: object = None


def run_group_scoring(cfgs: list[RunConfig], *, progress: bool | Progress = True,
                      governor=None, verbose: bool = False,
                      checked: list[list[dict] | None] | None = None) -> list[RunResult]:
    """Score the face cache `cfgs[0].corpus` with every cfg's ensemble into its run folder,
    the cache read once (see the module docstring). One RunResult per cfg, in order.
    `checked[i]`, when given, is what dfray.detectors.check.check_detectors returned for
    cfgs[i]'s ensemble in an earlier process (dfray rescore's check child): not checked
    again."""
    if not cfgs:
        return []
    for c in cfgs[1:]:
        for name in SHARED:
            if getattr(c, name) != getattr(cfgs[0], name):
                raise ValueError(f"a group's runs share {name}; {c.run_id} differs")
    if len({(c.out, c.run_id) for c in cfgs}) != len(cfgs):
        raise ValueError("a group's runs need distinct run folders")
    with ExitStack() as stack:
        for c in cfgs:
            root = results.RunFolder(c.out, c.run_id, c.storage).root
            stack.enter_context(lease.acquire(root, c.storage, stale_after_s=c.lease_timeout_s))
        return _run_leased(cfgs, progress, governor, verbose, checked or [None] * len(cfgs))


def _run_leased(cfgs, progress, governor, verbose, checked) -> list[RunResult]:
    from dfray.detectors.check import check_detectors

    t_start = time.monotonic()
    started_at = results.now_utc()
    prog = progress if isinstance(progress, Progress) else Progress(enabled=bool(progress))
    first = cfgs[0]
    doc_uri = storage.join(first.corpus, cache.CACHE_JSON)
    if not cache.is_cache(first.corpus, first.storage):
        raise ValueError(f"{first.corpus} is not a face cache (no {cache.CACHE_JSON})")
    cache_doc = _read_json(doc_uri, first)
    decode, faces = cache.configs_from_spec(cache_doc)
    cfgs = [dataclasses.replace(c, decode=decode, faces=faces) for c in cfgs]
    prog.phase(f"group of {len(cfgs)} runs of {first.corpus}")
    starter = RayStarter(first.address, verbose)  # overlaps with the checks
    out: dict[int, RunResult] = {}
    members: list[tuple[int, _Member]] = []
    for i, cfg in enumerate(cfgs):
        folder = results.RunFolder(cfg.out, cfg.run_id, cfg.storage)
        storage.makedirs(folder.root, cfg.storage)
        previous = _read_json(storage.join(folder.root, "run.json"), cfg, missing_ok=True)
        detectors = checked[i]
        if detectors is None:
            prog.phase(f"loading and checking the detectors of {cfg.run_id}")
            detectors = check_detectors(cfg.ensemble, cfg.storage)
        runinfo.start_doc(cfg, folder, detectors, previous, started_at)  # refuses a mismatch
        if previous is None or not storage.exists(folder.manifest, cfg.storage):
            _write_manifest(cfg, folder, _Source("cache", cache_doc))
        done = folder.done_ids()
        ids = results.read_manifest(folder, columns=["video_id"]).column("video_id").to_pylist()
        wanted = ids if cfg.limit is None else ids[: cfg.limit]
        if all(v in done for v in wanted):
            out[i] = _nothing_to_do(cfg, folder, "run.json", previous, len(wanted), t_start,
                                    Progress(enabled=False))
            continue
        extra = {"face_cache": cfg.corpus, "extraction": cache_doc.get("extraction"),
                 "group": [c.run_id for c in cfgs]}
        doc = runinfo.start_doc(cfg, folder, detectors, previous, started_at, "score", extra)
        _write_json(folder, "run.json", doc)
        members.append((i, _Member(cfg, folder, doc, detectors, wanted, done)))
    if members:
        prog.phase("starting Ray")
        starter.wait()
        state, attempt = _execute([m for _, m in members], prog, governor, t_start)
        prog.close()
        for i, m in members:
            if state == "complete":
                _compact(m.cfg, m.folder, prog)
            mine = {**attempt, "n_scored": m.prog.done,
                    "videos_per_s": round(m.prog.done / attempt["wall_s"], 4)
                    if attempt["wall_s"] > 0 else None,
                    "stages": m.prog.stage_table(attempt["wall_s"],
                                                 {"score": attempt["score_workers"]})}
            doc = runinfo.finish_doc(m.doc, m.folder, state, mine, governor)
            _write_json(m.folder, "run.json", doc)
            out[i] = RunResult(m.folder.root, state, doc["counts"], len(m.wanted), m.prog.done,
                               time.monotonic() - t_start,
                               EXIT_BUDGET if state == "budget_exhausted" else EXIT_OK)
    return [out[i] for i in range(len(cfgs))]


def _execute(members: list[_Member], prog: Progress, governor, t_start: float):
    """One pipeline for every member's missing videos; (state, the attempt's stats)."""
    import ray

    from dfray.layout import plan_group
    from dfray.score import EnsembleScorer

    todo = [{v for v in m.wanted if v not in m.done} for m in members]
    prog.start(sum(len(m.wanted) for m in members), sum(len(m.wanted) - len(t)
                                                        for m, t in zip(members, todo,
                                                                        strict=True)))
    for m, t in zip(members, todo, strict=True):
        m.prog.start(len(m.wanted), len(m.wanted) - len(t))
        m.writer = _writer(m.cfg, m.folder, "score")
    cfg = members[0].cfg
    cluster = pipeline.cluster_resources()
    if governor is not None:
        governor.start(n_todo=sum(map(len, todo)), prog=prog)
        cluster = governor.planning_resources(cluster)
    gpus = float(cluster.get("GPU", 0)) if cfg.device != "cpu" else 0.0
    model_mb = max(sum(d.get("model_mb") or 0 for d in m.detectors) for m in members)
    layout = plan_group(len(members), float(cluster.get("CPU", 1)), gpus,
                        EnsembleScorer.resources(gpus > 0, model_mb),
                        memory_mb=pipeline.node_memory_mb())
    tracker = pipeline.start_tracker()
    stopped, reads, tasks = False, 0, []
    state = {"stop": False}

    def add(m: _Member, rows: list[dict]) -> None:
        m.writer.add(rows)
        m.prog.add(rows)
        prog.add(rows)

    try:
        final, tasks = cache_plan(cfg, set().union(*todo))
        for m, t in zip(members, todo, strict=True):
            add(m, [_final_from_cache(final[v], m.cfg.run_id) for v in sorted(t & set(final))])
        extracted = [v for task in tasks for v in (r["video_id"] for r in task["videos"])]
        skips = [frozenset(v for v in extracted if v not in t) for t in todo]
        columns = [pipeline.group_column(k) for k in range(len(members))]

        def on_rows(rows):
            for row in rows:
                base = {k: v for k, v in row.items() if k not in columns}
                for m, col in zip(members, columns, strict=True):
                    if row.get(col) is not None:
                        add(m, [{**base, **row[col], "run_id": m.cfg.run_id}])
                if _budget_stop(governor, prog, state):
                    return True
            return False

        def on_tick():
            prog.maybe_print()
            return _budget_stop(governor, prog, state)

        if tasks:
            from dfray.runner import driver

            ds = pipeline.group_dataset([m.cfg for m in members], skips, tasks, layout,
                                        tracker, _resources(layout))
            stopped = driver.drive(ds, on_rows, on_tick)
        for m in members:
            m.writer.flush()
    finally:
        devices = pipeline.devices_used(tracker)
        try:
            reads = int(ray.get(tracker.cache_reads_done.remote(), timeout=10))
        except Exception:  # noqa: BLE001 - a figure for run.json only
            reads = -1
        pipeline.kill(tracker)
    wall = time.monotonic() - t_start
    attempt = {
        "started_at": results.now_utc().isoformat(),
        "wall_s": round(wall, 3),
        "device": pipeline.device_label(devices),
        "devices": devices,
        "nodes": pipeline.alive_nodes(),
        "workers": 0,
        "score_workers": layout.score.actors,
        "layout": layout.to_dict(),
        "group": {"runs": [m.cfg.run_id for m in members], "cache_row_groups": len(tasks),
                  "cache_row_groups_read": reads},
    }
    return ("budget_exhausted" if stopped else "complete"), attempt
