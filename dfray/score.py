"""Score stage: the detector ensemble over the faces of a batch of extracted videos.

For each detector, every video's margin crops are fitted to the detector's input size
(dfray.faces.fit_crops: isotropic resize + zero padding, the same code whether the crops
come from the extract stage or from a face cache) and the faces of all videos in the batch
go through the detector together, across video boundaries. Scores are split back per
video, aggregated per detector with the spec's strategy and weight-averaged. Videos that
arrive with a final status (read_error, no_faces, …) pass through unscored.

A detector is untrusted code in effect (a submitted model): if it raises, or returns a
wrong shape, NaN or a probability outside [0, 1], the batch is retried one video at a time
so that only the videos it fails on get an `error` row with the message; their
batch-mates are scored. Nothing is clipped or invented.
"""

from __future__ import annotations

import time

import numpy as np

from dfray.aggregate import aggregate, ensemble
from dfray.config import EnsembleConfig
from dfray.faces import fit_crops, unpack_crops
from dfray.results import now_utc
from dfray.stage import Resources

FACE_OUT = ("face_frame_index", "face_boxes", "face_probs", "face_scores")
DROPPED = ("face_crops", "face_shapes")  # inputs only: crops never reach the tables


def score_schema(detector_names):
    """Rows leaving the score stage: the videos table plus the per-face columns."""
    import pyarrow as pa

    from dfray.results import videos_schema

    return pa.schema(
        list(videos_schema(detector_names)) + [pa.field(c, pa.binary()) for c in FACE_OUT]
    )


def error_text(e: BaseException, limit: int = 300) -> str:
    """One printable line for an exception raised by a model. TorchScript errors carry the
    script's traceback first and the actual error on their last line."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not lines:
        text = type(e).__name__
    elif len(lines) > 1 and "TorchScript" in lines[0]:
        text = lines[-1]
    else:
        text = lines[0]
    if not text.startswith(type(e).__name__):
        text = f"{type(e).__name__}: {text}"
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


GPU_BATCH = 64  # faces per forward pass on a GPU
# On a CPU: a pass over a few faces costs what a pass over 64 does per face (EfficientNet-B0
# at 380 px, one thread: 0.057-0.061 s user per face at 2, 4 or 64), and its activations
# mostly stay under glibc's mmap threshold, so their memory is reused from pass to pass
# (dfray.heap). One pass over a video's 32 faces maps ~150 MB of fresh pages each time,
# and the kernel's zeroing of them cost 0.05-0.14 s of system time per face on the CI VM
# (0.003-0.005 at 4, 0.000 at 2). 4 rather than 2 (onnxruntime: 0.041 vs 0.036 s per
# face): passes larger than the rescoring check's dummy batch of 2, so that a submission
# that breaks on bigger batches shows it in its rows, as tests/test_rescore.py's do.
CPU_BATCH = 4


class EnsembleScorer:
    """Holds the detectors of an ensemble; `__call__(rows)` returns final video rows."""

    @staticmethod
    def resources(on_gpu: bool, model_mb: float = 0.0) -> Resources:
        """One actor: one core feeding the models (its torch threads are set by the
        runner's layout), a third of a GPU on GPU nodes; memory for the weights twice over
        (loaded and in use) plus activations."""
        return Resources(cpus=1.0, gpus=0.3 if on_gpu else 0.0,
                         memory_mb=int(800 + 2 * model_mb))

    def __init__(self, cfg: EnsembleConfig, device: str = "auto", precision: str = "auto",
                 batch_size: int | None = None, run_id: str = "", storage=None,
                 detectors=None, runtime: str = "torch"):
        from dfray.detectors import create_detector

        self.cfg = cfg
        self.run_id = run_id
        self.detectors = detectors or [
            create_detector(spec, device=device, precision=precision, storage=storage,
                            runtime=runtime)
            for spec in cfg.detectors
        ]
        on_cpu = self.device == "cpu"
        self.batch_size = batch_size or (CPU_BATCH if on_cpu else GPU_BATCH)
        self.weights = {d.spec.name: d.spec.weight for d in self.detectors}
        self.schema = score_schema([d.spec.name for d in self.detectors])

    @property
    def device(self) -> str:
        return self.detectors[0].device

    def __call__(self, rows: list[dict]) -> list[dict]:
        todo = [r for r in rows if r.get("status") == "extracted"]
        t0 = time.perf_counter()
        counts = [int(r["n_faces"]) for r in todo]
        crops = [unpack_crops(r["face_crops"], r["face_shapes"]) for r in todo]
        failed: dict[int, str] = {}
        per_det: dict[str, list[np.ndarray | None]] = {}
        fitted: dict[int, list[np.ndarray]] = {}
        for det in self.detectors:
            s = det.spec.input_size
            if s not in fitted:
                fitted[s] = [fit_crops(c, s) for c in crops]
            per_det[det.spec.name] = self._predict(det, fitted[s], failed)
        elapsed = time.perf_counter() - t0
        total_faces = max(1, sum(counts))
        scored = {}
        for i, r in enumerate(todo):
            score_s = elapsed * counts[i] / total_faces
            if i in failed:
                scored[r["video_id"]] = self._failed(r, failed[i], score_s)
            else:
                faces = {n: p[i] for n, p in per_det.items()}
                scored[r["video_id"]] = self._finish(r, faces, score_s)
        return [scored.get(r["video_id"]) or self._passthrough(r) for r in rows]

    def _predict(self, det, batches: list[np.ndarray], failed: dict[int, str]):
        """Face scores of each video (None where the detector failed on it); the batch
        first, then, if the detector fails on it, one video at a time."""
        live = [i for i in range(len(batches)) if i not in failed]
        out: list[np.ndarray | None] = [None] * len(batches)
        if not live:
            return out
        try:
            p = det.predict(np.concatenate([batches[i] for i in live]), self.batch_size)
            at = 0
            for i in live:
                out[i] = p[at : at + len(batches[i])]
                at += len(batches[i])
            return out
        except Exception as e:  # noqa: BLE001 - a model's failure is data, see the docstring
            if len(live) == 1:
                failed[live[0]] = f"detector {det.spec.name!r} failed: {error_text(e)}"
                return out
        for i in live:
            try:
                out[i] = det.predict(batches[i], self.batch_size)
            except Exception as e:  # noqa: BLE001
                failed[i] = f"detector {det.spec.name!r} failed: {error_text(e)}"
        return out

    def _finish(self, row: dict, face_scores: dict[str, np.ndarray], score_s: float) -> dict:
        out = self._passthrough({**row, "status": None})
        out["score_s"] = score_s
        try:
            video = {
                d.spec.name: aggregate(face_scores[d.spec.name], d.spec.aggregation)
                for d in self.detectors
            }
            out["score"] = ensemble(video, self.weights)
        except ValueError as e:
            return self._failed(row, f"scoring failed: {e}", score_s)
        out["model_scores"] = video
        out["status"] = "ok"
        out["face_scores"] = np.stack(
            [face_scores[d.spec.name] for d in self.detectors], axis=1
        ).astype(np.float32).tobytes()
        return out

    def _failed(self, row: dict, message: str, score_s: float) -> dict:
        out = self._passthrough({**row, "status": "error", "error": message[:500]})
        out.update(score=None, model_scores=None, score_s=score_s, face_scores=None)
        return out

    def _passthrough(self, row: dict) -> dict:
        out = {k: v for k, v in row.items() if k not in DROPPED}
        out.setdefault("score", None)
        out.setdefault("model_scores", None)
        out.setdefault("score_s", None)
        out["scored_at"] = now_utc()
        out["run_id"] = self.run_id
        if out.get("status") == "extracted":  # only reachable if called on a bad batch
            out.update(status="error", error="extracted but not scored")
        return out
