"""Test-only fault injection, active only in processes started with this folder on
PYTHONPATH (the fault tests do that for `dfray score` subprocesses; Ray's workers inherit
the environment). Production code has no hooks.

- DFRAY_TEST_CRASH_ON=SUBSTR: the process extracting a video whose id contains SUBSTR dies
  (os._exit) inside the extraction, after the attempt has been counted, every time: a
  poison video that crashes its worker (as a decoder segfault would).
- DFRAY_TEST_HOLD_DIR=DIR: the first process to extract a video whose id contains "hold"
  writes DIR/held.pid and blocks until killed; later attempts run normally (the marker
  exists): a test kills that worker mid-video.
- DFRAY_TEST_HALT_AFTER_PARTS=N: the driver blocks forever after writing N videos parts
  (a test then kills it at a known point); with DFRAY_TEST_RESUME_FILE=PATH it blocks only
  until PATH exists, then carries on (a test acts while the run is known to be mid-way).
"""

import os
import sys


def _patch_extract(mod) -> None:
    orig = mod.VideoExtractor.__call__
    orig_process = mod.VideoExtractor._process

    def process(self, row, out, *rest):
        crash = os.environ.get("DFRAY_TEST_CRASH_ON")
        if crash and crash in str(row.get("video_id", "")):
            os._exit(1)  # the whole process, from the extraction's thread
        return orig_process(self, row, out, *rest)

    def call(self, row):
        vid = str(row.get("video_id", ""))
        hold = os.environ.get("DFRAY_TEST_HOLD_DIR")
        if hold and "hold" in vid:
            try:
                fd = os.open(os.path.join(hold, "held.pid"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                pass
            else:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                import threading

                threading.Event().wait()
        return orig(self, row)

    mod.VideoExtractor.__call__ = call
    mod.VideoExtractor._process = process


def _patch_results(mod) -> None:
    limit = int(os.environ["DFRAY_TEST_HALT_AFTER_PARTS"])
    orig = mod.RunFolder.write_part
    written = [0]

    def write_part(self, name, table):
        uri = orig(self, name, table)
        if name == "videos":
            written[0] += 1
            if written[0] == limit:
                resume = os.environ.get("DFRAY_TEST_RESUME_FILE")
                if not resume:
                    import threading

                    threading.Event().wait()
                import time

                while not os.path.exists(resume):
                    time.sleep(0.2)
        return uri

    mod.RunFolder.write_part = write_part


_PATCHES = {"dfray.extract": _patch_extract}
if os.environ.get("DFRAY_TEST_HALT_AFTER_PARTS"):
    _PATCHES["dfray.results"] = _patch_results


class _AfterImport:
    """Applies a patch right after its module is first imported."""

    def find_spec(self, name, path=None, target=None):
        if name not in _PATCHES:
            return None
        import importlib.util

        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        patch = _PATCHES[name]

        class Loader:
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                loader.exec_module(module)
                patch(module)

        spec.loader = Loader()
        return spec


if any(os.environ.get(k) for k in ("DFRAY_TEST_CRASH_ON", "DFRAY_TEST_HOLD_DIR",
                                   "DFRAY_TEST_HALT_AFTER_PARTS")):
    sys.meta_path.insert(0, _AfterImport())
