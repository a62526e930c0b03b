"""MesoNet MesoInception-4 (Afchar, Nozick, Yamagishi, Echizen, WIFS 2018).

Layout (as the authors' Keras model, `classifiers.py`; ReLU before BatchNorm):
two Inception blocks `(a, b, c, d)` = (1, 4, 4, 2) and (2, 4, 4, 2), each the channel
concatenation of four branches

- `b1`: 1x1 conv (a),
- `b2`: 1x1 conv (b) -> 3x3 conv (b),
- `b3`: 1x1 conv (c) -> 3x3 conv (c), dilation 2,
- `b4`: 1x1 conv (d) -> 3x3 conv (d), dilation 3,

every conv 'same' padded with ReLU, followed by BatchNorm and MaxPool 2; then two
16@5x5 conv blocks (ReLU, BatchNorm, MaxPool 2 and 4); flatten; Dropout(0.5);
Linear(16*8*8 -> 16); LeakyReLU(0.1); Dropout(0.5); Linear(16 -> 1) logit.
"""

from __future__ import annotations

import functools

from dfray.config import DetectorSpec
from dfray.detectors.meso4 import MESONET_CONTRACT, meso4_feature_size
from dfray.detectors.registry import register_detector

# (a, b, c, d) of the two Inception blocks, as in the paper
INCEPTION_WIDTHS = ((1, 4, 4, 2), (2, 4, 4, 2))


@functools.cache
def _classes():
    """Define the module classes on first use, so importing this module needs no torch."""
    from torch import nn

    def conv(cin: int, cout: int, k: int, dilation: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation),
            nn.ReLU(inplace=True),
        )

    class InceptionBlock(nn.Module):
        def __init__(self, cin: int, a: int, b: int, c: int, d: int) -> None:
            super().__init__()
            self.b1 = conv(cin, a, 1)
            self.b2 = nn.Sequential(conv(cin, b, 1), conv(b, b, 3))
            self.b3 = nn.Sequential(conv(cin, c, 1), conv(c, c, 3, dilation=2))
            self.b4 = nn.Sequential(conv(cin, d, 1), conv(d, d, 3, dilation=3))
            self.out_channels = a + b + c + d

        def forward(self, x):
            import torch

            return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], dim=1)

    class MesoInception4(nn.Module):
        def __init__(self, input_size: int = 256) -> None:
            super().__init__()
            s = meso4_feature_size(input_size)
            self.input_size = input_size
            w1, w2 = INCEPTION_WIDTHS
            inc1 = InceptionBlock(3, *w1)
            inc2 = InceptionBlock(inc1.out_channels, *w2)
            self.features = nn.Sequential(
                nn.Sequential(inc1, nn.BatchNorm2d(inc1.out_channels), nn.MaxPool2d(2)),
                nn.Sequential(inc2, nn.BatchNorm2d(inc2.out_channels), nn.MaxPool2d(2)),
                nn.Sequential(conv(inc2.out_channels, 16, 5), nn.BatchNorm2d(16), nn.MaxPool2d(2)),
                nn.Sequential(conv(16, 16, 5), nn.BatchNorm2d(16), nn.MaxPool2d(4)),
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

    for cls in (InceptionBlock, MesoInception4):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    return {"InceptionBlock": InceptionBlock, "MesoInception4": MesoInception4}


def __getattr__(name: str):
    if name in ("InceptionBlock", "MesoInception4"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_mesoinception4(input_size: int = 256):
    """The MesoInception-4 torch module (random init) for square RGB inputs."""
    return _classes()["MesoInception4"](input_size)


@register_detector("mesoinception4", **MESONET_CONTRACT)
def mesoinception4(spec: DetectorSpec):
    """MesoNet MesoInception-4 (Afchar et al. 2018), tiny CPU-friendly CNN."""
    return build_mesoinception4(spec.input_size)
