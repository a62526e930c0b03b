"""The Python API: what `import dfray` gives a notebook or a script.

    import dfray
    dfray.samples("corpus", n_videos=8, seed=5)          # a labelled synthetic corpus
    run = dfray.score("corpus", "runs", run_id="r1")      # -> RunResult (a dataclass)
    table = dfray.read_videos(run)                        # -> pyarrow.Table, one row per video
    m = dfray.metrics(run)                                # -> Metrics (a dataclass)
    dfray.report(run, "report.html"); dfray.export(run, "kaggle", "submission.csv")

The `dfray` commands are thin layers over these functions. Like the commands, the
functions read the environment for what it may set (RAY_ADDRESS; AWS_ENDPOINT_URL_S3,
AWS_ENDPOINT_URL, AWS_REGION, AWS_PROFILE) and an explicit argument wins. A run is given
as its folder (`OUT/RUN_ID`, a path or `s3://` URI) or as the RunResult of `score`.
Nothing heavy is imported here: torch, Ray and pyarrow load when a function needs them.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from dfray.config import BudgetConfig, EnsembleConfig, RunConfig, StorageConfig
    from dfray.runner import RunResult


@dataclass(frozen=True)
class Metrics:
    """Metrics of a run over its labelled videos (see dfray.metrics for the definitions).

    Unscored labelled videos are filled with `fill["value"]` (0.5, DFDC's prior) and
    counted in `fill["filled"]`, or dropped (`fill["value"]` None) and counted in
    `fill["dropped"]`. A metric is None when it is undefined (no labelled video; ROC AUC
    and AP need both labels). `spend`: every attempt's spend from the run's spend journal
    (None when the run had no budget). `to_dict()` is the content of metrics.json."""

    run_dir: str
    n_videos: int
    counts: dict
    n_labelled: int
    n_unlabelled: int
    n_evaluated: int
    fill: dict
    log_loss: float | None
    roc_auc: float | None
    average_precision: float | None
    accuracy: float | None
    spend: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        from dfray.metrics import format_metrics

        return format_metrics(self.to_dict())


@dataclass(frozen=True)
class SampleCorpus:
    """A corpus written by `samples`: its folder and the DFDC-style metadata.json entries
    (`{"name.mp4": {"label": "REAL"|"FAKE", "original": ..., ...}}`)."""

    path: str
    metadata: dict
    size_bytes: int
    seconds: float

    @property
    def n_videos(self) -> int:
        return len(self.metadata)

    @property
    def n_fake(self) -> int:
        return sum(1 for v in self.metadata.values() if v["label"] == "FAKE")

    def __str__(self) -> str:
        return (f"wrote {self.n_videos} videos ({self.n_videos - self.n_fake} real / "
                f"{self.n_fake} fake, {self.size_bytes / 1e6:.1f} MB) and metadata.json to "
                f"{self.path} in {self.seconds:.1f}s")


# -- scoring -----------------------------------------------------------------------------------


def score(corpus: str | os.PathLike, out: str | os.PathLike, *, run_id: str | None = None,
          config: str | EnsembleConfig | None = None, progress: bool = True,
          verbose: bool = False, costs_from: str | None = None, **options: Any) -> RunResult:
    """Score every video of `corpus` into `out/<run_id>/`, as `dfray score` does; returns
    the RunResult (run_dir, state, counts by status, videos scored now, wall seconds).

    corpus: a folder, `s3://bucket/prefix`, or a face cache. out: a folder or `s3://` prefix.
    run_id: reuse one to resume (only videos without a row are scored; a finished run
        returns at once without starting Ray); None: a new time-based id.
    config: an ensemble YAML path, `builtin:NAME` or an EnsembleConfig (default
        `builtin:demo`).
    progress: a live bar on a terminal, else timestamped lines (stderr).
    verbose: let Ray's own logs, execution plans and worker output through.
    options: any other option of `dfray score`, by its field name in dfray.config:
        RunConfig (`n_frames`, `labels`, `address`, `write_faces`, `video_timeout_s`,
        `max_attempts`, `extract_actors`, `score_actors`, `score_batch_videos`,
        `flush_rows`, `limit`, `device`, `compact`), StorageConfig (`endpoint_url`,
        `region`, `profile`) and BudgetConfig (`budget_usd`, `prices`, `spot`, ...).
        An unknown name raises ConfigError naming the known ones.
    """
    from dfray.config import BudgetConfig, EnsembleConfig, RunConfig
    from dfray.options import from_kwargs, option_names

    budget_kw = {k: options.pop(k) for k in list(options) if k in option_names(BudgetConfig)}
    fixed: dict[str, Any] = {}
    if isinstance(config, EnsembleConfig):
        fixed["ensemble"] = config
    elif config is not None:
        options["ensemble"] = str(config)
    if run_id is not None:
        options["run_id"] = run_id
    cfg = from_kwargs(RunConfig, {"corpus": str(corpus), "out": str(out), **options}, **fixed)
    budget = from_kwargs(BudgetConfig, budget_kw)
    return run(cfg, budget if budget.budget_usd is not None else None, progress=progress,
               verbose=verbose, costs_from=costs_from)


def run(cfg: RunConfig, budget: BudgetConfig | None = None, *, progress: bool = True,
        verbose: bool = False, costs_from: str | None = None) -> RunResult:
    """Score with configs already built (what `score` and the `dfray score` command call):
    an S3 endpoint is checked first (unreachable: StorageError in seconds), a budget gets
    its spend governor (which logs what still bills after a budget stop and, with
    `budget.down_on_exit`, takes the cluster down once run.json is written)."""
    from dfray import storage
    from dfray.runner import run_scoring

    if any(storage.is_s3(u or "") for u in (cfg.corpus, cfg.out, cfg.labels)):
        storage.check_reachable(cfg.storage)
    governor = None
    if budget is not None:
        from dfray.budget.governor import governor_from_config

        governor = governor_from_config(budget, cfg)
    result = run_scoring(cfg, progress=progress, governor=governor, verbose=verbose,
                         costs_from=costs_from)
    if governor is not None and budget.down_on_exit:
        governor.take_down()
    return result


# -- reading a run -----------------------------------------------------------------------------


def storage_config(**options: Any) -> StorageConfig:
    """A StorageConfig from keyword options (`endpoint_url`, `region`, `profile`) and the
    environment, as the commands build it."""
    from dfray.config import StorageConfig
    from dfray.options import from_kwargs

    return from_kwargs(StorageConfig, {k: v for k, v in options.items() if v is not None})


def _run_dir(run: Any) -> str:
    """A run folder from a path, a URI or a RunResult."""
    return str(getattr(run, "run_dir", run))


def read_videos(run: Any, **storage: Any) -> pa.Table:
    """The videos table of a run (schema v1; README "Output") as a pyarrow.Table, one row
    per video (the first row written wins). `.to_pandas()` for a DataFrame. `storage`:
    `endpoint_url`, `region`, `profile` for s3:// (else from the environment)."""
    from dfray.results import read_videos as _read

    return _read(_run_dir(run), storage_config(**storage))


def metrics(run: Any, *, fill: float | None = 0.5, **storage: Any) -> Metrics:
    """Log loss (Kaggle's DFDC), ROC AUC, average precision and accuracy at > 0.5 over the
    labelled videos of a run, and the counts by status. `fill`: the score given to
    unscored labelled videos (0.5, the DFDC prior); None drops them instead. `storage`:
    as for `read_videos`."""
    from dfray.metrics import run_metrics

    m = run_metrics(_run_dir(run), storage_config(**storage), fill=fill)
    return Metrics(**m)


def report(run: Any, out: str | os.PathLike = "report.html", **storage: Any) -> str:
    """Write the self-contained HTML report of a run to `out` (a path or s3:// URI);
    returns `out`. `storage`: as for `read_videos`."""
    from dfray.report import write_report

    return write_report(_run_dir(run), str(out), storage_config(**storage))


def export(run: Any, format: str = "kaggle", out: str | os.PathLike | None = None, *,
           fill: float | None = None, **storage: Any) -> dict:
    """Export a run: `kaggle` (DFDC's submission.csv: `filename,label`, one line per video
    of the manifest, unscored videos get `fill`), or the videos table as `csv`, `parquet`
    or `jsonl`. Writes `out` (path or s3:// URI) when given. Returns {"data": bytes,
    "rows": lines or rows, "filled": videos given `fill`}. `storage`: as for
    `read_videos`."""
    from dfray.export import DEFAULT_FILL
    from dfray.export import export as _export

    return _export(_run_dir(run), format, None if out is None else str(out),
                   storage_config(**storage), fill=DEFAULT_FILL if fill is None else fill)


# -- sample corpora ----------------------------------------------------------------------------


def samples(out: str | os.PathLike, n_videos: int = 16, seed: int = 0, *,
            min_height: int = 360, max_height: int = 1080, min_seconds: float = 2.0,
            max_seconds: float = 10.0) -> SampleCorpus:
    """Write a labelled synthetic corpus (DFDC layout: H.264 .mp4 clips and metadata.json)
    into the folder `out`, as `dfray samples` does; the same seed gives the same files.
    About half the clips are FAKE (faceswap or self-blend of a REAL clip); see
    dfray/samples.py. Frame heights are drawn from [min_height, max_height], lengths in
    seconds from [min_seconds, max_seconds]."""
    import time

    from dfray.samples import generate_corpus

    start = time.perf_counter()
    metadata = generate_corpus(out, n_videos=n_videos, seed=seed, min_height=min_height,
                               max_height=max_height, min_seconds=min_seconds,
                               max_seconds=max_seconds)
    size = sum((Path(out) / name).stat().st_size for name in metadata)
    return SampleCorpus(str(out), metadata, size, time.perf_counter() - start)
