"""Rescoring: every submission scored from one face cache, then the leaderboard.

`rescore(rcfg, base, budget)` (`dfray rescore CACHE SUBMISSION... --out DIR`):

    DIR/runs/<submission id>/   a normal score run of the cache (dfray.runner.run_scoring)
    DIR/status/<id>.json        the submission's status, message, counts, wall seconds
    DIR/rescore.json            every submission's status, wall and device seconds, cost;
                                the spend of every rescore of DIR so far (`--budget` caps
                                that total; a killed rescore's spend is not carried over)
    DIR/public/, DIR/private/   the leaderboard (dfray.leaderboard.write_leaderboard)

Each submission to score is first checked in its own process (two at a time, while the
rescore starts or joins its Ray cluster); those that pass are scored in groups of up to
`--group-size`, each group in one process:

1. **check child** — a spawned process whose address space is capped at
   `--memory-limit` MB (`RLIMIT_AS`) loads every detector and gives it one dummy batch
   (dfray.detectors.check). It must answer within the submission's time left, else it is
   killed.
2. **group child** — a spawned process that runs `run_group_scoring`
   (dfray.runner.group) as a driver of the rescore's Ray cluster (the rescore starts a
   local Ray once, or joins `--address`): the cache's faces are read once for the group,
   each submission's detectors run in their own actor pool, and each submission gets its
   own run folder `DIR/runs/<id>/`, as if scored alone. The group is killed when the
   member with the least time left runs out of it; its actors die with it (a driver's
   actors share its fate). Inside it a governor stops the group when no video has
   finished for `--video-time-limit` seconds (the runner's budget hook) and carries the
   `--budget` governor when there is one.
3. **score child** — a submission whose run the group did not finish (a limit, a crash,
   a group of one) is scored alone in the same way, from the rows the group wrote, with
   its own time left and the same governor; a limit it reaches there is its status.
   So a submission that hangs or kills its workers costs the group at most one
   `--video-time-limit`, and the others still finish.

Failure policy — each submission ends with one status (its leaderboard row):

    ok                every video has a row and the detectors failed on none
    video_errors      complete, but the detectors raised or gave a bad output (wrong
                      shape, NaN, outside [0, 1]) on some videos: those videos have `error`
                      rows (filled with 0.5 on the leaderboard), the message counts them
    invalid           the folder is not a valid submission (submission.yaml, weights paths)
    load_error        a weights file cannot be loaded
    raised            a detector raised on the dummy batch
    bad_output        a detector's output on the dummy batch is not one probability per crop
    memory_limit      loading or the dummy batch went past --memory-limit, or, while
                      scoring, a detector actor grew past it on some video (on CPUs:
                      each actor's address space may grow by --memory-limit MB after it
                      starts, dfray.memlimit); its rows are kept, it has no rank
    time_limit        past --submission-time-limit (loading included); the partial run
                      folder is kept
    video_time_limit  no video finished for --video-time-limit seconds while scoring
    error             the rescore could not run it (message); retried on the next rescore
    budget_exhausted  the rescore's --budget ran out before or while it ran; resumed by a
                      rescore with more budget

Only `ok` and `video_errors` have metrics and a rank. Every status but `error` and
`budget_exhausted` is final: the next rescore of DIR reuses it without running anything
(a finished submission is not rescored; adding a submission scores only it; a killed
rescore resumes the submission it was on, from its rows). A changed submission needs a new
name (its id names the run folder; the runner refuses other weights under the same id).

Limits not enforced: memory while scoring on a GPU node (CUDA reserves more address space
than it uses, so RLIMIT_AS cannot apply there; Ray's memory monitor guards the node), and a
per-video limit finer than "no video finished for N s" (a detector slow on one video among
fast ones is not stopped until the submission's limit).

Wall seconds are the submission's check child, the wall time of its group (shared by the
group's members) and its score child in this rescore, plus the recorded attempts of its
run in earlier ones (run.json); device seconds
the detectors' seconds on the submission's videos (sum of `score_s`); cost the device
seconds at the hourly price of `--worker-type` from the price book (dfray.budget.prices,
`--price` overrides), none without `--worker-type`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import multiprocessing
import time
from dataclasses import dataclass

from dfray import storage
from dfray.config import RunConfig, StorageConfig
from dfray.options import at_least, option, positive

log = logging.getLogger("dfray")

SCORED = ("ok", "video_errors")
NOT_FINAL = ("error", "budget_exhausted")
EXIT_OK = 0
EXIT_BUDGET = 3
CHECKS_AT_ONCE = 2  # check children running together (each imports torch: CPU-bound)


def _fraction_open(v) -> str | None:
    return None if v is None or 0 < v < 1 else "must be in (0, 1)"


@dataclass(frozen=True)
class RescoreConfig:
    """The rescore's own options (the scoring options are RunConfig's)."""

    cache: str
    submissions: tuple[str, ...]
    out: str = option(flag="--out", metavar="DIR",
                      help="rescore folder or s3:// prefix: runs/, status/, public/, private/")
    submission_time_limit_s: float = option(
        3600.0, flag="--submission-time-limit", check=positive, metavar="S",
        help="wall seconds one submission may take, loading and all its attempts included")
    video_time_limit_s: float = option(
        300.0, flag="--video-time-limit", check=positive, metavar="S",
        help="a submission is stopped when no video has finished for this many seconds")
    memory_limit_mb: int = option(
        16384, flag="--memory-limit", check=at_least(512), metavar="MB",
        help="address-space limit of the process that loads a submission and tries it on a "
             "dummy batch (torch alone maps ~3.5 GB), and what each of its detector actors on "
             "a CPU may map beyond what it had before loading it while scoring")
    split: str | None = option(
        None, flag="--split", metavar="FILE",
        help="the public/private split: a filename,split CSV or a DFDC metadata.json",
        show_default="seeded (--seed, --public-fraction)")
    public_fraction: float | None = option(
        None, flag="--public-fraction", check=_fraction_open, metavar="F",
        help="public share of a seeded split", show_default="dfray.leaderboard's, 0.3")
    group_size: int = option(
        8, flag="--group-size", check=at_least(1), metavar="N",
        help="submissions scored together from one read of the cache, each in its own actor "
             "pool (1: one at a time)")
    seed: int = option(0, flag="--seed", help="seed of a seeded split and of the bootstrap")
    n_boot: int = option(1000, flag="--bootstrap", check=at_least(1), metavar="N",
                         help="bootstrap resamples for the intervals")

    def __post_init__(self) -> None:
        from dfray.options import check_options

        check_options(self)


@dataclass(frozen=True)
class RescoreResult:
    out: str
    statuses: dict  # submission id -> status
    exit_code: int
    scored_now: list


# -- the orchestrator ----------------------------------------------------------------------


class _Rescore:
    def __init__(self, rcfg: RescoreConfig, base: RunConfig, budget, progress, verbose):
        self.rcfg = rcfg
        self.base = base
        self.budget = budget
        self.progress = progress
        self.verbose = verbose
        self.scfg = base.storage
        self.doc = _read_json(storage.join(rcfg.out, "rescore.json"), self.scfg) or {}
        self.spent = float(self.doc.get("spent_usd") or 0.0)
        self.address = base.address
        self.ray_up = False
        self.stopped = False  # the budget stopped a submission: the rest wait for more
        self.price = None

    def status_uri(self, sid: str) -> str:
        return storage.join(self.rcfg.out, "status", f"{sid}.json")

    def write_status(self, sid: str, doc: dict) -> dict:
        storage.write_bytes(self.status_uri(sid), json.dumps(doc, indent=2, default=str).encode(),
                            self.scfg)
        return doc

    def cluster_address(self) -> str:
        """The Ray cluster the score children join: --address (or RAY_ADDRESS inside a Ray
        job), else a local Ray started here once (its processes die with this one). Inside
        a Ray job the children inherit the job's environment, so their drivers get the
        job's runtime env (its --working-dir) as this one does."""
        import ray

        from dfray.runner import init_ray

        if not self.ray_up:
            init_ray(self.address, self.verbose)
            self.ray_up = True
        return ray.get_runtime_context().gcs_address

    def over_budget(self) -> bool:
        if self.budget is None or self.budget.budget_usd is None:
            return False
        return self.stopped or self.spent >= self.budget.budget_usd * (1.0 - self.budget.reserve)

    def base_doc(self, sub) -> dict:
        return {"submission": sub.id, "team": sub.team, "name": sub.name, "source": sub.source}

    def prepare(self, sub) -> tuple[dict | None, _Pending | None]:
        """(its status doc, None) when the submission needs no scoring now — final already,
        over budget, or its check failed — else (None, what scoring it needs)."""
        sid = sub.id
        old = _read_json(self.status_uri(sid), self.scfg)
        if old and old.get("status") not in NOT_FINAL and old.get("source") == sub.source:
            log.info("submission %s: %s (already done; not rescored)", sid, old["status"])
            return old, None
        base = self.base_doc(sub)
        if self.over_budget():
            return self.write_status(sid, {**base, "status": "budget_exhausted",
                                           "message": "the rescore's budget ran out before it"}), None
        cfg = dataclasses.replace(self.base, corpus=self.rcfg.cache,
                                  out=storage.join(self.rcfg.out, "runs"), run_id=sid,
                                  ensemble=sub.ensemble,
                                  detector_memory_mb=self.rcfg.memory_limit_mb)
        prior_s = _run_wall(storage.join(cfg.out, sid), self.scfg)
        log.info("submission %s: checking its detectors", sid)
        check = _CheckChild(sub.ensemble, self.scfg, self.rcfg.memory_limit_mb,
                            self.rcfg.submission_time_limit_s - prior_s)
        return None, _Pending(sub, cfg, base, prior_s, check)

    def checked(self, p: _Pending) -> dict | None:
        """Waits for `p`'s check child: its status doc if the check failed, else None."""
        problem = p.check.result()
        took = time.monotonic() - p.check.started
        p.used_s += took
        p.detectors, p.check = p.check.detectors, None
        if problem is None:
            return None
        status, message = problem
        return self.write_status(p.sub.id, {**p.base, "status": status, "message": message,
                                            "wall_s": round(took, 3)})

    def start_cluster(self) -> None:
        """Starts (or joins) the Ray cluster while the checks run; a failure here is left
        to the scoring, which then records it per submission."""
        try:
            self.cluster_address()
        except Exception as e:  # noqa: BLE001 - see the docstring
            from dfray.score import error_text

            log.warning("Ray did not start yet (%s); retried when scoring", error_text(e))

    def left(self, p: _Pending) -> float:
        return self.rcfg.submission_time_limit_s - p.used_s

    def solo(self, p: _Pending) -> dict:
        """Score one submission alone in a score child, from whatever rows it has."""
        sid = p.sub.id
        if self.over_budget():
            return self.write_status(sid, {**p.base, "status": "budget_exhausted",
                                           "message": "the rescore's budget ran out before it"})
        t0 = time.monotonic()
        log.info("submission %s: scoring", sid)
        outcome = _score_in_child(p.cfg, self.cluster_address(), self.budget, self.spent,
                                  self.rcfg.video_time_limit_s, max(1.0, self.left(p)),
                                  self.progress, self.verbose)
        self.spent += _attempt_spend(p.cfg)
        p.used_s += time.monotonic() - t0
        doc = {**p.base, **outcome, "wall_s": round(p.used_s, 3)}
        self.stopped = self.stopped or doc["status"] == "budget_exhausted"
        return self.write_status(sid, doc)

    def group(self, plans: list[_Pending]) -> list[dict | None]:
        """Score `plans` together in one group child (the cache read once, each in its own
        actor pool; dfray.runner.group). Per plan its status doc, or None where the group
        did not finish its run (a limit, a crash): that one is then scored alone, with its
        own limits, from the rows the group wrote."""
        ids = [p.sub.id for p in plans]
        log.info("submissions %s: scoring together from one read of the cache", ", ".join(ids))
        t0 = time.monotonic()
        outcome = _group_in_child([p.cfg for p in plans], [p.detectors for p in plans],
                                  self.cluster_address(), self.budget,
                                  self.spent, self.rcfg.video_time_limit_s,
                                  max(1.0, min(self.left(p) for p in plans)), self.progress,
                                  self.verbose)
        wall = time.monotonic() - t0
        # one attempt, one spend: every run of the group records the same report
        self.spent += max(_attempt_spend(p.cfg) for p in plans)
        if outcome.get("error") or outcome.get("limit") not in (None, "budget_exhausted"):
            log.info("the group stopped (%s); its unfinished submissions are scored alone",
                     outcome.get("error") or outcome.get("reason"))
        out: list[dict | None] = []
        for p in plans:
            p.used_s += wall
            run = _read_json(storage.join(p.cfg.out, p.cfg.run_id, "run.json"), self.scfg) or {}
            if run.get("state") == "complete" and not outcome.get("error"):
                doc = {**p.base, **_complete_status(p.cfg), "counts": _row_counts(p.cfg)}
            elif outcome.get("limit") == "budget_exhausted":
                self.stopped = True
                doc = {**p.base, "status": "budget_exhausted", "counts": _row_counts(p.cfg),
                       "message": f"{outcome.get('reason')}; its rows are kept"}
            else:
                out.append(None)
                continue
            out.append(self.write_status(p.sub.id, {**doc, "wall_s": round(p.used_s, 3)}))
        return out

    def error_doc(self, sub, e: BaseException) -> dict:
        from dfray.score import error_text

        log.warning("submission %s: %s", sub.id, error_text(e))
        return self.write_status(sub.id, {**self.base_doc(sub), "status": "error",
                                          "message": error_text(e)})


@dataclass
class _Pending:
    """A submission that passed its check and is to be scored."""

    sub: object
    cfg: RunConfig
    base: dict
    used_s: float  # of its time limit: earlier rescores' attempts, its check, its scoring
    check: _CheckChild | None = None  # its check, while it runs
    detectors: list[dict] | None = None  # its check's detector infos (for run.json)


def _attempt_spend(cfg: RunConfig) -> float:
    run = _read_json(storage.join(cfg.out, cfg.run_id, "run.json"), cfg.storage) or {}
    return float((run.get("spend") or {}).get("spent_this_attempt_usd") or 0.0)


def rescore(rcfg: RescoreConfig, base: RunConfig, budget=None, *, progress: bool = True,
            verbose: bool = False) -> RescoreResult:
    """Score every submission of `rcfg.submissions` from `rcfg.cache`, then write the
    leaderboard (see the module docstring)."""
    from dfray import cache
    from dfray.submission import find_submissions, load_submissions

    scfg = base.storage
    if not cache.is_cache(rcfg.cache, scfg):
        raise ValueError(f"{rcfg.cache} is not a face cache (no {cache.CACHE_JSON}); make one "
                         "with `dfray extract CORPUS --out ROOT --run-id ID`")
    folders = find_submissions(list(rcfg.submissions), scfg)
    subs, bad = load_submissions(folders, scfg)
    r = _Rescore(rcfg, base, budget, progress, verbose)
    docs: dict[str, dict] = {}
    for fid, err in bad:
        docs[fid] = {"submission": fid, "status": "invalid", "message": str(err),
                     "source": getattr(err, "submission", "")}
    before = {sub.id: _read_json(r.status_uri(sub.id), scfg) for sub in subs}
    pending: list[_Pending] = []
    checking: collections.deque[_Pending] = collections.deque()

    def drain(n: int) -> None:  # waits for checks until at most n run
        while len(checking) > n:
            p = checking.popleft()
            try:
                doc = r.checked(p)
            except Exception as e:  # noqa: BLE001 - one submission never stops the others
                doc = r.error_doc(p.sub, e)
            if doc is None:
                pending.append(p)
            else:
                docs[p.sub.id] = doc

    for sub in sorted(subs, key=lambda s: s.id):
        try:
            doc, p = r.prepare(sub)
        except Exception as e:  # noqa: BLE001 - one submission never stops the others
            doc, p = r.error_doc(sub, e), None
        if p is None:
            docs[sub.id] = doc
            continue
        checking.append(p)
        if len(checking) == CHECKS_AT_ONCE and not r.ray_up:
            r.start_cluster()  # while the first checks run
        drain(CHECKS_AT_ONCE - 1)
    if checking and not r.ray_up:
        r.start_cluster()
    drain(0)
    n = rcfg.group_size
    for chunk in (pending[i:i + n] for i in range(0, len(pending), n)):
        got: list[dict | None] = [None] * len(chunk)
        if len(chunk) > 1 and not r.over_budget():
            try:
                got = r.group(chunk)
            except Exception as e:  # noqa: BLE001 - the members are then scored alone
                from dfray.score import error_text

                log.warning("the group of %d submissions failed (%s); scoring them alone",
                            len(chunk), error_text(e))
        for p, doc in zip(chunk, got, strict=True):
            if doc is None:
                try:
                    doc = r.solo(p)
                except Exception as e:  # noqa: BLE001 - one submission never stops the others
                    doc = r.error_doc(p.sub, e)
            docs[p.sub.id] = doc
    scored_now = [sid for sid in sorted(before) if docs.get(sid) != before[sid]]
    for sid in sorted(before):
        log.info("submission %s: %s %s", sid, docs[sid]["status"], docs[sid].get("message") or "")
    _price_and_time(r, docs)
    write_board(rcfg, docs, scfg)
    summary = {"cache": rcfg.cache, "spent_usd": round(r.spent, 6),
               "budget_usd": budget.budget_usd if budget else None,
               "submissions": {k: {x: v.get(x) for x in ("status", "message", "wall_s",
                                                          "device_s", "cost_usd")}
                               for k, v in sorted(docs.items())}}
    storage.write_bytes(storage.join(rcfg.out, "rescore.json"),
                        json.dumps(summary, indent=2, default=str).encode(), scfg)
    stopped = any(d["status"] == "budget_exhausted" for d in docs.values())
    return RescoreResult(rcfg.out, {k: v["status"] for k, v in docs.items()},
                         EXIT_BUDGET if stopped else EXIT_OK, scored_now)


def _price_and_time(r: _Rescore, docs: dict) -> None:
    """Device seconds (sum of score_s) and their cost for the submissions with a run."""
    price = _device_price(r.budget, r.scfg)
    for sid, d in docs.items():
        if d["status"] == "invalid":
            continue
        videos = _videos(r.rcfg.out, sid, r.scfg)
        if videos is None:
            continue
        s = videos.column("score_s").to_pylist()
        d["device_s"] = round(float(sum(x for x in s if x is not None)), 3)
        d["cost_usd"] = None if price is None else round(d["device_s"] / 3600.0 * price, 6)


def _device_price(budget, scfg: StorageConfig) -> float | None:
    if budget is None or not budget.worker_type:
        return None
    from dfray.budget.prices import PriceBook, parse_price_overrides

    book = PriceBook(scfg.region or "us-east-1",
                     overrides=parse_price_overrides(list(budget.prices)))
    return book.price(budget.worker_type, budget.spot).usd_per_hour


def _videos(out: str, sid: str, scfg: StorageConfig):
    from dfray import results

    run_dir = storage.join(out, "runs", sid)
    try:
        return results.read_videos(run_dir, scfg)
    except (FileNotFoundError, OSError):
        return None


def write_board(rcfg: RescoreConfig, docs: dict, scfg: StorageConfig) -> dict:
    """The leaderboard of `docs` (submission id -> status doc) into DIR/public, DIR/private."""
    from dfray import leaderboard as lb
    from dfray import results

    manifest = results.read_manifest(results.RunFolder.at(rcfg.cache, scfg),
                                     columns=["video_id", "label"]).to_pylist()
    ids = [m["video_id"] for m in manifest]
    labels = {m["video_id"]: m["label"] for m in manifest if m["label"] is not None}
    if rcfg.split:
        text = storage.read_bytes(rcfg.split, scfg).decode("utf-8-sig")
        split = (lb.split_from_metadata({rcfg.split: text}, ids) if rcfg.split.endswith(".json")
                 else lb.split_from_file(text, ids, rcfg.split))
    elif rcfg.public_fraction is not None:
        split = lb.seeded_split(ids, rcfg.seed, rcfg.public_fraction)
    else:
        split = lb.seeded_split(ids, rcfg.seed)
    subs = []
    for sid, d in sorted(docs.items()):
        videos = _videos(rcfg.out, sid, scfg) if d["status"] in SCORED else None
        subs.append(lb.SubmissionResult(
            id=sid, status=d["status"], videos=videos, team=d.get("team") or "",
            name=d.get("name") or "", message=d.get("message") or "", wall_s=d.get("wall_s"),
            device_s=d.get("device_s"), cost_usd=d.get("cost_usd")))
    boards = lb.build_leaderboard(subs, labels, split, seed=rcfg.seed, n_boot=rcfg.n_boot)
    return lb.write_leaderboard(boards, rcfg.out, split, scfg, seed=rcfg.seed,
                                n_boot=rcfg.n_boot)


# -- the children ----------------------------------------------------------------------------


def _ctx():
    return multiprocessing.get_context("spawn")


def _wait(proc, conn, timeout_s: float):
    """The child's message, or None if it died without one; kills it past `timeout_s`
    ('timeout')."""
    deadline = time.monotonic() + timeout_s
    msg = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()
            proc.join()
            return "timeout"
        if conn.poll(min(left, 1.0)):
            try:
                msg = conn.recv()
            except EOFError:
                msg = None
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
                proc.join()
            return msg
        if not proc.is_alive():
            proc.join()
            return conn.recv() if conn.poll(0) else None


def _check_child(ensemble, scfg, memory_mb: int, conn) -> None:
    from dfray.memlimit import cap_address_space, is_alloc_error

    cap_address_space(memory_mb)
    try:
        from dfray.detectors.check import check_detectors

        conn.send({"detectors": check_detectors(ensemble, scfg, timeout_s=10**9)})  # the
        # parent keeps the time; the group reuses these infos instead of checking again
    except MemoryError:
        conn.send(("memory_limit", "MemoryError"))
    except BaseException as e:  # noqa: BLE001 - everything is the submission's status
        from dfray.score import error_text

        kind = getattr(e, "kind", "load")
        text = str(e) if getattr(e, "kind", None) else error_text(e)
        if is_alloc_error(text):
            kind = "memory_limit"
        status = {"load": "load_error", "timeout": "time_limit"}.get(kind, kind)
        conn.send((status, text))


class _CheckChild:
    """A submission's check child, started at once; `result()` waits for it: None if every
    detector loads and answers a dummy batch within `timeout_s` (from the start) under the
    memory limit, else (status, message)."""

    def __init__(self, ensemble, scfg, memory_mb: int, timeout_s: float):
        self.memory_mb, self.timeout_s = memory_mb, timeout_s
        self.started = time.monotonic()
        self.proc = None
        self.detectors: list[dict] | None = None  # what check_detectors said, when it passed
        if timeout_s <= 0:
            return
        ctx = _ctx()
        self.conn, child = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_check_child, args=(ensemble, scfg, memory_mb, child),
                                name="dfray-check", daemon=True)
        self.proc.start()
        child.close()

    def result(self) -> tuple[str, str] | None:
        if self.proc is None:
            return "time_limit", "no time left for this submission"
        msg = _wait(self.proc, self.conn,
                    self.timeout_s - (time.monotonic() - self.started))
        if isinstance(msg, dict):
            self.detectors = msg["detectors"]
            return None
        if msg == "timeout":
            return "time_limit", (f"loading and a dummy batch took longer than the "
                                  f"{self.timeout_s:.0f} s left of the submission's time limit")
        if msg is None:  # a passing check always reports its infos
            code = self.proc.exitcode
            if code == -9:
                return "memory_limit", ("the process loading it was killed (SIGKILL; out of "
                                        "memory?)")
            return "load_error", f"the process loading it died (exit code {code})"
        status, message = msg
        if status == "memory_limit":
            message = f"past the memory limit of {self.memory_mb} MB: {message}"
        return status, message


class LimitGovernor:
    """The runner's governor hooks (start, planning_resources, should_stop, report): stops
    the run when no video has finished for `video_s` seconds, and asks `budget` (a
    BudgetGovernor, or None) too. `reason` says which stopped it."""

    def __init__(self, video_s: float, budget=None, clock=time.monotonic):
        self.video_s = video_s
        self.budget = budget
        self.clock = clock
        self.reason: tuple[str, str] | None = None
        self.last = None
        self.done = 0

    def start(self, n_todo: int, prog=None) -> None:
        self.last = self.clock()
        self.done = 0
        if self.budget is not None:
            self.budget.start(n_todo, prog)

    def planning_resources(self, cluster):
        return self.budget.planning_resources(cluster) if self.budget else dict(cluster)

    def should_stop(self, prog) -> bool:
        now = self.clock()
        if self.last is None:
            self.last = now
        if prog.done != self.done:
            self.done, self.last = prog.done, now
        if self.budget is not None and self.budget.should_stop(prog):
            self.reason = ("budget_exhausted", self.budget.stopped_reason or "budget")
            return True
        if now - self.last > self.video_s:
            self.reason = ("video_time_limit",
                           f"no video finished for {self.video_s:g} s (--video-time-limit)")
            return True
        return False

    def report(self) -> dict:
        out = self.budget.report() if self.budget is not None else {}
        if self.reason is not None:
            out["stopped_reason"] = self.reason[1]
        out["limit"] = self.reason[0] if self.reason else None
        return out


def _score_child(cfg: RunConfig, budget, prior_spent: float, video_s: float, progress: bool,
                 verbose: bool, conn) -> None:
    from dfray.cli import setup_logging

    setup_logging(int(verbose), not progress)
    try:
        from dfray.runner import run_scoring

        limits = LimitGovernor(video_s, _budget_governor(budget, cfg, prior_spent))
        result = run_scoring(cfg, progress=progress, governor=limits, verbose=verbose)
        conn.send({"state": result.state, "counts": result.counts,
                   "limit": limits.reason[0] if limits.reason else None,
                   "reason": limits.reason[1] if limits.reason else None})
    except BaseException as e:  # noqa: BLE001
        from dfray.score import error_text

        conn.send({"error": error_text(e, limit=1000)})


def _score_in_child(cfg: RunConfig, address: str, budget, prior_spent: float, video_s: float,
                    timeout_s: float, progress: bool, verbose: bool) -> dict:
    """Run the submission's score run in a child; its status, message and counts."""
    ctx = _ctx()
    parent, child = ctx.Pipe(duplex=False)
    cfg = dataclasses.replace(cfg, address=address)
    proc = ctx.Process(target=_score_child,
                       args=(cfg, budget, prior_spent, video_s, progress, verbose, child),
                       name="dfray-score", daemon=False)
    proc.start()
    child.close()
    msg = _wait(proc, parent, timeout_s)
    rows = _row_counts(cfg)
    done = f"{sum(rows.values())} videos have rows, kept in {storage.join(cfg.out, cfg.run_id)}"
    if msg == "timeout":
        return {"status": "time_limit", "counts": rows,
                "message": f"stopped at the submission's time limit; {done}"}
    if msg is None:
        return {"status": "error", "counts": rows,
                "message": f"the scoring process died (exit code {proc.exitcode}); {done}"}
    if "error" in msg:
        return {"status": "error", "message": msg["error"], "counts": rows}
    if msg["state"] != "complete":
        status = msg["limit"] or "budget_exhausted"
        return {"status": status, "counts": rows, "message": f"{msg['reason']}; {done}"}
    return {**_complete_status(cfg), "counts": msg["counts"]}


def _group_child(cfgs: list[RunConfig], checked, budget, prior_spent: float, video_s: float,
                 progress: bool, verbose: bool, conn) -> None:
    from dfray.cli import setup_logging

    setup_logging(int(verbose), not progress)
    try:
        from dfray.runner.group import run_group_scoring

        limits = LimitGovernor(video_s, _budget_governor(budget, cfgs[0], prior_spent))
        results = run_group_scoring(cfgs, progress=progress, governor=limits, verbose=verbose,
                                    checked=checked)
        conn.send({"states": [r.state for r in results],
                   "limit": limits.reason[0] if limits.reason else None,
                   "reason": limits.reason[1] if limits.reason else None})
    except BaseException as e:  # noqa: BLE001
        from dfray.score import error_text

        conn.send({"error": error_text(e, limit=1000)})


def _group_in_child(cfgs: list[RunConfig], checked: list, address: str, budget,
                    prior_spent: float, video_s: float, timeout_s: float, progress: bool,
                    verbose: bool) -> dict:
    """Run a group of score runs in a child; what it reported, {"error": …} if it died or
    was killed at `timeout_s`."""
    ctx = _ctx()
    parent, child = ctx.Pipe(duplex=False)
    cfgs = [dataclasses.replace(c, address=address) for c in cfgs]
    proc = ctx.Process(target=_group_child,
                       args=(cfgs, checked, budget, prior_spent, video_s, progress, verbose,
                             child),
                       name="dfray-group", daemon=False)
    proc.start()
    child.close()
    msg = _wait(proc, parent, timeout_s)
    if msg == "timeout":
        return {"error": f"stopped after {timeout_s:.0f} s, the least time a member had left"}
    if msg is None:
        return {"error": f"the group's process died (exit code {proc.exitcode})"}
    return msg


def _budget_governor(budget, cfg: RunConfig, prior_spent: float):
    if budget is None or budget.budget_usd is None:
        return None
    from dfray.budget.governor import governor_from_config

    gov = governor_from_config(budget, cfg)
    gov.prior_spent_usd = prior_spent  # the cap covers the whole rescore
    return gov


def _row_counts(cfg: RunConfig) -> dict:
    from dfray import runinfo
    from dfray.results import RunFolder

    try:
        return runinfo.video_counts(RunFolder(cfg.out, cfg.run_id, cfg.storage))[0]
    except (OSError, ValueError):
        return {}


def _complete_status(cfg: RunConfig) -> dict:
    """ok, or video_errors when the detectors failed on videos the cache had extracted."""
    from dfray import results

    cache = results.RunFolder.at(cfg.corpus, cfg.storage).read_table(
        "videos", columns=["video_id", "status"])
    extracted = {v for v, s in zip(cache.column("video_id").to_pylist(),
                                   cache.column("status").to_pylist(), strict=True) if s == "ok"}
    videos = results.read_videos(storage.join(cfg.out, cfg.run_id), cfg.storage)
    failed = [(v, e) for v, s, e in zip(videos.column("video_id").to_pylist(),
                                        videos.column("status").to_pylist(),
                                        videos.column("error").to_pylist(), strict=True)
              if s == "error" and v in extracted]
    if not failed:
        return {"status": "ok", "message": ""}
    from dfray.memlimit import is_alloc_error

    oom = [(v, e) for v, e in failed if is_alloc_error(e or "")]
    if oom:
        return {"status": "memory_limit",
                "message": f"past the memory limit of {cfg.detector_memory_mb} MB while "
                           f"scoring {len(oom)} videos; first: {oom[0][0]}: {oom[0][1]}"}
    return {"status": "video_errors",
            "message": f"the detectors failed on {len(failed)} videos (0.5 on the "
                       f"leaderboard); first: {failed[0][0]}: {failed[0][1]}"}


# -- helpers ---------------------------------------------------------------------------------


def _read_json(uri: str, scfg: StorageConfig) -> dict | None:
    if not storage.exists(uri, scfg):
        return None
    return json.loads(storage.read_bytes(uri, scfg))


def _run_wall(run_dir: str, scfg: StorageConfig) -> float:
    doc = _read_json(storage.join(run_dir, "run.json"), scfg) or {}
    return float((doc.get("stats") or {}).get("wall_s") or 0.0)
