"""The Ray Data pipelines (the only code in dfray that touches Ray Data).

    corpus run:  todo.parquet ─read─▶ extract (actor pool) ─faces─▶ score (actor pool) ─▶ driver
      CPU only:  todo.parquet ─read─▶ extract + score (one actor pool) ──────────────────▶ driver
    cache build: todo.parquet ─read─▶ extract (actor pool) ─faces + PNG crops──────────────▶ driver
    from cache:  cache row groups ─read + PNG decode (tasks)─▶ score (actor pool) ─────────▶ driver

Why the split is where it is (CPU seconds per video on the 2-core CI machine, 360p-1080p,
32 frames: decode 0.7, MTCNN 3.9, an EfficientNet-B0 at 380 px ~6, the meso4 demo 0.5):
- read, decode, detection and cropping share one process: a 1080p video's 32 frames are
  ~200 MB of RGB, its margin crops ~10 MB; only crops cross the object store.
- the detectors are their own actor pool: they hold other models, want batches across
  videos on a GPU, and a user may cap them apart (dfray.layout sizes both pools). On
  CPU-only nodes with equal pools the two stages share each actor instead (Layout.fused:
  measured cheaper, see dfray.layout).
- rows come back to the driver, the single writer of immutable Parquet parts.

Each stage runs inside an adapter that owns where-it-runs concerns (torch threads, the
attempt counter, the device); the stage classes (dfray.extract.VideoExtractor,
dfray.score.EnsembleScorer) know nothing about Ray.
"""

from __future__ import annotations

from dfray import storage
from dfray.config import RunConfig
from dfray.layout import READ_CPU, Layout, StagePlan


class AttemptTracker:
    """Counts starts and ends per key (a video of a stage); starts without an end are
    crashes of the worker that was on it. Lives on the driver's node."""

    def __init__(self):
        self.starts: dict[str, int] = {}
        self.ends: dict[str, int] = {}
        self.ended = 0
        self.devices: dict[str, dict[str, int]] = {}  # stage -> device label -> actor starts
        self.cache_reads = 0  # face-cache row groups read (a group reads each once)
        self.actors: list = []  # handles of the pools' actors (to stop a pipeline)

    def ran_on(self, stage: str, device: str) -> None:
        """An actor of `stage` started with its models on `device` (see device_name)."""
        per = self.devices.setdefault(stage, {})
        per[device] = per.get(device, 0) + 1

    def joined(self, actor) -> None:
        """A pool actor is starting (before it loads its models)."""
        self.actors.append(actor)

    def take_actors(self) -> list:
        """The handles of the actors started so far (each handed out once)."""
        out, self.actors = self.actors, []
        return out

    def devices_used(self) -> dict[str, dict[str, int]]:
        return self.devices

    def start(self, key: str) -> int:
        """The attempt number: 1 + how often the key's worker died mid-way."""
        crashes = self.starts.get(key, 0) - self.ends.get(key, 0)
        self.starts[key] = self.starts.get(key, 0) + 1
        return crashes + 1

    def start_many(self, keys: list[str]) -> list[int]:
        return [self.start(k) for k in keys]

    def end(self, key: str) -> None:
        self.ends[key] = self.ends.get(key, 0) + 1
        if key.startswith("extract/"):
            self.ended += 1

    def end_many(self, keys: list[str]) -> None:
        for k in keys:
            self.end(k)

    def extracted(self) -> int:
        """Videos the extract stage has finished (for progress between score batches)."""
        return self.ended

    def read_cache(self) -> None:
        self.cache_reads += 1

    def cache_reads_done(self) -> int:
        return self.cache_reads


def _setup_worker(threads: int, tracker) -> None:
    """A stage's torch threads; also keeps freed memory in the worker for the next
    video (dfray.heap: the same results, fewer page faults). The actor tells the tracker
    it is there first, so that stop_pools can reach it while it loads its models."""
    import ray
    import torch

    from dfray.heap import reuse_freed_memory

    tracker.joined.remote(ray.get_runtime_context().current_actor)
    reuse_freed_memory()
    torch.set_num_threads(max(1, int(threads)))


def stop_pools(tracker) -> int:
    """Kill (without restart) every pool actor started so far, so that a pipeline the
    driver gave up on frees its resources and fails, whatever it was waiting for. Returns
    how many were killed."""
    import ray

    actors = ray.get(tracker.take_actors.remote(), timeout=30)
    for a in actors:
        try:
            ray.kill(a, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass
    return len(actors)


def _device(requested: str, use_gpu: bool) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda" if use_gpu and torch.cuda.is_available() else "cpu"


def device_name(device: str) -> str:
    """The device a stage's models actually run on: `cpu`, or `cuda:` and the GPU's name as
    torch reports it (`cuda:NVIDIA A10G`)."""
    if not device.startswith("cuda"):
        return device
    import torch

    try:
        return f"cuda:{torch.cuda.get_device_name(torch.device(device))}"
    except Exception:  # noqa: BLE001 - no usable GPU: the model load has failed already
        return device


def devices_used(tracker) -> dict[str, dict[str, int]]:
    """What the actors of this attempt ran on: stage -> device -> actor starts ({} if the
    tracker cannot say)."""
    import ray

    try:
        return dict(ray.get(tracker.devices_used.remote(), timeout=10))
    except Exception:  # noqa: BLE001 - a record only
        return {}


def device_label(devices: dict[str, dict[str, int]]) -> str | None:
    """One label for what ran (run.json `device`): `cpu`; `cuda:NAME` (names joined by ','
    when GPUs differ), with `+cpu` when some actors ran on the CPU; None if none started."""
    seen = {d for per in devices.values() for d in per}
    gpus = sorted(d.split(":", 1)[1] if ":" in d else "gpu" for d in seen if d.startswith("cuda"))
    if not gpus:
        return "cpu" if seen else None
    return "cuda:" + ",".join(gpus) + ("+cpu" if any(not d.startswith("cuda") for d in seen) else "")


class _Extract:
    """Ray Data adapter around dfray.extract.VideoExtractor (one actor per instance).
    With `pngs`, faces leave as PNG-encoded margin crops (a face-cache build)."""

    def __init__(self, cfg: RunConfig, tracker, plan: StagePlan, use_gpu: bool,
                 todo_uri: str, pngs: bool = False):
        import ray

        from dfray.extract import VideoExtractor, extract_schema

        _setup_worker(plan.threads, tracker)
        self.tracker = tracker
        self.pngs = pngs
        self.todo = (todo_uri, cfg.storage)  # the run's todo file: each batch names row groups
        self.schema = _png_schema(extract_schema()) if pngs else extract_schema()

        def on_start(vid: str) -> int:
            return ray.get(tracker.start.remote(f"extract/{vid}"))

        device = _device(cfg.device, use_gpu)
        self.stage = VideoExtractor(
            cfg.faces,
            cfg.decode,
            cfg.storage,
            device=device,
            timeout_s=cfg.video_timeout_s,
            max_attempts=cfg.max_attempts,
            on_start=on_start,
        )
        tracker.ran_on.remote("extract", device_name(device))

    def __call__(self, batch):
        import pyarrow as pa

        # the batch names row groups of the todo file; their videos leave one at a time
        for row in _read_todo_groups(batch, *self.todo).to_pylist():
            r = self.stage(row)
            if self.pngs:
                r = _to_pngs(r)
            self.tracker.end.remote(f"extract/{row['video_id']}")
            yield pa.Table.from_pylist([r], schema=self.schema)


def _png_schema(schema):
    import pyarrow as pa

    keep = [f for f in schema if f.name not in ("face_crops", "face_shapes")]
    return pa.schema([*keep, pa.field("face_pngs", pa.list_(pa.binary()))])


def _to_pngs(row: dict) -> dict:
    from dfray.cache import encode_png
    from dfray.faces import unpack_crops

    crops = row.pop("face_crops", None)
    shapes = row.pop("face_shapes", None)
    row["face_pngs"] = [encode_png(c) for c in unpack_crops(crops, shapes)] if crops else None
    return row


class _Score:
    """Ray Data adapter around dfray.score.EnsembleScorer. A video whose detectors kill the
    worker (a crashing model) is retried alone and becomes an `error` row after
    `max_attempts` crashes; its batch-mates are scored."""

    def __init__(self, cfg: RunConfig, tracker, plan: StagePlan, use_gpu: bool):
        from dfray.score import EnsembleScorer

        _setup_worker(plan.threads, tracker)
        self.tracker = tracker
        self.max_attempts = cfg.max_attempts
        device = _device(cfg.device, use_gpu)
        if cfg.detector_memory_mb is not None and device == "cpu":
            # CUDA reserves far more address space than it uses: no such cap on GPUs
            from dfray.memlimit import cap_address_space

            cap_address_space(cfg.detector_memory_mb, on_top=True)
        self.stage = EnsembleScorer(
            cfg.ensemble,
            device=device,
            run_id=cfg.run_id,
            storage=cfg.storage,
            runtime=cfg.cpu_runtime,
        )
        tracker.ran_on.remote("score", device_name(device))

    key = "score"  # the attempt counter's key prefix

    def __call__(self, batch):
        import pyarrow as pa

        return pa.Table.from_pylist(self.score_rows(batch.to_pylist()), schema=self.stage.schema)

    def score_rows(self, rows: list[dict]) -> list[dict]:
        import ray

        keys = [f"{self.key}/{r['video_id']}" for r in rows]
        attempts = ray.get(self.tracker.start_many.remote(keys))
        if max(attempts, default=1) == 1:
            out = self.stage(rows)
            ray.get(self.tracker.end_many.remote(keys))
            return out
        # A worker died on this batch before. Close the batch's starts, then score one
        # video at a time, each with its own start and end, so that further crashes are
        # counted against the video that causes them.
        ray.get(self.tracker.end_many.remote(keys))
        out = []
        for row, key in zip(rows, keys, strict=True):
            attempt = ray.get(self.tracker.start.remote(key))
            if attempt > self.max_attempts and row.get("status") == "extracted":
                out.append(self.stage._failed(
                    row, f"the detectors crashed their worker {attempt - 1} times on this "
                    f"video (limit {self.max_attempts}); not retried", 0.0))
            else:
                out.extend(self.stage([row]))
            ray.get(self.tracker.end.remote(key))
        return out


class _ExtractScore:
    """Both stages in one actor, a video at a time (CPU-only nodes, Layout.fused: why in
    dfray.layout). A detector that kills the actor costs the video its extraction too;
    the two attempt counters stay apart (extract's ends before scoring starts)."""

    def __init__(self, cfg: RunConfig, tracker, plan: StagePlan, use_gpu: bool,
                 todo_uri: str):
        self.extract = _Extract(cfg, tracker, plan, use_gpu, todo_uri)
        self.score = _Score(cfg, tracker, plan, use_gpu)

    def __call__(self, batch):
        for videos in self.extract(batch):
            yield self.score(videos)


# what one ensemble of a group adds to a row (the rest of its row is the cache's)
GROUP_FIELDS = ("status", "error", "score", "model_scores", "score_s", "scored_at",
                "face_scores")


def group_column(slot: int) -> str:
    return f"group_{slot}"


class _GroupScore(_Score):
    """One ensemble of a group scored from one read of a face cache: the cached rows pass
    through every ensemble's pool with their crops; this pool scores the rows its run has
    no row for yet (`skip`: the ids it has) and adds the result as the struct column
    `group_<slot>` (null for the rows it skips). The last pool drops the crops."""

    def __init__(self, cfg: RunConfig, tracker, plan: StagePlan, use_gpu: bool, slot: int,
                 skip: frozenset, last: bool):
        super().__init__(cfg, tracker, plan, use_gpu)
        self.slot, self.skip, self.last = slot, skip, last
        self.key = f"score{slot}"

    def __call__(self, batch):
        import pyarrow as pa

        from dfray.score import DROPPED

        rows = batch.select(["video_id", "status", "n_faces", "face_crops", "face_shapes",
                             "face_frame_index", "face_boxes", "face_probs"]).to_pylist()
        todo = [i for i, r in enumerate(rows) if r["video_id"] not in self.skip]
        values: list[dict | None] = [None] * len(rows)
        for i, out in zip(todo, self.score_rows([rows[i] for i in todo]), strict=True):
            values[i] = {f: out.get(f) for f in GROUP_FIELDS}
        kind = pa.struct([self.stage.schema.field(f) for f in GROUP_FIELDS])
        batch = batch.append_column(group_column(self.slot), pa.array(values, type=kind))
        return batch.drop_columns(list(DROPPED)) if self.last else batch


class _ReadCache:
    """Reads one row group of a face cache's faces part and yields the extract stage's
    rows for the todo videos in it (PNG crops decoded, packed as the extract stage packs
    them)."""

    def __init__(self, store, tracker=None):
        self.store = store
        self.tracker = tracker

    def __call__(self, batch):
        import pyarrow as pa
        import pyarrow.parquet as pq
        import ray

        from dfray.cache import extracted_rows
        from dfray.extract import extract_schema

        out = []
        for task in batch.to_pylist():
            fs, path = storage.filesystem(task["file"], self.store)
            with fs.open_input_file(path) as f:
                faces = pq.ParquetFile(f).read_row_group(task["row_group"])
            if self.tracker is not None:
                ray.get(self.tracker.read_cache.remote())
            videos = {r["video_id"]: r for r in task["videos"]}
            out += extracted_rows(faces, videos)
        return pa.Table.from_pylist(out, schema=extract_schema())


def _read_todo_groups(batch, uri: str, store):
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(uri, store)
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f)
        return pa.concat_tables([pf.read_row_group(int(i)) for i in batch.column("id").to_pylist()])


def _actor_kw(plan: StagePlan, res_memory_mb: int, fixed: bool) -> dict:
    from ray.data import ActorPoolStrategy

    kw = dict(
        compute=ActorPoolStrategy(min_size=plan.actors if fixed else 1, max_size=plan.actors),
        num_cpus=plan.cpus,
    )
    if plan.gpus:
        kw["num_gpus"] = plan.gpus
    if res_memory_mb:
        kw["memory"] = int(res_memory_mb) * 2**20
    return kw


def _score_batch(cfg: RunConfig, layout: Layout) -> int:
    """Videos per detector batch: --score-batch, else 8 on GPUs (the forward pass wants
    large batches) and 1 on CPUs (no gain from batching there, and rows reach the driver —
    and the progress line — one video at a time)."""
    return cfg.score_batch_videos or (8 if layout.use_gpu else 1)


def corpus_dataset(cfg: RunConfig, todo_uri: str, layout: Layout, tracker,
                   resources: dict, *, fixed: bool = True, pngs: bool = False):
    """The lazy pipeline over the todo rows of a corpus (nothing runs until iterated).
    Without a score plan in `layout` it stops after extraction (a face-cache build)."""
    # One task per row group of the todo file (a few videos each, driver.todo_groups): one
    # failed task re-runs few videos and the pool balances load. The blocks hold only the
    # row-group numbers; the extract actor reads its group's rows itself, so there are no
    # read tasks: no worker processes besides the pools' (their start-up and per-task CPU
    # was ~2% of a 2-core run, benchmarks/RESULTS.md) and no core to schedule them on.
    import pyarrow.parquet as pq
    import ray.data

    fs, path = storage.filesystem(todo_uri, cfg.storage)
    with fs.open_input_file(path) as f:
        n_groups = pq.ParquetFile(f).num_row_groups
    items = [{"id": i} for i in range(n_groups)]
    ds = ray.data.from_items(items, override_num_blocks=max(1, n_groups))
    if layout.fused and layout.score is not None and not pngs:
        plan = layout.fused_plan()
        return ds.map_batches(
            _ExtractScore,
            fn_constructor_kwargs={"cfg": cfg, "tracker": tracker, "plan": plan,
                                   "use_gpu": layout.use_gpu, "todo_uri": todo_uri},
            batch_size=1,
            batch_format="pyarrow",
            **_actor_kw(plan, resources["extract"].memory_mb + resources["score"].memory_mb,
                        fixed),
        )
    ds = ds.map_batches(
        _Extract,
        fn_constructor_kwargs={"cfg": cfg, "tracker": tracker, "plan": layout.extract,
                               "use_gpu": layout.use_gpu, "pngs": pngs, "todo_uri": todo_uri},
        batch_size=1,
        batch_format="pyarrow",
        **_actor_kw(layout.extract, resources["extract"].memory_mb, fixed),
    )
    if layout.score is not None:
        ds = _add_score(ds, cfg, layout, tracker, resources, fixed)
    return ds


def cache_dataset(cfg: RunConfig, tasks: list[dict], layout: Layout, tracker, resources: dict,
                  *, fixed: bool = True):
    """The lazy pipeline over a face cache: one read task per faces row group holding
    todo videos, then the score pool."""
    import ray.data

    ds = ray.data.from_items(tasks, override_num_blocks=max(1, len(tasks)))
    ds = ds.map_batches(
        _ReadCache,
        fn_constructor_kwargs={"store": cfg.storage, "tracker": tracker},
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=READ_CPU,
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    return _add_score(ds, cfg, layout, tracker, resources, fixed)


def group_dataset(cfgs: list[RunConfig], skips: list[frozenset], tasks: list[dict],
                  layout: Layout, tracker, resources: dict):
    """The lazy pipeline of a group: one read task per faces row group holding videos that
    some run of the group still needs, then one score pool per ensemble, in turn."""
    import ray.data

    ds = ray.data.from_items(tasks, override_num_blocks=max(1, len(tasks)))
    ds = ds.map_batches(
        _ReadCache,
        fn_constructor_kwargs={"store": cfgs[0].storage, "tracker": tracker},
        batch_size=1,
        batch_format="pyarrow",
        num_cpus=READ_CPU,
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    for slot, (cfg, skip) in enumerate(zip(cfgs, skips, strict=True)):
        ds = ds.map_batches(
            _GroupScore,
            fn_constructor_kwargs={"cfg": cfg, "tracker": tracker, "plan": layout.score,
                                   "use_gpu": layout.use_gpu, "slot": slot, "skip": skip,
                                   "last": slot == len(cfgs) - 1},
            batch_size=_score_batch(cfg, layout),
            batch_format="pyarrow",
            **_actor_kw(layout.score, resources["score"].memory_mb, True),
        )
    return ds


def _add_score(ds, cfg, layout, tracker, resources, fixed):
    return ds.map_batches(
        _Score,
        fn_constructor_kwargs={"cfg": cfg, "tracker": tracker, "plan": layout.score,
                               "use_gpu": layout.use_gpu},
        batch_size=_score_batch(cfg, layout),
        batch_format="pyarrow",
        **_actor_kw(layout.score, resources["score"].memory_mb, fixed),
    )


def start_tracker():
    """The attempt counter, pinned to the driver's node (it must outlive any worker)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = ray.get_runtime_context().get_node_id()
    return (
        ray.remote(AttemptTracker)
        .options(
            num_cpus=0,
            max_restarts=-1,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        )
        .remote()
    )


def cluster_resources() -> dict:
    import ray

    return dict(ray.cluster_resources())


def alive_nodes() -> int:
    return len(worker_nodes())


def worker_nodes() -> frozenset[str]:
    """Ids of the alive nodes that can run the pipeline's actors (they have CPUs)."""
    import ray

    return frozenset(n["NodeID"] for n in ray.nodes()
                     if n.get("Alive") and n["Resources"].get("CPU", 0) > 0)


def kill(actor) -> None:
    import ray

    try:
        ray.kill(actor)
    except Exception:  # noqa: BLE001 - already gone
        pass


def node_memory_mb() -> float | None:
    """Memory Ray may hand to actors on this node (its `memory` resource)."""
    import ray

    mem = ray.cluster_resources().get("memory")
    return float(mem) / 2**20 if mem else None


