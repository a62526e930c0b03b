"""Deepfake detectors: a registry of architectures and the loaded `Detector`.

    from dfray.detectors import create_detector, list_detectors
    det = create_detector(spec, device="cuda")
    p_fake = det.predict(crops)          # (N, S, S, 3) uint8 RGB -> (N,) float32

Importing this package registers the built-in architectures (meso4, mesoinception4, effnet,
torchscript, onnx, torch_export) without importing torch; torch, timm and onnxruntime are
imported when a detector is created.
"""

from dfray.detectors import (  # noqa: F401
    effnet,
    meso4,
    mesoinception4,
    onnx,
    torch_export,
    torchscript,
)
from dfray.detectors.registry import (
    Detector,
    DetectorError,
    DetectorOutputError,
    create_detector,
    get_detector_defaults,
    list_detectors,
    register_detector,
)
from dfray.detectors.weights import WeightsError, load_state_dict, resolve_weights

__all__ = [
    "Detector",
    "DetectorError",
    "DetectorOutputError",
    "WeightsError",
    "create_detector",
    "get_detector_defaults",
    "list_detectors",
    "load_state_dict",
    "register_detector",
    "resolve_weights",
]
