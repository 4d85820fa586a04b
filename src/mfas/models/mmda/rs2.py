"""RS2: representation-space soft alignment to text-defined class subspaces.

A class's logit is the CLIP logit scale times the *largest* cosine similarity between the visual
embedding and any prompt of that class, so a sample only has to lie near some prompt of its class.
Targets are the released code's smoothed labels: 1.0 for the true class and 0.1 for the other (not
renormalised).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The released code's 24 attack prompts (index 0 = spoof class).
SPOOF_PROMPTS: tuple[str, ...] = (
    "This is a photo of a spoof face",
    "This is a photo of an attack face",
    "This is a photo of a fake face",
    "This is a photo of a non-real face",
    "This is a photo of a counterfeit face",
    "This is a photo of a printed spoof face",
    "This is a photo of an adversarial patch face",
    "This is a photo of a wearable adversarial sticker face",
    "This is a photo of a printed adversarial image face",
    "This is a photo of a physical impersonation attack face",
    "This is a photo of an adversarial perturbation face",
    "This is a photo of an adversarial makeup face",
    "This is a photo of a facial attribute modification face",
    "This is a photo of an adversarial face image",
    "This is a photo of a physical-world printed attack face",
    "This is a photo of a synthetic image face",
    "This is a photo of an adversarial face mask",
    "This is a photo of a semantic adversarial attack face",
    "This is an example of a spoof face",
    "This is an example of an attack face",
    "This is not a real face",
    "This is how a spoof face looks like",
    "a photo of a spoof face",
    "a printout shown to be a spoof face",
)

#: The released code's 23 bona fide prompts: its list has 24 strings, but a missing comma joins the
#: 18th and 19th into one, and that joined string is what the published model was trained with.
LIVE_PROMPTS: tuple[str, ...] = (
    "This is a photo of a real face",
    "This is a photo of an authentic face",
    "This is a photo of a vital face",
    "This is a photo of a biometric face",
    "This is a photo of a genuine face",
    "This is a photo of an alive face",
    "This is a photo of a real-time face",
    "This is a photo of a vivacious face",
    "This is a photo of a veritable face",
    "This is a photo of a valid face",
    "This is a photo of an actual face",
    "This is a photo of an existent face",
    "This is a photo of a true face",
    "This is a photo of a legitimate face",
    "This is a photo of a natural face",
    "This is a photo of an unfeigned face",
    "This is a photo of an unimpeachable face",
    "This is a photo of a credible face" "This is an example of a real face",
    "This is a bonafide face",
    "This is a real face",
    "This is how a real face looks like",
    "a photo of a real face",
    "This is not a spoof face",
)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + 1e-20)


def rs2_logits(visual: torch.Tensor, spoof: torch.Tensor, live: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(B, 2) logits [spoof, live] of visual (B, D) against prompt sets spoof (Ns, D) and live (Nl, D):
    ``scale * max cosine`` over each class's prompts."""
    v = _unit(visual.float())
    z_spoof = (v @ _unit(spoof.float()).T).amax(-1)
    z_live = (v @ _unit(live.float()).T).amax(-1)
    return scale.float() * torch.stack([z_spoof, z_live], dim=-1)


def smoothed_targets(labels: torch.Tensor, smoothing: float = 0.1) -> torch.Tensor:
    """(B, 2) targets (1 - s) one_hot + s: 1.0 for the true class, s for the other (released code)."""
    return (1.0 - smoothing) * F.one_hot(labels.long(), 2).float() + smoothing


def soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_c t_c log softmax(z)_c (PyTorch's cross-entropy with probability targets)."""
    return -(targets * logits.float().log_softmax(-1)).sum(-1).mean()
