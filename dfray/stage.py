"""What a stage needs to run, declared next to its code (as cosmos-curate's stages do).

Each stage class (dfray.extract.VideoExtractor, dfray.score.EnsembleScorer) has a
`resources(...)` static method returning the Resources of one of its actors; the runner
reads these declarations to size its actor pools (dfray.layout) and never hard-codes them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resources:
    """One actor of a stage: CPU cores it keeps busy (its torch threads), the share of a
    GPU it uses on GPU nodes (0 on CPU-only nodes), and its resident memory."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_mb: int = 0
