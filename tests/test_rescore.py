"""`dfray rescore`: submissions scored from a face cache (real Ray, real MTCNN for the
cache, TorchScript and ONNX files built here), each failure class one leaderboard row
with its own status while the good submissions score, a killed rescore resumed equals a
clean one, adding a submission scores only it, and the same on moto S3 over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from parts import assert_exactly_once
from proctree import kill_tree
from test_jobs import ray_head, ray_job  # noqa: F401 - ray_head: a `ray start --head` fixture
from torch import nn

from dfray.cli import main
from dfray.results import read_videos

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")]
HOOKS = str(Path(__file__).parent / "hooks")
SIZE = 32
FAST = ["--flush-rows", "1", "--score-batch", "1", "--bootstrap", "50", "--quiet"]


class Tiny(nn.Module):
    """A small CNN: one logit per crop."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.fc = nn.Linear(4, 1)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class RaiseOnMany(nn.Module):
    """Fine on the dummy batch of 2 crops; raises on a video with more faces."""

    def forward(self, x):
        if x.shape[0] > 2:
            raise RuntimeError("submitted model refuses big batches")
        return x.mean(dim=[1, 2, 3]).unsqueeze(1)


class RaiseAlways(nn.Module):
    def forward(self, x):
        raise RuntimeError("submitted model always fails")
        return x


class NanAlways(nn.Module):
    def forward(self, x):
        return x.mean(dim=[1, 2, 3]).unsqueeze(1) * float("nan")


class HugeAlloc(nn.Module):
    """Asks for 12 GiB (torch.empty: nothing is touched, so it is harmless without a limit)."""

    def forward(self, x):
        y = torch.empty([12 * 1024 * 1024 * 1024], dtype=torch.uint8)
        return x.mean(dim=[1, 2, 3]).unsqueeze(1) + y[:1].float() * 0.0


class HugeOnFaces(nn.Module):
    """Passes the check's dummy batch (uniform noise) and asks for 12 GiB on real face crops:
    neighbouring pixels of a photo differ far less than those of noise (|dx| / std ~1.1 for
    noise, well under 0.6 for faces)."""

    def forward(self, x):
        dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean() / (x.std() + 1e-6)
        p = torch.sigmoid(x.mean(dim=[1, 2, 3]).unsqueeze(1))
        if bool(dx < 0.6):
            y = torch.empty([12 * 1024 * 1024 * 1024], dtype=torch.uint8)
            p = p + y[:1].float() * 0.0
        return p


class HangAlways(nn.Module):
    def forward(self, x):
        n = x.shape[0]
        i = 0
        while n > 0:
            i = i + 1
        return x.mean(dim=[1, 2, 3]).unsqueeze(1)


class HangOnMany(nn.Module):
    """Answers the dummy batch of 2 crops; spins forever on a video with more faces."""

    def forward(self, x):
        n = x.shape[0]
        i = 0
        while n > 2:
            i = i + 1
        return x.mean(dim=[1, 2, 3]).unsqueeze(1)


def submission(root: Path, team: str, name: str, arch: str, model: nn.Module | None = None,
               data: bytes | None = None, script: bool = False, **det) -> Path:
    folder = root / f"{team}-{name}".replace(" ", "_")
    (folder / "models").mkdir(parents=True)
    ext = {"onnx": "onnx", "torchscript": "pt", "torch_export": "pt2"}[arch]
    path = folder / "models" / f"m.{ext}"
    if data is not None:
        path.write_bytes(data)
    elif arch == "onnx":
        torch.onnx.export(model.eval(), (torch.randn(2, 3, SIZE, SIZE),), str(path),
                          input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    elif script:
        torch.jit.save(torch.jit.script(model.eval()), str(path))
    else:
        torch.jit.save(torch.jit.trace(model.eval(), torch.randn(2, 3, SIZE, SIZE)), str(path))
    spec = {"name": "m", "arch": arch, "weights": f"models/m.{ext}", "input_size": SIZE,
            "aggregation": "mean", **det}
    (folder / "submission.yaml").write_text(yaml.safe_dump(
        {"team": team, "name": name, "ensemble": {"detectors": [spec]}}))
    return folder


@pytest.fixture(scope="module")
def cache(tiny_corpus, tmp_path_factory) -> Path:
    """A face cache of the tiny corpus (4 frames per video), built once."""
    from dfray.config import DecodeConfig, RunConfig
    from dfray.runner import run_extract

    out = tmp_path_factory.mktemp("cache")
    run_extract(RunConfig(corpus=str(tiny_corpus), out=str(out), run_id="c",
                          decode=DecodeConfig(n_frames=4)), progress=False)
    return out / "c"


@pytest.fixture(scope="module")
def subs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("subs")
    bad = root / "bad"
    out = {
        "good_ts": submission(root / "good", "Acme", "ts", "torchscript", Tiny(1)),
        "good_onnx": submission(root / "good", "Beta Labs", "onnx", "onnx", Tiny(2)),
        "late": submission(root / "late", "Gamma", "late", "onnx", Tiny(3)),
        "video_errors": submission(bad, "e", "raise-on-many", "torchscript", RaiseOnMany(),
                                   script=True),
        "raised": submission(bad, "e", "raise", "torchscript", RaiseAlways(), script=True),
        "bad_output": submission(bad, "e", "nan", "onnx", NanAlways()),
        "load_error": submission(bad, "e", "garbage", "onnx", data=b"not an onnx file" * 10),
        "memory_limit": submission(bad, "e", "huge", "torchscript", HugeAlloc(), script=True),
        "memory_scoring": submission(bad, "e", "huge-on-faces", "torchscript", HugeOnFaces(),
                                     script=True),
        "hang_load": submission(root / "hang1", "h", "load", "torchscript", HangAlways(),
                                script=True),
        "hang_video": submission(root / "hang2", "h", "video", "torchscript", HangOnMany(),
                                 script=True),
    }
    invalid = bad / "e-invalid"
    invalid.mkdir()
    (invalid / "submission.yaml").write_text(
        "team: e\nname: invalid\nensemble:\n  detectors:\n    - {name: m, arch: onnx, "
        "weights: ../outside.onnx}\n")
    out["invalid"] = invalid
    return out


def board(out: Path, split: str = "public") -> pd.DataFrame:
    return pd.read_parquet(out / split / "leaderboard.parquet").set_index("submission")


def statuses(out: Path) -> dict[str, str]:
    doc = json.loads((out / "rescore.json").read_text())
    return {k: v["status"] for k, v in doc["submissions"].items()}


@pytest.fixture(scope="module")
def clean(cache, subs, tmp_path_factory) -> Path:
    """The two good submissions rescored in one go, with every failure class beside them."""
    out = tmp_path_factory.mktemp("clean") / "lb"
    rc = main(["rescore", str(cache), str(subs["good_ts"].parent), str(subs["raised"].parent),
               "--out", str(out), "--memory-limit", "6144", *FAST])
    assert rc == 0
    return out


def test_each_failure_is_its_own_row_and_the_good_ones_score(clean, cache):
    got = statuses(clean)
    assert got == {
        "acme--ts": "ok", "beta_labs--onnx": "ok",
        "e--raise-on-many": "video_errors", "e--raise": "raised", "e--nan": "bad_output",
        "e--garbage": "load_error", "e--huge": "memory_limit", "folder--e-invalid": "invalid",
        "e--huge-on-faces": "memory_limit",
    }, got
    manifest = set(pd.read_parquet(cache / "manifest.parquet")["video_id"])
    for sid in ("acme--ts", "beta_labs--onnx", "e--raise-on-many", "e--huge-on-faces"):
        assert_exactly_once(clean / "runs" / sid, manifest)
    # past the limit while scoring real faces: error rows, the others of its group scored
    rows = read_videos(str(clean / "runs" / "e--huge-on-faces")).to_pylist()
    assert any(r["status"] == "error" and "allocate" in r["error"] for r in rows)
    for split in ("public", "private"):
        b = board(clean, split)
        assert set(b.index) == set(got)
        assert list(b.dropna(subset=["rank"]).index.sort_values()) == sorted(
            ["acme--ts", "beta_labs--onnx", "e--raise-on-many"])
        for sid in ("acme--ts", "beta_labs--onnx"):
            assert b.loc[sid, "n_failed"] == 0 and b.loc[sid, "log_loss"] > 0
            assert b.loc[sid, "device_s"] > 0 and b.loc[sid, "wall_s"] > 0
        assert "refuses big batches" in b.loc["e--raise-on-many", "message"]
        assert b.loc["e--raise-on-many", "n_failed"] > 0
        assert "always fails" in b.loc["e--raise", "message"]
        assert "non-finite" in b.loc["e--nan", "message"] or "nan" in b.loc["e--nan", "message"]
        assert "memory limit" in b.loc["e--huge", "message"]
        assert "memory limit of 6144 MB while scoring" in b.loc["e--huge-on-faces", "message"]
        assert "leaves the submission folder" in b.loc["folder--e-invalid", "message"]
        assert "| acme--ts | ok |" in (clean / split / "leaderboard.md").read_text()
    rows = read_videos(str(clean / "runs" / "e--raise-on-many")).to_pylist()
    assert any(r["status"] == "error" and "refuses" in r["error"] for r in rows)


def test_time_limits(cache, subs, tmp_path):
    out = tmp_path / "lb"
    rc = main(["rescore", str(cache), str(subs["hang_load"]), "--out", str(out),
               "--submission-time-limit", "20", *FAST])
    assert rc == 0
    assert statuses(out) == {"h--load": "time_limit"}
    rc = main(["rescore", str(cache), str(subs["hang_video"]), "--out", str(out),
               "--video-time-limit", "15", *FAST])
    assert rc == 0
    assert statuses(out) == {"h--video": "video_time_limit"}
    assert "no video finished" in board(out).loc["h--video", "message"]
    run = json.loads((out / "runs" / "h--video" / "run.json").read_text())
    assert run["spend"]["limit"] == "video_time_limit"
    # final: a second rescore does not run it again
    before = (out / "status" / "h--video.json").read_text()
    assert main(["rescore", str(cache), str(subs["hang_video"]), "--out", str(out),
                 *FAST]) == 0
    assert (out / "status" / "h--video.json").read_text() == before


def _rescore_proc(cache, folders, out, env=None):
    cmd = [sys.executable, "-m", "dfray.cli", "rescore", str(cache), *map(str, folders),
           "--out", str(out), *FAST]
    path = os.pathsep.join(p for p in (HOOKS, os.environ.get("PYTHONPATH")) if p)
    return subprocess.Popen(cmd, env={**os.environ, **(env or {}), "PYTHONPATH": path},
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _scores(run_dir: Path) -> dict:
    return {r["video_id"]: (r["status"], r["score"]) for r in read_videos(str(run_dir)).to_pylist()}


def test_killed_rescore_resumes_to_the_clean_result(cache, subs, clean, tmp_path):
    out = tmp_path / "lb"
    good = [subs["good_ts"], subs["good_onnx"]]
    proc = _rescore_proc(cache, good, out, {"DFRAY_TEST_HALT_AFTER_PARTS": "2"})
    # the hook halts the process after its 2nd videos part, whichever run it belongs to
    # (a group writes every submission's parts from one driver)
    deadline = time.time() + 600
    while len(list((out / "runs").glob("*/videos/part-*.parquet"))) < 2:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "no parts written"
        time.sleep(0.5)
    kill_tree(proc.pid)
    proc.wait()
    assert not (out / "public").exists()
    proc = _rescore_proc(cache, good, out)
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text[-3000:]
    manifest = set(pd.read_parquet(cache / "manifest.parquet")["video_id"])
    for sid in ("acme--ts", "beta_labs--onnx"):
        assert_exactly_once(out / "runs" / sid, manifest)
        a, b = _scores(out / "runs" / sid), _scores(clean / "runs" / sid)
        assert a.keys() == b.keys()
        for v in a:
            assert a[v][0] == b[v][0]
            assert (a[v][1] is None) == (b[v][1] is None)
            if a[v][1] is not None:
                assert abs(a[v][1] - b[v][1]) < 1e-6
    cols = ["log_loss", "roc_auc", "accuracy", "log_loss_lo", "log_loss_hi", "n_scored"]
    for split in ("public", "private"):
        got, want = board(out, split), board(clean, split)
        for sid in ("acme--ts", "beta_labs--onnx"):
            for c in cols:
                x, y = got.loc[sid, c], want.loc[sid, c]
                assert (pd.isna(x) and pd.isna(y)) or abs(x - y) < 1e-6, (sid, c, x, y)


def test_adding_a_submission_scores_only_it(cache, subs, clean, tmp_path):
    out = tmp_path / "lb"
    shutil.copytree(clean, out)
    runs_before = {sid: json.loads((out / "runs" / sid / "run.json").read_text())
                   for sid in ("acme--ts", "beta_labs--onnx")}
    parts_before = {p.name for p in (out / "runs").rglob("part-*.parquet")}
    ids = sorted(pd.read_parquet(cache / "manifest.parquet")["video_id"])
    split = tmp_path / "split.csv"
    split.write_text("filename,split\n" + "".join(
        f"{v},{'public' if i % 2 else 'private'}\n" for i, v in enumerate(ids)))
    rc = main(["rescore", str(cache), str(subs["good_ts"].parent), str(subs["raised"].parent),
               str(subs["late"]), "--out", str(out), "--memory-limit", "6144",
               "--split", str(split), *FAST])
    assert rc == 0
    assert statuses(out)["gamma--late"] == "ok"
    doc = json.loads((out / "public" / "split.json").read_text())
    assert doc["kind"] == "file" and doc["videos"] == ids[1::2]
    for sid, doc in runs_before.items():
        assert json.loads((out / "runs" / sid / "run.json").read_text()) == doc
    new = {p.relative_to(out / "runs").parts[0]
           for p in (out / "runs").rglob("part-*.parquet") if p.name not in parts_before}
    assert new == {"gamma--late"}
    assert "gamma--late" in set(board(out).index)


def test_rescore_on_s3(cache, subs, s3, moto_server, tmp_path):
    from conftest import upload_dir

    s3.create_bucket(Bucket="org")
    upload_dir(s3, cache, "org", "cache")
    upload_dir(s3, subs["good_onnx"], "org", "subs/beta")
    upload_dir(s3, subs["load_error"], "org", "subs/garbage")
    rc = main(["rescore", "s3://org/cache", "s3://org/subs", "--out", "s3://org/lb",
               "--endpoint-url", moto_server, "--worker-type", "m5.xlarge",
               "--price", "m5.xlarge=0.192", *FAST])
    assert rc == 0
    doc = json.loads(s3.get_object(Bucket="org", Key="lb/rescore.json")["Body"].read())
    got = {k: v["status"] for k, v in doc["submissions"].items()}
    assert got == {"beta_labs--onnx": "ok", "e--garbage": "load_error"}
    beta = doc["submissions"]["beta_labs--onnx"]
    assert beta["cost_usd"] == pytest.approx(beta["device_s"] / 3600 * 0.192, abs=2e-6)
    local = tmp_path / "pub.parquet"
    local.write_bytes(s3.get_object(Bucket="org", Key="lb/public/leaderboard.parquet")["Body"].read())
    assert set(pd.read_parquet(local)["submission"]) == set(got)
    from dfray.config import StorageConfig

    n = read_videos("s3://org/lb/runs/beta_labs--onnx", StorageConfig(endpoint_url=moto_server))
    assert n.num_rows == len(pd.read_parquet(cache / "manifest.parquet"))


def test_rescore_as_a_ray_job_with_a_budget(cache, subs, ray_head, tmp_path):  # noqa: F811
    """`ray job submit -- python jobs/rescore.py … --budget` on a `ray start --head`
    cluster: the submissions score inside the job, the spend is metered and recorded."""
    out = tmp_path / "lb"
    deadline = time.time() + 120
    for attempt in range(1000):
        res = ray_job(ray_head, "submit", "--submission-id", f"rescore-{attempt}",
                      "--working-dir", ".", "--", "python", "jobs/rescore.py", str(cache),
                      str(subs["good_ts"]), "--out", str(out), "--budget", "5",
                      "--head-type", "m5.xlarge", "--price", "m5.xlarge=0.192", *FAST)
        if "No available agent" not in res.stdout + res.stderr or time.time() > deadline:
            break
        time.sleep(3)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    doc = json.loads((out / "rescore.json").read_text())
    assert {k: v["status"] for k, v in doc["submissions"].items()} == {"acme--ts": "ok"}
    assert doc["budget_usd"] == 5 and doc["spent_usd"] > 0
    run = json.loads((out / "runs" / "acme--ts" / "run.json").read_text())
    assert run["spend"]["budget_usd"] == 5 and run["spend"]["limit"] is None
    assert_exactly_once(out / "runs" / "acme--ts")


def test_limit_governor_stops_when_no_video_finishes_for_the_limit():
    from types import SimpleNamespace

    from dfray.rescore import LimitGovernor

    now = [100.0]
    gov = LimitGovernor(10.0, clock=lambda: now[0])
    prog = SimpleNamespace(done=0)
    gov.start(5, prog)
    now[0] = 109.0
    assert not gov.should_stop(prog)
    prog.done, now[0] = 1, 115.0  # a video finished: the clock starts again
    assert not gov.should_stop(prog)
    now[0] = 124.0
    assert not gov.should_stop(prog)
    now[0] = 125.5
    assert gov.should_stop(prog)
    assert gov.reason[0] == "video_time_limit"
    assert gov.report() == {"stopped_reason": gov.reason[1], "limit": "video_time_limit"}


def test_a_folder_that_is_not_a_face_cache_is_refused_before_any_check(subs, tmp_path, capsys):
    out = tmp_path / "lb"
    rc = main(["rescore", str(tmp_path), str(subs["good_ts"]), "--out", str(out), *FAST])
    assert rc != 0
    assert "is not a face cache" in capsys.readouterr().err
    assert not out.exists()  # nothing checked, nothing written
