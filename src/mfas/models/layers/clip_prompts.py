"""Class embeddings from text prompts through CLIP's text tower (FLIP-IT, the CLIP baseline)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from torch import nn

from mfas.models.layers.clip import encode_text, trimmed_length

#: FLIP's six attack and six bona fide sentences (koushiksrivats/FLIP, prompt_templates.py)
FLIP_SPOOF: tuple[str, ...] = (
    "This is an example of a spoof face", "This is an example of an attack face", "This is not a real face",
    "This is how a spoof face looks like", "a photo of a spoof face", "a printout shown to be a spoof face")
FLIP_LIVE: tuple[str, ...] = (
    "This is an example of a real face", "This is a bonafide face", "This is a real face",
    "This is how a real face looks like", "a photo of a real face", "This is not a spoof face")


class PromptClasses(nn.Module):
    """Two class embeddings (attack, bona fide) from prompt sets, FLIP's way: the mean of the prompts' raw text
    features, then L2-normalised. ``forward(clip)`` -> (2, embed_dim), attack first.

    The text tower trains with the rest (FLIP), so the features are recomputed in every training forward; at
    inference, or with a frozen tower, they are cached until the tower's weights change.
    """

    def __init__(self, clip: CLIP, spoof: tuple[str, ...] = FLIP_SPOOF, live: tuple[str, ...] = FLIP_LIVE):
        super().__init__()
        import open_clip

        ctx = int(clip.positional_embedding.shape[0])
        with torch.device("cpu"):  # real tokens, also when the model is built on meta to read its sizes
            tokens = open_clip.tokenize([*spoof, *live], ctx)
            n = trimmed_length(clip, tokens)  # exact under the causal mask (see trimmed_length)
        self.register_buffer("tokens", tokens[:, :n], persistent=False)
        self.n_spoof = len(spoof)
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def forward(self, clip: CLIP) -> torch.Tensor:
        params = [p for n, p in clip.named_parameters() if not n.startswith("visual.")
                  and n not in ("logit_scale", "logit_bias")]
        if any(p.requires_grad for p in params) and self.training and torch.is_grad_enabled():
            return self._encode(clip)
        dev = self.tokens.device.type
        key = (tuple(p._version for p in params), self.tokens.device, params[0].dtype,
               torch.is_autocast_enabled(dev) and torch.get_autocast_dtype(dev))
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, self._encode(clip))
        return self._cache[1]

    def _encode(self, clip: CLIP) -> torch.Tensor:
        t = encode_text(clip, self.tokens)
        return F.normalize(torch.stack([t[:self.n_spoof].mean(0), t[self.n_spoof:].mean(0)]), dim=-1)
