"""Face stage: MTCNN detection and crops, with the DFDC 1st-place defaults.

Frames are downscaled by `scale` (0.5) for detection and the boxes scaled back; every
face of every sampled frame is kept; a margin of one third of the box width/height is
added on each side (the margin crop, at native resolution: what moves between stages and
what a face cache stores); for each detector the margin crop is isotropically resized (longer side to the detector input,
cv2 INTER_AREA down / INTER_CUBIC up) and zero-padded to a square. All frames of one
video go through MTCNN as one batch on a GPU (they share a size: one launch per pyramid
level instead of 32). On the CPU frames go one at a time: on one thread batching measured
slower at 1080p (4.5 s vs 3.6 s per video) and only a little faster at 360p (0.65 s vs
0.8 s). Boxes agree with per-frame detection to ~1e-4 px (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dfray.config import FaceConfig


@dataclass(frozen=True)
class Faces:
    """All faces found in one video's sampled frames."""

    frame_index: np.ndarray  # (N,) int32 frame index in the video
    boxes: np.ndarray  # (N, 4) float32 x1, y1, x2, y2 in full-resolution pixels
    probs: np.ndarray  # (N,) float32 MTCNN face probability
    crops: list[np.ndarray] = field(default_factory=list)  # margin crops, native resolution

    def __len__(self) -> int:
        return int(self.frame_index.shape[0])


def isotropic_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so the longer side is `size`, keeping the aspect ratio (DFDC 1st place)."""
    import cv2

    h, w = img.shape[:2]
    if max(w, h) == size:
        return img
    if w > h:
        scale = size / w
        h, w = h * scale, size
    else:
        scale = size / h
        w, h = w * scale, size
    interp = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    return cv2.resize(img, (max(1, int(w)), max(1, int(h))), interpolation=interp)


def put_to_center(img: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad an image of at most size x size to exactly size x size, centred."""
    img = img[:size, :size]
    out = np.zeros((size, size, 3), dtype=np.uint8)
    y0 = (size - img.shape[0]) // 2
    x0 = (size - img.shape[1]) // 2
    out[y0 : y0 + img.shape[0], x0 : x0 + img.shape[1]] = img
    return out


def crop_box(frame: np.ndarray, box: np.ndarray, margin: float) -> np.ndarray:
    """The box plus `margin` of its width/height on each side, clipped to the frame."""
    x1, y1, x2, y2 = (int(v) for v in box)
    w, h = x2 - x1, y2 - y1
    pw, ph = math.floor(w * margin + 1e-9), math.floor(h * margin + 1e-9)
    return frame[max(y1 - ph, 0) : y2 + ph, max(x1 - pw, 0) : x2 + pw]


def margin_crops(frames: np.ndarray, frame_pos: np.ndarray, boxes: np.ndarray,
                 margin: float) -> list[np.ndarray]:
    """Each face's box plus margin, at the frame's native resolution (what a face cache
    stores), copied out of `frames` (its memory may be reused for the next video);
    frame_pos indexes into `frames`."""
    return [crop_box(frames[pos], box, margin).copy()
            for pos, box in zip(frame_pos, boxes, strict=True)]


def fit_crops(crops: list[np.ndarray], size: int) -> np.ndarray:
    """(N, size, size, 3) uint8: each margin crop isotropically resized and zero-padded."""
    out = np.zeros((len(crops), size, size, 3), dtype=np.uint8)
    for i, crop in enumerate(crops):
        if crop.size:
            out[i] = put_to_center(isotropic_resize(crop, size), size)
    return out


def make_crops(frames: np.ndarray, frame_pos: np.ndarray, boxes: np.ndarray, size: int,
               margin: float) -> np.ndarray:
    """(N, size, size, 3) uint8 crops; frame_pos indexes into `frames`."""
    return fit_crops(margin_crops(frames, frame_pos, boxes, margin), size)


def pack_crops(crops: list[np.ndarray]) -> tuple[bytes, bytes]:
    """Variable-size crops as (concatenated uint8 pixels, int32 (N, 2) heights/widths)."""
    shapes = np.array([c.shape[:2] for c in crops], dtype=np.int32).reshape(-1, 2)
    data = b"".join(np.ascontiguousarray(c, dtype=np.uint8).tobytes() for c in crops)
    return data, shapes.tobytes()


def unpack_crops(data: bytes, shapes: bytes) -> list[np.ndarray]:
    """The inverse of pack_crops (views into `data`, no copy)."""
    hw = np.frombuffer(shapes, np.int32).reshape(-1, 2)
    flat = np.frombuffer(data, np.uint8)
    out, at = [], 0
    for h, w in hw:
        n = int(h) * int(w) * 3
        out.append(flat[at : at + n].reshape(int(h), int(w), 3))
        at += n
    if at != flat.size:
        raise ValueError(f"crop data holds {flat.size} bytes, shapes describe {at}")
    return out


class FaceExtractor:
    """Holds one MTCNN; `extract` takes a video's frames and returns its faces."""

    def __init__(self, cfg: FaceConfig, device: str = "cpu"):
        from facenet_pytorch import MTCNN

        self.cfg = cfg
        self.device = device
        self.mtcnn = MTCNN(
            margin=0,
            thresholds=list(cfg.thresholds),
            min_face_size=cfg.min_face_size,
            keep_all=True,
            post_process=False,
            device=device,
        )
        if device == "cpu":
            from dfray.mtcnn import speed_up

            speed_up(self.mtcnn)  # exact: the same boxes, fewer CPU seconds (dfray.mtcnn)

    def downscale(self, frames: np.ndarray) -> np.ndarray:
        """Each frame resized by cfg.scale with PIL (as the DFDC script does)."""
        from PIL import Image

        if self.cfg.scale == 1.0:
            return frames
        h, w = frames.shape[1:3]
        size = (max(1, int(w * self.cfg.scale)), max(1, int(h * self.cfg.scale)))
        return np.stack(
            [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BICUBIC)) for f in frames]
        )

    def detect(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(frame positions, full-res float64 boxes, probs) of every face in every frame."""
        import torch

        small = self.downscale(frames)
        step = len(small) if self.device != "cpu" else 1  # measured: see the module docstring
        batch_boxes, batch_probs = [], []
        with torch.inference_mode():
            for i in range(0, len(small), step):
                b, p = self.mtcnn.detect(small[i : i + step])
                batch_boxes.extend(b)
                batch_probs.extend(p)
        pos, boxes, probs = [], [], []
        for i, (b, p) in enumerate(zip(batch_boxes, batch_probs, strict=True)):
            if b is None:
                continue
            keep = [j for j in range(len(b)) if p[j] is not None and p[j] >= self.cfg.min_prob]
            if self.cfg.max_faces_per_frame:
                keep = keep[: self.cfg.max_faces_per_frame]
            for j in keep:
                pos.append(i)
                boxes.append(np.asarray(b[j], dtype=np.float64) / self.cfg.scale)
                probs.append(float(p[j]))
        return (
            np.asarray(pos, dtype=np.int32),
            np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            np.asarray(probs, dtype=np.float32),
        )

    def extract(self, frames: np.ndarray, frame_index: np.ndarray) -> Faces:
        """Every face of the frames, with its margin crop at native resolution (crops for a
        detector's input size are made from it by `fit_crops`)."""
        pos, boxes, probs = self.detect(frames)
        crops = margin_crops(frames, pos, boxes, self.cfg.margin)
        return Faces(frame_index[pos].astype(np.int32), boxes.astype(np.float32), probs, crops)
