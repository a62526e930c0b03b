"""Train the demo meso4 detector shipped as `builtin:meso4_demo`.

    python jobs/train_demo_detector.py            # ~5-10 min on 2 CPU cores

1. generates a training corpus with `dfray samples` (seed 1) — synthetic clips only;
2. extracts face crops with dfray's own decode + MTCNN + crop code (the same
   preprocessing the pipeline uses), 8 frames per video, in 2 processes;
3. trains MesoNet-4 (BCE, Adam, flips and brightness jitter), keeping the epoch with the
   best log loss on held-out training videos (split by video, seeded);
4. writes dfray/detectors/weights/meso4_demo.pt (a plain state dict; loads with
   weights_only=True) and prints its sha256.

Reproducible: seeds for data, split, init and batches; single-threaded torch math.
The detector only knows this synthetic corpus (its blending seams and colour mismatch);
it says nothing about real deepfakes. Evaluate it on a corpus of another seed with
`dfray samples DIR --seed 2 && dfray score DIR --out OUT && dfray metrics OUT/RUN`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

OUT = Path(__file__).resolve().parents[1] / "dfray" / "detectors" / "weights" / "meso4_demo.pt"
SIZE = 256
_EXTRACTOR = None


def _init_worker():
    global _EXTRACTOR
    import torch

    from dfray.config import FaceConfig
    from dfray.faces import FaceExtractor

    torch.set_num_threads(1)
    _EXTRACTOR = FaceExtractor(FaceConfig(), "cpu")


def _crops(args: tuple[str, int]) -> np.ndarray:
    from dfray.decode import decode_frames, frame_indices
    from dfray.faces import fit_crops

    path, n_frames = args
    frames, info = decode_frames(path, n_frames)
    faces = _EXTRACTOR.extract(frames, frame_indices(info.frame_count, n_frames))
    return fit_crops(faces.crops, SIZE)


def extract(corpus: Path, n_frames: int, procs: int):
    meta = json.loads((corpus / "metadata.json").read_text())
    names = sorted(meta)
    with get_context("spawn").Pool(procs, initializer=_init_worker) as pool:
        crops = pool.map(_crops, [(str(corpus / n), n_frames) for n in names], chunksize=1)
    labels = [1 if meta[n]["label"] == "FAKE" else 0 for n in names]
    return names, crops, labels


def train(crops, labels, vids, seed: int, epochs: int, log):
    import torch
    from torch import nn

    from dfray.detectors.meso4 import build_meso4

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(vids))
    n_val = max(2, len(vids) // 5)
    val_v, train_v = set(order[:n_val].tolist()), set(order[n_val:].tolist())

    def stack(vset):
        xs = [crops[i] for i in sorted(vset) if len(crops[i])]
        ys = [np.full(len(crops[i]), labels[i], np.float32) for i in sorted(vset) if len(crops[i])]
        return np.concatenate(xs), np.concatenate(ys)

    xtr, ytr = stack(train_v)
    xva, yva = stack(val_v)
    log(f"train crops {len(xtr)} ({ytr.mean():.0%} fake), val crops {len(xva)}")

    def prep(x):
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float()
        return (t / 255.0 - 0.5) / 0.5

    model = build_meso4(SIZE)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    best, best_state = float("inf"), None
    for epoch in range(epochs):
        model.train()
        perm = rng.permutation(len(xtr))
        total = 0.0
        for s in range(0, len(perm), 32):
            idx = perm[s : s + 32]
            x = xtr[idx].copy()
            flip = rng.random(len(idx)) < 0.5
            x[flip] = x[flip, :, ::-1]
            xb = prep(x) * torch.from_numpy(rng.uniform(0.8, 1.2, (len(idx), 1, 1, 1))).float()
            loss = loss_fn(model(xb).squeeze(1), torch.from_numpy(ytr[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        model.eval()
        with torch.inference_mode():
            logits = torch.cat([model(prep(xva[i : i + 64])).squeeze(1) for i in range(0, len(xva), 64)])
            val = float(loss_fn(logits, torch.from_numpy(yva)))
            acc = float(((logits > 0).float().numpy() == yva).mean())
        log(f"epoch {epoch + 1}/{epochs}: train loss {total / len(xtr):.4f}, val loss {val:.4f}, val acc {acc:.3f}")
        if val < best:
            best, best_state = val, {k: v.detach().clone() for k, v in model.state_dict().items()}
    return best_state, best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default="/tmp/dfray-train", help="scratch folder for the corpus")
    p.add_argument("--videos", type=int, default=96)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max-height", type=int, default=1080)
    p.add_argument("--procs", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args()

    import torch

    from dfray.samples import generate_corpus

    torch.set_num_threads(1)
    t0 = time.time()

    def log(msg):
        print(f"[{time.time() - t0:6.1f}s] {msg}", flush=True)

    corpus = Path(a.work) / f"corpus-seed{a.seed}"
    if not (corpus / "metadata.json").exists():
        generate_corpus(corpus, n_videos=a.videos, seed=a.seed, max_height=a.max_height)
    log(f"corpus {corpus}: {a.videos} videos")
    vids, crops, labels = extract(corpus, a.frames, a.procs)
    log(f"extracted {sum(len(c) for c in crops)} face crops; {sum(len(c) == 0 for c in crops)} videos without faces")
    state, best = train(crops, labels, vids, a.seed, a.epochs, log)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    sha = hashlib.sha256(out.read_bytes()).hexdigest()
    log(f"wrote {out} (best val loss {best:.4f}); sha256 {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
