"""The benchmarks' EfficientNet detector: DFDC 1st-place layout, seeded weights, saved the
winner's way. Shared by bench_pipeline.py (its default ensemble) and bench_runtime.py.

Nothing is downloaded: the encoder is built by `dfray.detectors.effnet.build_effnet`
(timm, `pretrained=False`) after `torch.manual_seed(seed)`. A freshly initialised network
scores every input ≈ 0.5, which would make the agreement check and `confident`
aggregation meaningless, so before saving:

- every BatchNorm's running mean is drawn from U(-1, 1), its running variance from
  U(0.8, 1.2) and its scale from U(0.5, 1.5) (eval mode uses the running statistics, so
  this moves the activations the way trained statistics do);
- the head's weight is drawn from N(0, 1), then scaled (never by more than 10x) and its
  bias shifted so that the logits of calibration crops have mean 0 and standard deviation
  about 2: their sigmoid scores spread over (0, 1). bench_pipeline.py calibrates on
  `identity_faces` (the faces the generated corpus is made of, cropped as the winner
  crops them, mirrored and at three brightness levels), so that the corpus's videos
  spread too; bench_runtime.py on its timing crops (`calibration_faces`).

The file is written as the winner's training script wrote its checkpoints:
`torch.save({"state_dict": nn.DataParallel(model).state_dict(), "epoch": …,
"bce_best": …}, path)` (every key prefixed `module.`), and read back through dfray's
normal registry path (`create_detector` → `load_state_dict`, `torch.load(weights_only=True)`,
`strict=True`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

DEFAULT_ENCODER = "efficientnet_b0"
DEFAULT_SIZE = 380
SEED = 0


def calibration_faces(n: int, size: int):
    """(n, size, size, 3) uint8: two real faces (scikit-image astronaut and camera), the
    rest seeded uniform noise."""
    import cv2
    import numpy as np
    from skimage import data

    real = [data.astronaut()[20:220, 150:330], np.dstack([data.camera()[40:240, 180:380]] * 3)]
    out = [cv2.resize(np.ascontiguousarray(f), (size, size)) for f in real]
    rng = np.random.default_rng(0)
    while len(out) < n:
        out.append(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    return np.stack(out[:n]).astype(np.uint8)


def identity_faces(size: int):
    """(18, size, size, 3) uint8: each of dfray.samples' face photographs (the corpus's
    identities), mirrored or not, at brightness x0.7, x1.0, x1.3, cropped around its
    face box with the winner's margins (w // 3, h // 3), isotropically resized and padded
    as the winner does."""
    import numpy as np
    from reference_scorer import isotropically_resize_image, put_to_center

    samples = __import__("dfray.samples", fromlist=["_face"])  # the module, not the API
    out = []
    for identity in samples.IDENTITIES:
        for mirror in (False, True):
            img, box, _ = samples._face(identity, mirror)
            xmin, ymin, xmax, ymax = (int(b) for b in box)
            p_w, p_h = (xmax - xmin) // 3, (ymax - ymin) // 3
            crop = img[max(ymin - p_h, 0) : ymax + p_h, max(xmin - p_w, 0) : xmax + p_w]
            face = put_to_center(isotropically_resize_image(np.ascontiguousarray(crop), size),
                                 size)
            for k in (0.7, 1.0, 1.3):
                out.append(np.clip(face.astype(np.float32) * k, 0, 255).astype(np.uint8))
    return np.stack(out)


def effnet_spec(weights: str | Path, encoder: str = DEFAULT_ENCODER, size: int = DEFAULT_SIZE,
                aggregation: str = "confident", name: str | None = None):
    from dfray.config import DetectorSpec

    return DetectorSpec(name=name or encoder, arch="effnet", weights=str(weights),
                        input_size=size, aggregation=aggregation, options={"encoder": encoder})


def _save_winner_way(model, path: Path, **extra) -> None:
    """DFDC 1st place (training/train_classifier.py): {"state_dict": DataParallel(model)
    .state_dict(), "epoch": …, "bce_best": …}."""
    import torch
    from torch import nn

    state = nn.DataParallel(model).state_dict()
    assert all(k.startswith("module.") for k in state)
    torch.save({"state_dict": state, **extra}, path)


def build_weights(encoder: str, size: int, crops, path: Path, seed: int = SEED) -> Path:
    """Seeded DeepFakeClassifier(encoder) with moved BatchNorm statistics and a head
    calibrated on `crops` (see the module docstring), saved the winner's way at `path`."""
    import torch
    from torch import nn

    from dfray.detectors import create_detector
    from dfray.detectors.effnet import build_effnet

    torch.manual_seed(seed)
    model = build_effnet(encoder)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.8, 1.2)
                m.weight.uniform_(0.5, 1.5)
        model.fc.weight.normal_(0, 1.0)
    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    _save_winner_way(model, tmp, epoch=0, bce_best=0.0)
    # centre the logits on these crops and scale them to a spread of about 2 (never up
    # by more than 10x, which would only amplify rounding); read through dfray's loader
    logits = create_detector(effnet_spec(tmp, encoder, size), device="cpu").predict_logits(crops)
    k = min(10.0, 2.0 / max(float(logits.std()), 1e-9))
    with torch.no_grad():
        model.fc.weight.mul_(k)
        model.fc.bias.mul_(k).sub_(float(logits.mean()) * k)
    _save_winner_way(model, tmp, epoch=0, bce_best=0.0)
    tmp.replace(path)
    return path


def bench_ensemble(folder: str | Path, encoder: str = DEFAULT_ENCODER,
                   size: int = DEFAULT_SIZE, aggregation: str = "confident"):
    """(EnsembleConfig, YAML path) of the one-EfficientNet benchmark ensemble.

    The checkpoint and an ensemble YAML are made once under folder/ (named after the
    encoder, size, seed and a hash of this file, so a changed recipe gets new weights) and
    reused; the ensemble is loaded from the YAML by `dfray.config.load_ensemble`, as a user's
    config would be.
    """
    from dfray.config import load_ensemble

    recipe = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:8]
    d = Path(folder) / f"effnet-{encoder}-{size}-seed{SEED}-{recipe}"
    ckpt = d / f"final_{SEED}_DeepFakeClassifier_{encoder}_{size}"
    if not ckpt.is_file():
        build_weights(encoder, size, identity_faces(size), ckpt)
    yml = d / f"ensemble-{aggregation}.yaml"
    if not yml.is_file():
        tmp = yml.with_name(yml.name + ".tmp")
        tmp.write_text(
            "detectors:\n"
            f"  - name: {encoder}\n"
            "    arch: effnet\n"
            f"    weights: {ckpt}\n"
            f"    input_size: {size}\n"
            f"    aggregation: {aggregation}\n"
            f"    options: {{encoder: {encoder}}}\n"
        )
        tmp.replace(yml)
    return load_ensemble(str(yml)), yml
