"""``severed``: a model with one modality cut off from its classifier, the defect that once hid mmFAS's RGB.

The known-answer suite (``mfas check``) trains it next to the intact model and must detect it twice: the
severed modality moves no score (the per-modality sensitivity check), and the species whose cue only that
modality carries are missed (a drop in AUC). It wraps any registered model; the severed modality's input is
replaced by zeros (the normalised mean) before the wrapped model sees it, so nothing of it reaches the head,
while the rest of the model and its presence mask are unchanged.
"""

from __future__ import annotations

import torch

from mfas.models.base import ModelOutput, PadModel
from mfas.models.registry import create_model, register_model


class Severed(PadModel):
    """``base`` (built with ``modalities`` and ``img_size``) whose input ``sever`` is zeroed: scores are a
    function of the other modalities only. Inputs and outputs are those of ``base``.

    Args:
        base: registered name of the wrapped model.
        sever: the modality cut off (one of ``modalities``).
        modalities: the wrapped model's modalities.
        img_size: input side.
    """

    def __init__(self, base: str = "cnn-concat-tiny", sever: str = "ir",
                 modalities: tuple[str, ...] | list[str] = ("rgb", "depth", "ir"), img_size: int = 112):
        super().__init__()
        if base == "severed":
            raise ValueError("base must be another model than severed")
        mods = tuple(modalities)
        if sever not in mods:
            raise ValueError(f"sever must be one of the modalities {list(mods)}, got {sever!r}")
        self.inner = create_model(base, modalities=mods, img_size=img_size)
        self.sever = sever
        self.modalities, self.input_size = self.inner.modalities, self.inner.input_size
        self.norm_stats, self.num_features = self.inner.norm_stats, self.inner.num_features
        self.modal_features, self.supports_missing = self.inner.modal_features, self.inner.supports_missing

    def forward(self, batch: dict) -> ModelOutput:
        cut = dict(batch)
        cut[self.sever] = torch.zeros_like(batch[self.sever])
        return self.inner(cut)

    def losses(self, batch: dict, output: ModelOutput) -> dict[str, torch.Tensor]:
        return self.inner.losses(batch, output)


register_model("severed")(Severed)
