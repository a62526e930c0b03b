"""Convert the MesoNet authors' Keras-2 weights (`Meso4_DF.h5`, `MesoInception_F2F.h5`, ...)
into state dicts of dfray's `meso4` / `mesoinception4` architectures. Reads the HDF5 file
with h5py; TensorFlow is not needed.

What the conversion does (each point checked by benchmarks/mesonet_keras_check.sh against
Keras itself):

- conv kernels: Keras HWIO -> torch OIHW; dense kernels: Keras (in, out) -> torch (out, in);
- Keras Flatten runs over NHWC, torch's over NCHW: the rows of the first dense kernel are
  reordered from (h, w, c) to (c, h, w), so the torch model needs no permute;
- Keras BatchNormalization's epsilon is 1e-3, torch's 1e-5: the difference is folded into
  `running_var` (var + 1e-3 - 1e-5), so the standard `nn.BatchNorm2d` computes the same;
- MesoInception's file holds several same-shaped 1x1 convolutions: weights are mapped by
  layer *name* (Keras numbers its layers in creation order, and the authors' code creates
  an Inception block's convolutions branch by branch), never by their position in the
  file, and every shape is checked;
- MesoNet's last layer is Dense(1, sigmoid) giving P(real) (class 1 = real). dfray's
  scores are P(fake), so the last dense layer's weight and bias are negated: the converted
  model's logit is -logit_real, and sigmoid(logit) = 1 - P(real) = P(fake).

The converted detectors expect the authors' preprocessing: 256 px RGB, x / 255 (in dfray's
contract mean 0, std 1), which the architectures register as their input contract.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch

KERAS_BN_EPS = 1e-3
TORCH_BN_EPS = 1e-5
ARCHS = ("meso4", "mesoinception4")
OUTPUT = "P(fake)"  # what the converted model's sigmoid(logit) is; MesoNet's own is P(real)


class ConversionError(ValueError):
    """The file is not a MesoNet Keras weights file of the requested architecture."""


def _keras_layers(path: Path) -> dict[str, dict[str, Any]]:
    """{layer name: {"kernel"/"bias"/"gamma"/...: numpy array}} of a Keras-2 weights file
    (`model.save_weights` or a full `model.save`, which keeps them under model_weights)."""
    import h5py
    import numpy as np

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ConversionError(f"{path}: not an HDF5 file ({e})") from e
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        names = root.attrs.get("layer_names")
        if names is None:
            raise ConversionError(f"{path}: no 'layer_names': not a Keras-2 weights file")
        out: dict[str, dict[str, Any]] = {}
        for raw in names:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            g = root[name]
            wnames = g.attrs.get("weight_names", [])
            weights = {}
            for wraw in wnames:
                wname = wraw.decode() if isinstance(wraw, bytes) else str(wraw)
                key = wname.rsplit("/", 1)[-1].split(":")[0]
                weights[key] = np.asarray(g[wname], dtype=np.float32)
            if weights:
                out[name] = weights
    return out


def _by_kind(layers: dict[str, dict[str, Any]], kind: str) -> list[str]:
    """Layer names of one kind ('conv2d', 'batch_normalization', 'dense') in Keras's
    creation order (the number Keras appends to the name; no number = first)."""
    pat = re.compile(rf"^{kind}(?:_(\d+))?$")
    found = []
    for name in layers:
        m = pat.match(name)
        if m:
            found.append((int(m.group(1) or 0), name))
    return [n for _, n in sorted(found)]


def _conv(t: dict[str, Any], prefix: str, w: dict[str, Any]) -> None:
    import torch

    t[f"{prefix}.weight"] = torch.from_numpy(w["kernel"].transpose(3, 2, 0, 1).copy())
    t[f"{prefix}.bias"] = torch.from_numpy(w["bias"].copy())


def _bn(t: dict[str, Any], prefix: str, w: dict[str, Any]) -> None:
    import torch

    t[f"{prefix}.weight"] = torch.from_numpy(w["gamma"].copy())
    t[f"{prefix}.bias"] = torch.from_numpy(w["beta"].copy())
    t[f"{prefix}.running_mean"] = torch.from_numpy(w["moving_mean"].copy())
    var = w["moving_variance"].astype("float64") + KERAS_BN_EPS - TORCH_BN_EPS
    t[f"{prefix}.running_var"] = torch.from_numpy(var.astype("float32"))
    t[f"{prefix}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)


def _dense(t: dict[str, Any], prefix: str, w: dict[str, Any], *, nhwc: tuple | None = None,
           negate: bool = False) -> None:
    import torch

    k = w["kernel"]  # (in, out)
    if nhwc is not None:  # rows ordered (h, w, c) by Keras's Flatten -> (c, h, w)
        h, wd, c = nhwc
        k = k.reshape(h, wd, c, -1).transpose(2, 0, 1, 3).reshape(h * wd * c, -1)
    sign = -1.0 if negate else 1.0
    t[f"{prefix}.weight"] = torch.from_numpy((sign * k.T).copy())
    t[f"{prefix}.bias"] = torch.from_numpy((sign * w["bias"]).copy())


# (torch prefix of each conv) in Keras creation order
_MESO4_CONVS = ("features.0.0", "features.1.0", "features.2.0", "features.3.0")
_MESO4_BNS = ("features.0.2", "features.1.2", "features.2.2", "features.3.2")


def _inception_convs(block: int) -> list[str]:
    """An Inception block creates its convs as b1, b2 1x1, b2 3x3, b3 1x1, b3 3x3 (dil 2),
    b4 1x1, b4 3x3 (dil 3) (the authors' `InceptionLayer`)."""
    p = f"features.{block}.0"
    return [f"{p}.b1.0", f"{p}.b2.0.0", f"{p}.b2.1.0", f"{p}.b3.0.0", f"{p}.b3.1.0",
            f"{p}.b4.0.0", f"{p}.b4.1.0"]


_INCEPTION_CONVS = (*_inception_convs(0), *_inception_convs(1), "features.2.0.0",
                    "features.3.0.0")
_INCEPTION_BNS = ("features.0.1", "features.1.1", "features.2.1", "features.3.1")


def guess_arch(path: str | os.PathLike[str]) -> str:
    """'mesoinception4' for a file with Inception layers (more than 4 convs), else 'meso4'."""
    return "mesoinception4" if len(_by_kind(_keras_layers(Path(path)), "conv2d")) > 4 else "meso4"


def convert_keras_mesonet(path: str | os.PathLike[str], arch: str | None = None,
                          input_size: int = 256) -> dict[str, torch.Tensor]:
    """State dict of dfray's `arch` ('meso4' or 'mesoinception4'; None: from the file)
    holding the weights of the Keras file at `path`; loads strictly into the architecture
    (checked here) and outputs a P(fake) logit."""
    from dfray.detectors.meso4 import build_meso4, meso4_feature_size
    from dfray.detectors.mesoinception4 import build_mesoinception4
    from dfray.detectors.weights import WeightsError, load_into

    path = Path(path)
    layers = _keras_layers(path)
    convs = _by_kind(layers, "conv2d")
    bns = _by_kind(layers, "batch_normalization")
    denses = _by_kind(layers, "dense")
    arch = arch or ("mesoinception4" if len(convs) > 4 else "meso4")
    if arch not in ARCHS:
        raise ConversionError(f"arch must be one of {ARCHS}, got {arch!r}")
    conv_keys, bn_keys = (
        (_MESO4_CONVS, _MESO4_BNS) if arch == "meso4" else (_INCEPTION_CONVS, _INCEPTION_BNS)
    )
    if (len(convs), len(bns), len(denses)) != (len(conv_keys), len(bn_keys), 2):
        raise ConversionError(
            f"{path}: {len(convs)} conv, {len(bns)} batchnorm and {len(denses)} dense layers; "
            f"a {arch} file has {len(conv_keys)}, {len(bn_keys)} and 2"
            + ("" if arch != "meso4" or len(convs) <= 4 else " (use --arch mesoinception4)")
        )
    sd: dict[str, Any] = {}
    for name, key in zip(convs, conv_keys, strict=True):
        _conv(sd, key, layers[name])
    for name, key in zip(bns, bn_keys, strict=True):
        _bn(sd, key, layers[name])
    s = meso4_feature_size(input_size)
    _dense(sd, "classifier.2", layers[denses[0]], nhwc=(s, s, 16))
    _dense(sd, "classifier.5", layers[denses[1]], negate=True)
    model = build_meso4(input_size) if arch == "meso4" else build_mesoinception4(input_size)
    try:
        load_into(model, sd, source=f"converted {path.name}")
    except WeightsError as e:
        raise ConversionError(str(e)) from e
    return sd


def convert_file(src: str | os.PathLike[str], dest: str | os.PathLike[str],
                 arch: str | None = None) -> str:
    """Convert `src` (.h5) to a torch state dict at `dest` (.pt); returns the arch used."""
    import torch

    arch = arch or guess_arch(src)
    sd = convert_keras_mesonet(src, arch)
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    torch.save(sd, dest)
    return arch
