"""MMDA (CLIP with MD2A denoising, RS2 alignment and U-DSA adaptation); registry names ``mmda``, ``mmda-tiny``."""

from mfas.models.mmda.backbone import VIT_B_16
from mfas.models.mmda.model import MMDA
from mfas.models.registry import register_model

#: a CLIP-shaped backbone small enough to train on 2 CPU cores in minutes (random weights)
TINY_CLIP = {"embed_dim": 64,
             "vision": {"image_size": 112, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
             "text": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}

register_model("mmda", clip=VIT_B_16)(MMDA)
register_model("mmda-tiny", clip=TINY_CLIP, num_heads=4)(MMDA)

__all__ = ["MMDA", "TINY_CLIP"]
