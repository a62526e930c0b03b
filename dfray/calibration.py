"""A short calibration: one video extracted and scored on one torch thread, outside Ray.

The runner starts this in a child process while Ray starts (so it costs no wall time on a
machine with a core to spare) and uses it twice: the video's row is a real result (the
same stage code as the pipeline's, so it is written like any other row; the child works
on it while Ray starts and the actors load their models), and, when it is done before the
pools are planned, its stage timings are the costs dfray.layout records. A video that crashes or
hangs the child only loses the calibration; it goes through the pipeline like the rest.
"""

from __future__ import annotations

import time

from dfray.config import RunConfig


def process_one(cfg: RunConfig, row: dict) -> dict:
    """Extract and score one manifest row here; {"row": final row, "extract_s", "score_s"}
    (CPU seconds of each stage on one torch thread)."""
    import torch

    from dfray.heap import reuse_freed_memory

    reuse_freed_memory()  # as the pipeline's workers do
    torch.set_num_threads(1)
    from dfray.extract import VideoExtractor
    from dfray.score import EnsembleScorer

    extractor = VideoExtractor(cfg.faces, cfg.decode, cfg.storage, device="cpu",
                               timeout_s=cfg.video_timeout_s, max_attempts=cfg.max_attempts)
    scorer = EnsembleScorer(cfg.ensemble, device="cpu", run_id=cfg.run_id, storage=cfg.storage,
                            runtime=cfg.cpu_runtime)
    # CPU seconds of this process, not wall time: the child runs while Ray starts beside
    # it on the same cores, and wall time would charge that contention to the stages
    t0 = time.process_time()
    extracted = extractor({**row})
    extracted["attempts"] = 1
    extract_s = time.process_time() - t0
    t1 = time.process_time()
    final = scorer([extracted])[0]
    score_s = time.process_time() - t1
    ok = extracted.get("status") == "extracted"
    return {"row": final, "extract_s": extract_s if ok else None,
            "score_s": score_s if ok else None}
