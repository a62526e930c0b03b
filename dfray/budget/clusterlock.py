"""One budget per cluster: a lock file next to the autoscaling config the governor caps.

Two budgeted runs on one cluster would overwrite each other's ``max_workers`` (run A's stop
at 0 undone by run B's next check) and each would spend against its own budget on the same
nodes. So a governor that caps a cluster first takes ``<config>.dfray-budget.lock``
(exclusive create, as the run lease does), refreshes its heartbeat on its checks, and
deletes it at the end of its run only if it is still its own. A second budgeted run on the
cluster is refused with the holder's run, host, pid and heartbeat; a lock whose heartbeat
is older than ``dfray.config.LEASE_TIMEOUT_S`` belongs to a run that is gone and is taken
over. Another attempt of the *same* run (a resume after a crash) takes the lock over. A
governor that lost its lock (taken over as stale) never restores the cap file.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid

from dfray.config import LEASE_TIMEOUT_S as STALE_AFTER_S
from dfray.lease import HEARTBEATS_PER_TIMEOUT

HEARTBEAT_S = STALE_AFTER_S / HEARTBEATS_PER_TIMEOUT

SUFFIX = ".dfray-budget.lock"


class ClusterBusy(ValueError):
    """Another budgeted run holds this cluster."""


class ClusterLock:
    def __init__(self, config_path: str, run_key: str):
        self.path = os.path.expanduser(config_path) + SUFFIX
        self.run_key = run_key
        self.token = uuid.uuid4().hex
        self._beat = 0.0

    def _body(self) -> bytes:
        return json.dumps(
            {
                "run": self.run_key,
                "token": self.token,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "heartbeat": time.time(),
            }
        ).encode()

    def read(self) -> dict | None:
        try:
            with open(self.path, "rb") as f:
                return json.loads(f.read() or b"{}")
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # half-written by a holder that died mid-create: stale

    def acquire(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self.read()
                if held is None:
                    continue  # released meanwhile
                age = time.time() - float(held.get("heartbeat", 0) or 0)
                if held.get("run") != self.run_key and age <= STALE_AFTER_S:
                    raise ClusterBusy(
                        f"this cluster is already under the budget of run {held.get('run')} "
                        f"(host {held.get('host')}, pid {held.get('pid')}, heartbeat "
                        f"{age:.0f} s ago): one budget per cluster. Wait for it to end, stop "
                        f"it, or run without --budget; a lock older than {STALE_AFTER_S:.0f} s "
                        f"is taken over ({self.path})"
                    ) from None
                # stale, or an earlier attempt of this run: move it aside, one rename wins
                with contextlib.suppress(FileNotFoundError):
                    os.replace(self.path, f"{self.path}.stale-{uuid.uuid4().hex}")
                continue
            with os.fdopen(fd, "wb") as f:
                f.write(self._body())
            self._beat = time.monotonic()
            return
        raise ClusterBusy(f"cannot take the cluster's budget lock {self.path}")

    def held(self) -> bool:
        held = self.read()
        return bool(held) and held.get("token") == self.token

    def heartbeat(self) -> None:
        """Refresh the heartbeat (at most every HEARTBEAT_S); only while it is ours."""
        if time.monotonic() - self._beat < HEARTBEAT_S or not self.held():
            return
        from dfray.storage import atomic_path

        with atomic_path(self.path) as tmp, open(tmp, "wb") as f:
            f.write(self._body())
        self._beat = time.monotonic()

    def release(self) -> None:
        if self.held():
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)
