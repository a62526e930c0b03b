"""Detector registry: small `@register_detector` entry points, `create_detector(spec)`.

An entry point builds one architecture from a `DetectorSpec`. Its registration carries the
architecture's default input contract (input size, mean, std), which `dfray detectors`
prints and `get_detector_defaults` returns, and which a config author copies into the
spec. Preprocessing at run time always comes from the spec, never from these defaults.

Two kinds of entry point:

- state-dict architectures (`meso4`, `effnet`): `fn(spec) -> nn.Module` builds the
  architecture without weights; `create_detector` resolves `spec.weights`, loads the
  state dict with `weights_only=True` and applies it with `strict=True`.
- weights-file architectures (`torchscript`, registered with `loads_weights=True`):
  `fn(spec, weights_path) -> nn.Module` builds the model from the file itself.

Every model returns one logit per crop, shape (N,) or (N, 1), unless the spec's
`options.output` is `"prob"` (allowed where the architecture declares the `output`
option), in which case it returns P(fake) directly.

Importing this module does not import torch; `create_detector` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dfray.config import ConfigError, DetectorSpec, StorageConfig

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


class DetectorError(ValueError):
    """A loaded detector misbehaved at run time (a ValueError, so older callers that
    catch ValueError still do). The scorer turns it into the video's `error` row."""


class DetectorOutputError(DetectorError):
    """The model returned something that is not one finite score per crop: not a tensor,
    the wrong shape, NaN/inf, or (for `output: prob`) a probability outside [0, 1]."""
OUTPUTS = ("logit", "prob")


@dataclass(frozen=True)
class _Entry:
    name: str
    fn: Callable[..., Any]
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    options: tuple[str, ...]
    loads_weights: bool
    description: str

    def defaults(self) -> dict[str, Any]:
        return {
            "input_size": self.input_size,
            "mean": self.mean,
            "std": self.std,
            "options": self.options,
            "requires_weights": self.loads_weights,
            "description": self.description,
        }


_REGISTRY: dict[str, _Entry] = {}


def register_detector(
    name: str,
    *,
    input_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    options: tuple[str, ...] = (),
    loads_weights: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register an architecture entry point under `name`; the decorator only stores it.

    `options` names the keys of `spec.options` the entry point understands (others are
    rejected by `create_detector`). `loads_weights=True` means the entry point is called
    as `fn(spec, weights_path)` and builds the model from the file (weights required).
    Registering a name twice raises ValueError.
    """
    if not name or not isinstance(name, str):
        raise ValueError(f"detector name must be a non-empty string, got {name!r}")
    if len(tuple(mean)) != 3 or len(tuple(std)) != 3:
        raise ValueError(f"detector {name!r}: mean and std need 3 values")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            other = _REGISTRY[name].fn
            raise ValueError(
                f"detector {name!r} is already registered "
                f"(by {other.__module__}.{other.__qualname__})"
            )
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = _Entry(
            name=name,
            fn=fn,
            input_size=int(input_size),
            mean=tuple(float(v) for v in mean),  # type: ignore[arg-type]
            std=tuple(float(v) for v in std),  # type: ignore[arg-type]
            options=tuple(options),
            loads_weights=loads_weights,
            description=doc[0] if doc else "",
        )
        return fn

    return deco


def unregister_detector(name: str) -> None:
    """Remove a registration (for tests and plugins that re-register)."""
    _REGISTRY.pop(name, None)


def list_detectors() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def _entry(arch: str) -> _Entry:
    try:
        return _REGISTRY[arch]
    except KeyError:
        raise ConfigError(
            f"unknown detector architecture {arch!r}; known: {', '.join(list_detectors())}"
        ) from None


def get_detector_defaults(arch: str) -> dict[str, Any]:
    """The default input contract of `arch`: input_size, mean, std, plus the options it
    accepts, whether it requires a weights file, and a one-line description."""
    return _entry(arch).defaults()


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        idx = torch.device(device).index
        if idx is not None and idx >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} requested but only {torch.cuda.device_count()} GPU(s) exist"
            )
        return device
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")


def _resolve_precision(precision: str, device: str) -> str:
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    on_cuda = device.startswith("cuda")
    if precision == "auto":
        return "fp16" if on_cuda else "fp32"
    if precision == "fp16" and not on_cuda:
        raise ValueError("precision 'fp16' needs a CUDA device; use 'fp32' or 'bf16' on CPU")
    if precision == "bf16" and on_cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(f"precision 'bf16' is not supported on {device}")
    return precision


class Detector:
    """One loaded detector: maps face crops to P(fake).

    Attributes: `spec` (the DetectorSpec), `weights_sha256` (sha256 of the weights file
    actually loaded, None for random init), `weights_path`, `device` ("cpu" or
    "cuda[:i]"), `precision` ("fp32", "fp16" or "bf16", the autocast dtype), `output`
    ("logit" or "prob", what the model returns), `model` (the torch module, eval mode).
    """

    def __init__(
        self,
        spec: DetectorSpec,
        model: torch.nn.Module,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        weights_sha256: str | None = None,
        weights_path: str | None = None,
        output: str = "logit",
    ) -> None:
        import torch

        if output not in OUTPUTS:
            raise ConfigError(f"detector {spec.name!r}: output must be one of {OUTPUTS}")
        self.spec = spec
        self.device = device
        self.precision = precision
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path
        self.output = output
        self.model = model.to(device).eval()
        dev = torch.device(device)
        mean = torch.tensor(spec.mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
        # (x / 255 - mean) / std == x * scale + shift, done on the device after a uint8 copy
        self._scale = 1.0 / (255.0 * std)
        self._shift = -mean / std

    def __repr__(self) -> str:
        return (
            f"Detector(name={self.spec.name!r}, arch={self.spec.arch!r}, "
            f"input_size={self.spec.input_size}, device={self.device!r}, "
            f"precision={self.precision!r}, weights_sha256={self.weights_sha256!r})"
        )

    def _check(self, crops: np.ndarray) -> None:
        s = self.spec.input_size
        if not isinstance(crops, np.ndarray):
            raise ValueError(
                f"detector {self.spec.name!r}: crops must be a numpy array, got {type(crops)}"
            )
        if crops.dtype != np.uint8:
            raise ValueError(
                f"detector {self.spec.name!r}: crops must be uint8 RGB, got dtype {crops.dtype}"
            )
        if crops.ndim != 4 or crops.shape[1:] != (s, s, 3):
            raise ValueError(
                f"detector {self.spec.name!r}: crops must have shape (N, {s}, {s}, 3) "
                f"(input_size {s}, RGB), got {crops.shape}"
            )

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 (N, S, S, 3) RGB -> float32 (N, 3, S, S) on the device, normalized with
        the spec's mean/std: (x / 255 - mean) / std."""
        import torch

        self._check(crops)
        x = torch.from_numpy(np.ascontiguousarray(crops))
        if self.device != "cpu":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()
        return x * self._scale + self._shift

    def _autocast(self):
        import contextlib

        import torch

        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self.precision == "fp16" else torch.bfloat16
        device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        return torch.autocast(device_type=device_type, dtype=dtype)

    def predict_logits(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Raw model outputs, (N,) float32: logits, or probabilities if output == 'prob'."""
        import torch

        self._check(crops)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(crops)
        if n == 0:
            return np.empty(0, dtype=np.float32)
        out: list[np.ndarray] = []
        with torch.inference_mode(), self._autocast():
            for i in range(0, n, batch_size):
                chunk = crops[i : i + batch_size]
                y = self.model(self.preprocess(chunk))
                if not isinstance(y, torch.Tensor):
                    raise DetectorOutputError(
                        f"detector {self.spec.name!r}: model returned {type(y).__name__}, "
                        "expected a tensor of shape (N,) or (N, 1)"
                    )
                if y.numel() != len(chunk) or (y.ndim == 2 and y.shape[1] != 1) or y.ndim > 2:
                    raise DetectorOutputError(
                        f"detector {self.spec.name!r}: model returned shape {tuple(y.shape)} "
                        f"for {len(chunk)} crops, expected ({len(chunk)},) or ({len(chunk)}, 1)"
                    )
                out.append(self._check_values(y.reshape(-1).float().cpu().numpy()))
        return np.concatenate(out).astype(np.float32, copy=False)

    def _check_values(self, y: np.ndarray) -> np.ndarray:
        """Raise DetectorOutputError on NaN/inf, or on probabilities outside [0, 1]."""
        bad = ~np.isfinite(y)
        if bad.any():
            raise DetectorOutputError(
                f"detector {self.spec.name!r}: model returned {int(bad.sum())} non-finite "
                f"value(s) (NaN/inf) for {len(y)} crops"
            )
        if self.output == "prob" and ((y < 0) | (y > 1)).any():
            raise DetectorOutputError(
                f"detector {self.spec.name!r}: output 'prob' but model returned values in "
                f"[{float(y.min()):.4g}, {float(y.max()):.4g}], outside [0, 1]"
            )
        return y

    def predict(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """crops: (N, S, S, 3) uint8 RGB with S == spec.input_size.

        Returns (N,) float32 P(fake) = sigmoid(logit) (or the model's own probability for
        `output: prob`). Preprocessing from the spec: x/255, (x-mean)/std, NCHW. Runs under
        torch.inference_mode() and autocast at `self.precision`. N == 0 -> empty array.
        """
        y = self.predict_logits(crops, batch_size=batch_size)
        if self.output == "prob":  # checked in [0, 1] by predict_logits
            return y.astype(np.float32, copy=False)
        # numerically stable sigmoid in float64, then float32
        y64 = y.astype(np.float64)
        e = np.exp(-np.abs(y64))
        p = np.where(y64 >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return p.astype(np.float32)


def check_spec(spec: DetectorSpec) -> _Entry:
    """Raise ConfigError unless the spec's arch is registered and takes its options
    (cheap, no torch: the driver calls it before any worker starts)."""
    entry = _entry(spec.arch)
    unknown = sorted(set(spec.options) - set(entry.options))
    if unknown:
        raise ConfigError(
            f"detector {spec.name!r}: unknown options {unknown} for arch {spec.arch!r}; "
            f"known: {sorted(entry.options)}"
        )
    if entry.loads_weights and not spec.weights:
        raise ConfigError(f"detector {spec.name!r}: arch {spec.arch!r} needs 'weights'")
    output = spec.options.get("output", "logit")
    if output not in OUTPUTS:
        raise ConfigError(
            f"detector {spec.name!r}: options.output must be one of {OUTPUTS}, got {output!r}"
        )
    return entry


def create_detector(
    spec: DetectorSpec,
    device: str = "cpu",
    precision: str = "auto",
    *,
    storage: StorageConfig | None = None,
    cache_dir: str | None = None,
    runtime: str = "torch",
) -> Detector:
    """Build the detector of `spec` on `device` ("cpu", "cuda", "cuda:N" or "auto").

    Weights come from `spec.weights` (local path, `builtin:NAME`, `s3://`, `https://`),
    checked against `spec.sha256` when given. Without weights, state-dict architectures
    get random init (a warning is logged; for tests only); weights-file architectures
    (torchscript) raise ConfigError. `precision`: "auto" (fp16 on CUDA, fp32 on CPU),
    "fp32", "fp16" (CUDA only) or "bf16"; half precision runs as autocast. `storage`
    (S3 endpoint/region) and `cache_dir` go to `resolve_weights` for remote weights.
    `runtime="onnxruntime"` runs the model with ONNX Runtime when the device is the CPU
    (dfray.detectors.ort; fp32; a model that cannot be exported stays on torch).
    """
    from dfray.detectors import weights as W

    entry = check_spec(spec)
    output = spec.options.get("output", "logit")
    device = _resolve_device(device)
    precision = _resolve_precision(precision, device)

    path = sha = None
    if spec.weights:
        path, sha = W.resolve_weights(
            spec.weights, spec.sha256, cache_dir=cache_dir, storage=storage
        )
    elif entry.loads_weights:
        raise ConfigError(f"detector {spec.name!r}: arch {spec.arch!r} needs 'weights'")
    elif spec.sha256:
        raise ConfigError(f"detector {spec.name!r}: sha256 given but no weights")

    if entry.loads_weights:
        model = entry.fn(spec, path)
    else:
        model = entry.fn(spec)
        if path is not None:
            W.load_into(model, W.load_state_dict(path), source=str(path))
        else:
            log.warning(
                "detector %r (%s): no weights given, using RANDOM initialization; "
                "scores are meaningless (tests only)",
                spec.name,
                spec.arch,
            )
    if runtime == "onnxruntime" and device == "cpu" and spec.arch != "onnx":
        from dfray.detectors.ort import onnxruntime_module

        model, precision = onnxruntime_module(model, spec, sha), "fp32"
    return Detector(
        spec,
        model,
        device=device,
        precision=precision,
        weights_sha256=sha,
        weights_path=str(path) if path is not None else None,
        output=output,
    )
