"""dfray: score whole video corpora with deepfake detectors on Ray.

The Python API (dfray/api.py; the `dfray` commands are thin layers over it)::

    import dfray
    run = dfray.score("corpus", "runs", run_id="r1")   # RunResult
    dfray.read_videos(run)                             # pyarrow.Table, one row per video
    dfray.metrics(run)                                 # Metrics
    dfray.samples("corpus", n_videos=8)                # SampleCorpus
    dfray.report(run, "report.html"); dfray.export(run, "kaggle", "submission.csv")

`import dfray` stays light (no torch, Ray or pyarrow until a function needs them).
"""

import sys
import types

from dfray.api import (
    Metrics,
    SampleCorpus,
    export,
    metrics,
    read_videos,
    report,
    samples,
    score,
)

__version__ = "0.1.0"
SCHEMA_VERSION = 1

__all__ = ["Metrics", "SampleCorpus", "SCHEMA_VERSION", "__version__", "export", "metrics",
           "read_videos", "report", "samples", "score"]

API = ("score", "metrics", "samples", "report", "export")


class _Package(types.ModuleType):
    """`dfray.score`, `dfray.metrics`, `dfray.samples`, `dfray.report` and `dfray.export`
    are API functions, and modules of the same names exist (dfray/score.py is the scoring
    stage, …). Importing such a module would rebind the package attribute to it; this keeps
    the function. The modules stay importable as usual: `from dfray.score import
    EnsembleScorer`, `importlib.import_module("dfray.metrics")`."""

    def __setattr__(self, name, value):
        if name in API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
