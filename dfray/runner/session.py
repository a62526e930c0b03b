"""Starting Ray for a run: quietly, and in the background while the driver lists the corpus
and checks the detectors.

A local Ray's processes get PR_SET_PDEATHSIG from the thread that starts them, so the
starter thread stays alive (parked) until the process exits; it is a daemon thread.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger("dfray")
_native_stderr: list[str] = []  # where fd 2 went (once per process)

# Ray's loggers that talk on a normal run; -v lets them through.
NOISY = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")


def quiet_ray(verbose: bool) -> None:
    """Ray Data's execution plans, progress-bar notices and internal warnings stay in
    Ray's log files unless `verbose`."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.enable_operator_progress_bars = verbose
    ctx.print_on_execution_start = verbose
    ctx.enable_auto_log_stats = verbose
    if not verbose:
        import warnings

        for name in NOISY:
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")


def divert_native_stderr() -> str | None:
    """Keep what native code writes to fd 2 off the terminal, and Python's messages on it.

    Ray's C++ core worker in the driver writes its errors (`core_worker.cc: … actor restart
    will fail`) to fd 2 as well as to its log file (python-core-driver-*.log in the
    session's logs), and no setting moves only that copy (RAY_BACKEND_LOG_LEVEL would drop
    them from the log files too, for every process that inherits it). So fd 2 is pointed
    at a file, `<tmp>/dfray/driver-<pid>.err` (removed at exit if empty; the calibration
    child's stderr goes there too), and sys.stderr is re-opened on a copy of the original
    fd 2: logging, progress and tracebacks still reach the terminal or pipe. Stream
    handlers that wrote to the old sys.stderr are moved to the new one.

    Only when sys.stderr is fd 2 (a terminal or a pipe; not a notebook's or pytest's
    capture), once per process. Returns the file's path, or None."""
    if _native_stderr:
        return _native_stderr[0]
    try:
        if sys.stderr is None or sys.stderr.fileno() != 2:
            return None
    except (AttributeError, OSError, ValueError):
        return None
    import atexit
    import tempfile

    folder = os.path.join(tempfile.gettempdir(), "dfray")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"driver-{os.getpid()}.err")
    old = sys.stderr
    old.flush()
    terminal = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    new = open(terminal, "w", buffering=1, encoding=old.encoding, errors=old.errors)
    sys.stderr = new
    loggers = [logging.getLogger()] + [
        x for x in logging.Logger.manager.loggerDict.values() if isinstance(x, logging.Logger)]
    for logger in loggers:
        for h in logger.handlers:
            if isinstance(h, logging.StreamHandler) and h.stream is old:
                h.setStream(new)
    _native_stderr.append(path)
    atexit.register(_remove_if_empty, path)
    log.debug("native stderr (Ray's C++ messages) of this driver: %s", path)
    return path


def _remove_if_empty(path: str) -> None:
    try:
        if os.path.getsize(path) == 0:
            os.remove(path)
    except OSError:
        pass


def init_ray(address: str | None = None, verbose: bool = False) -> None:
    """Connect to the cluster at `address` (or RAY_ADDRESS, read at the edge into
    RunConfig.address), or start a local Ray. No-op if Ray is up in this process.
    Unless `verbose`, what Ray's native code prints in this process stays off the terminal
    (divert_native_stderr)."""
    import ray

    if not ray.is_initialized():
        if not verbose and threading.current_thread() is threading.main_thread():
            divert_native_stderr()
        kw = dict(
            logging_level=logging.INFO if verbose else logging.ERROR,
            log_to_driver=verbose,  # worker output stays in Ray's log files
        )
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(address="local", include_dashboard=False, **kw)
    quiet_ray(verbose)


class RayStarter:
    """`init_ray` in a background thread; `wait()` blocks until Ray is up (or re-raises)."""

    def __init__(self, address: str | None, verbose: bool = False):
        import ray

        self.already_up = ray.is_initialized()
        if not verbose and not self.already_up:
            divert_native_stderr()  # here, in the main thread, before anything of Ray
        self._up = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(address, verbose), name="dfray-ray-start", daemon=True
        )
        self._thread.start()

    def _run(self, address, verbose) -> None:
        try:
            init_ray(address, verbose)
        except BaseException as e:  # noqa: BLE001 - handed to wait()
            self._error = e
        self._up.set()
        threading.Event().wait()  # park: Ray's processes die with the thread that made them

    def wait(self) -> None:
        self._up.wait()
        if self._error is not None:
            raise self._error
