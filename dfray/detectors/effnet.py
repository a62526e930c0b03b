"""`effnet`: the DFDC 1st-place solution's `DeepFakeClassifier` layout
(selimsef/dfdc_deepfake_challenge, training/zoo/classifiers.py).

    encoder  = timm.create_model(encoder_name, pretrained=False)   # keeps its classifier
    avg_pool = AdaptiveAvgPool2d((1, 1))
    dropout  = Dropout(0.0)
    fc       = Linear(encoder.num_features, 1)
    forward: fc(dropout(avg_pool(encoder.forward_features(x)).flatten(1)))  -> (N, 1) logit

The attribute names are exactly theirs, and the encoder keeps timm's default 1000-class
classifier (unused in forward, but present in their checkpoints), so the released
checkpoints (`{"state_dict": …}`, keys like `module.encoder.conv_stem.weight`) load with
`strict=True`. Default contract: 380x380 input, ImageNet mean/std (their inference
pipeline). Options: `encoder` (default `tf_efficientnet_b7_ns`, which newer timm names
`tf_efficientnet_b7.ns_jft_in1k`; both spellings resolve in any timm). Weights are never
downloaded: the encoder is always built with `pretrained=False`.
"""

from __future__ import annotations

import functools
import re

from dfray.config import IMAGENET_MEAN, IMAGENET_STD, ConfigError, DetectorSpec
from dfray.detectors.registry import register_detector

DEFAULT_ENCODER = "tf_efficientnet_b7_ns"


def resolve_encoder_name(name: str) -> str:
    """The timm model name to build for `name` in the installed timm.

    timm >= 0.9 renamed `<arch>_ns` (Noisy Student) to `<arch>.ns_jft_in1k` and only
    keeps the old name as a deprecated alias (with a warning); older timm knows only the
    old name. Tries the spelling the installed timm prefers first.
    """
    import timm

    candidates = [name]
    m = re.fullmatch(r"(.+)_ns", name)
    if m:
        candidates.insert(0, f"{m.group(1)}.ns_jft_in1k")
    m = re.fullmatch(r"(.+)\.ns_jft_in1k", name)
    if m:
        candidates.append(f"{m.group(1)}_ns")
    for c in candidates:
        try:
            if timm.is_model(c):
                return c
        except Exception:  # noqa: S112 - some timm versions reject tagged names here
            continue
    base = name.split(".")[0]
    near = timm.list_models(f"*{base.removesuffix('_ns')}*")[:10]
    raise ConfigError(
        f"effnet encoder {name!r} is not a timm model (timm {timm.__version__}); "
        f"similar: {near or 'none'}"
    )


@functools.cache
def _classifier_class():
    """Define DeepFakeClassifier on first use (no torch import at module import time).
    Exposed as `dfray.detectors.effnet.DeepFakeClassifier`, so it pickles."""
    import timm
    from torch import nn

    class DeepFakeClassifier(nn.Module):
        def __init__(self, encoder: str = DEFAULT_ENCODER, dropout_rate: float = 0.0) -> None:
            super().__init__()
            self.encoder_name = resolve_encoder_name(encoder)
            self.encoder = timm.create_model(self.encoder_name, pretrained=False)
            self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
            self.dropout = nn.Dropout(dropout_rate)
            self.fc = nn.Linear(self.encoder.num_features, 1)

        def forward(self, x):
            x = self.encoder.forward_features(x)
            x = self.avg_pool(x).flatten(1)
            x = self.dropout(x)
            return self.fc(x)

    DeepFakeClassifier.__module__ = __name__
    DeepFakeClassifier.__qualname__ = "DeepFakeClassifier"
    return DeepFakeClassifier


def __getattr__(name: str):
    if name == "DeepFakeClassifier":
        return _classifier_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_effnet(encoder: str = DEFAULT_ENCODER):
    """A DeepFakeClassifier with a randomly initialised `encoder` (never downloads)."""
    return _classifier_class()(encoder)


@register_detector(
    "effnet",
    input_size=380,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    options=("encoder",),
)
def effnet(spec: DetectorSpec):
    """DFDC 1st-place DeepFakeClassifier: timm EfficientNet + avg pool + Linear(1)."""
    encoder = spec.options.get("encoder", DEFAULT_ENCODER)
    if not isinstance(encoder, str) or not encoder:
        raise ConfigError(f"detector {spec.name!r}: options.encoder must be a timm model name")
    return build_effnet(encoder)
