"""The sample schema shared by adapters, the synthetic generator and the store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mfas.conventions import BONAFIDE, MODALITIES, PAI_SPECIES, SPLITS
from mfas.errors import DataError

ImageInput = np.ndarray | str | Path


@dataclass
class Sample:
    """One presentation: metadata plus an image (array or file path) per available modality.

    A modality that is absent is simply not a key of ``images`` (or maps to ``None``); it is never
    encoded as a magic pixel value.
    """

    sample_id: str
    label: int  # 1 bona fide, 0 attack
    pai: str  # one of PAI_SPECIES; "bonafide" iff label == 1
    dataset: str
    images: dict[str, ImageInput | None] = field(default_factory=dict)
    domain: str = ""  # defaults to dataset
    split: str = "train"
    subject: str = ""
    video: str = ""
    frame: int = 0

    def __post_init__(self) -> None:
        if not self.domain:
            self.domain = self.dataset
        if not self.video:
            self.video = self.sample_id

    def validate(self) -> None:
        """Raise DataError (naming the sample) when metadata breaks the conventions."""
        where = f"sample {self.sample_id!r}"
        if not self.sample_id or any(c in self.sample_id for c in ",\n\r"):
            raise DataError(where, "sample_id must be non-empty and contain no comma or newline")
        if self.label not in (0, 1):
            raise DataError(where, f"label must be 1 (bona fide) or 0 (attack), got {self.label!r}")
        if self.pai not in PAI_SPECIES:
            raise DataError(where, f"unknown PAI species {self.pai!r}; known: {', '.join(PAI_SPECIES)}")
        if (self.label == BONAFIDE) != (self.pai == "bonafide"):
            raise DataError(where, f"label {self.label} contradicts PAI species {self.pai!r}")
        if self.split not in SPLITS:
            raise DataError(where, f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        for key in self.images:
            if key not in MODALITIES:
                raise DataError(where, f"unknown modality {key!r}; known: {', '.join(MODALITIES)}")
        for name in ("dataset", "domain", "subject", "video"):
            if any(c in str(getattr(self, name)) for c in "\n\r"):
                raise DataError(where, f"{name} must not contain a newline")
