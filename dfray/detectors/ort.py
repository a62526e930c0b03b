"""Run a torch detector with ONNX Runtime on CPU nodes (`--cpu-runtime onnxruntime`).

The detector's torch module (weights loaded, eval mode) is exported once with
`torch.onnx.export(dynamo=True)` (the torch.export-based exporter; the batch axis dynamic)
and then run by an onnxruntime session with as many intra-op threads as the actor's torch
threads. The ONNX file is cached per node under ~/.cache/dfray/onnx/ (DFRAY_CACHE_DIR),
keyed by the architecture, input size, weights sha256 and the torch and dfray versions, so
a node exports each model once; a model with random weights is exported every time.

Why: on the CPU ONNX Runtime runs an EfficientNet-B0 at 380 px about 1.5x faster than
torch eager on the same thread (benchmarks/bench_runtime.py, benchmarks/RESULTS.md), with
scores that move slightly (the exported graph's kernels round differently: max |Δp| 2e-4
on the benchmark's B0 at 380 px, 3e-5 in the tests at 96 px). A model that cannot be
exported keeps running on torch (a warning says so): the option changes speed, never
whether a video scores. Off by default: the default path keeps the DFDC script's scores.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger("dfray")

def cache_dir() -> Path:
    root = os.environ.get("DFRAY_CACHE_DIR") or Path.home() / ".cache" / "dfray"
    return Path(root) / "onnx"


def cache_key(spec, weights_sha256: str | None) -> str | None:
    """The cache key of an export, None when it must not be cached (random weights)."""
    if not weights_sha256:
        return None
    import torch

    import dfray

    text = "|".join([spec.arch, str(spec.input_size), weights_sha256, torch.__version__,
                     dfray.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def export(model, input_size: int) -> bytes:
    """The ONNX model of `model` for (N, 3, S, S) float32 input, N dynamic."""
    import warnings

    import torch

    x = torch.zeros(2, 3, input_size, input_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model.eval(), (x,), None, input_names=["x"], output_names=["y"],
            dynamic_shapes={"x": {0: batch}}, dynamo=True, verbose=False,
        )
    return program.model_proto.SerializeToString()


def onnxruntime_module(model, spec, weights_sha256: str | None):
    """`model` as a torch module that runs an onnxruntime session (same inputs/outputs),
    or `model` itself if it cannot be exported (logged)."""
    import onnxruntime as ort
    import torch

    from dfray import storage
    from dfray.config import StorageConfig
    from dfray.detectors.onnx import _module

    key = cache_key(spec, weights_sha256)
    path = cache_dir() / f"{key}.onnx" if key else None
    try:
        if path is not None and path.is_file():
            data = path.read_bytes()
        else:
            data = export(model, spec.input_size)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                storage.write_bytes(str(path), data, StorageConfig())
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, torch.get_num_threads())
        opts.inter_op_num_threads = 1
        # batches differ in size (faces per video): a memory pattern planned per input shape
        # allocated fresh memory for each new size (measured: 0.082 vs 0.064 CPU s per face
        # over 30 batches of 24-40 faces at 380 px, most of the difference system time)
        opts.enable_mem_pattern = False
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any export/runtime failure: stay on torch
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        log.warning("detector %r (%s): cannot run on onnxruntime (%s); using torch",
                    spec.name, spec.arch, first)
        return model
    return _module(session)
