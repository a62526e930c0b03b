

def test_redact_value_nested():
    from dfray.redact import redact_value

    url = "https://b.s3.amazonaws.com/w.pt?X-Amz-Signature=abc&X-Amz-Security-Token=tok"
    cfg = {"detectors": [{"weights": url, "n": 3}], "out": ("s3://u:pw@b/x", None), "k": 1.5}
    out = redact_value(cfg)
    text = repr(out)
    assert "abc" not in text and "tok" not in text and "pw" not in text
    assert out["detectors"][0] == {"weights": "https://b.s3.amazonaws.com/w.pt", "n": 3}
    assert out["out"] == ("s3://b/x", None) and out["k"] == 1.5
