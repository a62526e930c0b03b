import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from dfray.metrics import compute


def test_metrics_match_sklearn_and_state_the_fill():
    labels = [1, 0, 1, 0, 1, None, 0]
    scores = [0.9, 0.2, None, 0.4, 1.0, 0.7, 0.0]
    statuses = ["ok", "ok", "decode_error", "ok", "ok", "ok", "ok"]
    m = compute(labels, scores, statuses, fill=0.5)
    y = np.array([1, 0, 1, 0, 1, 0])
    p = np.clip(np.array([0.9, 0.2, 0.5, 0.4, 1.0, 0.0]), 1e-15, 1 - 1e-15)
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["average_precision"] == pytest.approx(average_precision_score(y, p))
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["fill"] == {"value": 0.5, "filled": 1, "dropped": 0}
    assert m["counts"] == {"decode_error": 1, "ok": 6}
    assert m["n_unlabelled"] == 1 and m["n_evaluated"] == 6
    # a perfect 1.0 / 0.0 prediction is clipped, not an infinite loss
    assert np.isfinite(m["log_loss"])
    dropped = compute(labels, scores, statuses, fill=None)
    assert dropped["fill"]["dropped"] == 1 and dropped["n_evaluated"] == 5


def test_resampled_ranking_metrics_equal_sklearn_on_each_resample():
    import numpy as np

    from dfray.metrics import ranking_metrics, resampled_ranking_metrics

    rng = np.random.default_rng(7)
    for n in (3, 40, 250):
        y = rng.integers(0, 2, n)
        p = np.round(rng.random(n), 2)  # ties within and across classes
        idx = rng.integers(0, n, (300, n))
        counts = np.stack([np.bincount(r, minlength=n) for r in idx])
        auc, ap = resampled_ranking_metrics(y, p, counts)
        for b, row in enumerate(idx):
            want = ranking_metrics(y[row], p[row])
            if want[0] is None:  # one class drawn
                assert np.isnan(auc[b]) and np.isnan(ap[b])
            else:
                assert abs(auc[b] - want[0]) < 1e-12 and abs(ap[b] - want[1]) < 1e-12
        if n == 3:
            assert np.isnan(auc).any()  # the one-class case was exercised
