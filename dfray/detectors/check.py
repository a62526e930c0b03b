"""Load and try every detector once in the driver, before any worker starts.

Each detector of an ensemble is created exactly as a score worker creates it (weights
resolved and hashed, `torch.load(weights_only=True)` with strict keys, or the file
format's own safe loader) and given one dummy batch of its input size, whose output must
be one finite score per crop (in [0, 1] for `output: prob`). A detector that fails is a
`DetectorCheckError` naming it — one line and exit 2 from the CLI, nothing written to the
run folder — so a bad checkpoint never reaches the workers and the run id stays usable.
"""

from __future__ import annotations

import concurrent.futures as cf
import time

import numpy as np

from dfray.config import ConfigError, DetectorSpec, EnsembleConfig, StorageConfig

CHECK_TIMEOUT_S = 300.0  # one dummy batch; a model that hangs here is refused
DUMMY_BATCH = 2


class DetectorCheckError(ConfigError):
    """A detector cannot be loaded or fails on a dummy batch; the message names it.
    `kind` says which: `load` (weights or format), `raised` (the dummy batch raised),
    `bad_output` (wrong shape, NaN/inf, outside [0, 1]) or `timeout`."""

    def __init__(self, message: str, kind: str = "load") -> None:
        super().__init__(message)
        self.kind = kind


def _check_one(spec: DetectorSpec, storage: StorageConfig | None) -> dict:
    from dfray.detectors import create_detector
    from dfray.detectors.registry import DetectorOutputError
    from dfray.score import error_text

    try:
        det = create_detector(spec, device="cpu", precision="fp32", storage=storage)
    except (ConfigError, OSError) as e:
        raise DetectorCheckError(f"detector {spec.name!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - a hostile file can raise anything
        raise DetectorCheckError(f"detector {spec.name!r} cannot be loaded: {error_text(e)}") from None
    s = spec.input_size
    crops = np.random.default_rng(0).integers(0, 256, (DUMMY_BATCH, s, s, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    try:
        p = det.predict(crops)
    except Exception as e:  # noqa: BLE001
        raise DetectorCheckError(
            f"detector {spec.name!r} failed on a dummy batch of {DUMMY_BATCH} crops of "
            f"{s}x{s}: {error_text(e)}",
            kind="bad_output" if isinstance(e, DetectorOutputError) else "raised",
        ) from None
    seconds = time.perf_counter() - t0
    if p.shape != (DUMMY_BATCH,) or not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise DetectorCheckError(
            f"detector {spec.name!r} gave {p!r} for a dummy batch of {DUMMY_BATCH} crops; "
            "expected one probability in [0, 1] per crop", kind="bad_output"
        )
    params = sum(int(t.numel()) * t.element_size() for t in _tensors(det))
    return {
        "name": spec.name,
        "arch": spec.arch,
        "weights": spec.weights,
        "sha256": det.weights_sha256,
        "input_size": s,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "aggregation": spec.aggregation,
        "weight": spec.weight,
        "model_mb": round(params / 2**20, 2),
        "check_s_per_face": round(seconds / DUMMY_BATCH, 4),
    }


def _tensors(det):
    model = getattr(det, "model", None)
    if model is None or not hasattr(model, "parameters"):
        return []
    return [*model.parameters(), *getattr(model, "buffers", lambda: [])()]


def check_detectors(ensemble: EnsembleConfig, storage: StorageConfig | None = None,
                    timeout_s: float = CHECK_TIMEOUT_S) -> list[dict]:
    """Check every detector (see the module docstring); one info dict per detector for
    run.json. Raises DetectorCheckError for the first that fails."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the cost per face on one thread, as an actor's
    pool = cf.ThreadPoolExecutor(1, thread_name_prefix="dfray-check")
    try:
        out = []
        for spec in ensemble.detectors:
            future = pool.submit(_check_one, spec, storage)
            try:
                out.append(future.result(timeout=timeout_s))
            except cf.TimeoutError:
                raise DetectorCheckError(
                    f"detector {spec.name!r} did not answer a dummy batch within "
                    f"{timeout_s:g} s", kind="timeout"
                ) from None
        return out
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        torch.set_num_threads(threads)
