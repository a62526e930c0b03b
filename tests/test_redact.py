import pytest


def test_redact_value_nested():
    from dfray.redact import redact_value

    url = "https://b.s3.amazonaws.com/w.pt?X-Amz-Signature=abc&X-Amz-Security-Token=tok"
    cfg = {"detectors": [{"weights": url, "n": 3}], "out": ("s3://u:pw@b/x", None), "k": 1.5}
    out = redact_value(cfg)
    text = repr(out)
    assert "abc" not in text and "tok" not in text and "pw" not in text
    assert out["detectors"][0] == {"weights": "https://b.s3.amazonaws.com/w.pt", "n": 3}
    assert out["out"] == ("s3://b/x", None) and out["k"] == 1.5


def test_presigned_weights_url_never_in_errors(moto_server, s3, tmp_path):
    """A real presigned URL from the S3 API: a download error and a sha256 mismatch name the
    object, never its signature or token."""
    from dfray.detectors.weights import WeightsError, resolve_weights

    s3.create_bucket(Bucket="weights")
    s3.put_object(Bucket="weights", Key="m.pt", Body=b"not the weights you pinned")
    missing = s3.generate_presigned_url("get_object", Params={"Bucket": "weights", "Key": "gone.pt"})
    present = s3.generate_presigned_url("get_object", Params={"Bucket": "weights", "Key": "m.pt"})
    assert "Signature=" in missing
    for url, sha in ((missing, None), (present, "0" * 64)):
        with pytest.raises(WeightsError) as e:
            resolve_weights(url, sha256=sha, cache_dir=tmp_path)
        msg = str(e.value)
        assert "/weights/" in msg and "Signature" not in msg and "AWSAccessKeyId" not in msg, msg


def test_storage_error_redacts_userinfo():
    from dfray.storage import StorageError

    e = StorageError("cannot read https://user:hunter2@host/x?X-Amz-Security-Token=tok")
    assert "hunter2" not in str(e) and "tok" not in str(e) and isinstance(e, OSError)


def test_dfray_log_lines_are_redacted(capsys):
    """Whatever logs a URI through the `dfray` logger, the line carries no secret."""
    import logging

    from dfray.cli import setup_logging

    setup_logging()
    logging.getLogger("dfray").info("fetching %s", "https://u:pw@h/w.pt?X-Amz-Signature=abc")
    err = capsys.readouterr().err
    assert "fetching https://h/w.pt" in err and "abc" not in err and "pw@" not in err
