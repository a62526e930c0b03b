"""SageMaker prices and MaxRuntimeInSeconds from the budget (pure)."""

from __future__ import annotations

import math

import pytest

from dfray.cloud import prices, processing


def test_max_runtime_from_budget_caps_and_refusal():
    assert prices.max_runtime_s(10.0, 0.736, 2) == math.floor(10.0 / (0.736 * 2) * 3600)
    assert prices.max_runtime_s(10.0, 0.736, 2, limit_s=3600) == 3600
    assert prices.max_runtime_s(1e6, 0.5, 1) == prices.MAX_RUNTIME_S == 777_600
    assert prices.max_runtime_s(None, None, 4) == prices.DEFAULT_RUNTIME_S
    assert prices.max_runtime_s(None, None, 4, limit_s=7200) == 7200
    assert prices.max_runtime_s(0.5, 3.0, 1) == 600  # exactly 10 minutes is enough
    with pytest.raises(processing.SageMakerError, match="10 minutes"):
        prices.max_runtime_s(0.49, 3.0, 1)
    with pytest.raises(processing.SageMakerError, match="budget must be > 0"):
        prices.max_runtime_s(0, 1.0, 1)


def test_price_sources(monkeypatch):
    assert prices.resolve_price("ml.g4dn.xlarge", "us-east-1", 0.9).source == "--price-per-hour"
    p = prices.resolve_price("ml.g5.xlarge", "us-east-1", None)
    assert p.usd_per_hour == prices.ML_ON_DEMAND["us-east-1"]["ml.g5.xlarge"]
    assert p.source.startswith("static:")
    with pytest.raises(processing.SageMakerError, match="must be > 0"):
        prices.resolve_price("ml.g5.xlarge", "us-east-1", 0.0)
