"""MMDA (CLIP with MD2A denoising, RS2 alignment and U-DSA adaptation); registry names ``mmda``, ``mmda-tiny``."""

from mfas.models.layers.clip import TINY_CLIP, VIT_B_16
from mfas.models.mmda.model import MMDA
from mfas.models.registry import register_model

register_model("mmda", clip=VIT_B_16)(MMDA)
register_model("mmda-tiny", clip=TINY_CLIP, num_heads=4)(MMDA)

__all__ = ["MMDA", "TINY_CLIP"]
