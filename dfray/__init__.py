"""dfray: score whole video corpora with deepfake detectors on Ray."""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
