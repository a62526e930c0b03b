"""Killing what a test started, all of it.

A driver killed with ``os.killpg`` takes its process group down, but the Ray it started
does not all live in that group: raylet's workers outlive it, re-parented to init, and keep
both of this machine's cores busy for the rest of the suite (a killed driver's extract
worker was seen spinning for minutes; under that load `terraform validate` stalled past
CI's limit). ``kill_tree`` collects the descendants *before* it kills, so none escapes.
"""

from __future__ import annotations

import contextlib
import time


def kill_tree(pid: int, marker: str | None = None, timeout: float = 15) -> None:
    """SIGKILL the process `pid` and every descendant, and (when `marker` is given) any
    leftover process whose command line holds it; wait until they are gone."""
    import psutil

    procs = tree_of(pid)
    if marker:
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if marker in " ".join(p.info["cmdline"] or []):
                    procs.append(p)
    kill_all(procs, timeout)


def tree_of(pid: int) -> list:
    """The process `pid` and its descendants, as psutil processes (empty if it is gone):
    collect them while they still have their parent, kill them later with `kill_all`."""
    import psutil

    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    return []


def kill_all(procs: list, timeout: float = 15) -> None:
    """SIGKILL each of `procs` that still runs and wait until they are gone."""
    import psutil

    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=timeout)


def orphans_since(start: float) -> list:
    """Ray processes created after `start` (a time.time()) whose parent is gone (init
    adopted them): what a killed driver or a stopped cluster left running."""
    import psutil

    out = []
    for p in psutil.process_iter(["ppid", "create_time", "cmdline", "name"]):
        with contextlib.suppress(psutil.Error):
            info = p.info
            if info["ppid"] != 1 or info["create_time"] < start:
                continue
            cmd = " ".join(info["cmdline"] or [])
            if cmd.startswith("ray::") or "/site-packages/ray/" in cmd or info["name"] in (
                "raylet", "gcs_server"):
                out.append(p)
    return out


def reap(start: float, grace: float = 10) -> list[str]:
    """Kill the orphans of `orphans_since(start)` that are still there after `grace` s
    (Ray's own processes exit on their own shortly after their raylet dies); returns
    their command lines."""
    import psutil

    deadline = time.time() + grace
    left = orphans_since(start)
    while left and time.time() < deadline:
        time.sleep(0.5)
        left = orphans_since(start)
    names = []
    for p in left:
        with contextlib.suppress(psutil.Error):
            names.append(" ".join(p.cmdline())[:120])
    kill_all(left)
    return names
