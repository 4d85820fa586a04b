"""MMDA: CLIP image tower per modality -> MD2A (denoising with a same-domain partner) -> U-DSA (dual-space
adaptation with RS2 alignment at every level) -> MoE classifier.

Shapes: images (B, 3, S, S) per modality (grey depth/IR are repeated to 3 channels); modality tokens
(B, 3, D) in the order rgb, depth, ir (D = CLIP's embedding width, 512 for ViT-B/16); v_0 and the final
representation r_0 (B, D); prompt embeddings (Ns, D) and (Nl, D); logits (B, 2) with index 1 = bona fide.
See docs/models/mmda.md for every decision and for the ``compat`` modes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mfas.conventions import MODALITIES
from mfas.models.base import ModelOutput, PadModel
from mfas.models.mmda.backbone import VIT_B_16, build_clip, encode_image, encode_text, load_clip_weights, trimmed_length
from mfas.models.mmda.md2a import MD2A, first_same_domain, random_same_domain
from mfas.models.mmda.moe import MoE
from mfas.models.mmda.rs2 import LIVE_PROMPTS, SPOOF_PROMPTS, rs2_logits, smoothed_targets, soft_ce
from mfas.models.mmda.udsa import UDSA

COMPAT = ("clean", "official")
FREEZE = ("none", "text", "backbone")
PARTNER_EVAL = ("self", "reference")
TEXT_GRAD = ("step", "micro_batch")
TEXT_CONTEXT = ("trimmed", "full")
#: (pixel - 127.5) / 128, the released code's input scaling, in the [0, 1] units of the transforms
_MEAN, _STD = 127.5 / 255, 128 / 255


class Classifier(nn.Module):
    """MoE (no pre-norm, no residual) -> Linear(D, 2). (R, D) -> ((R, 2) logits, aux)."""

    def __init__(self, dim: int, eval_routing: str):
        super().__init__()
        self.moe = MoE(dim, eval_routing=eval_routing)
        self.head = nn.Linear(dim, 2)

    def forward(self, x: torch.Tensor, groups: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``groups``: row counts of inputs that stand for separate calls (see :class:`MoE`)."""
        h, aux = self.moe(x[:, None], groups)
        return self.head(h[:, 0]), aux


class MMDA(PadModel):
    """MMDA with its backbone sizes as data.

    Args:
        clip: CLIP sizes ``{"embed_dim", "vision": {...}, "text": {...}}`` (open_clip's names); ViT-B/16 by default.
        quick_gelu: OpenAI CLIP's activation (True for OpenAI weights).
        pretrained: a local CLIP checkpoint (open_clip, OpenAI or Hugging Face layout) or an open_clip tag
            for ``clip_arch``; None keeps random weights.
        freeze: ``none`` (full fine-tuning, as released), ``text`` (text tower frozen; its features are then
            computed once and cached) or ``backbone`` (all of CLIP, logit scale included).
        compat: ``clean`` (default; batch-independent, deterministic inference) or ``official`` (the released
            code's behaviour: first same-domain sample of the batch as partner, also at test; U-DSA visual
            attention across the samples of a batch; stochastic second-expert routing at eval).
        partner_eval: clean mode at inference: ``self`` (the sample is its own partner) or ``reference``
            (a running mean of the source training tokens, stored with the weights).
        num_heads: heads of MD2A and of the U-DSA attention (16 in the released code).
        udsa_levels: U-DSA depth L (7); RS2 is applied at 2L + 1 levels.
        lambda_depth: the layer index at which lambda_init is evaluated (12).
        attn_dropout: dropout on MD2A's two attention maps (0.1).
        smoothing: s of the (1.0, s) targets (0.1).
        reference_momentum: momentum of the running mean behind ``partner_eval="reference"``.
        text_grad: with a trainable text tower, ``step`` encodes the prompts once per optimizer step (when the
            engine says where steps begin and end, see :meth:`accumulation_phase`) and backpropagates their
            gradient, summed over the step's micro-batches, through the tower once; ``micro_batch`` re-encodes and
            backpropagates them in every micro-batch, as the released code does. The gradients are equal.
        text_context: ``trimmed`` cuts the prompt tokens to the longest prompt (exact under CLIP's causal mask,
            see :func:`~mfas.models.mmda.backbone.trimmed_length`); ``full`` keeps all 77 positions, as released.
        moe_threshold: the second-expert threshold of every MoE block (0.2, released).
        group_moe: in training, each U-DSA level's MoE and the classifier's MoE run once over the visual rows and
            both prompt sets instead of once per set, as released: the same outputs and, on the CPU, the same
            routing draws in the same order (on CUDA, draws of the same law); auxiliary losses per set as
            released; the experts' weight gradients come from one product instead of three.
    """

    supports_missing = True
    modal_features = True

    def __init__(self, clip: dict | None = None, quick_gelu: bool = True, pretrained: str | None = None,
                 clip_arch: str = "ViT-B-16", freeze: str = "none", compat: str = "clean",
                 partner_eval: str = "self", num_heads: int = 16, udsa_levels: int = 7, lambda_depth: int = 12,
                 attn_dropout: float = 0.1, smoothing: float = 0.1, reference_momentum: float = 0.99,
                 text_grad: str = "step", text_context: str = "trimmed", moe_threshold: float = 0.2,
                 group_moe: bool = True):
        super().__init__()
        for key, value, allowed in (("freeze", freeze, FREEZE), ("compat", compat, COMPAT),
                                    ("partner_eval", partner_eval, PARTNER_EVAL), ("text_grad", text_grad, TEXT_GRAD),
                                    ("text_context", text_context, TEXT_CONTEXT)):
            if value not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {value!r}")
        cfg = VIT_B_16 if clip is None else clip
        self.clip = build_clip(cfg, quick_gelu)
        if pretrained:
            load_clip_weights(self.clip, pretrained, clip_arch)
        dim = int(cfg["embed_dim"])
        size = int(cfg["vision"].get("image_size", 224))
        self.modalities, self.input_size, self.num_features = MODALITIES, (size, size), dim
        self.norm_stats = {m: ((_MEAN,) * c, (_STD,) * c) for m, c in (("rgb", 3), ("depth", 1), ("ir", 1))}
        self.compat, self.partner_eval, self.smoothing = compat, partner_eval, smoothing
        self.reference_momentum = reference_momentum
        official = compat == "official"
        routing = "stochastic" if official else "deterministic"
        self.md2a = MD2A(dim, num_heads, len(MODALITIES), lambda_depth, attn_dropout, routing)
        self.udsa = UDSA(dim, num_heads, udsa_levels, "batch" if official else "sample", routing, group_moe)
        self.group_moe = group_moe
        self.classifier = Classifier(dim, routing)
        for module in self.modules():
            if isinstance(module, MoE):
                module.threshold = moe_threshold
        import open_clip

        ctx = int(cfg["text"].get("context_length", 77))
        spoof_t, live_t = open_clip.tokenize(list(SPOOF_PROMPTS), ctx), open_clip.tokenize(list(LIVE_PROMPTS), ctx)
        n = None
        if text_context == "trimmed":
            with torch.device("cpu"):  # the length is read from real tokens, also when the model is built on meta
                n = trimmed_length(self.clip, open_clip.tokenize([*SPOOF_PROMPTS, *LIVE_PROMPTS], ctx))
        self.register_buffer("spoof_tokens", spoof_t[:, :n], persistent=False)
        self.register_buffer("live_tokens", live_t[:, :n], persistent=False)
        self.text_grad = text_grad
        self._phase: tuple[bool, bool] | None = None
        self._step_text: tuple[torch.Tensor, torch.Tensor] | None = None
        self._levels_cache: tuple | None = None
        self.register_buffer("reference", torch.zeros(len(MODALITIES), dim))
        self.register_buffer("reference_seen", torch.zeros((), dtype=torch.long))
        self._text_cache: tuple[tuple, torch.Tensor, torch.Tensor] | None = None
        self.freeze = freeze
        if freeze == "backbone":
            self.clip.requires_grad_(False)
        elif freeze == "text":
            for p in self.text_parameters():
                p.requires_grad_(False)

    # -- backbone ---------------------------------------------------------------------------------------
    def text_parameters(self) -> list[nn.Parameter]:
        """The CLIP text tower's parameters (everything but ``visual.*`` and the logit scale/bias)."""
        return [p for n, p in self.clip.named_parameters()
                if not n.startswith("visual.") and n not in ("logit_scale", "logit_bias")]

    def _image(self, batch: dict, modality: str) -> torch.Tensor:
        """(B, 3, S, S) input of one modality; absent samples see a black image, as released."""
        x = batch[modality].to(self.clip.visual.class_embedding.dtype)  # the weights' dtype (float32 unless cast)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        present = self.present(batch, modality)
        # unconditional (no branch on the data), so that the exported graph has the same structure for any mask
        return torch.where(present[:, None, None, None], x, torch.full_like(x, -_MEAN / _STD))

    def encode(self, batch: dict, modality: str) -> torch.Tensor:
        """(B, D) projected class token of one modality."""
        return encode_image(self.clip, self._image(batch, modality))

    def encode_all(self, batch: dict) -> torch.Tensor:
        """(B, 3, D) tokens of rgb, depth, ir from one pass of the image tower over the 3B images: the same
        features as three passes (the tower treats samples independently), in larger matrix products."""
        x = torch.cat([self._image(batch, m) for m in MODALITIES])
        b = x.shape[0] // len(MODALITIES)
        return encode_image(self.clip, x).view(len(MODALITIES), b, -1).transpose(0, 1)

    def accumulation_phase(self, first: bool, last: bool) -> None:
        self._phase = (first, last)

    def _encode_prompts(self) -> torch.Tensor:
        return encode_text(self.clip, torch.cat([self.spoof_tokens, self.live_tokens]))

    def _step_prompts(self, first: bool, last: bool) -> torch.Tensor:
        """(Ns + Nl, D) prompt features when the text tower trains and the engine marks the optimizer steps. The
        step's first micro-batch encodes the prompts and keeps that graph; the micro-batches before the last see a
        detached copy, into whose ``.grad`` their backward passes sum; the last sees the kept features through
        :class:`_AddHeldGradient`, so its backward carries the whole step's gradient through the tower once (and,
        under DDP, inside the synchronised backward)."""
        if first or self._step_text is None:
            held = self._step_text
            if held is not None and held[1].grad is not None:
                raise RuntimeError("mmda: a new optimizer step began before the text gradient of the previous one "
                                   "was applied (accumulation_phase was told no last micro-batch)")
            both = self._encode_prompts()
            if last:
                self._step_text = None
                return both
            self._step_text = (both, both.detach().requires_grad_(True))
        both, copy = self._step_text
        if not last:
            return copy
        self._step_text = None
        return _AddHeldGradient.apply(both, copy)

    def text_features(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt embeddings t_0: spoof (Ns, D) and live (Nl, D). Cached whenever they cannot change: at
        inference, and in training when the text tower is frozen; recomputed after any weight update. With a
        trainable tower, once per optimizer step or once per micro-batch as ``text_grad`` says."""
        params = self.text_parameters()
        frozen = not any(p.requires_grad for p in params)
        cacheable = frozen or not (self.training and torch.is_grad_enabled())
        phase, self._phase = self._phase, None  # one forward per phase: a second call falls back to re-encoding
        key = (tuple(p._version for p in params), self.spoof_tokens.device, params[0].dtype if params else None)
        ns = len(self.spoof_tokens)
        if cacheable:
            if self._text_cache is None or self._text_cache[0] != key:
                both = self._encode_prompts().detach()
                self._text_cache = (key, both[:ns], both[ns:])
            return self._text_cache[1], self._text_cache[2]
        if self.text_grad == "step" and phase is not None:
            both = self._step_prompts(*phase)
        else:
            both = self._encode_prompts()
        return both[:ns], both[ns:]

    def text_levels(self, spoof0: torch.Tensor, live0: torch.Tensor
                    ) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
        """The prompt side of U-DSA at inference, cached with the prompt embeddings: it does not depend on the
        images. None (computed in the forward, interleaved as released) in training, under autograd, and where
        the routing is random at inference (``compat: official``)."""
        if self.training or torch.is_grad_enabled() or self.compat == "official":
            return None
        key = tuple(p._version for p in self.udsa.parameters())
        held = self._levels_cache
        if held is None or held[0] != key or held[1] is not spoof0 or held[2] is not live0:
            # the prompt tensors themselves are held, so that a freed one's address cannot be mistaken for it
            held = self._levels_cache = (key, spoof0, live0, self.udsa.text_levels(spoof0, live0))
        return held[3]

    # -- partners ---------------------------------------------------------------------------------------
    def partners(self, batch: dict, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 3, D) partner tokens for the MD2A noise map (see the ``compat`` and ``partner_eval`` options)."""
        domains: Sequence[str] = batch.get("domain") or ["?"] * tokens.shape[0]
        if self.compat == "official":
            return tokens[first_same_domain(domains).to(tokens.device)]
        if self.training:
            if torch.is_grad_enabled():
                with torch.no_grad():
                    m = self.reference_momentum if int(self.reference_seen) else 0.0
                    self.reference.mul_(m).add_((1 - m) * tokens.detach().float().mean(0))
                    self.reference_seen += 1
            return tokens[random_same_domain(domains).to(tokens.device)]
        if self.partner_eval == "reference" and int(self.reference_seen):
            return self.reference.to(tokens.dtype).expand_as(tokens)
        return tokens

    # -- forward ----------------------------------------------------------------------------------------
    def forward(self, batch: dict) -> ModelOutput:
        tokens = self.encode_all(batch)  # (B, 3, D)
        spoof0, live0 = self.text_features()
        return self.head(batch, tokens, self.partners(batch, tokens), spoof0, live0)

    def head(self, batch: dict, tokens: torch.Tensor, partners: torch.Tensor, spoof0: torch.Tensor,
             live0: torch.Tensor) -> ModelOutput:
        """Everything after the image towers: tokens and partners (B, 3, D), prompt embeddings (Ns, D), (Nl, D)."""
        v0, aux = self.md2a(tokens, partners)
        vis, sp, lv, aux_u = self.udsa(v0, spoof0, live0, self.text_levels(spoof0, live0))
        anchors = {}
        if self.training and self.group_moe:  # the prompt-anchor logits of the loss, in the classifier's one call
            sizes = [vis[-1].shape[0], spoof0.shape[0], live0.shape[0]]
            z, aux_c = self.classifier(torch.cat([vis[-1], spoof0, live0]), groups=sizes)
            logits, anchors["anchor_spoof"], anchors["anchor_live"] = z.split(sizes)
        else:
            logits, aux_c = self.classifier(vis[-1])
        scale = self.clip.logit_scale.exp()
        align = torch.stack([rs2_logits(v, s, t, scale) for v, s, t in zip(vis, sp, lv, strict=True)])
        feats = {"tokens": tokens, "v0": v0, "final": vis[-1], "align_logits": align, "moe_aux": aux + aux_u + aux_c,
                 "text_spoof": spoof0, "text_live": live0, "embedding": vis[-1],
                 "present": torch.stack([self.present(batch, m) for m in MODALITIES], 1), **anchors}
        feats.update({f"cls_{m}": tokens[:, i] for i, m in enumerate(MODALITIES)})
        return ModelOutput(logits=logits, features=feats)

    def export_view(self) -> nn.Module:
        """The clean-mode inference graph with the prompt embeddings folded in as constants. ``official`` is
        refused: its partner is another sample of the batch and its expert routing is random at inference."""
        if self.compat == "official":
            from mfas.errors import ConfigError

            raise ConfigError("mmda with compat: official is not exported: its scores depend on the rest of the "
                              "batch and its inference routing is random; export a compat: clean model")
        return _MMDAExport(self)

    def losses(self, batch: dict, output: ModelOutput) -> dict[str, torch.Tensor]:
        """L = CE(cls, y~) + sum over levels of CE(RS2, y~) + prompt-anchor CE + MoE auxiliary losses, all
        weights 1; y~ = (1.0, s) smoothed targets."""
        f = output.features
        y = smoothed_targets(batch["label"], self.smoothing)
        ce = soft_ce(output.logits, y)
        rs2 = torch.stack([soft_ce(a, y) for a in f["align_logits"]]).sum()
        if "anchor_spoof" in f:  # computed in the forward's classifier call, its auxiliary losses in moe_aux
            z_spoof, z_live, aux = f["anchor_spoof"], f["anchor_live"], f["moe_aux"]
        else:
            z_spoof, aux_s = self.classifier(f["text_spoof"])
            z_live, aux_l = self.classifier(f["text_live"])
            aux = f["moe_aux"] + aux_s + aux_l
        t_spoof = torch.tensor([1 - self.smoothing, self.smoothing], device=z_spoof.device)
        anchor = soft_ce(z_spoof, t_spoof.expand_as(z_spoof)) + soft_ce(z_live, t_spoof.flip(0).expand_as(z_live))
        return {"ce": ce, "rs2": rs2, "anchor": anchor, "moe_aux": aux, "loss": ce + rs2 + anchor + aux}

    def param_groups(self, weight_decay: float) -> list[dict]:
        """``official``: one AdamW group in which every trainable parameter is decayed, as the released code
        (``AdamW(model.parameters(), weight_decay=5e-5)``). ``clean``: the base rule (no decay on biases, norms,
        1-D parameters, CLIP's position and class embeddings and the MoE's stacked biases, norms and constants)."""
        if self.compat != "official":
            return super().param_groups(weight_decay)
        return [{"params": [p for p in self.parameters() if p.requires_grad], "weight_decay": weight_decay}]

    def parameter_parts(self) -> list[tuple[str, list[nn.Parameter], bool]]:
        scale = [p for n, p in self.clip.named_parameters() if n in ("logit_scale", "logit_bias")]
        return [("clip.visual", list(self.clip.visual.parameters()), True),
                ("clip.text", self.text_parameters(), True), ("clip.logit_scale", scale, True),
                ("md2a", list(self.md2a.parameters()), True), ("udsa", list(self.udsa.parameters()), True),
                ("classifier", list(self.classifier.parameters()), True)]


class _AddHeldGradient(torch.autograd.Function):
    """Identity on the kept prompt features whose backward adds the gradient held in the detached copy's ``.grad``
    (the sum over the step's earlier micro-batches)."""

    @staticmethod
    def forward(ctx, kept: torch.Tensor, copy: torch.Tensor) -> torch.Tensor:
        ctx.copy = copy
        return kept.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        held = ctx.copy.grad
        ctx.copy = None
        return (grad if held is None else grad + held), None


class _MMDAExport(nn.Module):
    """MMDA (clean, eval) as ``(rgb, depth, ir, present) -> score`` with t_0 as buffers and the partner rule
    fixed at export time (``reference`` when a running mean was learnt and asked for, else the sample itself)."""

    def __init__(self, model: MMDA):
        super().__init__()
        self.model = model.eval()
        with torch.no_grad():
            spoof, live = model.text_features()
        self.register_buffer("spoof0", spoof.detach().clone())
        self.register_buffer("live0", live.detach().clone())
        self.use_reference = model.partner_eval == "reference" and int(model.reference_seen) > 0

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, ir: torch.Tensor, present: torch.Tensor
                ) -> torch.Tensor:
        batch = {"rgb": rgb, "depth": depth, "ir": ir, "present": present}
        m = self.model
        tokens = m.encode_all(batch)
        partners = m.reference.to(tokens.dtype).expand_as(tokens) if self.use_reference else tokens
        return m.head(batch, tokens, partners, self.spoof0, self.live0).score
