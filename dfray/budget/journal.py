"""The spend journal: a crash-safe record of what every attempt of a run has spent, in the
run folder (local or S3), so a resume, `dfray plan --from-run` and `dfray metrics` see the
spend of every attempt, including one that was killed before its final report.

Layout: ``RUN/_spend/<attempt_id>/<seq>.json``. Each object is written once, whole (one PUT
on S3, ``storage.atomic_path`` locally) and never modified: no read-modify-write, so two
writers can never lose each other's records. An attempt writes a new object at least every
``every_s`` seconds (60) while it runs, on the governor's clock (the runner checks the
governor about once a second whether or not rows arrive), and a final one at its end; it
deletes only its own older objects. The latest object of an attempt holds that attempt's
whole spend so far, so a killed attempt loses at most the last ``every_s`` seconds (which
the next attempt bills anyway for any node still up: see ``billed_until``).

Each object: ``attempt_id``, ``started_at`` and ``written_at`` (clock seconds), ``spent_usd``
(this attempt only), ``parts_usd`` (instance, ebs, public_ipv4, s3_requests), ``nodes``
(each node's id, role, type, cost, and ``billed_until``), ``final``, ``stopped_reason``.

``summary()`` sums the latest object of every attempt; ``billed_until`` (node id -> the
latest time any attempt billed it) lets the next attempt bill a node that stayed up between
attempts (the head) from where the last record left it, never twice.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from dfray import storage

log = logging.getLogger(__name__)

JOURNAL_DIR = "_spend"
DEFAULT_EVERY_S = 60.0
KEEP = 2  # objects an attempt keeps of its own (the latest and the one before)


@dataclass
class Summary:
    """What the journal says about a run's spend, every attempt together."""

    spent_usd: float = 0.0
    attempts: list[dict[str, Any]] = field(default_factory=list)
    billed_until: dict[str, float] = field(default_factory=dict)
    first_started_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "spent_usd": round(self.spent_usd, 6),
            "attempts": self.attempts,
            "first_started_at": self.first_started_at,
        }


def new_attempt_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


class SpendJournal:
    """Appends this attempt's spend to ``RUN/_spend/`` (see the module docstring)."""

    def __init__(
        self,
        run_dir: str,
        storage_cfg,
        *,
        attempt_id: str | None = None,
        every_s: float = DEFAULT_EVERY_S,
    ):
        self.run_dir = run_dir
        self.cfg = storage_cfg
        self.attempt_id = attempt_id or new_attempt_id()
        self.every_s = float(every_s)
        self.prefix = storage.join(run_dir, JOURNAL_DIR, self.attempt_id)
        self.last_written_at: float | None = None
        self._seq = 0
        self._mine: list[str] = []
        self.error: str | None = None

    def due(self, now: float) -> bool:
        return self.last_written_at is None or now - self.last_written_at >= self.every_s

    def write(self, doc: dict[str, Any], now: float) -> str | None:
        """Write one immutable object; a failure is logged and retried at the next call."""
        self._seq += 1
        uri = storage.join(self.prefix, f"{self._seq:08d}.json")
        body = dict(doc, attempt_id=self.attempt_id, seq=self._seq, written_at=now)
        try:
            storage.write_bytes(uri, json.dumps(body, sort_keys=True).encode(), self.cfg)
        except OSError as e:
            self.error = f"cannot write the spend journal {uri}: {e}"
            log.warning(self.error)
            return None
        self.error = None
        self.last_written_at = now
        self._mine.append(uri)
        for old in self._mine[:-KEEP]:
            _delete_quietly(old, self.cfg)
        self._mine = self._mine[-KEEP:]
        return uri

    def summary(self, *, exclude_self: bool = True) -> Summary:
        return summary(self.run_dir, self.cfg, exclude=self.attempt_id if exclude_self else None)


def _delete_quietly(uri: str, cfg) -> None:
    fs, path = storage.filesystem(uri, cfg)
    try:
        fs.delete_file(path)
    except OSError:
        pass


def latest_docs(run_dir: str, storage_cfg) -> dict[str, dict[str, Any]]:
    """The latest object of every attempt in ``RUN/_spend/``: ``{attempt_id: doc}``."""
    from pyarrow import fs as pafs

    root = storage.join(run_dir, JOURNAL_DIR)
    fs, path = storage.filesystem(root, storage_cfg)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
    except (OSError, ValueError) as e:
        log.warning("cannot list the spend journal %s: %s", root, e)
        return {}
    latest: dict[str, str] = {}
    for info in infos:
        if info.type != pafs.FileType.File or not info.base_name.endswith(".json"):
            continue
        attempt = info.path.rstrip("/").split("/")[-2]
        if attempt not in latest or info.base_name > latest[attempt].split("/")[-1]:
            latest[attempt] = info.path
    out = {}
    for attempt, p in latest.items():
        uri = storage.join(root, attempt, p.split("/")[-1])
        try:
            out[attempt] = json.loads(storage.read_bytes(uri, storage_cfg))
        except (OSError, ValueError) as e:
            log.warning("cannot read the spend journal object %s: %s", uri, e)
    return out


def summary(run_dir: str, storage_cfg, *, exclude: str | None = None) -> Summary:
    """Every attempt's spend from the journal (``exclude``: an attempt to leave out)."""
    s = Summary()
    for attempt, doc in sorted(latest_docs(run_dir, storage_cfg).items()):
        if attempt == exclude:
            continue
        spent = float(doc.get("spent_usd") or 0.0)
        s.spent_usd += spent
        s.attempts.append(
            {
                "attempt_id": attempt,
                "spent_usd": round(spent, 6),
                "final": bool(doc.get("final")),
                "started_at": doc.get("started_at"),
                "written_at": doc.get("written_at"),
                "stopped_reason": doc.get("stopped_reason"),
            }
        )
        started = doc.get("started_at")
        if started is not None:
            s.first_started_at = (
                started if s.first_started_at is None else min(s.first_started_at, started)
            )
        for n in doc.get("nodes") or []:
            t = n.get("billed_until")
            if n.get("node_id") and t is not None:
                s.billed_until[n["node_id"]] = max(s.billed_until.get(n["node_id"], t), t)
    return s
