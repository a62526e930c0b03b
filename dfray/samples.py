"""Synthetic labelled video corpus in the DFDC layout, for demos, tests and smoke runs.

`generate_corpus(out_dir)` writes H.264 ``.mp4`` clips plus a DFDC-style ``metadata.json``
(``{"name.mp4": {"label": "REAL"|"FAKE", "split": "train", "original": ...}}``) into one
folder. Nothing is downloaded: the only faces are real photographs shipped inside installed
packages -- scikit-image's ``astronaut`` (Eileen Collins) and ``camera`` (the cameraman,
grayscale, turned to 3 channels) and matplotlib's ``grace_hopper.jpg``. Their face boxes
and five landmarks were measured once with facenet-pytorch MTCNN and are hard-coded here.

REAL clips: a soft-edged elliptical head crop of one identity (randomly mirrored and
tinted per clip) moves over a per-clip background (gradient, cloud texture or stripes that
pan, plus moving shapes) along a smooth path, with a per-clip in-plane tilt (up to 8
degrees), a zoom that keeps the face between roughly 15% and 45% of the frame height (so
MTCNN still finds it on frames downscaled by 0.5), and global brightness/contrast ramps.
The head is drawn with Pillow resizes and pastes, the only per-frame work besides x264.

FAKE clips follow DFDC: each one re-renders one REAL clip (its ``original``: same
identity, background, motion, size and length) and manipulates the face on every frame:

* ``faceswap``: the inner face (eyes-nose-mouth) of ANOTHER identity (a frontal one:
  astronaut or grace_hopper), mapped box-to-box onto the target face, degraded by
  down/up-sampling and blur (a low-resolution generator output), colour-matched to the
  target and then given a per-channel gain/offset mismatch, blended through a
  Gaussian-feathered ellipse;
* ``selfblend``: a self-blended image (Shiohara & Yamasaki, CVPR 2022): the same face
  scaled by 1.02-1.08, shifted slightly, colour-jittered and blurred or sharpened, blended
  back onto itself through a feathered ellipse -- a blending boundary plus a colour
  inconsistency.

Both get a small per-frame colour flicker of the pasted region (temporal inconsistency).
A corpus with no REAL clip (``fake_ratio=1``) renders fresh bases with ``original: null``.

Determinism: everything is drawn from ``numpy.random.default_rng`` seeded by ``seed``,
images are built with numpy/Pillow, and x264 runs single-threaded without mbtree (see
`_render`), so one seed gives byte-identical files for the same library versions (and
identical decoded frames). A default corpus (16 clips, 360p-1080p, 2-10 s) is about
35 s of one CPU core and ~10 MB.
Sizes: heights from {360, 480, 720, 1080} within [min_height, max_height] (16:9, even
widths); durations uniform in [min_seconds, max_seconds], frame count ``round(s * fps)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

STANDARD_HEIGHTS = (360, 480, 720, 1080)
FAKE_KINDS = ("faceswap", "selfblend")

# Face boxes (x0, y0, x1, y1) and landmarks (left eye, right eye, nose, mouth left, mouth
# right) found by facenet-pytorch 2.5.3 MTCNN(thresholds=[0.7, 0.8, 0.8]) on the full
# images (probabilities 0.99999, 0.9991, 0.9998); measured once, offline.
_FACES: dict[str, dict[str, Any]] = {
    "astronaut": {
        "shape": (512, 512),
        "box": (181.0, 62.0, 268.0, 172.0),
        "landmarks": ((205, 102), (247, 104), (225, 129), (202, 139), (245, 142)),
    },
    "camera": {
        "shape": (512, 512),
        "box": (199.0, 119.0, 254.0, 192.0),
        "landmarks": ((234, 147), (252, 150), (251, 169), (231, 180), (243, 182)),
    },
    "grace_hopper": {
        "shape": (600, 512),
        "box": (174.0, 120.0, 356.0, 340.0),
        "landmarks": ((222, 192), (310, 186), (269, 239), (233, 280), (307, 276)),
    },
}
IDENTITIES = tuple(_FACES)
# Faceswap donors must show a frontal, unoccluded inner face; the cameraman is in profile
# behind his camera, so he is only ever a target.
DONORS = ("astronaut", "grace_hopper")

# Face height as a fraction of the frame height: zoom endpoints are drawn from this range
# and a small oscillation stays inside [0.15, 0.45].
_FACE_FRAC = (0.19, 0.40)
_FACE_FRAC_OSC = 0.03
_NAME_ALPHABET = np.array(list("abcdefghijklmnopqrstuvwxyz"))


@cache
def _load_image(identity: str) -> np.ndarray:
    """The source photograph as HxWx3 uint8 (read only from installed packages)."""
    if identity == "astronaut":
        from skimage import data

        img = data.astronaut()
    elif identity == "camera":
        from skimage import data

        img = np.repeat(data.camera()[..., None], 3, axis=2)
    elif identity == "grace_hopper":
        import matplotlib
        from PIL import Image

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        with Image.open(path) as im:
            img = np.asarray(im.convert("RGB"))
    else:
        raise ValueError(f"unknown identity {identity!r}; known: {', '.join(IDENTITIES)}")
    img = np.ascontiguousarray(img[..., :3], dtype=np.uint8)
    if img.shape[:2] != _FACES[identity]["shape"]:
        raise RuntimeError(
            f"{identity} image is {img.shape[:2]}, expected {_FACES[identity]['shape']}: "
            "the hard-coded face box no longer matches the packaged image"
        )
    img.setflags(write=False)
    return img


def _face(identity: str, mirror: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, box[4], landmarks[5, 2]) of an identity, optionally mirrored."""
    img = _load_image(identity)
    box = np.array(_FACES[identity]["box"], dtype=np.float64)
    lms = np.array(_FACES[identity]["landmarks"], dtype=np.float64)
    if mirror:
        w = img.shape[1]
        img = img[:, ::-1]
        box = np.array([w - box[2], box[1], w - box[0], box[3]])
        lms = lms[[1, 0, 2, 4, 3]].copy()
        lms[:, 0] = w - lms[:, 0]
    return img, box, lms


def _soft_ellipse(
    shape: tuple[int, int],
    cx: float,
    cy: float,
    a: float,
    b: float,
    feather: float,
    angle: float = 0.0,
) -> np.ndarray:
    """Float32 mask: 1 inside the ellipse (rotated by `angle` degrees, counter-clockwise on
    screen), smooth fall-off over `feather` (in radius units)."""
    y = np.arange(shape[0], dtype=np.float32)[:, None] + 0.5 - cy
    x = np.arange(shape[1], dtype=np.float32)[None, :] + 0.5 - cx
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    u = (c * x - s * y) / a  # y points down, so this undoes a counter-clockwise tilt
    v = (s * x + c * y) / b
    r = np.sqrt(u * u + v * v)
    t = np.clip((1.0 - r) / feather, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _feathered_ellipse(
    shape: tuple[int, int], cx: float, cy: float, a: float, b: float, blur: float, angle: float
) -> np.ndarray:
    """Float32 mask: a hard ellipse blurred by a Gaussian of radius `blur` pixels."""
    from PIL import Image, ImageFilter

    hard = (_soft_ellipse(shape, cx, cy, a, b, 1e-3, angle) * 255).astype(np.uint8)
    soft = Image.fromarray(hard).filter(ImageFilter.GaussianBlur(float(blur)))
    return np.asarray(soft, dtype=np.float32) / 255.0


@dataclass
class _Head:
    """A soft-edged head crop, tilted; coordinates are crop pixels."""

    rgb: np.ndarray  # (h, w, 3) float32
    alpha: np.ndarray  # (h, w) uint8
    box: np.ndarray  # face box x0, y0, x1, y1 (centre and size of the upright box)
    landmarks: np.ndarray  # (5, 2)
    tilt: float  # degrees, counter-clockwise on screen


def _make_head(identity: str, mirror: bool, tint: np.ndarray, tilt: float) -> _Head:
    from PIL import Image

    img, box, lms = _face(identity, mirror)
    h, w = img.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    fcx, fcy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    # Head = face plus hair/chin/neck; the ellipse stays inside the photo so the soft
    # edge never shows padding.
    ecx, ecy = fcx, fcy + 0.08 * bh
    a = max(min(1.25 * bw, ecx, w - ecx), 0.8 * bw)
    b = max(min(1.30 * bh, ecy, h - ecy), 0.8 * bh)
    pad = int(math.ceil(max(a, b) + 0.1 * bh)) + 2
    padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    # Work on the square of half-side `pad` about the face centre; tilt it about the face
    # centre once per clip (much cheaper than per frame).
    ix, iy = int(round(fcx)), int(round(fcy))
    square = Image.fromarray(np.ascontiguousarray(padded[iy : iy + 2 * pad, ix : ix + 2 * pad]))
    square = square.rotate(
        tilt, resample=Image.Resampling.BICUBIC, center=(fcx - ix + pad, fcy - iy + pad)
    )
    rad = math.radians(tilt)
    c, s = math.cos(rad), math.sin(rad)
    rel = lms - (fcx, fcy)
    lms = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], 1) + (fcx, fcy)
    ecx, ecy = fcx + s * 0.08 * bh, fcy + c * 0.08 * bh
    # Crop to the tilted ellipse's bounding box.
    hx = math.sqrt((a * c) ** 2 + (b * s) ** 2)
    hy = math.sqrt((a * s) ** 2 + (b * c) ** 2)
    x0, y0 = int(math.floor(ecx - hx)), int(math.floor(ecy - hy))
    x1, y1 = int(math.ceil(ecx + hx)), int(math.ceil(ecy + hy))
    sx0, sy0 = ix - pad, iy - pad  # photo coordinates of the square's corner
    rgb = np.asarray(square, dtype=np.float32)[y0 - sy0 : y1 - sy0, x0 - sx0 : x1 - sx0]
    rgb = np.clip(rgb * tint[None, None, :], 0, 255)
    alpha = _soft_ellipse(rgb.shape[:2], ecx - x0, ecy - y0, a, b, 0.18, tilt)
    return _Head(
        rgb=rgb,
        alpha=(alpha * 255 + 0.5).astype(np.uint8),
        box=box - np.array([x0, y0, x0, y0]),
        landmarks=lms - np.array([x0, y0]),
        tilt=tilt,
    )


@dataclass
class _Manipulation:
    """A layer blended onto the head canvas inside bbox on every frame."""

    layer: np.ndarray  # (h, w, 3) float32
    mask: np.ndarray  # (h, w, 1) float32 in [0, 1]
    bbox: tuple[int, int, int, int]  # y0, y1, x0, x1 in canvas pixels
    flicker: np.ndarray  # (n_frames, 3) per-frame channel gains
    params: dict[str, Any]


def _bbox_of(mask: np.ndarray, thresh: float = 1e-3) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask > thresh)
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def _flicker(rng: np.random.Generator, n_frames: int, fps: int) -> np.ndarray:
    t = np.arange(n_frames) / fps
    amp = rng.uniform(0.01, 0.03)
    freq = rng.uniform(0.3, 1.2)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    g = 1 + amp * np.sin(2 * np.pi * freq * t[:, None] + phase[None, :])
    g += rng.normal(0, 0.006, size=(n_frames, 1))  # frame-to-frame jitter, all channels
    return g.astype(np.float32)


def _faceswap(
    head: _Head, donor: str, rng: np.random.Generator, n_frames: int, fps: int
) -> _Manipulation:
    from PIL import Image, ImageFilter

    d_img, d_box, _ = _face(donor, bool(rng.random() < 0.5))
    t_box = head.box
    hh, ww = head.rgb.shape[:2]
    bw, bh = t_box[2] - t_box[0], t_box[3] - t_box[1]
    # Box-to-box warp (target crop -> donor photo): undo the head's tilt about the target
    # face centre, then scale the target box onto the donor box (a little jittered).
    sx = (d_box[2] - d_box[0]) / bw * rng.uniform(0.97, 1.03)
    sy = (d_box[3] - d_box[1]) / bh * rng.uniform(0.97, 1.03)
    tcx, tcy = (t_box[0] + t_box[2]) / 2, (t_box[1] + t_box[3]) / 2
    dcx, dcy = (d_box[0] + d_box[2]) / 2, (d_box[1] + d_box[3]) / 2
    c, s = math.cos(math.radians(head.tilt)), math.sin(math.radians(head.tilt))
    data = (
        sx * c,
        -sx * s,
        dcx - sx * (c * tcx - s * tcy),
        sy * s,
        sy * c,
        dcy - sy * (s * tcx + c * tcy),
    )
    warped = Image.fromarray(np.ascontiguousarray(d_img)).transform(
        (ww, hh),
        Image.Transform.AFFINE,
        tuple(float(v) for v in data),
        resample=Image.Resampling.BILINEAR,
    )
    # A generator works at low resolution: resample down and up, then blur.
    down = rng.uniform(0.45, 0.7)
    small = warped.resize(
        (max(8, round(ww * down)), max(8, round(hh * down))), resample=Image.Resampling.BILINEAR
    )
    blur = rng.uniform(0.4, 0.9)
    warped = small.resize((ww, hh), resample=Image.Resampling.BILINEAR).filter(
        ImageFilter.GaussianBlur(float(blur))
    )
    layer_full = np.asarray(warped, dtype=np.float32)

    # Inner face (eyes, nose, mouth): an ellipse about the landmark centroid.
    cx, cy = head.landmarks.mean(axis=0)
    feather = rng.uniform(0.05, 0.09) * bw
    mask = _feathered_ellipse(
        (hh, ww), cx, cy, 0.36 * bw - feather, 0.42 * bh - feather, feather, head.tilt
    )
    y0, y1, x0, x1 = _bbox_of(mask)
    mask = mask[y0:y1, x0:x1, None]
    layer = layer_full[y0:y1, x0:x1]
    base = head.rgb[y0:y1, x0:x1]
    # Colour transfer to the target (what a swap pipeline does), then a mismatch.
    inside = mask[..., 0] > 0.5
    mu_t, sd_t = base[inside].mean(0), base[inside].std(0) + 1e-3
    mu_l, sd_l = layer[inside].mean(0), layer[inside].std(0) + 1e-3
    layer = (layer - mu_l) * np.clip(sd_t / sd_l, 0.7, 1.4) + mu_t
    gain = 1 + rng.choice([-1, 1], size=3) * rng.uniform(0.05, 0.12, size=3)
    offset = rng.uniform(-12, 12, size=3)
    layer = np.clip(layer * gain + offset, 0, 255).astype(np.float32)
    return _Manipulation(
        layer=layer,
        mask=mask,
        bbox=(y0, y1, x0, x1),
        flicker=_flicker(rng, n_frames, fps),
        params={
            "resample": round(float(down), 3),
            "blur": round(float(blur), 3),
            "gain": [round(float(g), 3) for g in gain],
            "offset": [round(float(o), 2) for o in offset],
        },
    )


def _selfblend(head: _Head, rng: np.random.Generator, n_frames: int, fps: int) -> _Manipulation:
    from PIL import Image, ImageFilter

    hh, ww = head.rgb.shape[:2]
    box = head.box
    bw, bh = box[2] - box[0], box[3] - box[1]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    scale = rng.uniform(1.02, 1.08)
    dx, dy = rng.uniform(-0.03, 0.03, size=2) * np.array([bw, bh])
    data = (1 / scale, 0.0, cx - cx / scale - dx, 0.0, 1 / scale, cy - cy / scale - dy)
    src = Image.fromarray((head.rgb + 0.5).astype(np.uint8)).transform(
        (ww, hh),
        Image.Transform.AFFINE,
        tuple(float(v) for v in data),
        resample=Image.Resampling.BICUBIC,
    )
    if rng.random() < 0.5:
        filt = "blur"
        amount = rng.uniform(0.8, 1.6)
        src = src.filter(ImageFilter.GaussianBlur(float(amount)))
    else:
        filt = "sharpen"
        amount = rng.uniform(80, 160)
        src = src.filter(ImageFilter.UnsharpMask(radius=2, percent=int(amount), threshold=1))
    gain = rng.uniform(0.9, 1.1, size=3)
    offset = rng.uniform(-10, 10, size=3)
    layer_full = np.clip(np.asarray(src, dtype=np.float32) * gain + offset, 0, 255)
    feather = rng.uniform(0.04, 0.10) * bw
    a = rng.uniform(0.42, 0.50) * bw - feather
    b = rng.uniform(0.48, 0.56) * bh - feather
    ratio = rng.uniform(0.75, 1.0)
    c, s = math.cos(math.radians(head.tilt)), math.sin(math.radians(head.tilt))
    mcx, mcy = cx + s * 0.04 * bh, cy + c * 0.04 * bh
    mask = ratio * _feathered_ellipse((hh, ww), mcx, mcy, a, b, feather, head.tilt)
    y0, y1, x0, x1 = _bbox_of(mask)
    return _Manipulation(
        layer=layer_full[y0:y1, x0:x1].astype(np.float32),
        mask=mask[y0:y1, x0:x1, None],
        bbox=(y0, y1, x0, x1),
        flicker=_flicker(rng, n_frames, fps),
        params={
            "scale": round(float(scale), 4),
            "shift": [round(float(dx), 2), round(float(dy), 2)],
            "filter": filt,
            "filter_amount": round(float(amount), 3),
            "gain": [round(float(g), 3) for g in gain],
            "offset": [round(float(o), 2) for o in offset],
            "blend_ratio": round(float(ratio), 3),
        },
    )


def _background(rng: np.random.Generator, width: int, height: int) -> tuple[Any, str]:
    """A PIL RGB image of (width, height); returns (image, kind)."""
    from PIL import Image

    kind = str(rng.choice(["gradient", "clouds", "stripes"]))
    c0, c1 = rng.uniform(20, 235, size=(2, 3)).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    yy = np.linspace(-0.5, 0.5, height, dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, width, dtype=np.float32)[None, :] * (width / height)
    proj = np.cos(theta) * xx + np.sin(theta) * yy
    lo, hi = proj.min(), proj.max()
    t = ((proj - lo) / (hi - lo + 1e-6))[..., None]
    img = c0 * (1 - t) + c1 * t
    if kind == "clouds":
        cells = int(rng.integers(3, 10))
        noise = rng.uniform(0, 255, size=(cells, max(2, round(cells * width / height)), 3))
        noise = Image.fromarray(noise.astype(np.uint8)).resize(
            (width, height), resample=Image.Resampling.BICUBIC
        )
        amount = rng.uniform(0.3, 0.6)
        img = img * (1 - amount) + np.asarray(noise, dtype=np.float32) * amount
    elif kind == "stripes":
        period = rng.uniform(0.05, 0.25)
        phi = rng.uniform(0, 2 * np.pi)
        proj2 = -np.sin(theta) * xx + np.cos(theta) * yy
        wave = np.sin(2 * np.pi * proj2 / period + phi)[..., None]
        img = img + rng.uniform(15, 40) * wave
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)), kind


def _smooth_path(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A smooth path in [0, 1] (two incommensurate sinusoids)."""
    f1, f2 = rng.uniform(0.05, 0.2), rng.uniform(0.2, 0.5)
    p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
    w = rng.uniform(0.0, 0.3)
    s = (1 - w) * np.sin(2 * np.pi * f1 * t + p1) + w * np.sin(2 * np.pi * f2 * t + p2)
    return 0.5 + 0.5 * s


@dataclass(frozen=True)
class _ClipSpec:
    """Everything a REAL base clip is drawn from; a fake re-renders its original's spec."""

    identity: str
    width: int
    height: int
    n_frames: int
    fps: int
    seed: int  # base scene: tint, mirror, background, motion, lighting


def _render(
    spec: _ClipSpec,
    path: Path,
    kind: str,
    manip_seed: int | None,
    donor: str | None,
    *,
    crf: int = 23,
    preset: str = "veryfast",
) -> dict[str, Any]:
    """Render one clip to `path` (H.264 mp4, yuv420p); returns extra metadata."""
    import av
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(spec.seed)
    w, h, n, fps = spec.width, spec.height, spec.n_frames, spec.fps
    t = np.arange(n) / fps
    ramp = t / max(t[-1], 1e-6)  # 0 -> 1 over the clip

    # --- the scene, drawn in a fixed order so a fake reproduces its original exactly ---
    mirror = bool(rng.random() < 0.5)
    tint = rng.uniform(0.9, 1.1, size=3).astype(np.float32)
    tilt = float(rng.uniform(-8, 8))
    head = _make_head(spec.identity, mirror, tint, tilt)
    pad = int(round(0.08 * h))
    bg, bg_kind = _background(rng, w + 2 * pad, h + 2 * pad)
    pan_x = np.rint(pad * 2 * _smooth_path(rng, t)).astype(int)
    pan_y = np.rint(pad * 2 * _smooth_path(rng, t)).astype(int)
    shapes = []
    for _ in range(int(rng.integers(0, 7))):
        shapes.append(
            (
                str(rng.choice(["ellipse", "rectangle"])),
                tuple(int(c) for c in rng.integers(0, 256, size=3)),
                float(rng.uniform(0.04, 0.16) * h),  # half size
                rng.uniform(0, 1, size=2) * (w, h),  # start
                rng.uniform(-0.15, 0.15, size=2) * h,  # velocity, px / s
            )
        )
    # Zoom between two face sizes (eased) plus a slow oscillation.
    f_a, f_b = rng.uniform(*_FACE_FRAC, size=2)
    ease = ramp * ramp * (3 - 2 * ramp)
    osc = _FACE_FRAC_OSC * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
    face_frac = np.clip(f_a + (f_b - f_a) * ease + osc, 0.15, 0.45)
    bw, bh = head.box[2] - head.box[0], head.box[3] - head.box[1]
    scale = face_frac * h / bh
    # Face centre follows a smooth path that keeps the face box inside the frame.
    path_x, path_y = _smooth_path(rng, t), _smooth_path(rng, t)
    margin_x, margin_y = 0.04 * w + scale * bw / 2, 0.05 * h + scale * bh / 2
    cx = margin_x + (w - 2 * margin_x) * (0.1 + 0.8 * path_x)
    cy = margin_y + (h - 2 * margin_y) * (0.2 + 0.6 * path_y)
    # Lighting: brightness and contrast ramps (a global per-frame LUT).
    b0, b1 = rng.uniform(-30, 30, size=2)
    c0, c1 = rng.uniform(0.75, 1.2, size=2)
    bright, contrast = b0 + (b1 - b0) * ramp, c0 + (c1 - c0) * ramp
    levels = np.arange(256, dtype=np.float64)
    luts = np.clip(
        (levels[None, :] - 128) * contrast[:, None] + 128 + bright[:, None] + 0.5, 0, 255
    ).astype(np.uint8)

    manip = None
    if kind == "faceswap":
        if donor is None:
            raise ValueError("a faceswap needs a donor identity")
        manip = _faceswap(head, donor, np.random.default_rng(manip_seed), n, fps)
    elif kind == "selfblend":
        manip = _selfblend(head, np.random.default_rng(manip_seed), n, fps)
    elif kind != "real":
        raise ValueError(f"unknown clip kind {kind!r}")

    hh, ww = head.rgb.shape[:2]
    fcx, fcy = (head.box[0] + head.box[2]) / 2, (head.box[1] + head.box[3]) / 2
    head_u8 = np.ascontiguousarray((head.rgb + 0.5).astype(np.uint8))
    sprite_rgb = Image.fromarray(head_u8)
    sprite_alpha = Image.fromarray(head.alpha)
    if manip is not None:
        y0, y1, x0, x1 = manip.bbox
        region = head.rgb[y0:y1, x0:x1]

    from dfray.storage import atomic_path

    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4")
        try:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            # Byte-identical output for a seed: x264's output depends on its thread count, and
            # with macroblock-tree rate control (on in "veryfast") its SIMD code reads
            # uninitialised padding when the width is not a multiple of 128 (854x480 differed
            # run to run; asm=0 or mbtree=0 fixes it), so: one thread, no mbtree.
            stream.codec_context.thread_count = 1
            stream.options = {
                "crf": str(crf),
                "preset": preset,
                "g": str(2 * fps),
                "x264-params": "mbtree=0",
            }
            for i in range(n):
                frame = bg.crop((pan_x[i], pan_y[i], pan_x[i] + w, pan_y[i] + h))
                if shapes:
                    draw = ImageDraw.Draw(frame)
                    for shape, colour, r, start, vel in shapes:
                        px = (start[0] + vel[0] * t[i]) % (w + 2 * r) - r
                        py = (start[1] + vel[1] * t[i]) % (h + 2 * r) - r
                        getattr(draw, shape)((px - r, py - r, px + r, py + r), fill=colour)
                if manip is not None:  # the manipulation, re-blended with this frame's flicker
                    face = head_u8.copy()
                    blended = region + manip.mask * (manip.layer * manip.flicker[i] - region)
                    face[y0:y1, x0:x1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
                    sprite_rgb = Image.fromarray(face)
                sw = max(2, int(round(ww * scale[i])))
                sh = max(2, int(round(hh * scale[i])))
                rgb = sprite_rgb.resize((sw, sh), resample=Image.Resampling.BILINEAR)
                alpha = sprite_alpha.resize((sw, sh), resample=Image.Resampling.BILINEAR)
                ox = int(round(cx[i] - fcx * sw / ww))
                oy = int(round(cy[i] - fcy * sh / hh))
                frame.paste(rgb, (ox, oy), alpha)
                frame = frame.point(luts[i].tolist() * 3)
                for packet in stream.encode(av.VideoFrame.from_image(frame)):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()

    extra: dict[str, Any] = {
        "background": bg_kind,
        "mirror": mirror,
        "tilt": round(tilt, 2),
        "face_height_frac": [round(float(face_frac.min()), 3), round(float(face_frac.max()), 3)],
    }
    if manip is not None:
        extra["manipulation"] = manip.params
    return extra


def _heights(min_height: int, max_height: int) -> list[int]:
    if min_height > max_height:
        raise ValueError(f"min_height {min_height} > max_height {max_height}")
    if min_height < 64:
        raise ValueError(f"min_height {min_height} < 64: faces would be too small to detect")
    allowed = [hh for hh in STANDARD_HEIGHTS if min_height <= hh <= max_height]
    if not allowed:  # a non-standard range: use its (even) end points
        allowed = sorted({min_height + min_height % 2, max_height - max_height % 2})
        allowed = [hh for hh in allowed if min_height <= hh <= max_height] or [min_height]
    return allowed


def _width(height: int) -> int:
    return int(round(height * 16 / 9 / 2)) * 2


def _names(rng: np.random.Generator, n: int) -> list[str]:
    names: list[str] = []
    while len(names) < n:
        name = "".join(rng.choice(_NAME_ALPHABET, size=10)) + ".mp4"
        if name not in names:
            names.append(name)
    return names


def generate_corpus(
    out_dir: str | Path,
    n_videos: int = 16,
    seed: int = 0,
    *,
    min_height: int = 360,
    max_height: int = 1080,
    min_seconds: float = 2.0,
    max_seconds: float = 10.0,
    fps: int = 15,
    fake_ratio: float = 0.5,
) -> dict[str, dict]:
    """Writes n_videos H.264 .mp4 clips + metadata.json into out_dir; returns the metadata dict.

    ``n_videos * fake_ratio`` clips (rounded half up) are FAKE (at least one of each label when
    0 < fake_ratio < 1 and n_videos >= 2), split as evenly as possible between
    ``faceswap`` and ``selfblend``. Each FAKE re-renders a REAL clip (named in
    ``original``) with a manipulated face, as in DFDC. Every entry carries ``label``,
    ``split`` ("train"), ``original`` and the extras ``kind``, ``identity``, ``donor``
    (faceswap only), ``width``, ``height``, ``fps``, ``frames``, ``seconds``,
    ``background``, ``mirror``, ``face_height_frac`` and ``manipulation`` (fakes).
    Existing files with the same names are overwritten; other files are left alone.
    """
    if n_videos < 1:
        raise ValueError(f"n_videos must be >= 1, got {n_videos}")
    if not 0.0 <= fake_ratio <= 1.0:
        raise ValueError(f"fake_ratio must be in [0, 1], got {fake_ratio}")
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds}, {max_seconds}")
    if fps < 1:
        raise ValueError(f"fps must be >= 1, got {fps}")
    heights = _heights(min_height, max_height)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    n_fake = int(math.floor(n_videos * fake_ratio + 0.5))
    if n_videos >= 2 and 0 < fake_ratio < 1:
        n_fake = min(max(n_fake, 1), n_videos - 1)
    n_real = n_videos - n_fake
    names = _names(rng, n_videos)
    kinds = ["real"] * n_real + [FAKE_KINDS[i % 2] for i in range(n_fake)]
    order = rng.permutation(n_videos)  # which name gets which clip

    def new_spec() -> _ClipSpec:
        hh = int(rng.choice(heights))
        seconds = rng.uniform(min_seconds, max_seconds)
        return _ClipSpec(
            identity=str(identities.pop()),
            width=_width(hh),
            height=hh,
            n_frames=max(1, int(round(seconds * fps))),
            fps=fps,
            seed=int(rng.integers(2**63)),
        )

    # Identities cycle so every person appears; shuffled per corpus.
    identities = [str(x) for _ in range(n_videos) for x in rng.permutation(IDENTITIES)]
    jobs: list[tuple[str, str, _ClipSpec, str | None, int | None, str | None]] = []
    real_specs: list[tuple[str, _ClipSpec]] = []
    for j, kind in enumerate(kinds):
        name = names[int(order[j])]
        if kind == "real":
            spec = new_spec()
            real_specs.append((name, spec))
            jobs.append((name, kind, spec, None, None, None))
            continue
        if real_specs:
            original, spec = real_specs[(j - n_real) % len(real_specs)]
        else:
            original, spec = None, new_spec()
        donor = None
        if kind == "faceswap":
            others = [x for x in DONORS if x != spec.identity]
            donor = str(others[int(rng.integers(len(others)))])
        jobs.append((name, kind, spec, original, int(rng.integers(2**63)), donor))

    metadata: dict[str, dict] = {}
    for name, kind, spec, original, manip_seed, donor in jobs:
        extra = _render(spec, out / name, kind, manip_seed, donor)
        entry: dict[str, Any] = {
            "label": "REAL" if kind == "real" else "FAKE",
            "split": "train",
            "original": original,
            "kind": kind,
            "identity": spec.identity,
        }
        if donor is not None:
            entry["donor"] = donor
        entry.update(
            width=spec.width,
            height=spec.height,
            fps=spec.fps,
            frames=spec.n_frames,
            seconds=round(spec.n_frames / spec.fps, 4),
        )
        entry.update(extra)
        metadata[name] = entry
    metadata = dict(sorted(metadata.items()))
    from dfray.storage import atomic_path

    with atomic_path(out / "metadata.json") as tmp:
        Path(tmp).write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata
