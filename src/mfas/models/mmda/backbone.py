"""MMDA's CLIP backbone: the shared CLIP layer (:mod:`mfas.models.layers.clip`), named here for MMDA's code and
for users who import it from this path."""

from mfas.models.layers.clip import (  # noqa: F401
    VIT_B_16,
    build_clip,
    clip_config,
    encode_image,
    encode_text,
    hf_to_open_clip,
    load_clip_weights,
    read_state_dict,
    resolve_pretrained,
    trimmed_length,
)
