"""The runner: the only package that touches Ray and Ray Data.

`run_scoring` scores a corpus or a face cache, `run_extract` builds a face cache; both
resume. See dfray/runner/run.py for the life of a run, pipeline.py for the Ray Data
pipelines and why the stages are split where they are, driver.py for the driver loop and
the single writer, session.py for starting Ray quietly.
"""

from __future__ import annotations

from dfray.runner.run import EXIT_BUDGET, EXIT_OK, RunResult, run_extract, run_scoring
from dfray.runner.session import init_ray


def calibrate(
    corpus: str,
    n_videos: int = 20,
    storage=None,
    config: str | None = None,
    address: str | None = None,
) -> dict:
    """Score the first `n_videos` of a corpus into a scratch folder; the run's stats.

    Used by `dfray plan` to measure the per-video cost on this cluster."""
    import json
    import tempfile

    from dfray import storage as st
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
        doc = json.loads(st.read_bytes(st.join(out, "calibrate", "run.json"), cfg.storage))
    return doc["stats"]


__all__ = ["EXIT_BUDGET", "EXIT_OK", "RunResult", "calibrate", "init_ray", "run_extract",
           "run_scoring"]
