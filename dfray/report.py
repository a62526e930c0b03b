"""`dfray report`: one self-contained HTML page about a run (local or S3).

Everything is inline (plots are base64 PNGs, the style is one <style> block, no scripts),
so the file opens offline, attaches to an email and survives being copied anywhere.
Sections: the run (id, state, corpus, detectors, times), counts by status, the metrics of
`dfray metrics` (unscored labelled videos filled with 0.5), ROC, precision-recall and
calibration curves (scored labelled videos only; shown when both labels are present),
score histograms by label, the per-stage time table and the attempts (run.json stats),
a per-video timeline, the slowest videos, the videos without a score with their
messages, and the spend when a budget was set.

The timeline draws each scored video as a bar ending when its row was written
(`scored_at`), split into its decode, detect and score seconds, one lane per worker; the
stages of one video run in different actors, so the bars show where each video's time
went rather than an exact schedule. At most TIMELINE_MAX videos are drawn (the latest).
"""

from __future__ import annotations

import base64
import html
import io
import json

from dfray import results
from dfray.config import StorageConfig

TIMELINE_MAX = 400
SLOWEST = 15
FAILED_MAX = 200
STAGE_COLORS = {"decode_s": "#4c72b0", "detect_s": "#dd8452", "score_s": "#55a868"}
LABEL_NAMES = {0: "real", 1: "fake", None: "unlabelled"}


def gather(run_dir: str, cfg: StorageConfig | None = None) -> dict:
    """What the report shows: run.json, the videos rows, the manifest's size."""
    folder = results.RunFolder.at(run_dir, cfg)
    doc = folder.read_run_json()
    if doc is None:
        raise FileNotFoundError(f"no run.json under {run_dir}: not a dfray run folder")
    rows = results.read_videos(run_dir, cfg).to_pylist() if folder.parts("videos") else []
    try:
        n_manifest = results.read_manifest(folder, ["video_id"]).num_rows
    except (OSError, ValueError):
        n_manifest = len(rows)
    return {"run_dir": run_dir, "doc": doc, "rows": rows, "n_manifest": n_manifest}


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return ('<img alt="plot" src="data:image/png;base64,'
            + base64.b64encode(buf.getvalue()).decode() + '">')


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def labelled_scores(rows: list[dict]) -> tuple[list[int], list[float]]:
    pairs = [(r["label"], r["score"]) for r in rows
             if r["label"] in (0, 1) and r["score"] is not None]
    return [int(y) for y, _ in pairs], [float(s) for _, s in pairs]


def curves(rows: list[dict]) -> str | None:
    """ROC, precision-recall and calibration side by side; None unless both labels occur."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    y, p = labelled_scores(rows)
    if len(set(y)) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    fpr, tpr, _ = roc_curve(y, p)
    ax[0].plot(fpr, tpr, color="#c44e52", label=f"AUC {auc(fpr, tpr):.3f}")
    ax[0].plot([0, 1], [0, 1], ls="--", color="grey")
    ax[0].set(title="ROC", xlabel="false positive rate", ylabel="true positive rate")
    ax[0].legend(loc="lower right")
    prec, rec, _ = precision_recall_curve(y, p)
    ax[1].plot(rec, prec, color="#8172b2")
    ax[1].axhline(sum(y) / len(y), ls="--", color="grey", label="share of fakes")
    ax[1].set(title="Precision-recall", xlabel="recall", ylabel="precision", ylim=(0, 1.05))
    ax[1].legend(loc="lower left")
    frac, mean = calibration_curve(y, p, n_bins=min(10, max(2, len(y) // 5)))
    ax[2].plot(mean, frac, marker="o", color="#4c72b0")
    ax[2].plot([0, 1], [0, 1], ls="--", color="grey")
    ax[2].set(title="Calibration", xlabel="mean predicted P(fake)", ylabel="fraction fake",
              xlim=(0, 1), ylim=(0, 1))
    return _png(fig)


def histograms(rows: list[dict]) -> str | None:
    scored = [r for r in rows if r["score"] is not None]
    if not scored:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = [i / 20 for i in range(21)]
    for label, color in ((0, "#4c72b0"), (1, "#c44e52"), (None, "#999999")):
        s = [r["score"] for r in scored if (r["label"] if r["label"] in (0, 1) else None) == label]
        if s:
            ax.hist(s, bins=bins, alpha=0.6, color=color, label=f"{LABEL_NAMES[label]} ({len(s)})")
    ax.set(title="Scores by label", xlabel="P(fake)", ylabel="videos", xlim=(0, 1))
    ax.legend()
    return _png(fig)


def timeline(rows: list[dict]) -> str | None:
    from datetime import timedelta

    timed = [r for r in rows if r.get("scored_at") is not None]
    if not timed:
        return None
    timed = sorted(timed, key=lambda r: r["scored_at"])[-TIMELINE_MAX:]
    workers = sorted({r.get("worker") or "?" for r in timed})
    lane = {w: i for i, w in enumerate(workers)}
    t0 = min(r["scored_at"] - timedelta(seconds=_busy(r)) for r in timed)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(12, 1.2 + 0.45 * len(workers)))
    for r in timed:
        end = (r["scored_at"] - t0).total_seconds()
        start = end - _busy(r)
        for col, color in STAGE_COLORS.items():
            d = float(r.get(col) or 0.0)
            if d > 0:
                ax.barh(lane[r.get("worker") or "?"], d, left=start, height=0.6, color=color,
                        edgecolor="white", linewidth=0.3)
                start += d
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=c, label=k.removesuffix("_s")) for k, c in STAGE_COLORS.items()],
              loc="upper left", ncol=3, fontsize="small")
    ax.set_yticks(range(len(workers)), workers)
    ax.set(title=f"Per-video timeline ({len(timed)} videos)", xlabel="seconds since the first")
    return _png(fig)


def _busy(r: dict) -> float:
    return sum(float(r.get(c) or 0.0) for c in STAGE_COLORS)


def _table(head: list[str], body: list[list]) -> str:
    def cell(v) -> str:
        if isinstance(v, float):
            v = f"{v:.4g}"
        return f"<td>{html.escape('' if v is None else str(v))}</td>"

    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in body)
            + "</table>")


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>{body}</section>"


def render(data: dict) -> str:
    """The HTML page of gathered run data."""
    from dfray.metrics import compute

    doc, rows = data["doc"], data["rows"]
    out = []
    det = ", ".join(d.get("name", "?") for d in doc.get("detectors") or []) or "-"
    out.append(_section("Run", _table(["field", "value"], [
        ["run id", doc.get("run_id")], ["folder", data["run_dir"]], ["state", doc.get("state")],
        ["corpus", doc.get("corpus")], ["detectors", det],
        ["started", doc.get("started_at")], ["ended", doc.get("ended_at")],
        ["launches", doc.get("launches")],
        ["dfray", (doc.get("versions") or {}).get("dfray")],
    ])))
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    unscored = max(0, data["n_manifest"] - len(rows))
    body = [[k, v] for k, v in sorted(counts.items())]
    if unscored:
        body.append(["(no row yet)", unscored])
    body.append(["total", data["n_manifest"]])
    out.append(_section("Videos by status", _table(["status", "videos"], body)))
    if rows:
        m = compute([r["label"] for r in rows], [r["score"] for r in rows],
                    [r["status"] for r in rows], fill=0.5)
        out.append(_section("Metrics", _table(["metric", "value"], [
            ["labelled videos", m["n_labelled"]],
            ["evaluated (unscored filled with 0.5)", m["n_evaluated"]],
            ["log loss", m["log_loss"]], ["ROC AUC", m["roc_auc"]],
            ["average precision", m["average_precision"]], ["accuracy at 0.5", m["accuracy"]],
        ])))
    c = curves(rows)
    out.append(_section("ROC, precision-recall and calibration", c or
                        "<p>Not shown: the scored videos do not carry both labels.</p>"))
    h = histograms(rows)
    out.append(_section("Score histograms", h or "<p>No video has a score.</p>"))
    out.append(_section("Time by stage", _stages(doc)))
    tl = timeline(rows)
    out.append(_section("Timeline", tl or "<p>No video has a timestamp.</p>"))
    slow = sorted((r for r in rows if _busy(r) > 0), key=_busy, reverse=True)[:SLOWEST]
    out.append(_section(f"Slowest videos (top {SLOWEST})", _table(
        ["video", "status", "total s", "decode s", "detect s", "score s", "worker"],
        [[r["video_id"], r["status"], _busy(r), r.get("decode_s"), r.get("detect_s"),
          r.get("score_s"), r.get("worker")] for r in slow])))
    failed = [r for r in rows if r["status"] != "ok"]
    more = f"<p>and {len(failed) - FAILED_MAX} more</p>" if len(failed) > FAILED_MAX else ""
    out.append(_section(f"Videos without a score ({len(failed)})", _table(
        ["video", "status", "message"],
        [[r["video_id"], r["status"], r.get("error")] for r in failed[:FAILED_MAX]]) + more))
    spend = doc.get("spend")
    out.append(_section("Spend", _table(["field", "value"], [
        [k, json.dumps(v) if isinstance(v, dict | list) else v] for k, v in spend.items()])
        if spend else "<p>No budget was set for this run.</p>"))
    title = html.escape(f"dfray run {doc.get('run_id')}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{CSS}</style></head><body><h1>{title}</h1>{''.join(out)}</body></html>")


def _stages(doc: dict) -> str:
    stats = doc.get("stats") or {}
    stages = stats.get("stages") or {}
    if not stages:
        return "<p>No stage statistics in run.json (the run has not finished an attempt).</p>"
    head = ["stage", "videos", "total s", "s per video", "workers", "utilization",
            "share of work"]
    body = [[k, s.get("videos"), s.get("total_s"), s.get("s_per_video"), s.get("workers"),
             s.get("utilization"), s.get("share_of_work")] for k, s in stages.items()]
    summary = _table(["field", "value"], [
        ["wall s", stats.get("wall_s")], ["videos scored", stats.get("n_scored")],
        ["videos per s", stats.get("videos_per_s")], ["device", stats.get("device")],
        ["nodes", stats.get("nodes")], ["attempts", stats.get("attempts")]])
    attempts = _table(["attempt", "started", "wall s", "videos scored"], [
        [i + 1, a.get("started_at"), a.get("wall_s"), a.get("n_scored")]
        for i, a in enumerate(doc.get("attempts") or [])])
    return _table(head, body) + summary + "<h3>Attempts</h3>" + attempts


CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222;background:#fff}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left;font-size:.9em;max-width:60em;word-break:break-word}th{background:#f0f0f0}
img{max-width:100%}"""


def write_report(run_dir: str, out: str, cfg: StorageConfig | None = None) -> str:
    """Write the report of `run_dir` to `out` (a path or s3:// URI); returns `out`."""
    from dfray import storage

    page = render(gather(run_dir, cfg))
    storage.write_bytes(out, page.encode(), cfg or StorageConfig())
    return out
