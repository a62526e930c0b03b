"""Starting Ray for a run: quietly, and in the background while the driver lists the corpus
and checks the detectors.

A local Ray's processes get PR_SET_PDEATHSIG from the thread that starts them, so the
starter thread stays alive (parked) until the process exits; it is a daemon thread.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("dfray")

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


def init_ray(address: str | None = None, verbose: bool = False) -> None:
    """Connect to the cluster at `address` (or RAY_ADDRESS, read at the edge into
    RunConfig.address), or start a local Ray. No-op if Ray is up in this process."""
    import ray

    if not ray.is_initialized():
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
