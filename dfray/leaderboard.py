"""The leaderboard of a rescore: pure functions from per-submission videos tables.

For each split (`public`, `private`) and each submission: its status and message, log
loss as Kaggle scored the DFDC (every labelled video of the split counts; a video the
submission did not score — failed, or missing from its table — is filled with 0.5 and
counted in `n_filled`; probabilities clipped to [1e-15, 1 - 1e-15]), ROC AUC, AP and
accuracy at > 0.5 (formulas: dfray.metrics.score_arrays), each with a 95% percentile
bootstrap interval over the split's videos (`n_boot` resamples from `seed`; the same
resamples for every submission, so the intervals are reproducible and paired), the rank
by log loss (ties: submission id), `p_beats_next` — the fraction of paired resamples in
which its log loss is lower than the next one down — videos scored and failed, and the
wall seconds, device seconds and cost in USD passed in.

Slices (the same metrics, no intervals) by resolution bucket (the short side of the
video: <=360, <=480, <=720, <=1080, >1080, unknown) and by label-source folder (the
folder of the video_id, where DFDC keeps one metadata.json per part folder).

Splits: a `filename,split` CSV (`split_from_file`), the DFDC metadata.json `split` field
(`split_from_metadata`), or seeded (`seeded_split`, public fraction and seed recorded).
A split file's `filename` matches a video_id, or else its base name. Values other than
public/private (e.g. DFDC's `train`) are kept but get no leaderboard.

Only `write_leaderboard` does I/O (dfray.storage: local or S3). No Ray here.
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dfray.metrics import (
    EPS,
    METRICS,
    resampled_ranking_metrics,
    score_arrays,
    video_correct,
    video_log_loss,
)

SPLITS = ("public", "private")
FILL = 0.5
RESOLUTION_BUCKETS = (360, 480, 720, 1080)


@dataclass(frozen=True)
class SubmissionResult:
    """What the rescore knows of one submission. `videos`: its videos table (pandas or
    pyarrow; columns video_id, status, score, optionally width/height) or None when it
    never scored (then every metric is null and it has no rank)."""

    id: str
    status: str
    videos: Any = None
    team: str = ""
    name: str = ""
    message: str = ""
    wall_s: float | None = None
    device_s: float | None = None
    cost_usd: float | None = None


@dataclass(frozen=True)
class Split:
    """video_id -> split name, and how it was made (written into the outputs)."""

    assignment: dict[str, str]
    source: dict[str, Any] = field(default_factory=dict, hash=False)


# ---------------------------------------------------------------- splits

def _match(names: dict[str, str], video_ids: list[str]) -> dict[str, str]:
    out = {}
    for v in video_ids:
        s = names.get(v)
        if s is None:
            s = names.get(posixpath.basename(v))
        if s is not None:
            out[v] = s
    return out


def split_from_file(text: str, video_ids: list[str], where: str = "split file") -> Split:
    """A CSV `filename,split` (a header row `filename,split` is skipped)."""
    import csv
    import io

    names: dict[str, str] = {}
    for i, row in enumerate(csv.reader(io.StringIO(text))):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise ValueError(f"{where} line {i + 1}: expected filename,split, got {row}")
        name, split = row[0].strip(), row[1].strip().lower()
        if i == 0 and (name.lower(), split) == ("filename", "split"):
            continue
        names[name] = split
    return Split(_match(names, video_ids), {"kind": "file", "file": where})


def split_from_metadata(texts: dict[str, str], video_ids: list[str]) -> Split:
    """DFDC metadata.json files ({filename: {label, split, ...}}), keyed by their URI; a
    filename is matched within the metadata file's folder first, then by base name."""
    names: dict[str, str] = {}
    for uri, text in sorted(texts.items()):
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"{uri}: expected a mapping of filename -> {{split: ...}}")
        for name, info in raw.items():
            if isinstance(info, dict) and info.get("split"):
                names.setdefault(name, str(info["split"]).lower())
    return Split(_match(names, video_ids), {"kind": "metadata", "files": sorted(texts)})


def seeded_split(video_ids: list[str], seed: int, public_fraction: float = 0.3) -> Split:
    """Each video public with probability `public_fraction`, from `seed` over the sorted
    ids: the same ids and seed give the same split."""
    if not 0 < public_fraction < 1:
        raise ValueError(f"public_fraction must be in (0, 1), got {public_fraction}")
    ids = sorted(set(video_ids))
    u = np.random.default_rng(seed).random(len(ids))
    return Split({v: ("public" if x < public_fraction else "private") for v, x in zip(ids, u, strict=True)},
                 {"kind": "seeded", "seed": seed, "public_fraction": public_fraction})


# ---------------------------------------------------------------- metrics

def resolution_bucket(width, height) -> str:
    try:
        side = min(int(width), int(height))
    except (TypeError, ValueError):
        return "unknown"
    for b in RESOLUTION_BUCKETS:
        if side <= b:
            return f"<={b}"
    return f">{RESOLUTION_BUCKETS[-1]}"


def _frame(videos):
    if videos is None:
        return None
    if hasattr(videos, "to_pandas"):
        videos = videos.to_pandas()
    return videos


def _scores(res: SubmissionResult, ids: list[str]):
    """(p with 0.5 fills, scored mask) aligned with `ids`; None when never scored."""
    df = _frame(res.videos)
    if df is None:
        return None
    ok = df[(df["status"] == "ok") & df["score"].notna()]
    by_id = dict(zip(ok["video_id"], ok["score"].astype(float), strict=True))
    p = np.array([by_id.get(v, np.nan) for v in ids], dtype=np.float64)
    scored = ~np.isnan(p)
    return np.where(scored, p, FILL), scored


def _bootstrap(y: np.ndarray, p: np.ndarray, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric on each resample (rows of `idx`: video indices); NaN where AUC/AP are
    undefined (one class drawn). The same per-video formulas as score_arrays."""
    out = {"log_loss": video_log_loss(y, p)[idx].mean(axis=1),
           "accuracy": video_correct(y, np.clip(p, EPS, 1 - EPS))[idx].mean(axis=1)}
    counts = np.zeros(idx.shape, dtype=np.int64)
    np.add.at(counts, (np.arange(len(idx))[:, None], idx), 1)
    out["roc_auc"], out["average_precision"] = resampled_ranking_metrics(
        y, np.clip(p, EPS, 1 - EPS), counts)
    return out


def _interval(vals: np.ndarray) -> tuple[float | None, float | None]:
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return None, None
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def _slices(y, p, ids, meta) -> list[dict]:
    rows = []
    for kind, key in (("resolution", lambda v: meta.get(v, {}).get("resolution", "unknown")),
                      ("source", lambda v: posixpath.dirname(v) or ".")):
        groups: dict[str, list[int]] = {}
        for i, v in enumerate(ids):
            groups.setdefault(key(v), []).append(i)
        for name, ix in sorted(groups.items()):
            rows.append({"slice_kind": kind, "slice": name, "n_videos": len(ix),
                         **score_arrays(y[ix], p[ix])})
    return rows


def split_table(results: list[SubmissionResult], labels: dict[str, int], split: Split,
                name: str, *, seed: int = 0, n_boot: int = 1000):
    """(leaderboard, slices) DataFrames of one split `name` (see the module docstring)."""
    import pandas as pd

    ids = sorted(v for v, s in split.assignment.items()
                 if s == name and labels.get(v) is not None)
    y = np.array([int(labels[v]) for v in ids], dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(ids), (n_boot, len(ids))) \
        if ids else np.zeros((0, 0), dtype=int)
    meta: dict[str, dict] = {}
    for r in results:
        df = _frame(r.videos)
        if df is None or "width" not in df or "height" not in df:
            continue
        for v, w, h in zip(df["video_id"], df["width"], df["height"], strict=True):
            if v not in meta and pd.notna(w) and pd.notna(h):
                meta[v] = {"resolution": resolution_bucket(w, h)}
    rows, slices, boots = [], [], {}
    for r in results:
        row = {"submission": r.id, "team": r.team, "name": r.name, "status": r.status,
               "message": r.message, "n_videos": len(ids), "n_scored": None,
               "n_failed": None, "n_filled": None}
        for m in METRICS:
            row.update({m: None, f"{m}_lo": None, f"{m}_hi": None})
        sp = _scores(r, ids)
        if sp is not None and ids:
            p, scored = sp
            row.update(n_scored=int(scored.sum()), n_failed=int((~scored).sum()),
                       n_filled=int((~scored).sum()), **score_arrays(y, p))
            b = _bootstrap(y, p, idx)
            boots[r.id] = b
            for m in METRICS:
                row[f"{m}_lo"], row[f"{m}_hi"] = _interval(b[m])
            slices += [{"submission": r.id, **s} for s in _slices(y, p, ids, meta)]
        row.update(wall_s=r.wall_s, device_s=r.device_s, cost_usd=r.cost_usd)
        rows.append(row)
    ranked = sorted((x for x in rows if x["log_loss"] is not None),
                    key=lambda x: (x["log_loss"], x["submission"]))
    for x in rows:
        x.update(rank=None, p_beats_next=None)
    for i, x in enumerate(ranked):
        x["rank"] = i + 1
        if i + 1 < len(ranked):
            a, b = boots[x["submission"]]["log_loss"], boots[ranked[i + 1]["submission"]]["log_loss"]
            x["p_beats_next"] = float(np.mean(a < b))
    rows.sort(key=lambda x: (x["rank"] is None, x["rank"] or 0, x["submission"]))
    board = pd.DataFrame(rows)
    board.insert(0, "split", name)
    cols = ["split", "rank", *[c for c in board.columns if c not in ("split", "rank")]]
    return board[cols], pd.DataFrame(slices)


def build_leaderboard(results: list[SubmissionResult], labels: dict[str, int],
                      split: Split, *, seed: int = 0, n_boot: int = 1000) -> dict:
    """{split name: (leaderboard, slices)} for public and private."""
    ids = [r.id for r in results]
    if len(set(ids)) != len(ids):
        raise ValueError(f"submission ids must be unique, got {sorted(ids)}")
    return {s: split_table(results, labels, split, s, seed=seed, n_boot=n_boot)
            for s in SPLITS}


# ---------------------------------------------------------------- output

def render_md(board, slices, name: str, split: Split, seed: int, n_boot: int) -> str:
    def f(v, nd=4):
        return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{nd}f}"

    def ci(row, m):
        return f"{f(row[m])} [{f(row[m + '_lo'])}, {f(row[m + '_hi'])}]"

    def num(v):
        return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else str(int(v))

    n = int(board["n_videos"].iloc[0]) if len(board) else 0
    lines = [f"# Leaderboard: {name}", "",
             f"{n} labelled videos; split {json.dumps(split.source, sort_keys=True)}; "
             f"unscored videos filled with {FILL}; log loss clipped to 1e-15; "
             f"95% bootstrap intervals over videos ({n_boot} resamples, seed {seed}).", "",
             "| rank | submission | status | log loss | ROC AUC | AP | accuracy | "
             "P(beats next) | scored | failed | wall s | device s | cost USD |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in board.to_dict("records"):
        status = r["status"] + (f": {r['message']}" if r["message"] else "")
        lines.append(
            f"| {num(r['rank'])} | {r['submission']} | {status.replace('|', '/')} | "
            f"{ci(r, 'log_loss')} | {ci(r, 'roc_auc')} | {ci(r, 'average_precision')} | "
            f"{ci(r, 'accuracy')} | {f(r['p_beats_next'], 3)} | {num(r['n_scored'])} | "
            f"{num(r['n_failed'])} | {f(r['wall_s'], 1)} | {f(r['device_s'], 1)} | "
            f"{f(r['cost_usd'], 4)} |")
    if len(slices):
        lines += ["", "## Slices (log loss)", "",
                  "| submission | slice | videos | log loss | ROC AUC | accuracy |",
                  "|---|---|---|---|---|---|"]
        for s in slices.to_dict("records"):
            lines.append(f"| {s['submission']} | {s['slice_kind']}: {s['slice']} | "
                         f"{s['n_videos']} | {f(s['log_loss'])} | {f(s['roc_auc'])} | "
                         f"{f(s['accuracy'])} |")
    return "\n".join(lines) + "\n"


def write_leaderboard(boards: dict, out_dir: str, split: Split, storage_cfg=None, *,
                      seed: int = 0, n_boot: int = 1000) -> dict[str, str]:
    """Write `<out_dir>/<split>/leaderboard.parquet`, `slices.parquet`, `leaderboard.md`
    and `split.json` (how the split was made) for each split; returns split -> folder."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from dfray import storage
    from dfray.config import StorageConfig

    cfg = storage_cfg or StorageConfig()
    out = {}
    for name, (board, slices) in boards.items():
        folder = storage.join(out_dir, name)
        for fname, df in (("leaderboard.parquet", board), ("slices.parquet", slices)):
            buf = io.BytesIO()
            table = pa.Table.from_pandas(df, preserve_index=False)
            table = table.replace_schema_metadata({
                **(table.schema.metadata or {}),
                b"dfray.split": json.dumps(split.source, sort_keys=True).encode(),
                b"dfray.bootstrap": json.dumps({"seed": seed, "n_boot": n_boot}).encode()})
            pq.write_table(table, buf)
            storage.write_bytes(storage.join(folder, fname), buf.getvalue(), cfg)
        md = render_md(board, slices, name, split, seed, n_boot)
        storage.write_bytes(storage.join(folder, "leaderboard.md"), md.encode(), cfg)
        ids = sorted(v for v, s in split.assignment.items() if s == name)
        storage.write_bytes(storage.join(folder, "split.json"), json.dumps(
            {**split.source, "videos": ids}, indent=1).encode(), cfg)
        out[name] = folder
    return out
