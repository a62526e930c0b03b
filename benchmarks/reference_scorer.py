"""A plain reference scorer: what the DFDC 1st-place inference script does.

Modelled on selimsef/dfdc_deepfake_challenge `predict_folder.py` and `kernel_utils.py`
(`VideoReader`, `FaceExtractor.process_video`, `isotropically_resize_image`,
`put_to_center`, `predict_on_video`, `predict_on_video_set`, `confident_strategy`), written
here from that description with its own code. It deliberately imports nothing from
`dfray.faces`, `dfray.aggregate`, `dfray.extract` or `dfray.decode`: it is the independent
yardstick the pipeline is checked against. The only thing it takes from dfray is the
detector *model* (architecture plus weights, via `dfray.detectors.create_detector`);
preprocessing (mean/std from the spec), the sigmoid and the per-video aggregation are its
own.

One process, as the script runs it (`predict_on_video_set`): a `ThreadPoolExecutor` of 6
workers scores 6 videos at a time, all sharing one MTCNN and one model per detector;
torch's intra-op threads are left at torch's default (`threads=` overrides). Per video:

1. read (`VideoReader.read_frames`): `cv2.VideoCapture`, `CAP_PROP_FRAME_COUNT`, frame
   indices `np.linspace(0, frame_count - 1, n_frames, endpoint=True, dtype=int)`;
   `grab()` every frame from the first to the last index, `retrieve()` the wanted ones,
   BGR -> RGB.
2. detect, frame by frame (`FaceExtractor.process_videos`): PIL image resized to half
   size (`img.resize([s // 2 ...])`, Pillow's default BICUBIC),
   `MTCNN(margin=0, thresholds=[0.7, 0.8, 0.8]).detect(img)`, boxes x 2 truncated to
   int, crop with `h // 3`, `w // 3` margins; then (`predict_on_video`) isotropic resize
   (cv2 INTER_AREA down / INTER_CUBIC up) and zero padding to the detector input.
3. score (`predict_on_video`): all faces of the video in one batch, (x / 255 - mean) / std,
   model forward, sigmoid, `confident_strategy` (t = 0.8) or mean per detector, weighted
   mean over the ensemble (the script: plain mean over its models).

Deliberate differences from the original script (each keeps the reference comparable with
dfray's output contract rather than changing what is computed):
- a video without faces (or unreadable) gets a status and no score; the script returned
  0.5 for it. The script also silently dropped faces beyond `4 * batch_size - 1` per
  video; here every face is scored (dfray keeps every face too).
- the script's reader, given duplicated indices (clips shorter than 32 frames), stops
  after the first frame; here each distinct index is read once (as dfray does).
- on CUDA the script ran the model in `.half()`; here CUDA runs under fp16 autocast, which
  is what dfray's detectors do by default, so the two stay comparable. On CPU: fp32 (the
  script's `.half()` is CUDA-only).
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
STAGES = ("decode", "detect", "score")
WORKERS = 6  # predict_on_video_set(num_workers=6) in predict_folder.py


def list_videos(root: str) -> list[tuple[str, str]]:
    """(video_id, path) of every video file under root, video_id '/'-separated, sorted."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.lower().endswith(VIDEO_SUFFIXES):
                path = os.path.join(dirpath, name)
                out.append((os.path.relpath(path, root).replace(os.sep, "/"), path))
    return sorted(out)


# --- the DFDC 1st-place helpers, re-implemented -------------------------------------------


def isotropically_resize_image(img: np.ndarray, size: int) -> np.ndarray:
    """Longer side to `size`, aspect kept; INTER_AREA when shrinking, INTER_CUBIC when growing."""
    import cv2

    h, w = img.shape[:2]
    if max(w, h) == size:
        return img
    if w > h:
        scale = size / w
        h = h * scale
        w = size
    else:
        scale = size / h
        w = w * scale
        h = size
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    return cv2.resize(img, (int(w), int(h)), interpolation=interpolation)


def put_to_center(img: np.ndarray, input_size: int) -> np.ndarray:
    """Paste img (cut to input_size) in the middle of a black input_size^2 canvas."""
    img = img[:input_size, :input_size]
    image = np.zeros((input_size, input_size, 3), dtype=np.uint8)
    start_w = (input_size - img.shape[1]) // 2
    start_h = (input_size - img.shape[0]) // 2
    image[start_h : start_h + img.shape[0], start_w : start_w + img.shape[1], :] = img
    return image


def confident_strategy(pred, t: float = 0.8) -> float:
    """DFDC 1st place: mean of the confident fakes if there are enough of them (more than
    len // 2.5 and more than 11 above t), else mean of the confident reals if they are
    more than 90% (below 0.2), else the plain mean."""
    pred = np.array(pred)
    sz = len(pred)
    fakes = np.count_nonzero(pred > t)
    if fakes > sz // 2.5 and fakes > 11:
        return float(np.mean(pred[pred > t]))
    if np.count_nonzero(pred < 0.2) > 0.9 * sz:
        return float(np.mean(pred[pred < 0.2]))
    return float(np.mean(pred))


def mean_strategy(pred) -> float:
    return float(np.mean(np.array(pred)))


STRATEGIES = {"confident": confident_strategy, "mean": mean_strategy}


# --- the scorer ---------------------------------------------------------------------------


@dataclass
class ReferenceResult:
    """One video's result, in the words of dfray's videos table where they overlap."""

    video_id: str
    status: str  # ok | no_faces | read_error | decode_error | error
    score: float | None = None
    model_scores: dict[str, float] | None = None
    error: str | None = None
    n_frames: int = 0
    n_faces: int = 0
    wall_s: dict[str, float] = field(default_factory=dict)  # per stage, perf_counter
    # per stage, process CPU time: only with one worker (with several, the process's CPU
    # time holds the other videos' work too, so it is left empty)
    cpu_s: dict[str, float] = field(default_factory=dict)
    # (frame index, x1, y1, x2, y2): MTCNN's box x 2 before int(), one per face
    boxes: list[tuple[int, float, float, float, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "video_id": self.video_id,
            "status": self.status,
            "score": self.score,
            "model_scores": self.model_scores,
            "error": self.error,
            "n_frames": self.n_frames,
            "n_faces": self.n_faces,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "boxes": self.boxes,
        }


class _Timer:
    """Adds wall (and, if `cpu`, process-CPU) seconds of a `with` block to a result's stage."""

    def __init__(self, result: ReferenceResult, stage: str, cpu: bool):
        self.result, self.stage, self.cpu = result, stage, cpu

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        r = self.result
        r.wall_s[self.stage] = r.wall_s.get(self.stage, 0.0) + time.perf_counter() - self.w0
        if self.cpu:
            r.cpu_s[self.stage] = r.cpu_s.get(self.stage, 0.0) + time.process_time() - self.c0
        return False


class ReferenceScorer:
    """One MTCNN + the ensemble's models in this process, shared by `workers` threads;
    `score_video(path)` per video, `score_corpus(root)` for a folder (thread pool).

    threads: torch intra-op threads; None leaves torch's default (as the script does).
    """

    def __init__(
        self,
        ensemble,
        n_frames: int = 32,
        device: str = "cpu",
        threads: int | None = None,
        workers: int = WORKERS,
    ):
        import torch
        from facenet_pytorch import MTCNN

        from dfray.detectors import create_detector

        t0, c0 = time.perf_counter(), time.process_time()
        if threads is not None:
            torch.set_num_threads(threads)
        self.threads = torch.get_num_threads()
        self.workers = max(1, int(workers))
        self.device = device
        self.n_frames = n_frames
        self.detector = MTCNN(margin=0, thresholds=[0.7, 0.8, 0.8], device=device)
        self.models = []
        for spec in ensemble.detectors:
            # the model (architecture + weights) only; preprocessing is done below
            det = create_detector(spec, device=device, precision="fp32")
            self.models.append((spec, det.model.eval(), det.output))
        self.sizes = sorted({spec.input_size for spec, _, _ in self.models})
        self.setup_wall_s = time.perf_counter() - t0
        self.setup_cpu_s = time.process_time() - c0

    # VideoReader.read_frames / _read_frames_at_indices
    def read_frames(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        capture = cv2.VideoCapture(path)
        try:
            if not capture.isOpened():
                raise ValueError("cv2.VideoCapture cannot open the file")
            frame_count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
            if frame_count <= 0:
                raise ValueError("video has no frames")
            idxs = np.linspace(0, frame_count - 1, self.n_frames, endpoint=True, dtype=int)
            idxs = np.unique(idxs)  # each frame once (short clips)
            frames, idxs_read = [], []
            for frame_idx in range(idxs[0], idxs[-1] + 1):
                if not capture.grab():  # the script stops at the first failed grab
                    break
                if frame_idx == idxs[len(idxs_read)]:
                    ok, frame = capture.retrieve()
                    if not ok or frame is None:
                        break
                    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                    idxs_read.append(frame_idx)
        finally:
            capture.release()
        if not frames:
            raise ValueError("no frame could be read")
        return np.stack(frames), np.asarray(idxs_read)

    # FaceExtractor.process_video (+ the crop resizing of predict_on_video)
    def process_frames(
        self, frames: np.ndarray, idxs: np.ndarray
    ) -> tuple[dict[int, list[np.ndarray]], list[tuple[int, float, float, float, float]]]:
        """(size -> face crops (S, S, 3), boxes): every face of every frame, frame order;
        boxes are (frame index, MTCNN box x 2 before int())."""
        import torch
        from PIL import Image

        out: dict[int, list[np.ndarray]] = {s: [] for s in self.sizes}
        boxes: list[tuple[int, float, float, float, float]] = []
        for frame_index, frame in zip(idxs, frames, strict=True):
            img = Image.fromarray(frame.astype(np.uint8))
            img = img.resize(size=[s // 2 for s in img.size])
            with torch.no_grad():
                batch_boxes, _probs = self.detector.detect(img, landmarks=False)
            if batch_boxes is None:
                continue
            for bbox in batch_boxes:
                if bbox is None:
                    continue
                boxes.append((int(frame_index), *(float(b * 2) for b in bbox)))
                xmin, ymin, xmax, ymax = (int(b * 2) for b in bbox)
                w = xmax - xmin
                h = ymax - ymin
                p_h = h // 3
                p_w = w // 3
                crop = frame[max(ymin - p_h, 0) : ymax + p_h, max(xmin - p_w, 0) : xmax + p_w]
                for s in self.sizes:
                    if crop.size == 0:  # a degenerate box at the frame edge: a black face
                        out[s].append(np.zeros((s, s, 3), dtype=np.uint8))
                    else:
                        out[s].append(put_to_center(isotropically_resize_image(crop, s), s))
        return out, boxes

    def predict_faces(self, faces: dict[int, list[np.ndarray]]) -> dict[str, np.ndarray]:
        """detector name -> (N,) P(fake) per face, one forward pass per detector."""
        import contextlib

        import torch

        preds = {}
        for spec, model, output in self.models:
            x = torch.tensor(np.stack(faces[spec.input_size]), device=self.device).float()
            x = x.permute((0, 3, 1, 2)) / 255.0
            mean = torch.tensor(spec.mean, device=self.device).view(1, 3, 1, 1)
            std = torch.tensor(spec.std, device=self.device).view(1, 3, 1, 1)
            x = (x - mean) / std
            amp = (
                torch.autocast("cuda", dtype=torch.float16)
                if self.device.startswith("cuda")
                else contextlib.nullcontext()
            )
            with torch.no_grad(), amp:
                y = model(x).reshape(-1).float()
            y = torch.clamp(y, 0.0, 1.0) if output == "prob" else torch.sigmoid(y)
            preds[spec.name] = y.cpu().numpy()
        return preds

    def score_video(self, path: str, video_id: str | None = None) -> ReferenceResult:
        r = ReferenceResult(video_id or os.path.basename(path), status="error")
        cpu = self.workers == 1
        with _Timer(r, "decode", cpu):
            try:
                if os.path.getsize(path) == 0:
                    raise OSError("empty file (0 bytes)")
            except OSError as e:
                r.status, r.error = "read_error", f"{type(e).__name__}: {e}"
                return r
            try:
                frames, idxs = self.read_frames(path)
            except Exception as e:  # cv2 raises its own error types
                r.status, r.error = "decode_error", f"{type(e).__name__}: {str(e)[:200]}"
                return r
        r.n_frames = int(frames.shape[0])
        with _Timer(r, "detect", cpu):
            try:
                faces, r.boxes = self.process_frames(frames, idxs)
            except Exception as e:  # one bad video must not end the benchmark
                r.status, r.error = "error", f"face extraction failed: {type(e).__name__}: {e}"
                return r
            del frames
        r.n_faces = len(faces[self.sizes[0]])
        if r.n_faces == 0:
            r.status, r.error = "no_faces", f"no face found in {r.n_frames} sampled frames"
            return r
        with _Timer(r, "score", cpu):
            try:
                preds = self.predict_faces(faces)
            except Exception as e:
                r.status, r.error = "error", f"scoring failed: {type(e).__name__}: {e}"
                return r
            r.model_scores = {
                spec.name: STRATEGIES[spec.aggregation](preds[spec.name])
                for spec, _, _ in self.models
            }
            total = sum(spec.weight for spec, _, _ in self.models)
            r.score = (
                sum(spec.weight * r.model_scores[spec.name] for spec, _, _ in self.models) / total
            )
        r.status = "ok"
        return r

    def score_corpus(self, root: str, on_video=None) -> list[ReferenceResult]:
        """Every video under root, `workers` at a time (`predict_on_video_set`: a
        ThreadPoolExecutor mapping over the sorted file list); results in list order.
        `on_video(result)` is called as each video finishes (from its worker thread)."""
        lock = threading.Lock()

        def process_file(item: tuple[str, str]) -> ReferenceResult:
            video_id, path = item
            res = self.score_video(path, video_id)
            if on_video is not None:
                with lock:
                    on_video(res)
            return res

        with ThreadPoolExecutor(max_workers=self.workers) as ex:
            return list(ex.map(process_file, list_videos(root)))
