"""One writer per run: a lease file `_lease.json` in the run folder.

`acquire(run_dir, storage_cfg, holder)` creates the lease atomically — locally with an
exclusive create (O_CREAT|O_EXCL), on S3 with a conditional PUT (`If-None-Match: *`) —
refreshes its heartbeat from a background thread (HEARTBEATS_PER_TIMEOUT times per
`stale_after_s`), and deletes it on exit (only if it is still ours). A second writer gets
LeaseHeld (a ValueError: exit 2 in the CLI) naming the holder's host, pid and start time.

The holder is gone, and its lease taken over, when
- its heartbeat is older than `stale_after_s` (RunConfig.lease_timeout_s, `--lease-timeout`,
  120 s by default): a writer that was killed, or whose node was lost; or
- it ran on this host, in this PID namespace, and its pid no longer exists: a driver killed
  here (SIGKILL, OOM) can be resumed at once. (A pid reused by another process after the
  holder died keeps the lease until the timeout; never the other way round.)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid

from dfray import storage
from dfray.config import StorageConfig

LEASE_NAME = "_lease.json"
HEARTBEATS_PER_TIMEOUT = 8  # a holder is presumed gone after this many missed heartbeats


class LeaseHeld(ValueError):
    """Another live writer holds the run's lease."""


def _pid_namespace() -> int | None:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def default_holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "pidns": _pid_namespace(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _describe(lease: dict, stale_after_s: float) -> str:
    return (f"run is being written by host {lease.get('host')} pid {lease.get('pid')} "
            f"(started {lease.get('started')}, last heartbeat "
            f"{time.time() - float(lease.get('heartbeat', 0)):.0f}s ago); "
            f"a lease without a heartbeat for {stale_after_s:g}s is taken over (--lease-timeout)")


def _holder_gone(lease: dict, stale_after_s: float) -> bool:
    """The lease's heartbeat is older than stale_after_s, or its holder was a process of
    this host and PID namespace that no longer exists."""
    try:
        if time.time() - float(lease.get("heartbeat", 0)) > stale_after_s:
            return True
    except (TypeError, ValueError):
        return True  # unreadable heartbeat: written by something that is not a live writer
    me = default_holder()
    if lease.get("host") != me["host"] or lease.get("pidns") != me["pidns"] or me["pidns"] is None:
        return False
    try:
        os.kill(int(lease.get("pid")), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, TypeError, ValueError, OverflowError):
        return False  # exists (another user's), or not a pid we can judge: wait for the timeout
    return False


class _Local:
    def __init__(self, path: str):
        self.path = path

    def create(self, body: bytes) -> bool:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return True

    def read(self) -> dict | None:
        try:
            with open(self.path, "rb") as f:
                return json.loads(f.read() or b"{}")
        except FileNotFoundError:
            return None
        except ValueError:
            return {}  # half-written by a writer that died mid-create: stale

    def overwrite(self, body: bytes) -> None:
        tmp = f"{self.path}.{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, self.path)

    def remove_stale(self) -> None:
        # Move it aside atomically: of two writers taking over, one rename wins.
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, f"{self.path}.stale-{uuid.uuid4().hex}")

    def delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.path)


class _S3:
    def __init__(self, uri: str, cfg: StorageConfig):
        self.bucket, self.key = storage.split_s3(uri)
        self.client = storage.s3_client(cfg)

    def create(self, body: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body, IfNoneMatch="*")
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                return False
            raise
        return True

    def read(self) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        try:
            return json.loads(body or b"{}")
        except ValueError:
            return {}

    def overwrite(self, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body)

    def remove_stale(self) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key)

    def delete(self) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key)


@contextlib.contextmanager
def acquire(run_dir_uri: str, storage_cfg: StorageConfig, holder: dict | None = None, *,
            stale_after_s: float):
    """Hold the run folder's lease for the `with` body; yields the lease dict."""
    uri = storage.join(run_dir_uri, LEASE_NAME)
    store = _S3(uri, storage_cfg) if storage.is_s3(uri) else _Local(uri)
    lease = {**(holder or default_holder()), "token": uuid.uuid4().hex, "heartbeat": time.time()}
    for _ in range(3):
        if store.create(json.dumps(lease).encode()):
            break
        current = store.read()
        if current is None:
            continue  # released between our create and read: try again
        if not _holder_gone(current, stale_after_s):
            raise LeaseHeld(_describe(current, stale_after_s))
        store.remove_stale()
    else:
        raise LeaseHeld(f"could not take the lease {LEASE_NAME}: other writers keep racing for it")

    stop = threading.Event()
    every_s = stale_after_s / HEARTBEATS_PER_TIMEOUT

    def beat() -> None:
        while not stop.wait(every_s):
            current = store.read()
            if not current or current.get("token") != lease["token"]:
                return  # taken over (we were presumed gone): stop touching it
            lease["heartbeat"] = time.time()
            with contextlib.suppress(Exception):
                store.overwrite(json.dumps(lease).encode())

    thread = threading.Thread(target=beat, name="dfray-lease", daemon=True)
    thread.start()
    try:
        yield lease
    finally:
        stop.set()
        thread.join(timeout=every_s)
        current = store.read()
        if current and current.get("token") == lease["token"]:
            store.delete()
