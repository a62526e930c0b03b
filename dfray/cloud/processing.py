"""What the client side (the job request) and the container side (the entry point) of a
SageMaker Processing job agree on: the container's paths, the exit status of a budget stop,
and the error type. Neither side imports the other; both import this."""

from __future__ import annotations

PROCESSING_ROOT = "/opt/ml/processing"
CODE_DIR = f"{PROCESSING_ROOT}/code"
CONFIG_DIR = f"{PROCESSING_ROOT}/config"
INPUT_DIR = f"{PROCESSING_ROOT}/input/videos"
SCRATCH_DIR = f"{PROCESSING_ROOT}/scratch"  # on the job's ML storage volume
RESOURCE_CONFIG = "/opt/ml/config/resourceconfig.json"
ENTRY_SCRIPT = f"{CODE_DIR}/jobs/sagemaker_entry.py"
PYTHON = "python3"

EXIT_BUDGET = 3  # as dfray.runner.EXIT_BUDGET


class SageMakerError(ValueError):
    """A SageMaker job cannot be submitted or run as asked; the message says why."""

