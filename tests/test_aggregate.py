"""Per-video aggregation (DFDC 1st-place confident strategy) and ensemble weighting."""

from __future__ import annotations

import numpy as np
import pytest

from dfray.aggregate import AGGREGATORS, aggregate, confident, ensemble, mean


def test_confident_mostly_fake_takes_mean_of_fakes():
    pred = np.array([0.9] * 10 + [0.95] * 5 + [0.5] * 5)  # 20 scores, 15 > 0.8
    assert confident(pred) == pytest.approx((0.9 * 10 + 0.95 * 5) / 15)


def test_confident_mostly_real_takes_mean_of_reals():
    pred = np.array([0.1] * 20 + [0.05] * 8 + [0.5, 0.9])  # 30 scores, 28 < 0.2 > 27
    assert confident(pred) == pytest.approx((0.1 * 20 + 0.05 * 8) / 28)


def test_confident_mixed_takes_mean_of_all():
    pred = np.array([0.1] * 10 + [0.5] * 10 + [0.9] * 10)  # 10 fakes <= 11, 10 reals <= 27
    assert confident(pred) == pytest.approx(0.5)


def test_confident_needs_more_than_11_fakes():
    # 11 fakes > 14 // 2.5 == 5.0 but not > 11: falls through to the mean of all
    pred = np.array([0.9] * 11 + [0.5] * 3)
    assert confident(pred) == pytest.approx(np.mean(pred))
    # 12 fakes of 14: mean of the fakes
    pred = np.array([0.9] * 11 + [1.0] + [0.5] * 2)
    assert confident(pred) == pytest.approx((0.9 * 11 + 1.0) / 12)


def test_confident_needs_more_than_len_floordiv_2_5_fakes():
    # 32 // 2.5 == 12.0: 12 fakes are not enough, 13 are
    pred = np.array([0.9] * 12 + [0.5] * 20)
    assert confident(pred) == pytest.approx(np.mean(pred))
    pred = np.array([0.9] * 13 + [0.5] * 19)
    assert confident(pred) == pytest.approx(0.9)
    # exactly 0.8 is not > t; the real branch needs strictly more than 90% below 0.2
    assert confident(np.array([0.8] * 20)) == pytest.approx(0.8)
    pred = np.array([0.1] * 9 + [0.5])  # 9 of 10 == 90%, not more: mean of all
    assert confident(pred) == pytest.approx(np.mean(pred))


def test_confident_threshold_parameter():
    pred = np.array([0.7] * 13 + [0.5] * 2)
    assert confident(pred) == pytest.approx(np.mean(pred))
    assert confident(pred, t=0.6) == pytest.approx(0.7)


def test_mean_and_aggregate():
    assert mean(np.array([0.2, 0.4], dtype=np.float32)) == pytest.approx(0.3)
    assert isinstance(aggregate([0.2, 0.4], "mean"), float)
    assert aggregate(np.array([0.9] * 12), "confident") == pytest.approx(0.9)
    assert set(AGGREGATORS) == {"mean", "confident"}
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate([0.1], "median")


@pytest.mark.parametrize("strategy", ["mean", "confident"])
def test_empty_or_bad_raises(strategy):
    with pytest.raises(ValueError, match="no face scores"):
        aggregate(np.array([], dtype=np.float32), strategy)
    with pytest.raises(ValueError, match="non-finite"):
        aggregate(np.array([0.1, np.nan]), strategy)
    with pytest.raises(ValueError, match="1-D"):
        aggregate(np.zeros((2, 2)), strategy)


def test_ensemble_weighting():
    w = {"a": 1.0, "b": 3.0, "c": 0.0}
    assert ensemble({"a": 0.2, "b": 0.6}, w) == pytest.approx((0.2 + 3 * 0.6) / 4)
    # only the detectors present count; weights renormalise
    assert ensemble({"a": 0.2}, w) == pytest.approx(0.2)
    assert ensemble({"a": 0.2, "b": None}, w) == pytest.approx(0.2)
    assert ensemble({"a": 0.2, "c": 0.9}, w) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="all 0"):
        ensemble({"c": 0.9}, w)
    with pytest.raises(ValueError, match="no detector scores"):
        ensemble({}, w)
    with pytest.raises(ValueError, match="no ensemble weight"):
        ensemble({"z": 0.5}, w)
    with pytest.raises(ValueError, match="not finite"):
        ensemble({"a": float("nan")}, w)
