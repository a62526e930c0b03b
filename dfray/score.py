"""Score stage: the detector ensemble over the faces of a batch of extracted videos.

Faces of all videos in the batch go through each detector together (one forward pass per
chunk of `batch_size` crops, across video boundaries), then scores are split back per
video, aggregated per detector with the spec's strategy and weight-averaged. Videos that
arrive with a final status (read_error, no_faces, …) pass through unscored.
"""

from __future__ import annotations

import time

import numpy as np

from dfray.aggregate import aggregate, ensemble
from dfray.config import EnsembleConfig
from dfray.results import now_utc


def score_schema(detector_names):
    """Rows leaving the score stage: the videos table plus the per-face columns."""
    import pyarrow as pa

    from dfray.results import videos_schema

    extra = [(c, pa.binary()) for c in ("face_frame_index", "face_boxes", "face_probs", "face_scores")]
    return pa.schema(list(videos_schema(detector_names)) + [pa.field(n, t) for n, t in extra])


class EnsembleScorer:
    """Holds the detectors of an ensemble; `__call__(rows)` returns final video rows."""

    def __init__(self, cfg: EnsembleConfig, device: str = "auto", precision: str = "auto",
                 batch_size: int = 64, run_id: str = "", storage=None):
        from dfray.detectors import create_detector

        self.cfg = cfg
        self.run_id = run_id
        self.batch_size = batch_size
        self.detectors = [
            create_detector(spec, device=device, precision=precision, storage=storage)
            for spec in cfg.detectors
        ]
        self.weights = {d.spec.name: d.spec.weight for d in self.detectors}
        self.schema = score_schema([d.spec.name for d in self.detectors])

    @property
    def device(self) -> str:
        return self.detectors[0].device

    def __call__(self, rows: list[dict]) -> list[dict]:
        todo = [r for r in rows if r.get("status") == "extracted"]
        t0 = time.perf_counter()
        counts = [int(r["n_faces"]) for r in todo]
        per_det: dict[str, np.ndarray] = {}
        for det in self.detectors:
            s = det.spec.input_size
            crops = [np.frombuffer(r[f"crops_{s}"], np.uint8).reshape(-1, s, s, 3) for r in todo]
            batch = np.concatenate(crops) if crops else np.zeros((0, s, s, 3), np.uint8)
            per_det[det.spec.name] = det.predict(batch, batch_size=self.batch_size)
        elapsed = time.perf_counter() - t0
        total_faces = max(1, sum(counts))
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        scored = {}
        for i, r in enumerate(todo):
            lo, hi = offsets[i], offsets[i + 1]
            face_scores = {n: p[lo:hi] for n, p in per_det.items()}
            scored[r["video_id"]] = self._finish(r, face_scores, elapsed * counts[i] / total_faces)
        out = []
        for r in rows:
            out.append(scored.get(r["video_id"]) or self._passthrough(r))
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
            out.update(status="error", error=f"scoring failed: {e}", score=None)
            return out
        out["model_scores"] = video
        out["status"] = "ok"
        out["face_scores"] = np.stack(
            [face_scores[d.spec.name] for d in self.detectors], axis=1
        ).astype(np.float32).tobytes()
        return out

    def _passthrough(self, row: dict) -> dict:
        out = {k: v for k, v in row.items() if not k.startswith("crops_")}
        out.setdefault("score", None)
        out.setdefault("model_scores", None)
        out.setdefault("score_s", None)
        out["scored_at"] = now_utc()
        out["run_id"] = self.run_id
        if out.get("status") == "extracted":  # only reachable if called on a bad batch
            out.update(status="error", error="extracted but not scored")
        return out
