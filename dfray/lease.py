"""One writer per run: a lease file `_lease.json` in the run folder.

`acquire(run_dir, storage_cfg, holder)` creates the lease atomically — locally with an
exclusive create (O_CREAT|O_EXCL), on S3 with a conditional PUT (`If-None-Match: *`) —
refreshes its heartbeat every HEARTBEAT_S seconds from a background thread, and deletes it
on exit (only if it is still ours). A second writer gets LeaseHeld (a ValueError: exit 2
in the CLI) naming the holder's host, pid and start time. A lease whose heartbeat is older
than STALE_AFTER_S seconds belongs to a writer that is gone (killed, node lost) and is
taken over.
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
HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0  # 8 missed heartbeats: the holder is gone


class LeaseHeld(ValueError):
    """Another live writer holds the run's lease."""


def default_holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _describe(lease: dict) -> str:
    return (f"run is being written by host {lease.get('host')} pid {lease.get('pid')} "
            f"(started {lease.get('started')}, last heartbeat "
            f"{time.time() - float(lease.get('heartbeat', 0)):.0f}s ago); "
            f"a lease older than {STALE_AFTER_S:.0f}s is taken over")


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
def acquire(run_dir_uri: str, storage_cfg: StorageConfig, holder: dict | None = None):
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
        if time.time() - float(current.get("heartbeat", 0)) <= STALE_AFTER_S:
            raise LeaseHeld(_describe(current))
        store.remove_stale()
    else:
        raise LeaseHeld(f"could not take the lease {LEASE_NAME}: other writers keep racing for it")

    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
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
        thread.join(timeout=HEARTBEAT_S)
        current = store.read()
        if current and current.get("token") == lease["token"]:
            store.delete()
