"""What a person sees while `dfray score` runs: in a terminal (a pseudo-terminal here) a
moving tqdm bar and nothing of Ray (banners, execution plans, the core worker's C++ lines);
with output piped, timestamped lines. Real local Ray, real videos. How soon the first
output comes (a goal of 2 s) is not asserted: no timing in tests."""

import fcntl
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

pytestmark = pytest.mark.timeout(900)

# Ray's talk that must not reach a normal run's terminal
RAY_NOISE = re.compile(r"core_worker|Started a local Ray instance|dashboard|Dataset|"
                       r"\(raylet|MapWorker|\(pid=|Traceback|token|progress bars", re.I)


def score_argv(corpus, out, run_id):
    return [sys.executable, "-m", "dfray", "score", str(corpus), "--out", str(out),
            "--run-id", run_id, "--frames", "4"]


def run_in_pty(argv, timeout=600) -> tuple[int, str]:
    """Run argv with stdin/stdout/stderr on a pseudo-terminal of 120x40; (rc, output)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
    rc = proc.wait(timeout=60)
    return rc, b"".join(chunks).decode("utf-8", "replace")


def test_a_terminal_shows_a_moving_bar_and_no_ray_noise(tiny_corpus, tmp_path):
    rc, text = run_in_pty(score_argv(tiny_corpus, tmp_path / "out", "tty"))
    assert rc == 0, text[-3000:]
    frames = text.replace("\r\n", "\n").split("\r")  # tqdm redraws with a carriage return
    counts = {int(m) for f in frames for m in re.findall(r"\b(\d)/6\b", f)}
    assert len(frames) > 2 and 6 in counts and len(counts) >= 2, text[-3000:]  # it moved
    assert re.search(r"\d/6 \[[\d:]+<[\d:?]+", text), text[-3000:]  # tqdm's elapsed<eta
    assert "listing" in text and "starting Ray" in text  # the phases before the first video
    noise = [line for line in re.split(r"[\r\n]", text) if RAY_NOISE.search(line)]
    assert not noise, noise
    assert "run tty: complete" in text


def test_piped_output_is_timestamped_lines(tiny_corpus, tmp_path):
    out = subprocess.run(score_argv(tiny_corpus, tmp_path / "out", "pipe"),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "\r" not in out.stderr  # no bar
    lines = out.stderr.splitlines()
    stamped = [x for x in lines if re.match(r"\[dfray\] \d\d:\d\d:\d\d ", x)]
    assert any("listing" in x for x in stamped) and any("starting Ray" in x for x in stamped)
    progress = [x for x in stamped if re.search(r" \d+/6 videos \| [\d.]+ videos/s \| ETA ", x)]
    assert progress and progress[-1].split("] ", 1)[1].split()[1].startswith("6/6"), lines
    noise = [x for x in lines if RAY_NOISE.search(x)]
    assert not noise, noise
    assert "run pipe: complete" in out.stdout
