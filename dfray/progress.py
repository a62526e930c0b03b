"""Live progress on the console and the per-stage table saved into run.json."""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field

STAGE_COLUMNS = {"decode": "decode_s", "detect": "detect_s", "score": "score_s"}


def fmt_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


@dataclass
class Progress:
    """Counts finished videos, prints a status line at most every `every_s` seconds."""

    total: int
    already_done: int = 0
    every_s: float = 2.0
    stream: object = field(default=sys.stderr)
    enabled: bool = True
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    statuses: Counter = field(default_factory=Counter)
    stage_s: Counter = field(default_factory=Counter)
    stage_n: Counter = field(default_factory=Counter)
    extra: dict = field(default_factory=dict)
    _last: float = 0.0

    def add(self, rows: list[dict]) -> None:
        for r in rows:
            self.done += 1
            self.statuses[r.get("status") or "unknown"] += 1
            for stage, col in STAGE_COLUMNS.items():
                v = r.get(col)
                if v is not None:
                    self.stage_s[stage] += float(v)
                    self.stage_n[stage] += 1
        self.maybe_print()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def failures(self) -> int:
        return sum(v for k, v in self.statuses.items() if k not in ("ok", "no_faces"))

    def line(self) -> str:
        todo = self.total - self.already_done
        eta = (todo - self.done) / self.rate if self.rate > 0 else float("inf")
        text = (
            f"[dfray] {self.already_done + self.done}/{self.total} videos"
            f" | {self.rate:.2f} videos/s | ETA {fmt_duration(eta)}"
            f" | failures {self.failures}"
        )
        for k, v in self.extra.items():
            text += f" | {k} {v}"
        return text

    def maybe_print(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.enabled and (force and self._last < now or now - self._last >= self.every_s):
            self._last = now
            print(self.line(), file=self.stream, flush=True)

    def stage_table(self, wall_s: float, workers: dict[str, int]) -> dict:
        """Per stage: seconds per video, share of the work, utilisation of its workers."""
        total = sum(self.stage_s.values()) or 1.0
        out = {}
        for stage in STAGE_COLUMNS:
            s, n = self.stage_s[stage], self.stage_n[stage]
            w = max(1, workers.get(stage, 1))
            out[stage] = {
                "videos": n,
                "total_s": round(s, 3),
                "s_per_video": round(s / n, 4) if n else None,
                "share_of_work": round(s / total, 4),
                "utilization": round(s / (wall_s * w), 4) if wall_s > 0 else None,
                "workers": w,
            }
        return out


def format_stage_table(table: dict) -> str:
    rows = [("stage", "videos", "s/video", "share", "util", "workers")]
    for stage, d in table.items():
        rows.append(
            (
                stage,
                str(d["videos"]),
                "-" if d["s_per_video"] is None else f"{d['s_per_video']:.3f}",
                f"{d['share_of_work']:.0%}",
                "-" if d["utilization"] is None else f"{d['utilization']:.0%}",
                str(d["workers"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)
