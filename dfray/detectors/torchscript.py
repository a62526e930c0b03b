"""`torchscript`: any submitted model as a TorchScript file (`torch.jit.save`).

Contract for submitters: the scripted/traced module takes a float32 tensor (N, 3, S, S),
RGB, already normalised with the spec's mean/std (x/255, then (x - mean)/std), and returns
a tensor of shape (N,) or (N, 1): logits by default, or probabilities P(fake) if the spec
sets `options: {output: prob}`. S, mean and std come from the spec (default 224 and
ImageNet mean/std). On CUDA the model runs under autocast (fp16 by default), so it should
tolerate half precision; otherwise create the detector with `precision="fp32"`.

Loaded with `torch.jit.load(path, map_location="cpu")`, which reads TorchScript code and
tensors and never unpickles arbitrary Python objects.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from dfray.config import IMAGENET_MEAN, IMAGENET_STD, DetectorSpec
from dfray.detectors.registry import register_detector


@register_detector(
    "torchscript",
    input_size=224,
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    options=("output",),
    loads_weights=True,
)
def torchscript(spec: DetectorSpec, weights_path: Path):
    """Any submitted model as a TorchScript file; (N,3,S,S) float -> (N,) or (N,1) logits."""
    import torch

    from dfray.detectors.weights import WeightsError

    try:
        with warnings.catch_warnings():
            # torch >= 2.10 marks TorchScript deprecated (in favour of torch.export); the
            # submitted files are TorchScript, so the warning is noise on every load.
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(weights_path), map_location="cpu")
    except Exception as e:  # RuntimeError for a file that is not a TorchScript archive
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(
            f"detector {spec.name!r}: {weights_path} is not a loadable TorchScript file: {first}"
        ) from e
