"""`dfray report`: the HTML of a real run, rendered in headless Chromium, local and S3."""

import base64
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import upload_dir
from PIL import Image

from dfray.cli import main
from dfray.results import read_videos

pytestmark = pytest.mark.timeout(600)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("headless Chromium is missing in CI: .ci/run installs it (apt-get install chromium)")
    pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")


def screenshot(page, tmp_path) -> Image.Image:
    """The page rendered by headless Chromium with all network names unresolvable."""
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
         "--window-size=1300,2600", f"--screenshot={shot}", page.resolve().as_uri()],
        check=True, capture_output=True, timeout=120)
    return Image.open(shot).convert("RGB")


def test_report_of_a_run_renders_with_its_plots_and_failures(small_run, tmp_path):
    page = tmp_path / "report.html"
    assert main(["report", str(small_run), "-o", str(page), "-q"]) == 0
    text = page.read_text()
    # self-contained: no scripts, no external references; the plots are inline PNGs
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text) and "<script" not in text
    imgs = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(imgs) == 3  # curves (labels exist), histograms, timeline
    for b in imgs:
        im = np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB"))
        assert im.shape[1] > 300 and len(np.unique(im.reshape(-1, 3), axis=0)) > 50
    for title in ("Videos by status", "ROC, precision-recall and calibration", "Score histograms",
                  "Time by stage", "Timeline", "Slowest videos", "Videos without a score (4)"):
        assert title in text, title
    rows = read_videos(str(small_run)).to_pylist()
    for r in rows:
        if r["status"] != "ok":
            assert f"<td>{r['video_id']}</td><td>{r['status']}</td>" in text
            assert r["error"] and r["error"].replace("'", "&#x27;")[:40] in text
    assert "<td>ok</td><td>6</td>" in text and "<td>total</td><td>10</td>" in text
    img = screenshot(page, tmp_path)
    px = np.asarray(img).astype(int)
    ink = px.min(axis=2) < 235
    assert ink.mean() > 0.01, ink.mean()  # not a blank page
    assert ink.any(axis=1).mean() > 0.3  # content down the page, not one line
    # the plots reach the screen: the ROC curve's red and the timeline's detect orange
    for rgb in ((0xC4, 0x4E, 0x52), (0xDD, 0x84, 0x52)):
        near = (np.abs(px - np.array(rgb)).sum(axis=2) < 40).sum()
        assert near > 100, (rgb, near)


def test_report_of_an_s3_run(small_run, s3, moto_server, tmp_path):
    s3.create_bucket(Bucket="rep")
    upload_dir(s3, small_run, "rep", "runs/r")
    page = tmp_path / "r.html"
    assert main(["report", "s3://rep/runs/r", "--endpoint-url", moto_server, "-o", str(page),
                 "-q"]) == 0
    text = page.read_text()
    assert "s3://rep/runs/r" in text and "<td>total</td><td>10</td>" in text
    assert text.count("data:image/png;base64,") == 3


def test_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.html")]) == 2
    assert "not a dfray run folder" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()
