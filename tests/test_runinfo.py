"""run.json of a real run over a hostile corpus with presigned weights: the listing's report
is recorded and printed, and no secret reaches run.json, the output or the logs."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from parts import assert_exactly_once

SECRET_TOKEN = "SeCrEtSeSsIoNtOkEn"


def presigned(moto_server, s3, bucket: str, key: str) -> str:
    """A SigV4 presigned GET URL with a session token, as STS credentials make them."""
    import boto3
    from botocore.config import Config

    signer = boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1",
                          aws_access_key_id="ASIATESTKEY", aws_secret_access_key="x",
                          aws_session_token=SECRET_TOKEN,
                          config=Config(signature_version="s3v4"))
    url = signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    assert "X-Amz-Signature=" in url and "X-Amz-Security-Token=" in url
    return url


def secrets_of(url: str) -> list[str]:
    from urllib.parse import parse_qs, urlsplit

    q = parse_qs(urlsplit(url).query)
    return [SECRET_TOKEN, q["X-Amz-Signature"][0], q["X-Amz-Credential"][0], "X-Amz-"]


def hostile_corpus(tiny_corpus, root):
    """Two good clips plus the listing's hostile entries; returns (corpus, labels.csv)."""
    corpus = root / "corpus"
    corpus.mkdir()
    good = sorted(tiny_corpus.glob("*.mp4"))[:2]
    for p in good:
        shutil.copy(p, corpus / p.name)
    os.symlink(corpus / "gone.mp4", corpus / "dangling.mp4")  # a video entry: read_error
    os.symlink(corpus / "gone.txt", corpus / "dangling.txt")  # not a video: skipped
    os.symlink(corpus / "loop_b.mp4", corpus / "loop_a.mp4")
    os.symlink(corpus / "loop_a.mp4", corpus / "loop_b.mp4")
    with open(os.fsencode(str(corpus)) + b"/caf\xe9.mp4", "wb") as f:  # Latin-1 name
        f.write(good[0].read_bytes())
    (corpus / ".hidden.mp4").write_bytes(b"x")
    (corpus / "notes.txt").write_text("x")
    labels = root / "labels.csv"
    labels.write_bytes(b"\xef\xbb\xbffilename,label\n"
                       + f"{good[0].name},FAKE\nnot_there.mp4,REAL\n".encode())
    return corpus, labels, [p.name for p in good]


def score(*argv, timeout=900):
    cmd = [sys.executable, "-m", "dfray.cli", "score", *map(str, argv)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_hostile_corpus_and_presigned_weights_run(tiny_corpus, tmp_path, moto_server, s3):
    from dfray.detectors.weights import BUILTIN_DIR
    from dfray.results import read_videos

    s3.create_bucket(Bucket="weights")
    s3.upload_file(str(BUILTIN_DIR / "meso4_demo.pt"), "weights", "meso4.pt")
    url = presigned(moto_server, s3, "weights", "meso4.pt")
    bare = url.split("?", 1)[0]
    config = tmp_path / "ensemble.yaml"
    config.write_text(f"detectors:\n  - name: m\n    arch: meso4\n    weights: '{url}'\n"
                      "    input_size: 256\n    mean: [0.5, 0.5, 0.5]\n    std: [0.5, 0.5, 0.5]\n")
    corpus, labels, good = hostile_corpus(tiny_corpus, tmp_path)
    out = tmp_path / "out"
    rc, text = score(corpus, "--out", out, "--run-id", "h", "--config", config,
                     "--labels", labels, "-v")
    assert rc == 0, text[-3000:]
    run = out / "h"
    raw = (run / "run.json").read_text()
    for secret in secrets_of(url):
        assert secret not in raw, f"{secret} in run.json"
        assert secret not in text, f"{secret} in the output"
    doc = json.loads(raw)
    assert doc["config"]["ensemble"]["detectors"][0]["weights"] == bare
    assert doc["detectors"][0]["weights"] == bare
    # the listing's report: in run.json and printed at the start
    c = doc["listing"]["counts"]
    assert c == {"unreadable_video": 3, "unreadable_entry": 1, "non_utf8_name": 1,
                 "dot_file": 1, "other_extension": 1, "label_without_video": 1,
                 "labels_bom": 1}
    assert doc["listing"]["examples"]["label_without_video"] == ["not_there.mp4"]
    for line in ("listing: 1 skipped: unreadable non-video entry", "(dangling.txt",
                 "listing: 3 kept as read_error rows", "listing: 1 ignored: label entries"):
        assert line in text, text[-3000:]
    ids = {*good, "dangling.mp4", "loop_a.mp4", "loop_b.mp4", "caf%E9.mp4"}
    assert_exactly_once(run, ids)
    rows = {r["video_id"]: r for r in read_videos(str(run)).to_pylist()}
    assert {v for v, r in rows.items() if r["status"] == "read_error"} == {
        "dangling.mp4", "loop_a.mp4", "loop_b.mp4"}
    assert rows["caf%E9.mp4"]["status"] == "ok"
    assert rows[good[0]]["label"] == 1  # the BOM did not eat the header
    assert doc["counts"] == {"ok": 3, "read_error": 3} and doc["n_rows"] == 6


def test_secrets_never_in_errors_of_a_run(tiny_corpus, tmp_path, moto_server, s3):
    """Weights behind a presigned URL that fails, and an S3 endpoint with user info: one
    line and exit 2, naming the object or endpoint without signature, token or password."""
    s3.create_bucket(Bucket="weights2")
    url = presigned(moto_server, s3, "weights2", "missing.pt")
    config = tmp_path / "ensemble.yaml"
    config.write_text(f"detectors:\n  - name: m\n    arch: meso4\n    weights: '{url}'\n")
    rc, text = score(tiny_corpus, "--out", tmp_path / "out", "--config", config, "--quiet")
    assert rc == 2 and "detector 'm'" in text and "/weights2/missing.pt" in text, text
    for secret in secrets_of(url):
        assert secret not in text
    assert len(text.strip().splitlines()) == 1, text

    port = moto_server.rsplit(":", 1)[1]
    endpoint = f"http://dfray:hunter2@127.0.0.1:{port}"
    rc, text = score("s3://weights2/corpus", "--out", "s3://weights2/out", "--endpoint-url", endpoint)
    assert rc == 2 and "--endpoint-url must not carry user info" in text, text
    assert "hunter2" not in text and f"127.0.0.1:{port}" in text
    assert len(text.strip().splitlines()) == 1, text
