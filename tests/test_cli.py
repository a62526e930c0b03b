import subprocess
import sys

HEAVY = ("torch", "ray", "decord", "facenet_pytorch", "pyarrow", "boto3", "timm", "cv2", "av")


def test_help_imports_nothing_heavy():
    code = (
        "import sys, dfray.cli\n"
        "p = dfray.cli.build_parser()\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_every_subcommand_has_help():
    for cmd in ("samples", "score", "rescore", "metrics", "report", "export", "detectors", "plan",
                "cluster", "sagemaker"):
        out = subprocess.run([sys.executable, "-m", "dfray.cli", cmd, "--help"],
                             capture_output=True, text=True)
        assert out.returncode == 0 and "usage" in out.stdout, (cmd, out.stderr)
