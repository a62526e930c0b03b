"""Live progress of a run, and the per-stage table saved into run.json.

Per video: videos done/total, videos/s, ETA, failures, faces extracted ahead of scoring,
and whatever the budget governor adds (spend). Before the first video finishes it says
what is happening (listing, starting Ray, loading models). On a terminal it is a live
tqdm bar; otherwise (a pipe, `ray job logs`) plain timestamped lines every `every_s`
seconds and at each phase. Messages go through the `dfray` logger (stderr), so `-q`
silences them and data on stdout stays clean.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

STAGE_COLUMNS = {"decode": "decode_s", "detect": "detect_s", "score": "score_s"}
OK_STATUSES = ("ok", "no_faces")
log = logging.getLogger("dfray")


def fmt_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


@dataclass
class Progress:
    """Counts finished videos; shows a bar (terminal) or timestamped lines (elsewhere)."""

    total: int = 0
    already_done: int = 0
    every_s: float = 10.0  # between plain lines; the bar refreshes continuously
    stream: object = None  # None: sys.stderr when writing (it may be re-opened meanwhile)
    enabled: bool = True
    bar: bool | None = None  # None: a bar when the stream is a terminal
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    extracted: int = 0  # videos through the extract stage (may run ahead of `done`)
    statuses: Counter = field(default_factory=Counter)
    stage_s: Counter = field(default_factory=Counter)
    stage_n: Counter = field(default_factory=Counter)
    extra: dict = field(default_factory=dict)
    _last: float = 0.0
    _bar: object = None
    _phase: str = ""

    def __post_init__(self) -> None:
        if self.bar is None:
            isatty = getattr(self.out, "isatty", None)
            self.bar = bool(isatty and isatty())

    @property
    def out(self):
        return sys.stderr if self.stream is None else self.stream

    # -- what happens before and between rows ----------------------------------------------

    def phase(self, message: str) -> None:
        """Say what the run is doing now (listing, starting Ray, loading models …)."""
        self._phase = message
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_description_str(f"[dfray] {message}", refresh=True)
        else:
            self._emit(message)

    def start(self, total: int, already_done: int) -> None:
        """The pipeline starts: `total` videos of which `already_done` have rows."""
        self.total, self.already_done = total, already_done
        self.started = time.monotonic()
        if self.enabled and self.bar and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=already_done, file=self.out,
                             unit="video", dynamic_ncols=True, smoothing=0.1,
                             desc=f"[dfray] {self._phase}" if self._phase else "[dfray]")

    def add(self, rows: list[dict]) -> None:
        for r in rows:
            self.done += 1
            self.statuses[r.get("status") or "unknown"] += 1
            for stage, col in STAGE_COLUMNS.items():
                v = r.get(col)
                if v is not None:
                    self.stage_s[stage] += float(v)
                    self.stage_n[stage] += 1
        if rows and self._phase:
            self._phase = ""
            if self._bar is not None:
                self._bar.set_description_str("[dfray]", refresh=False)
        if self._bar is not None:
            self._bar.update(len(rows))
        self.maybe_print()

    # -- figures ---------------------------------------------------------------------------

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def failures(self) -> int:
        return sum(v for k, v in self.statuses.items() if k not in OK_STATUSES)

    def _fields(self) -> str:
        text = f"failures {self.failures}"
        if self.extracted > self.done:
            text += f" | extracted {self.already_done + self.extracted}"
        for k, v in self.extra.items():
            text += f" | {k} {v}"
        return text

    def line(self) -> str:
        todo = self.total - self.already_done
        eta = (todo - self.done) / self.rate if self.rate > 0 else float("inf")
        text = (
            f"{self.already_done + self.done}/{self.total} videos"
            f" | {self.rate:.2f} videos/s | ETA {fmt_duration(eta)} | {self._fields()}"
        )
        if self._phase and not self.done:
            text += f" | {self._phase}"
        return text

    def due(self) -> bool:
        """Whether `maybe_print` would show something now (the runner fetches the figures
        that cost a round trip, such as `extracted`, only then)."""
        if not self.enabled:
            return False
        return self._bar is not None or time.monotonic() - self._last >= self.every_s

    def maybe_print(self, force: bool = False) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self._fields(), refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            self._emit(self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._fields(), refresh=True)
            self._bar.close()
            self._bar = None
        elif self.enabled and self.total:
            self.maybe_print(force=True)

    def _emit(self, message: str) -> None:
        if self.stream is None and log.handlers:
            log.info(message)
        else:
            stamp = time.strftime("%H:%M:%S")
            print(f"[dfray] {stamp} {message}", file=self.out, flush=True)

    # -- the stage table -------------------------------------------------------------------

    def stage_table(self, wall_s: float, workers: dict[str, int]) -> dict:
        """Per stage: seconds per video, share of the work, utilisation of its workers."""
        return stage_table(self.stage_s, self.stage_n, wall_s, workers)


def stage_table(stage_s, stage_n, wall_s: float, workers: dict[str, int]) -> dict:
    total = sum(stage_s.values()) or 1.0
    out = {}
    for stage in STAGE_COLUMNS:
        s, n = float(stage_s.get(stage, 0.0)), int(stage_n.get(stage, 0))
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
