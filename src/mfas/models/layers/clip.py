"""CLIP towers built by open_clip from sizes given as data, and their weights (MMDA, CLIP, FLIP).

``pretrained`` is a local file in one of three layouts, all read without unpickling code:

* open_clip (``visual.transformer.resblocks.*``, possibly under ``state_dict`` / ``module.``), as
  ``.safetensors``, ``.pt``/``.bin``/``.pth`` (``torch.load(weights_only=True)``);
* OpenAI CLIP (the same key names; the released ``ViT-B-16.pt`` is a TorchScript archive, whose tensors
  are read with ``torch.jit.load`` and which needs ``quick_gelu=True``);
* Hugging Face ``CLIPModel`` (``vision_model.encoder.layers.*``, ``model.safetensors`` or
  ``pytorch_model.bin``), converted key by key;

or an open_clip pretrained tag (e.g. ``openai``, ``laion2b_s34b_b88k``) for users who are online.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from mfas.errors import ConfigError


def clip_config(arch: str) -> dict:
    """open_clip's sizes of a CLIP architecture (e.g. ``ViT-B-16``) in our form ``{"embed_dim", "vision",
    "text"}``; sizes given as data to :func:`build_clip` and stored in a bundle's ``model.json``."""
    import open_clip

    cfg = open_clip.get_model_config(arch)
    if not cfg or "vision_cfg" not in cfg or "text_cfg" not in cfg:
        raise ConfigError(f"open_clip has no CLIP architecture {arch!r}")
    return {"embed_dim": int(cfg["embed_dim"]), "vision": dict(cfg["vision_cfg"]), "text": dict(cfg["text_cfg"])}


#: CLIP ViT-B/16 as OpenAI released it (open_clip's ``ViT-B-16``); MMDA's, CLIP's and FLIP's backbone.
VIT_B_16 = clip_config("ViT-B-16")

#: a CLIP-shaped backbone small enough to train on 2 CPU cores in minutes (random weights)
TINY_CLIP = {"embed_dim": 64,
             "vision": {"image_size": 112, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
             "text": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}


def build_clip(cfg: dict, quick_gelu: bool = True) -> CLIP:
    """An open_clip ``CLIP`` with random weights from ``{"embed_dim", "vision": {...}, "text": {...}}``."""
    try:
        vision, text = CLIPVisionCfg(**cfg["vision"]), CLIPTextCfg(**cfg["text"])
        return CLIP(int(cfg["embed_dim"]), vision, text, quick_gelu=quick_gelu)
    except (KeyError, TypeError) as e:
        raise ConfigError(f"bad CLIP configuration {cfg!r}: {e}") from None


def _strip(sd: dict) -> dict[str, torch.Tensor]:
    """What open_clip's reader leaves: other wrappers (``model``, ``module``) and a ``model.`` prefix."""
    for key in ("model", "module"):
        if key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return {re.sub(r"^(module\.|model\.)", "", k): v for k, v in sd.items() if torch.is_tensor(v)}


_HF_LAYER = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def hf_to_open_clip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Hugging Face ``CLIPModel`` state dict to open_clip's layout (q/k/v fused into in_proj)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        if k.endswith("position_ids"):
            continue
        m = re.match(r"(vision|text)_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", k)
        if m:
            tower, i, part, kind = m.groups()
            prefix = ("visual." if tower == "vision" else "") + f"transformer.resblocks.{i}."
            pm = re.match(r"self_attn\.([qkv])_proj$", part)
            if pm:
                qkv.setdefault(f"{prefix}attn.in_proj_{kind}", {})[pm.group(1)] = v
                continue
            if part not in _HF_LAYER:
                raise ConfigError(f"unexpected Hugging Face CLIP key {k!r}")
            out[f"{prefix}{_HF_LAYER[part]}.{kind}"] = v
            continue
        simple = {
            "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
            "text_model.embeddings.position_embedding.weight": "positional_embedding",
            "text_model.final_layer_norm.weight": "ln_final.weight",
            "text_model.final_layer_norm.bias": "ln_final.bias",
            "vision_model.embeddings.class_embedding": "visual.class_embedding",
            "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
            "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
            "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
            "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
            "vision_model.post_layernorm.weight": "visual.ln_post.weight",
            "vision_model.post_layernorm.bias": "visual.ln_post.bias",
            "logit_scale": "logit_scale",
        }
        if k in simple:
            out[simple[k]] = v
        elif k == "text_projection.weight":
            out["text_projection"] = v.T.contiguous()
        elif k == "visual_projection.weight":
            out["visual.proj"] = v.T.contiguous()
        else:
            raise ConfigError(f"unexpected Hugging Face CLIP key {k!r}")
    for name, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ConfigError(f"Hugging Face CLIP checkpoint lacks part of {name} (has {sorted(parts)})")
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a CLIP checkpoint file in open_clip, OpenAI or Hugging Face layout, in open_clip's names."""
    if not path.is_file():
        raise ConfigError(f"pretrained weights {path}: no such file")
    from open_clip.factory import load_state_dict

    try:
        if zipfile.is_zipfile(path) and any(n.endswith("constants.pkl") for n in zipfile.ZipFile(path).namelist()):
            # open_clip's reader refuses TorchScript under weights_only; OpenAI released CLIP that way
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                sd = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:  # safetensors, or torch.load(weights_only=True); unwraps ``state_dict`` and ``module.``
            sd = load_state_dict(str(path), device="cpu", weights_only=True)
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as e:
        raise ConfigError(f"pretrained weights {path}: cannot be read ({str(e).splitlines()[0]})") from None
    if not isinstance(sd, dict):
        raise ConfigError(f"pretrained weights {path}: not a state dict")
    sd = _strip(sd)
    if any(k.startswith(("vision_model.", "text_model.")) for k in sd):
        sd = hf_to_open_clip(sd)
    for k in ("input_resolution", "context_length", "vocab_size"):  # OpenAI's scalar extras
        sd.pop(k, None)
    return sd


def resolve_pretrained(pretrained: str, arch: str) -> Path:
    """A local path as is; an open_clip tag is downloaded (online users) into open_clip's cache."""
    path = Path(pretrained).expanduser()
    if path.exists() or any(c in pretrained for c in "/\\."):
        return path
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not cfg:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise ConfigError(f"pretrained={pretrained!r} is neither a file nor an open_clip tag of {arch} "
                          f"(tags: {tags})")
    return Path(open_clip.download_pretrained(cfg))


def load_clip_weights(model: CLIP, pretrained: str, arch: str = "ViT-B-16") -> None:
    """Load ``pretrained`` (file or tag) into ``model``; every key must match in name and shape."""
    path = resolve_pretrained(pretrained, arch)
    sd = read_state_dict(path)
    own = model.state_dict()
    derived = {n for n, _ in model.named_buffers()} - set(own)  # e.g. the causal mask, rebuilt by the model
    sd = {k: v for k, v in sd.items() if k not in derived}
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {', '.join(keys[:3])})")
        raise ConfigError(f"pretrained weights {path} do not fit this CLIP configuration: {'; '.join(parts)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()})


def trimmed_length(model: CLIP, tokens: torch.Tensor) -> int | None:
    """The context length a prompt batch can be cut to without changing its text features, or None where cutting
    is not exact. With a causal mask and end-of-text pooling, a position only sees the positions before it, so
    nothing after the last end-of-text token of the batch reaches any pooled feature."""
    if getattr(model, "attn_mask", None) is None or getattr(model, "text_pool_type", None) not in ("argmax", "eos"):
        return None
    if model.text_pool_type == "argmax":
        last = tokens.argmax(-1)
    else:
        last = (tokens == model.text_eos_id).int().argmax(-1)
    return int(last.max()) + 1


def encode_text(model: CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text`` for tokens (N, n) with n <= the model's context length: positions and the causal mask
    are cut to n (see :func:`trimmed_length`). Returns (N, embed_dim)."""
    from open_clip.transformer import text_global_pool

    n = tokens.shape[1]
    if n == model.positional_embedding.shape[0]:
        return model.encode_text(tokens)
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:n].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:n, :n])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def _class_row(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's ``ResidualAttentionBlock`` on tokens x (B, N, W), output for the class token only (B, 1, W):
    its query attends to every token's key and value, and only its row goes through the MLP."""
    h = block.ln_1(x)
    c = x[:, :1] + block.ls_1(block.attn(h[:, :1], h, h, need_weights=False)[0])
    return c + block.ls_2(block.mlp(block.ln_2(c)))


def encode_image(model: CLIP, images: torch.Tensor, project: bool = True) -> torch.Tensor:
    """``model.encode_image`` for images (B, 3, S, S) -> (B, embed_dim); ``project=False``: the pooled class
    token before the projection, (B, width) (FLIP-V's feature). Where the tower pools its class token
    (CLIP's ViTs), the last block is evaluated for that token alone: no later op reads the other tokens' outputs,
    so their queries, output projections and MLP rows in that block (about 7% of a ViT-B/16's FLOPs) are skipped,
    with the same result. Any other tower runs as open_clip runs it."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    v = model.visual
    blocks = getattr(getattr(v, "transformer", None), "resblocks", None)
    if not (isinstance(v, VisionTransformer) and blocks is not None and len(blocks) > 0
            and type(blocks[-1]) is ResidualAttentionBlock and not hasattr(blocks[-1], "ln_1_kv")
            and v.attn_pool is None and v.pool_type == "tok" and not v.output_tokens
            and getattr(v.transformer, "batch_first", False) and not getattr(v.transformer, "grad_checkpointing", False)
            and hasattr(v, "_embeds")):
        if not project:
            raise ConfigError("features before CLIP's projection need a ViT tower that pools its class token")
        return model.encode_image(images)
    x = v._embeds(images)
    for block in blocks[:-1]:
        x = block(x)
    pooled = v.ln_post(_class_row(blocks[-1], x)[:, 0])  # a per-token norm: before or after pooling alike
    return pooled @ v.proj if project and v.proj is not None else pooled
