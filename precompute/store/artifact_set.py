"""What the live boundary reads of an artifact set, as a Protocol (``reader.Artifacts`` is the one the app opens;
a test may hand the boundary anything with these members)."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..schema import Head
from .run_record import RunRecord


class ArtifactSet(Protocol):
    """An artifact set as the live boundary reads it."""

    source: str
    heads: list[Head]
    n_sequences: int

    @property
    def record(self) -> RunRecord: ...

    @property
    def model_name(self) -> str: ...

    @property
    def hyperparameters(self) -> dict: ...

    def tokens(self, i: int) -> np.ndarray: ...

    def mean_result(self, head=None) -> np.ndarray: ...

    def semantic(self) -> dict[str, np.ndarray]: ...

    def readout(self, head=None) -> tuple[str, str]: ...

    def tuned_lens_tensors(self) -> tuple[dict, dict, dict] | None: ...
