"""mmFAS (multimodal alignment and switch-attention fusion); registry names ``mmfas`` and variants."""

from mfas.models.mmfas.model import MMFAS
from mfas.models.registry import register_model

#: the paper's sizes; ``-tiny`` variants train on 2 CPU cores in minutes
_TINY = {"img_size": 112, "dim": 48, "depth": 2, "num_heads": 6, "fusion_depth": 3}

register_model("mmfas")(MMFAS)
register_model("mmfas-merge", fusion="merge")(MMFAS)
register_model("mmfas-cross", fusion="cross")(MMFAS)
register_model("mmfas-tiny", **_TINY)(MMFAS)
register_model("mmfas-merge-tiny", fusion="merge", **_TINY)(MMFAS)
register_model("mmfas-cross-tiny", fusion="cross", **_TINY)(MMFAS)
#: RGB only (one's own RGB captures): no second modality to align with or fuse, so alignment and fusion are off;
#: what is left is the paper's RGB extractor and classifier
_RGB = {"modalities": ("rgb",), "fusion": "none", "icl": False, "cm": "none"}
register_model("mmfas-rgb", **_RGB)(MMFAS)
register_model("mmfas-rgb-tiny", **_RGB, **_TINY)(MMFAS)

__all__ = ["MMFAS"]
