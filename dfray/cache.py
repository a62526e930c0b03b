"""The face cache: a run of the extract stage alone, read instead of the corpus.

Folder (local or S3), written by `dfray extract` with the same machinery as a score run
(immutable parts, resumable, one writer):

    cache.json          extraction spec (frames, MTCNN thresholds, scale, minimum face size,
                        margin), dfray version, counts by status, attempts and their stats
    manifest.parquet    one row per video of the corpus (as in a score run)
    videos/part-*.parquet   one row per video: the videos table without scores; status
                        `ok` for a video whose faces were extracted, else the final status
                        (no_faces, read_error, decode_error, timeout, error) and its message
    faces/part-*.parquet    one row per face: video_id, frame_index, face_index, box,
                        det_prob, crop — the margin crop (box plus margin) at the frame's
                        native resolution, an RGB PNG (lossless)

All faces of one video are in one row group of one faces part (the writer adds a video's
faces in one write; compaction copies whole row groups), so a reader fetches a video's
faces by reading one row group.

Crops for any detector size are made from the margin crop by dfray.faces.fit_crops, the
same function the direct path uses, so scoring from the cache equals scoring the corpus.
"""

from __future__ import annotations

import io
from collections import defaultdict

import numpy as np

from dfray import storage
from dfray.config import StorageConfig

CACHE_JSON = "cache.json"
PNG_LEVEL = 1  # zlib level: lossless at any level; 1 is the fastest to write


def is_cache(uri: str, cfg: StorageConfig) -> bool:
    """Whether `uri` is a face-cache folder (it holds cache.json)."""
    try:
        return storage.exists(storage.join(uri, CACHE_JSON), cfg)
    except (OSError, ValueError):
        return False


def faces_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("video_id", pa.string()),
            ("frame_index", pa.int32()),
            ("face_index", pa.int32()),
            ("box", pa.list_(pa.float32(), 4)),
            ("det_prob", pa.float32()),
            ("crop", pa.binary()),  # PNG; empty for an empty crop (box outside the frame)
        ]
    )


def spec(decode, faces) -> dict:
    """The extraction spec recorded in cache.json (what makes two caches comparable)."""
    import dataclasses

    import dfray

    return {
        "frames": decode.n_frames,
        "mtcnn_thresholds": list(faces.thresholds),
        "scale": faces.scale,
        "min_face_size": faces.min_face_size,
        "margin": faces.margin,
        "min_prob": faces.min_prob,
        "max_faces_per_frame": faces.max_faces_per_frame,
        "faces_config": dataclasses.asdict(faces),
        "dfray_version": dfray.__version__,
    }


def configs_from_spec(doc: dict):
    """(DecodeConfig, FaceConfig) of a cache from its cache.json `extraction` entry."""
    from dfray.config import DecodeConfig, FaceConfig

    ext = doc["extraction"]
    faces = dict(ext["faces_config"])
    faces["thresholds"] = tuple(faces["thresholds"])
    return DecodeConfig(n_frames=int(ext["frames"])), FaceConfig(**faces)


def encode_png(crop: np.ndarray) -> bytes:
    """An RGB uint8 crop as PNG bytes (lossless). Pillow, not OpenCV: once decord is imported
    in a process, OpenCV's libpng fails on zlib ("bad parameters to zlib") and imdecode
    returns None, and a worker that decoded a video may later read the cache."""
    from PIL import Image

    if crop.size == 0:
        return b""
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"cannot PNG-encode a crop of shape {crop.shape} and {crop.dtype}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(crop), "RGB").save(buf, format="PNG",
                                                            compress_level=PNG_LEVEL)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """The crop exactly as it was encoded: an RGB uint8 array."""
    from PIL import Image

    if not data:
        return np.zeros((0, 0, 3), np.uint8)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # any decoder failure is a corrupt cache entry
        raise ValueError(f"a cached crop is not a readable PNG: {e}") from None
    if img.mode != "RGB":
        raise ValueError(f"a cached crop is not an RGB PNG (mode {img.mode})")
    return np.asarray(img)


def finish_row(row: dict) -> dict:
    """A row of the extract stage as the cache's videos row: an extracted video is `ok`
    (its faces are in faces/); any other status is final and kept."""
    return {**row, "status": "ok"} if row.get("status") == "extracted" else row


def face_rows(row: dict) -> list[dict]:
    """The faces-table rows of one extracted video (crops PNG-encoded in `face_pngs`)."""
    n = int(row["n_faces"])
    fi = np.frombuffer(row["face_frame_index"], np.int32)
    boxes = np.frombuffer(row["face_boxes"], np.float32).reshape(n, 4)
    probs = np.frombuffer(row["face_probs"], np.float32)
    pngs = row["face_pngs"]
    out, per_frame = [], defaultdict(int)
    for i in range(n):
        k = per_frame[int(fi[i])]
        per_frame[int(fi[i])] += 1
        out.append(
            {
                "video_id": row["video_id"],
                "frame_index": int(fi[i]),
                "face_index": k,
                "box": boxes[i].tolist(),
                "det_prob": float(probs[i]),
                "crop": pngs[i],
            }
        )
    return out


def extracted_rows(faces, videos: dict[str, dict]) -> list[dict]:
    """Rows in the extract stage's format (dfray.extract) for the cached videos `videos`
    (video_id -> its cache videos row) from a faces table holding all their faces."""
    from dfray.faces import pack_crops

    by_video: dict[str, list[dict]] = defaultdict(list)
    for f in faces.to_pylist():
        if f["video_id"] in videos:
            by_video[f["video_id"]].append(f)
    out = []
    for vid, row in videos.items():
        fs = by_video.get(vid, [])
        if len(fs) != int(row["n_faces"] or 0):
            raise ValueError(
                f"face cache is inconsistent: {vid} has {len(fs)} faces, its row says "
                f"{row['n_faces']}"
            )
        # the order the extract stage produced: by frame position, then MTCNN's order
        fs.sort(key=lambda f: (f["frame_index"], f["face_index"]))
        crops = [decode_png(f["crop"]) for f in fs]
        data, shapes = pack_crops(crops)
        out.append(
            {
                **row,
                "status": "extracted",
                "face_frame_index": np.array([f["frame_index"] for f in fs], np.int32).tobytes(),
                "face_boxes": np.array([f["box"] for f in fs], np.float32).reshape(-1, 4).tobytes(),
                "face_probs": np.array([f["det_prob"] for f in fs], np.float32).tobytes(),
                "face_crops": data,
                "face_shapes": shapes,
            }
        )
    return out
