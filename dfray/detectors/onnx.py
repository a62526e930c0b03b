"""`onnx`: any submitted model as an ONNX file, run with onnxruntime.

Same contract as `torchscript`: input float32 (N, 3, S, S), RGB, normalised with the
spec's mean/std; output (N,) or (N, 1) logits, or P(fake) with `options: {output: prob}`.
The first graph input and first output are used; the batch axis must be dynamic.
Runs on the CUDAExecutionProvider when onnxruntime offers it and torch sees a GPU (a Ray
actor without a GPU sees none), else on CPU. An ONNX file is a protobuf graph: loading it
runs no Python.
"""

from __future__ import annotations

from pathlib import Path

from dfray.config import IMAGENET_MEAN, IMAGENET_STD, DetectorSpec
from dfray.detectors.registry import register_detector


def _module(session):
    import numpy as np
    import torch

    class OnnxModule(torch.nn.Module):
        """A torch module around an onnxruntime session (no parameters)."""

        def __init__(self) -> None:
            super().__init__()
            self.session = session
            self.input_name = session.get_inputs()[0].name

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            arr = np.ascontiguousarray(x.detach().float().cpu().numpy())
            y = self.session.run(None, {self.input_name: arr})[0]
            return torch.from_numpy(np.asarray(y, dtype=np.float32)).to(x.device)

    return OnnxModule()


@register_detector(
    "onnx",
    input_size=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    options=("output",),
    loads_weights=True,
)
def onnx(spec: DetectorSpec, weights_path: Path):
    """Any submitted model as an ONNX file (onnxruntime); (N,3,S,S) -> (N,) or (N,1)."""
    import onnxruntime as ort
    import torch

    from dfray.detectors.weights import WeightsError

    providers = ["CPUExecutionProvider"]
    if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(weights_path), providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(
            f"detector {spec.name!r}: {weights_path} is not a loadable ONNX file: {first}"
        ) from e
    return _module(session)
