"""ImageNet ViTs (timm's ``VisionTransformer``) with sizes given as data, and their pretrained weights.

``pretrained`` is a local file read without unpickling code (``.safetensors``, or ``.pth``/``.bin`` through
``torch.load(weights_only=True)``) in timm's layout (``blocks.0.attn.qkv.weight``) or torchvision's
(``encoder.layers.encoder_layer_0.self_attention.in_proj_weight``, the ``vit_b_16`` that MMDG starts from),
or, for users who are online, a timm pretrained tag of the architecture (e.g. ``orig_in21k_ft_in1k``, the
weights FLIP's and ViTAF's timm 0.4 loaded) or ``torchvision`` (torchvision's ``IMAGENET1K_V1``).
Classifier heads in the file are ignored; the position embedding is resampled when the image size differs.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from timm.models.vision_transformer import VisionTransformer

from mfas.errors import ConfigError
from mfas.models.layers.weights import read_tensors

#: ViT-B/16 at 224 (timm ``vit_base_patch16_224``, torchvision ``vit_b_16``)
VIT_B_16 = {"img_size": 224, "patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12, "mlp_ratio": 4.0}


def build_vit(size: dict, in_chans: int = 3, **extra: object) -> VisionTransformer:
    """A timm ViT without a classifier (``num_classes=0``, class-token pooling) from ``size`` =
    ``{img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio}``."""
    try:
        return VisionTransformer(in_chans=in_chans, num_classes=0, global_pool="token", **size, **extra)
    except TypeError as e:
        raise ConfigError(f"bad ViT size {size!r}: {e}") from None


_TV_BLOCK = {"ln_1": "norm1", "ln_2": "norm2", "self_attention.in_proj_weight": "attn.qkv.weight",
             "self_attention.in_proj_bias": "attn.qkv.bias", "self_attention.out_proj": "attn.proj",
             "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2", "mlp.linear_1": "mlp.fc1", "mlp.linear_2": "mlp.fc2"}


def torchvision_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision ``vit_b_*`` state dict to timm's layout (heads dropped)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith("heads."):
            continue
        m = re.match(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)$", k)
        if m:
            i, rest = m.groups()
            for old, new in _TV_BLOCK.items():
                if rest == old or rest.startswith(old + "."):
                    out[f"blocks.{i}.{new}{rest[len(old):]}"] = v
                    break
            else:
                raise ConfigError(f"unexpected torchvision ViT key {k!r}")
            continue
        simple = {"class_token": "cls_token", "conv_proj.weight": "patch_embed.proj.weight",
                  "conv_proj.bias": "patch_embed.proj.bias", "encoder.pos_embedding": "pos_embed",
                  "encoder.ln.weight": "norm.weight", "encoder.ln.bias": "norm.bias"}
        if k not in simple:
            raise ConfigError(f"unexpected torchvision ViT key {k!r}")
        out[simple[k]] = v
    return out


def read_vit_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ViT checkpoint file in timm's names (torchvision's converted), classifier heads dropped."""
    sd = read_tensors(path)
    if any(k.startswith("encoder.layers.") for k in sd):
        sd = torchvision_to_timm(sd)
    return {k: v for k, v in sd.items() if not k.startswith(("head.", "fc_norm.", "head_drop."))}


def _tag_state_dict(tag: str, size: dict) -> dict[str, torch.Tensor]:
    import timm

    if tag == "torchvision":  # torchvision's vit_b_16 IMAGENET1K_V1, MMDG's starting point
        if size.get("embed_dim") != 768 or size.get("patch_size") != 16 or size.get("depth") != 12:
            raise ConfigError("pretrained='torchvision' names ViT-B/16 weights; give a local file for other sizes")
        from torchvision.models import ViT_B_16_Weights, vit_b_16

        try:
            return torchvision_to_timm(vit_b_16(weights=ViT_B_16_Weights.IMAGENET1K_V1).state_dict())
        except Exception as e:  # offline: give a file
            raise ConfigError(f"pretrained='torchvision': cannot fetch vit_b_16 ({str(e).splitlines()[0]}); "
                              "offline, give a local file") from None

    arch = f"vit_base_patch{size['patch_size']}_{size['img_size']}" if size.get("embed_dim") == 768 else None
    if arch is None:
        raise ConfigError(f"pretrained={tag!r}: a tag names ViT-B weights; give a local file for other sizes")
    try:
        src = timm.create_model(f"{arch}.{tag}", pretrained=True, num_classes=0)
    except Exception as e:  # unknown tag, or offline: both mean "give a file"
        raise ConfigError(f"pretrained={tag!r}: timm cannot provide {arch}.{tag} ({str(e).splitlines()[0]}); "
                          "offline, give a local file") from None
    return src.state_dict()


def load_vit_weights(model: VisionTransformer, pretrained: str, size: dict) -> None:
    """Load ``pretrained`` (a file or a timm tag) into ``model``; every key must match by name, and by shape
    up to the position embedding (resampled to the model's grid) and a patch embedding for other input channels
    (the RGB kernel averaged over its channels, as timm adapts ``in_chans``)."""
    from timm.layers import resample_abs_pos_embed

    path = Path(pretrained).expanduser()
    if path.exists() or any(c in pretrained for c in "/\\") or path.suffix:
        sd = read_vit_state_dict(path)
    else:
        sd = _tag_state_dict(pretrained, size)
    own = model.state_dict()
    if "pos_embed" in sd and sd["pos_embed"].shape != own["pos_embed"].shape:
        grid = model.patch_embed.grid_size
        sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], list(grid), num_prefix_tokens=1)
    w = sd.get("patch_embed.proj.weight")
    if w is not None and w.shape[1] != own["patch_embed.proj.weight"].shape[1]:
        c = own["patch_embed.proj.weight"].shape[1]
        sd["patch_embed.proj.weight"] = w.mean(1, keepdim=True).repeat(1, c, 1, 1) * (w.shape[1] / c)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{len(ks)} {label} (e.g. {', '.join(ks[:3])})"
                 for label, ks in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if ks]
        raise ConfigError(f"pretrained weights {pretrained} do not fit this ViT: {'; '.join(parts)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()})
