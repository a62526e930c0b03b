"""Metrics of a finished run: counts by status, log loss, ROC AUC, AP, accuracy.

Scores are never invented in a run; here, explicitly, videos without a score (status
other than `ok`) are filled with a prior (0.5 by default, as the DFDC did) so that every
labelled video counts, and how many were filled is reported. `--fill none` instead drops
them from the score metrics. Accuracy calls a video FAKE when its score is > 0.5. Log loss is Kaggle's DFDC metric: probabilities clipped to
[eps, 1 - eps], eps = 1e-15.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

EPS = 1e-15


def compute(labels: list, scores: list, statuses: list, fill: float | None = 0.5,
            eps: float = EPS) -> dict:
    """Metrics over the labelled videos; `fill` None drops unscored ones."""
    counts = Counter(statuses)
    y, p = [], []
    filled = dropped = unlabelled = 0
    for label, score in zip(labels, scores, strict=True):
        if label is None:
            unlabelled += 1
            continue
        if score is None or (isinstance(score, float) and np.isnan(score)):
            if fill is None:
                dropped += 1
                continue
            score = fill
            filled += 1
        y.append(int(label))
        p.append(float(score))
    out = {
        "n_videos": len(statuses),
        "counts": dict(sorted(counts.items())),
        "n_labelled": len(y) + dropped,
        "n_unlabelled": unlabelled,
        "n_evaluated": len(y),
        "fill": {"value": fill, "filled": filled, "dropped": dropped},
        "log_loss": None, "roc_auc": None, "average_precision": None, "accuracy": None,
    }
    if not y:
        return out
    out.update(score_arrays(np.asarray(y), np.asarray(p, dtype=np.float64), eps))
    return out


METRICS = ("log_loss", "roc_auc", "average_precision", "accuracy")


def video_log_loss(y: np.ndarray, p: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Per-video log loss, p clipped to [eps, 1 - eps] (Kaggle's DFDC); its mean is the
    log loss."""
    pc = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return -(y * np.log(pc) + (1 - y) * np.log1p(-pc))


def video_correct(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Per-video correctness of calling FAKE at p > 0.5 (0.5 itself: REAL)."""
    return (np.asarray(p) > 0.5) == (np.asarray(y) == 1)


def ranking_metrics(y: np.ndarray, p: np.ndarray) -> tuple[float | None, float | None]:
    """(ROC AUC, AP); None unless both classes are present."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y).astype(int)
    if len(np.unique(y)) != 2:
        return None, None
    return float(roc_auc_score(y, p)), float(average_precision_score(y, p))


def resampled_ranking_metrics(y: np.ndarray, p: np.ndarray,
                              counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ROC AUC, AP) of every resample at once: row b of `counts` says how often each video
    was drawn. The same values as `ranking_metrics` on the drawn videos (ROC AUC as the
    trapezoid rule gives it, ties counted half; AP as sklearn sums precision over recall
    steps at each distinct score); NaN where a resample has one class."""
    y = np.asarray(y).astype(bool)
    values, rank = np.unique(np.asarray(p, dtype=np.float64), return_inverse=True)
    w = np.asarray(counts, dtype=np.float64)
    pos = np.zeros((len(w), len(values)))
    neg = np.zeros((len(w), len(values)))
    np.add.at(pos.T, rank[y], w[:, y].T)
    np.add.at(neg.T, rank[~y], w[:, ~y].T)
    n_pos, n_neg = pos.sum(axis=1), neg.sum(axis=1)
    both = (n_pos > 0) & (n_neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        below = np.cumsum(neg, axis=1) - neg  # negatives scored lower, per distinct score
        auc = (pos * (below + 0.5 * neg)).sum(axis=1) / (n_pos * n_neg)
        tp = np.cumsum(pos[:, ::-1], axis=1)  # predicted fake at score >= each value
        fp = np.cumsum(neg[:, ::-1], axis=1)
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
        ap = (pos[:, ::-1] * precision).sum(axis=1) / n_pos
    return np.where(both, auc, np.nan), np.where(both, ap, np.nan)


def score_arrays(y: np.ndarray, p: np.ndarray, eps: float = EPS) -> dict:
    """The four metrics of labels `y` (0/1) and scores `p` (no missing values): log loss
    with p clipped to [eps, 1 - eps], accuracy at > 0.5, ROC AUC and AP (None unless both
    classes are present). The one definition `compute` and the leaderboard use."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    auc, ap = ranking_metrics(y, p)
    return {"log_loss": float(video_log_loss(y, p, eps).mean()),
            "accuracy": float(video_correct(y, p).mean()),
            "roc_auc": auc, "average_precision": ap}


def run_metrics(run_dir: str, storage=None, fill: float | None = 0.5) -> dict:
    from dfray.results import read_videos

    t = read_videos(run_dir, storage)
    m = compute(t.column("label").to_pylist(), t.column("score").to_pylist(),
                t.column("status").to_pylist(), fill=fill)
    m["run_dir"] = run_dir
    m["spend"] = run_spend(run_dir, storage)
    return m


def run_spend(run_dir: str, storage=None) -> dict | None:
    """Every attempt's spend from the run's spend journal (None when it has none)."""
    from dfray.budget.journal import summary
    from dfray.config import StorageConfig

    s = summary(run_dir, storage or StorageConfig())
    return s.to_dict() if s.attempts else None


def format_metrics(m: dict) -> str:
    def f(v):
        return "n/a" if v is None else f"{v:.4f}"

    fill = m["fill"]
    how = (f"{fill['filled']} unscored labelled videos filled with {fill['value']}"
           if fill["value"] is not None else f"{fill['dropped']} unscored labelled videos dropped")
    lines = [
        f"videos: {m['n_videos']} ({', '.join(f'{k}={v}' for k, v in m['counts'].items())})",
        f"labelled: {m['n_labelled']}, evaluated: {m['n_evaluated']}; {how}",
        f"log_loss (clipped 1e-15): {f(m['log_loss'])}",
        f"roc_auc: {f(m['roc_auc'])}",
        f"average_precision: {f(m['average_precision'])}",
        f"accuracy@0.5: {f(m['accuracy'])}",
    ]
    spend = m.get("spend")
    if spend:
        unfinished = sum(1 for a in spend["attempts"] if not a["final"])
        lines.append(f"spend: ${spend['spent_usd']:.2f} over {len(spend['attempts'])} attempt(s)"
                     + (f", {unfinished} without a final report (killed or running)"
                        if unfinished else ""))
    return "\n".join(lines)
