"""The Python API (dfray/api.py): `import dfray` stays light, and dfray.score runs the same
run as `dfray score` (real local Ray, the shipped demo detector, a tiny generated corpus)."""

import json
import subprocess
import sys

import pytest
from parts import assert_exactly_once

import dfray
from dfray.cli import main
from dfray.results import RunFolder, read_videos

pytestmark = pytest.mark.timeout(900)

HEAVY = ("torch", "ray", "pyarrow", "numpy", "decord", "facenet_pytorch", "boto3", "av")


def test_import_dfray_is_light_and_keeps_the_api_names():
    code = (
        "import sys, dfray\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        # modules named like API functions stay importable and do not replace them
        "from dfray.score import EnsembleScorer\n"
        "import dfray.metrics, dfray.samples, dfray.report, dfray.export\n"
        "from dfray import api\n"
        "assert (dfray.score, dfray.metrics, dfray.samples, dfray.report, dfray.export) == "
        "(api.score, api.metrics, api.samples, api.report, api.export)\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    for name in ("score", "read_videos", "metrics", "samples", "report", "export"):
        assert getattr(dfray, name).__doc__, name


def test_python_m_dfray():
    out = subprocess.run([sys.executable, "-m", "dfray", "--version"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"dfray {dfray.__version__}"


def test_samples_equal_the_command(tmp_path):
    kw = dict(n_videos=2, seed=3, min_height=360, max_height=360, min_seconds=1.0,
              max_seconds=1.0)
    corpus = dfray.samples(tmp_path / "api", **kw)
    assert isinstance(corpus, dfray.SampleCorpus)
    assert corpus.n_videos == 2 and corpus.n_fake == 1 and corpus.size_bytes > 0
    assert main(["samples", str(tmp_path / "cli"), "--videos", "2", "--seed", "3",
                 "--min-height", "360", "--max-height", "360", "--min-seconds", "1",
                 "--max-seconds", "1", "-q"]) == 0
    cli_meta = json.loads((tmp_path / "cli" / "metadata.json").read_text())
    assert cli_meta == corpus.metadata
    for name in cli_meta:
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes()


def test_unknown_option_is_one_config_error(tmp_path):
    from dfray.config import ConfigError

    with pytest.raises(ConfigError, match="unknown option.*frames.*known:.*n_frames"):
        dfray.score(tmp_path, tmp_path / "out", frames=8)


def test_the_api_runs_the_same_run_as_the_cli(tiny_corpus, tmp_path):
    out = tmp_path / "out"
    assert main(["score", str(tiny_corpus), "--out", str(out), "--run-id", "cli",
                 "--frames", "8", "--flush-rows", "1", "--quiet"]) == 0
    run = dfray.score(tiny_corpus, out, run_id="api", n_frames=8, flush_rows=1,
                      progress=False)
    assert run.state == "complete" and run.scored_now == 6 and run.exit_code == 0
    assert run.run_dir == str(out / "api")

    cli = {r["video_id"]: r for r in read_videos(str(out / "cli")).to_pylist()}
    api = {r["video_id"]: r for r in dfray.read_videos(run).to_pylist()}
    assert set(api) == set(cli) and len(api) == 6
    for vid, r in cli.items():
        a = api[vid]
        assert (a["status"], a["n_frames"], a["n_faces"]) == (r["status"], 8, r["n_faces"])
        assert a["status"] == "ok" and a["score"] == pytest.approx(r["score"], abs=1e-5)
        assert a["run_id"] == "api" and r["run_id"] == "cli"

    # the run ended with a compaction: one part per table, each video written once
    for run_id in ("cli", "api"):
        folder = RunFolder.at(str(out / run_id))
        assert len(folder.parts("videos")) == 1 and len(folder.parts("faces")) == 1
        assert [b for b in folder.listing("videos") if b.startswith("_commit-")]
        assert_exactly_once(out / run_id, set(cli))

    # metrics: the API's dataclass is what `dfray metrics --json` prints, alone on stdout
    m = dfray.metrics(run)
    assert isinstance(m, dfray.Metrics) and m.n_videos == 6 and m.n_evaluated == 6
    assert m.log_loss is not None and 0 <= m.accuracy <= 1 and m.spend is None  # no budget
    pipe = subprocess.run(f"'{sys.executable}' -m dfray metrics --json '{out / 'api'}' | "
                          f"'{sys.executable}' -m json.tool", shell=True, capture_output=True,
                          text=True)
    assert pipe.returncode == 0, pipe.stderr
    assert json.loads(pipe.stdout) == m.to_dict()
    assert "written:" in pipe.stderr
    assert json.loads((out / "api" / "metrics.json").read_text()) == m.to_dict()

    # the same run id again: nothing to do, no new attempt, the stats kept
    before = json.loads((out / "api" / "run.json").read_text())
    again = dfray.score(tiny_corpus, out, run_id="api", n_frames=8, progress=False)
    assert again.state == "complete" and again.scored_now == 0
    assert again.counts == {"ok": 6}
    after = json.loads((out / "api" / "run.json").read_text())
    assert after["stats"] == before["stats"] and after["launches"] == before["launches"]
    assert_exactly_once(out / "api", set(cli))
