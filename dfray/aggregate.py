"""Per-video aggregation of face scores, and the ensemble of detectors (numpy only).

A video with no face scores has no score: `aggregate` raises ValueError on an empty
input and callers mark the video `no_faces`; nothing here invents a score (filling with
a prior such as 0.5 happens only on export or in metrics, explicitly).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np


def _as_scores(pred: object) -> np.ndarray:
    a = np.asarray(pred, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"face scores must be a 1-D array, got shape {a.shape}")
    if a.size == 0:
        raise ValueError("no face scores to aggregate (the video has no faces)")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"face scores contain {int(np.sum(~np.isfinite(a)))} non-finite values")
    return a


def confident(pred: np.ndarray, t: float = 0.8) -> float:
    """DFDC 1st-place `confident_strategy` (selimsef/dfdc_deepfake_challenge), exactly:

    if more than len//2.5 and more than 11 scores exceed `t`: mean of those;
    elif more than 90% of the scores are below 0.2: mean of those; else the mean of all.
    """
    pred = _as_scores(pred)
    sz = len(pred)
    fakes = np.count_nonzero(pred > t)
    # 11 frames are detected as fakes with high probability
    if fakes > sz // 2.5 and fakes > 11:
        return float(np.mean(pred[pred > t]))
    elif np.count_nonzero(pred < 0.2) > 0.9 * sz:
        return float(np.mean(pred[pred < 0.2]))
    else:
        return float(np.mean(pred))


def mean(pred: np.ndarray) -> float:
    """Mean of the face scores."""
    return float(np.mean(_as_scores(pred)))


AGGREGATORS: dict[str, Callable[[np.ndarray], float]] = {"mean": mean, "confident": confident}


def aggregate(pred: np.ndarray, strategy: str) -> float:
    """One video's score from its face scores. Empty or non-finite input raises ValueError."""
    try:
        fn = AGGREGATORS[strategy]
    except KeyError:
        raise ValueError(
            f"unknown aggregation {strategy!r}; known: {sorted(AGGREGATORS)}"
        ) from None
    return fn(pred)


def ensemble(scores: Mapping[str, float | None], weights: Mapping[str, float]) -> float:
    """Weighted mean of the per-detector video scores present in `scores`.

    Detectors missing from `scores` (or with a None score) are left out and the weights
    of the others renormalised. A present detector without a weight, a negative weight,
    a non-finite score, or no positive weight among the present detectors raises
    ValueError.
    """
    present = {k: v for k, v in scores.items() if v is not None}
    if not present:
        raise ValueError("no detector scores to ensemble")
    missing = sorted(k for k in present if k not in weights)
    if missing:
        raise ValueError(f"no ensemble weight for detectors {missing}")
    total = 0.0
    acc = 0.0
    for name, score in present.items():
        w = float(weights[name])
        s = float(score)
        if w < 0 or not np.isfinite(w):
            raise ValueError(f"ensemble weight of {name!r} must be finite and >= 0, got {w}")
        if not np.isfinite(s):
            raise ValueError(f"score of detector {name!r} is not finite: {s}")
        total += w
        acc += w * s
    if total <= 0:
        raise ValueError(f"ensemble weights of the present detectors {sorted(present)} are all 0")
    return acc / total
