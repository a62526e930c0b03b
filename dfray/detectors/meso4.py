"""MesoNet Meso-4 (Afchar, Nozick, Yamagishi, Echizen: "MesoNet: a Compact Facial Video
Forgery Detection Network", WIFS 2018). ~28k parameters: small enough for CPU tests.

Layout (as the authors' Keras model, ReLU before BatchNorm):
4 conv blocks 8@3x3, 8@5x5, 16@5x5, 16@5x5 ('same' padding), each ReLU + BatchNorm +
MaxPool (2, 2, 2, 4); flatten; Dropout(0.5); Linear(16*8*8 -> 16); LeakyReLU(0.1);
Dropout(0.5); Linear(16 -> 1) logit. For a 256x256 input the flatten size is 16*8*8; for
other input sizes it follows the pooling arithmetic (16 * (S//2//2//2//4)**2).
"""

from __future__ import annotations

import functools

from dfray.config import ConfigError, DetectorSpec
from dfray.detectors.registry import register_detector


def meso4_feature_size(input_size: int) -> int:
    s = input_size
    for k in (2, 2, 2, 4):
        s //= k
    if s < 1:
        raise ConfigError(f"meso4 needs input_size >= 32, got {input_size}")
    return s


@functools.cache
def _meso4_class():
    """Define the Meso4 module class on first use, so importing this module needs no torch.
    Exposed as `dfray.detectors.meso4.Meso4` (module `__getattr__`), so it pickles."""
    from torch import nn

    def block(cin: int, cout: int, k: int, pool: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, padding=k // 2),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(cout),
            nn.MaxPool2d(pool, pool),
        )

    class Meso4(nn.Module):
        def __init__(self, input_size: int = 256) -> None:
            super().__init__()
            s = meso4_feature_size(input_size)
            self.input_size = input_size
            self.features = nn.Sequential(
                block(3, 8, 3, 2),
                block(8, 8, 5, 2),
                block(8, 16, 5, 2),
                block(16, 16, 5, 4),
            )
            self.classifier = nn.Sequential(
                nn.Flatten(1),
                nn.Dropout(0.5),
                nn.Linear(16 * s * s, 16),
                nn.LeakyReLU(0.1),
                nn.Dropout(0.5),
                nn.Linear(16, 1),
            )

        def forward(self, x):
            return self.classifier(self.features(x))

    Meso4.__module__ = __name__
    Meso4.__qualname__ = "Meso4"
    return Meso4


def __getattr__(name: str):
    if name == "Meso4":
        return _meso4_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_meso4(input_size: int = 256):
    """The Meso-4 torch module (random init) for `input_size` x `input_size` RGB inputs."""
    return _meso4_class()(input_size)


# MesoNet's input contract as its authors trained it: 256 px RGB, x / 255 (in dfray's
# terms mean 0, std 1). The builtin meso4_demo was trained with mean 0.5 / std 0.5 and its
# spec (dfray/configs/demo.yaml) says so; a spec that leaves these out gets this contract.
MESONET_CONTRACT = dict(input_size=256, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@register_detector("meso4", **MESONET_CONTRACT)
def meso4(spec: DetectorSpec):
    """MesoNet Meso-4 (Afchar et al. 2018), tiny CPU-friendly CNN."""
    return build_meso4(spec.input_size)
